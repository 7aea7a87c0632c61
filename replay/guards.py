"""Defaults and guards of a recording: the store used when none is named, the shared pseudonym key,
and `Guards`, the limits that end a run with a stop reason."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from replay.keys import env_key

__all__ = ["Guards", "default_db", "shared_redaction_key", "usage_ok"]


def shared_redaction_key() -> bytes | None:
    """The key set in ``$REPLAY_REDACTION_KEY``, if any, used instead of the store's key file.

    Pseudonyms are keyed, so a value the agent's own code holds (a from-address) gets another
    pseudonym when a cassette is replayed with another key. Teams that replay cassettes in CI set
    the same secret in production and CI to keep those pseudonyms equal (see `replay.keys`).
    """
    return env_key()


def default_db() -> str:
    """The store used when none is named: ``$REPLAY_DB``, else ``./replay.db``."""
    return os.environ.get("REPLAY_DB") or "replay.db"


@dataclasses.dataclass(frozen=True)
class Guards:
    """Limits that end a run with a stop reason and raise `StopRun` inside the agent.

    Attributes:
        max_steps: more tool and model calls than this -> ``max_steps``.
        max_repeats: the same tool with the same args more than this many times ->
        ``loop_detected``.
        max_tokens: tokens in + out above this -> ``budget_exceeded``.
        max_spend_usd: spend above this -> ``budget_exceeded``.
        tool_timeout_s: a tool call longer than this -> ``tool_timeout``.
    """

    max_steps: int | None = None
    max_repeats: int | None = None
    max_tokens: int | None = None
    max_spend_usd: float | None = None
    tool_timeout_s: float | None = None

    def merged(self, **overrides: Any) -> Guards:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(
                f"unknown guard(s) {', '.join(sorted(unknown))}: use {', '.join(sorted(known))}"
            )
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def usage_ok(tokens_in: Any, tokens_out: Any, cost_usd: Any) -> bool:
    try:
        return (
            int(tokens_in) >= 0
            and int(tokens_out) >= 0
            and math.isfinite(float(cost_usd))
            and float(cost_usd) >= 0
        )
    except (TypeError, ValueError, OverflowError):
        return False
