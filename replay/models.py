"""The unified event schema and the run row, as pydantic models.

One schema for every record (run_start, tool_result, model_result, stop) so that logs join.
Field names are fixed by DESIGN.md; two additions: `parent_step_id`, so replay knows which
recorded steps ran inside another tool and are answered with it, and `concurrent_group`, so the
diff compares steps that were in flight at the same time (parallel tool calls) as a set.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from replay.errors import InvalidStopReasonError

__all__ = [
    "STEP_KINDS",
    "STOP_REASONS",
    "EventKind",
    "Event",
    "Run",
    "Usage",
    "new_run_id",
    "is_step",
    "trusted_event",
    "trusted_events",
    "trusted_usage",
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
#: The kinds of a run's steps (tool and model calls); run_start and stop are not steps.
STEP_KINDS: frozenset[str] = frozenset({"tool_result", "model_result"})
Status = Literal["ok", "error"]

#: The largest integer an SQLite INTEGER column holds.
MAX_INT = 2**63 - 1


def _check_name(value: str) -> str:
    """A name (run id, agent, tool) must be text SQLite and JSON can hold: no NUL, no lone
    surrogate.
    """
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\x00): names must be plain text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "contains a lone surrogate (not valid Unicode text): names must be plain text"
        ) from None
    return value


#: A count (tokens, tool calls, step ids) or a time in ms: from 0 up to what SQLite stores.
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
#: Money in USD: a finite amount, never negative.
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, AfterValidator(_check_name)]


def validate_stop_reason(reason: Any) -> str:
    """Return `reason` if it is a known or well-formed user-defined stop reason.

    Raises:
        InvalidStopReasonError: anything else, listing the valid names.
    """
    if isinstance(reason, str) and (reason in STOP_REASONS or _USER_REASON.fullmatch(reason)):
        return reason
    raise InvalidStopReasonError(reason, STOP_REASONS)


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


_last_id = [0, 0]
_id_lock = threading.Lock()


def new_run_id(now_ms: int | None = None) -> str:
    """A time-sortable id unique across processes and hosts: ``r_`` + 48-bit ms time + 80 random
    bits.

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
    """Tokens, spend and tool calls of a run (on `stop`) or of one model call (on
    `model_result`)."""

    model_config = ConfigDict(extra="forbid")

    tokens_in: Count = 0
    tokens_out: Count = 0
    cost_usd: Money = 0.0
    tool_calls: Count = 0

    @classmethod
    def lenient(
        cls, *, tokens_in: Any = 0, tokens_out: Any = 0, cost_usd: Any = 0.0, tool_calls: Any = 0
    ) -> Usage:
        """A `Usage` that never raises: negative, NaN or oversized values (from a model response or
        a caller's arithmetic) become 0, so recording never breaks the agent over its usage."""

        def count(v: Any) -> int:
            try:
                n = int(v)
            except (TypeError, ValueError, OverflowError):
                return 0
            return n if 0 <= n <= MAX_INT else 0

        try:
            c = float(cost_usd)
        except (TypeError, ValueError, OverflowError):
            c = 0.0
        return cls(
            tokens_in=count(tokens_in),
            tokens_out=count(tokens_out),
            cost_usd=c if math.isfinite(c) and c >= 0 else 0.0,
            tool_calls=count(tool_calls),
        )

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

    run_id: Name
    kind: EventKind
    ts_ms: Count
    step_id: Count | None = None
    tool: Name | None = None
    args_sha: str | None = None
    output_sha: str | None = None
    duration_ms: Count | None = None
    status: Status | None = None
    error: str | None = None
    stop_reason: str | None = None
    usage: Usage | None = None
    parent_step_id: Count | None = None
    #: the step_id of the first step of the group of sibling steps (same parent) that were in
    #: flight at the same time or issued from one model response; None for a step that ran alone
    concurrent_group: int | None = None

    @field_validator("stop_reason")
    @classmethod
    def _check_reason(cls, v: str | None) -> str | None:
        return None if v is None else validate_stop_reason(v)


