"""Examples for agent-replay. `examples.support_agent` is the one `replay demo` runs."""
