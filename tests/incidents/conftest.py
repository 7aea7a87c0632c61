"""Incident tests replay runs of the demo's support agent (`replay.demo_agent`): import it first."""

from replay.demo import load_example

load_example()