class Run(BaseModel):
    """The derived run row: what `replay runs` lists and what alerts aggregate."""

    model_config = ConfigDict(extra="forbid")

    run_id: Name
    agent: Name
    entrypoint: Name | None = None
    input: Any = None
    output: Any = None
    input_sha: str | None = None
    output_sha: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    started_ms: Count
    ended_ms: Count | None = None
    stop_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    tool_calls: Count = 0
    pinned: bool = False
    expires_at: Count | None = None
    replay_of: str | None = None
    #: how replay calls the entrypoint: "bound" -> fn(**input) (the decorator's bound arguments),
    #: "value" -> fn(input) (``rec.run(name, input=value)``)
    call_style: Literal["bound", "value"] = "bound"
    host: str = Field(default_factory=lambda: os.uname().nodename if hasattr(os, "uname") else "")
    #: the snapshot (type ``$http``) of the run's redacted HTTP interactions, for ``http=True`` runs
    http_sha: str | None = None
    #: the id of the process that recorded the run (with `host`, tells whether it is still alive)
    pid: int | None = None
    #: when the recording process's writer last saw the run open (a heartbeat), ms since the epoch
    last_seen_ms: int | None = None
    #: `replay.keys.fingerprint` of the key its pseudonyms were made with (never the key itself)
    key_fingerprint: str | None = None
    # True when stop_reason "killed" was inferred on reading (the process died without a stop event)
    _stop_inferred: bool = PrivateAttr(default=False)

    @property
    def stop_inferred(self) -> bool:
        """The stop reason was inferred: no stop event was written, and the recording process is
        gone.
        """
        return self._stop_inferred

    @field_validator("stop_reason")
    @classmethod
    def _check_reason(cls, v: str | None) -> str | None:
        return None if v is None else validate_stop_reason(v)

    @property
    def latency_ms(self) -> int | None:
        return None if self.ended_ms is None else self.ended_ms - self.started_ms


def is_step(event: Event, *, nested: bool = False) -> bool:
    """Whether `event` is one of the steps of its run: a tool or model call at the top level.

    A call made inside another tool (``parent_step_id`` set) is answered with that tool in a
    replay, so it is not a step of the run; ``nested=True`` counts it too.
    """
    return event.kind in STEP_KINDS and (nested or event.parent_step_id is None)


_new = object.__new__
_ALL_EVENT_FIELDS = set(Event.model_fields)
_set = object.__setattr__


def trusted_event(fields: dict[str, Any]) -> Event:
    """An `Event` from fields this library wrote itself (a store row, the writer's tuple),
    unchecked.

    `Event.model_validate` costs several microseconds per event, a large share of a replay of a
    long run; what the writer produced and the store kept was validated on the way in. Never
    use this for data from outside (a cassette, an OTLP file): those go through `model_validate`.
    `fields` must hold every field of `Event`, already of its type (``usage`` a `Usage` or None).
    """
    return _unchecked(Event, fields, _ALL_EVENT_FIELDS)


_Model = TypeVar("_Model", bound=BaseModel)


def _unchecked(cls: type[_Model], fields: dict[str, Any], names: set[str]) -> _Model:
    """An instance of `cls` holding `fields` (all of `names`, each of its type), not validated."""
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    # Every field is given, so one shared set of their names serves every such instance (pydantic
    # only ever adds a name to it on assignment, and every name is in it already): 700 bytes less.
    _set(obj, "__pydantic_fields_set__", names)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def trusted_events(fields: Iterable[dict[str, Any]]) -> list[Event]:
    """`trusted_event` of each field dict, in one loop (a long run's events: no call per event)."""
    out: list[Event] = []
    append, new, put, shared = out.append, _new, _set, _ALL_EVENT_FIELDS
    for d in fields:
        event = new(Event)
        put(event, "__dict__", d)
        put(event, "__pydantic_fields_set__", shared)
        put(event, "__pydantic_extra__", None)
        put(event, "__pydantic_private__", None)
        append(event)
    return out


_ALL_USAGE_FIELDS = {"tokens_in", "tokens_out", "cost_usd", "tool_calls"}


def _count(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_INT


def trusted_usage(
    text: str | bytes, seen: dict[str | bytes, dict[str, Any]] | None = None
) -> Usage:
    """A `Usage` from the JSON this library's writer stored (`replay.rows.usage_json`).

    Built unchecked when it holds exactly the four fields, of their types (a model call's usage on
    every step of a long run: `model_validate` would cost microseconds each); anything else is
    validated. `seen` (text -> its checked fields) spares parsing a text again: a long run's
    model calls often report the same usage. Each `Usage` gets its own copy of the fields.
    """
    if seen is not None and (known := seen.get(text)) is not None:
        return _unchecked(Usage, known.copy(), _ALL_USAGE_FIELDS)
    d = orjson.loads(text)
    if (
        type(d) is dict
        and d.keys() == _ALL_USAGE_FIELDS
        and _count(d["tokens_in"])
        and _count(d["tokens_out"])
        and _count(d["tool_calls"])
        and type(d["cost_usd"]) is float
        and d["cost_usd"] >= 0.0  # JSON has no NaN or infinity: orjson refuses them
    ):
        if seen is not None:
            seen[text] = d.copy()
        return _unchecked(Usage, d, _ALL_USAGE_FIELDS)
    return Usage.model_validate(d)
