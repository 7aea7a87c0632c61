"""The unified event schema and the run row, as pydantic models.

One schema for every record (run_start, tool_result, model_result, stop) so that logs join.
Field names are fixed by DESIGN.md; `parent_step_id` is the one addition, so replay knows which
recorded steps ran inside another tool and are answered with it.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from replay.errors import InvalidStopReasonError

__all__ = [
    "STOP_REASONS",
    "EventKind",
    "Event",
    "Run",
    "Usage",
    "new_run_id",
    "validate_stop_reason",
]

#: The stop reason taxonomy. Users may add their own lowercase names.
STOP_REASONS: tuple[str, ...] = (
    "completed",
    "error",
    "loop_detected",
    "tool_timeout",
    "budget_exceeded",
    "max_steps",
    "denied",
    "killed",
    "cancelled",
)
_USER_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")

EventKind = Literal["run_start", "tool_result", "model_result", "stop"]
Status = Literal["ok", "error"]


def validate_stop_reason(reason: Any) -> str:
    """Return `reason` if it is a known or well-formed user-defined stop reason.

    Raises:
        InvalidStopReasonError: anything else, listing the valid names.
    """
    if isinstance(reason, str) and (reason in STOP_REASONS or _USER_REASON.fullmatch(reason)):
        return reason
    raise InvalidStopReasonError(reason)


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


_last_id = [0, 0]
_id_lock = threading.Lock()


def new_run_id(now_ms: int | None = None) -> str:
    """A time-sortable id unique across processes and hosts: ``r_`` + 48-bit ms time + 80 random bits.

    Crockford base32, lowercase, 28 characters. Within one process ids are strictly increasing
    (like a monotonic ULID: a second id in the same millisecond adds one to the random part), so
    lexicographic order is creation order even for runs started in the same millisecond.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    with _id_lock:
        if ms == _last_id[0]:
            ms, rand = _last_id[0], _last_id[1] + 1
        _last_id[0], _last_id[1] = ms, rand
    n = (ms << 80) | (rand & ((1 << 80) - 1))
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[n & 31])
        n >>= 5
    return "r_" + "".join(reversed(chars))


class Usage(BaseModel):
    """Tokens, spend and tool calls of a run (on `stop`) or of one model call (on `model_result`)."""

    model_config = ConfigDict(extra="forbid")

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    tool_calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            cost_usd=round(self.cost_usd + other.cost_usd, 10),
            tool_calls=self.tool_calls + other.tool_calls,
        )


class Event(BaseModel):
    """One record of the unified schema. Also the shape of each `replay.events` log line."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    kind: EventKind
    ts_ms: int
    step_id: int | None = None
    tool: str | None = None
    args_sha: str | None = None
    output_sha: str | None = None
    duration_ms: int | None = None
    status: Status | None = None
    error: str | None = None
    stop_reason: str | None = None
    usage: Usage | None = None
    parent_step_id: int | None = None

    @field_validator("stop_reason")
    @classmethod
    def _check_reason(cls, v: str | None) -> str | None:
        return None if v is None else validate_stop_reason(v)


class Run(BaseModel):
    """The derived run row: what `replay runs` lists and what alerts aggregate."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    agent: str
    entrypoint: str | None = None
    input: Any = None
    output: Any = None
    input_sha: str | None = None
    output_sha: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    started_ms: int
    ended_ms: int | None = None
    stop_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    tool_calls: int = 0
    pinned: bool = False
    expires_at: int | None = None
    replay_of: str | None = None
    #: how replay calls the entrypoint: "bound" -> fn(**input) (the decorator's bound arguments),
    #: "value" -> fn(input) (``rec.run(name, input=value)``)
    call_style: Literal["bound", "value"] = "bound"
    host: str = Field(default_factory=lambda: os.uname().nodename if hasattr(os, "uname") else "")
    #: the snapshot (type ``$http``) of the run's redacted HTTP interactions, for ``http=True`` runs
    http_sha: str | None = None
    #: `replay.keys.fingerprint` of the key its pseudonyms were made with (never the key itself)
    key_fingerprint: str | None = None

    @field_validator("stop_reason")
    @classmethod
    def _check_reason(cls, v: str | None) -> str | None:
        return None if v is None else validate_stop_reason(v)

    @property
    def latency_ms(self) -> int | None:
        return None if self.ended_ms is None else self.ended_ms - self.started_ms
