"""Read token usage from model responses: OpenAI- and Anthropic-shaped, dicts or objects."""

from __future__ import annotations

from typing import Any

__all__ = ["extract_usage"]


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def extract_usage(response: Any) -> tuple[int, int] | None:
    """(tokens_in, tokens_out) from a model response, or None if it carries no usage.

    Understands OpenAI chat completions (``usage.prompt_tokens`` / ``completion_tokens``), OpenAI
    responses and Anthropic messages (``usage.input_tokens`` / ``output_tokens``), as dicts, SDK
    objects or pydantic models.
    """
    usage = _get(response, "usage")
    if usage is None:
        return None
    tin = _get(usage, "prompt_tokens")
    if tin is None:
        tin = _get(usage, "input_tokens")
    tout = _get(usage, "completion_tokens")
    if tout is None:
        tout = _get(usage, "output_tokens")
    if tin is None and tout is None:
        return None
    try:
        return int(tin or 0), int(tout or 0)
    except (TypeError, ValueError):
        return None
