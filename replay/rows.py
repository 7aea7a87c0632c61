"""Event rows, runs and snapshots from the items the agent's path queued (the writer's encoding).

`StepItem` and `RunItem` are what the agent's path hands over: values frozen, nothing hashed.
`RowEncoder` turns them, on the writer thread, into event rows in ``EVENT_COLUMNS`` order (tuples:
building pydantic Events would cost more than the insert itself), redacted runs, and redacted
content-addressed snapshots. Names, labels, versions and stop reasons pass the redactor too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from replay.hashing import (
    TRUNCATED_TAG,
    ordered_bytes,
    sha_of_canonical,
    thaw,
    truncated_snapshot,
    type_tag,
)
from replay.models import Event, Run, Usage

if TYPE_CHECKING:
    from replay.redaction import Redactor

__all__ = [
    "TRUNCATED_TAG",
    "RowEncoder",
    "RunItem",
    "Snapshots",
    "StepItem",
    "check_text",
    "item_bytes",
    "row_event",
    "row_json",
]

# sha -> (sha, body, type tag, truncated): the snapshots of one batch, each written once.
Snapshots = dict[str, tuple[str, bytes, str | None, bool]]


@dataclass(slots=True)
class StepItem:
    """One tool or model call as the agent's path hands it over (values frozen, nothing hashed)."""

    run_id: str
    step_id: int
    parent_step_id: int | None
    kind: str
    tool: str
    args: bytes
    output: bytes | None
    error: tuple[str, str, str] | None  # (display name, module, qualname) of the exception
    message: str | None
    ts_ms: int
    duration_ms: int
    # A model call's tokens and spend. Replay passes a model answer's recorded tokens (read from
    # the same response when it was recorded, not read and validated again), priced now.
    usage: Usage | None
    type_name: str | None
    args_sha: str | None = None  # precomputed by the replay layer, which had to hash anyway
    # An answer replayed from the recording: its output (or error) snapshot is the recorded one,
    # so the value is neither copied nor hashed again.
    output_sha: str | None = None
    # The step_id of the first step of its concurrent group (parallel calls), None if it ran alone.
    # Replay passes the recorded step's group in the replayed run's numbering (answers from the
    # recording are instant, so the replay's own grouping would say nothing).
    concurrent_group: int | None = None
    # A tool's exception: args, public attributes and their types, frozen (replay.fidelity).
    error_detail: bytes | None = None
    # The value the tool returned, held until the writer takes its type tag tree (`type_tag`):
    # walking it costs microseconds the agent's path does not pay. The recorded JSON is `output`,
    # frozen on the agent's path; a value the agent mutates before the writer gets to it can only
    # lose type tags (replay then hands back plain JSON there), never change what is recorded.
    output_ref: Any = None


@dataclass(slots=True)
class RunItem:
    """A run's start or end."""

    run: Run
    input: bytes | None
    output: bytes | None
    stop: bool
    ts_ms: int
    output_type: str | None = None
    # The run's HTTP interactions (http=True runs, at stop): redacted and stored here, off the
    # agent's path.
    http: list[Any] | None = None


def item_bytes(item: Any) -> int:
    """The frozen bytes an item holds (what `max_queue_bytes` counts)."""
    if type(item) is StepItem:
        return len(item.args) + (len(item.output) if item.output is not None else 0)
    if type(item) is RunItem:
        return (len(item.input) if item.input is not None else 0) + (
            len(item.output) if item.output is not None else 0
        )
    return 0


def usage_json(u: Usage) -> str:
    return orjson.dumps(
        {
            "tokens_in": u.tokens_in,
            "tokens_out": u.tokens_out,
            "cost_usd": u.cost_usd,
            "tool_calls": u.tool_calls,
        }
    ).decode()


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    from replay.store import EVENT_COLUMNS

    d = dict(zip(EVENT_COLUMNS, row, strict=False))
    if d["usage"] is not None:
        d["usage"] = orjson.loads(d["usage"])
    return d


def row_event(row: tuple[Any, ...]) -> Event:
    return Event.model_validate(row_dict(row))


def row_json(row: tuple[Any, ...]) -> str:
    """One `replay.events` log line: the event as JSON, field names of the unified schema."""
    return orjson.dumps(row_dict(row)).decode()


def error_value(it: StepItem, error: tuple[str, str, str]) -> dict[str, Any]:
    """The error snapshot of a step whose tool raised: its class, message, args and attributes."""
    display, module, qualname = error
    out: dict[str, Any] = {
        "error": display,
        "module": module,
        "qualname": qualname,
        "message": it.message or "",
    }
    if it.error_detail is not None:
        detail = thaw(it.error_detail)
        if isinstance(detail, dict):
            out.update((k, v) for k, v in detail.items() if k not in out)
    return out


def run_row(run: Run, stop: bool, ts_ms: int) -> tuple[Any, ...]:
    """The event row (EVENT_COLUMNS order) of a run's start (its input sha in args_sha) or stop."""
    from replay.store_base import make_event_row

    if stop:
        return make_event_row(
            run_id=run.run_id,
            kind="stop",
            ts_ms=ts_ms,
            output_sha=run.output_sha,
            stop_reason=run.stop_reason,
            usage=usage_json(run.usage),
        )
    return make_event_row(run_id=run.run_id, kind="run_start", ts_ms=ts_ms, args_sha=run.input_sha)


def check_text(values: tuple[Any, ...]) -> None:
    """Raise UnicodeEncodeError for a lone surrogate in a name or label: only that record is lost.

    Values are frozen leniently (no surrogate reaches a snapshot), but names, labels and versions
    come straight from code; SQLite would refuse the whole batch over one of them.
    """
    for v in values:
        if type(v) is tuple:
            check_text(v)
        elif type(v) is str and not v.isascii():
            v.encode("utf-8")


def label_value(red: Redactor, key: Any, value: Any) -> str:
    """A label or version value as written: secret keys hide it, pattern rules pseudonymize it."""
    if red.is_secret_key(str(key)):
        return "[REDACTED:secret]"
    return red.redact_name(str(value))


class RowEncoder:
    """Encodes queued items for one redactor (the store's key) and the writer's limits.

    Args:
        redactor: the store's redactor.
        max_snapshot_bytes: larger snapshots are stored truncated, with the full hash.
        store_args: keep redacted args as snapshots (``Recorder(store_args=...)``); the
            redactor's ``RedactionConfig(store_args="redacted")`` says so too.
    """

    __slots__ = ("redactor", "max_snapshot_bytes", "store_args")

    def __init__(self, redactor: Redactor, max_snapshot_bytes: int, store_args: bool) -> None:
        self.redactor = redactor
        self.max_snapshot_bytes = max_snapshot_bytes
        self.store_args = store_args or redactor.config.store_args == "redacted"

    def snapshot(
        self,
        value: Any,
        snapshots: Snapshots,
        type_name: str | None,
        frozen: bytes | None = None,
        check: tuple[bytes, bool] | None = None,
    ) -> tuple[str, bytes]:
        """Redact `value`, store it content-addressed, return (sha, redacted body bytes).

        The body keeps the value's own key order (replay hands it back as the tool returned it);
        the sha is over the canonical, sorted form, so hashes join with hand-rolled loggers.
        `frozen` is `value`'s JSON as the agent's path froze it: when redaction changed nothing,
        it is the body as it is (no second copy, no second serialization). `check` is
        ``Redactor.checked(value)`` when the caller already has it.
        """
        canonical, clean = self.redactor.checked(value) if check is None else check
        digest = sha_of_canonical(canonical)
        if frozen is not None and clean:
            body = frozen  # nothing was redacted
        else:
            body = ordered_bytes(self.redactor(value))
        if digest not in snapshots:
            stored, truncated = truncated_snapshot(body, digest, self.max_snapshot_bytes)
            snapshots[digest] = (digest, stored, type_name, truncated)
        return digest, body

    def step_row(self, it: StepItem, snapshots: Snapshots) -> tuple[Any, ...]:
        args_sha = it.args_sha
        value: Any = None
        out_check: tuple[bytes, bool] | None = None
        store_args = self.store_args
        if args_sha is None or store_args:
            if it.output_sha is None and it.error is None and it.output is not None:
                # The common step: args and output through one detector pass; the args, frozen
                # with sorted keys, are parsed only when something in them is to be redacted.
                value = thaw(it.output)
                (args_body, _), out_check = self.redactor.checked_frozen_pair(it.args, value)
            else:
                args_body = self.redactor.canonical(thaw(it.args), len(it.args))
            args_sha = sha_of_canonical(args_body)
            if store_args and args_sha not in snapshots:
                snapshots[args_sha] = (args_sha, args_body, "$args", False)
        if it.output_sha is not None:
            output_sha: str | None = it.output_sha
        elif it.error is not None:
            output_sha, _ = self.snapshot(error_value(it, it.error), snapshots, "$error")
        elif it.output is not None:
            if out_check is None:
                value = thaw(it.output)
            type_name = it.type_name
            if it.output_ref is not None:
                type_name = type_tag(it.output_ref, value)
                it.output_ref = None
            output_sha, _ = self.snapshot(value, snapshots, type_name, it.output, out_check)
        else:
            output_sha = None
        red = self.redactor
        return (
            it.run_id,
            it.kind,
            it.ts_ms,
            it.step_id,
            red.redact_name(it.tool),
            args_sha,
            output_sha,
            it.duration_ms,
            "error" if it.error is not None else "ok",
            None if it.error is None else red.redact_name(it.error[0]),
            None,
            None if it.usage is None else usage_json(it.usage),
            it.parent_step_id,
            it.concurrent_group,
        )

    def run_rows(self, it: RunItem, snapshots: Snapshots) -> tuple[Run, tuple[Any, ...]]:
        run = it.run
        red = self.redactor
        # Names, labels, versions and stop reasons are written too: they pass the redactor (a name
        # is pseudonymized the same way each time, so matching by name still works).
        run.key_fingerprint = red.key_fingerprint
        run.agent = red.redact_name(run.agent)
        if run.labels:
            run.labels = {
                red.redact_name(str(k)): label_value(red, k, v) for k, v in run.labels.items()
            }
        if run.versions:
            run.versions = {
                red.redact_name(str(k)): label_value(red, k, v) for k, v in run.versions.items()
            }
        if run.stop_reason is not None:
            run.stop_reason = red.redact_token(run.stop_reason)
        if it.input is not None:
            run.input_sha, body = self.snapshot(thaw(it.input), snapshots, None, it.input)
            run.input = thaw(body)
        if it.output is not None:
            run.output_sha, body = self.snapshot(
                thaw(it.output), snapshots, it.output_type, it.output
            )
            run.output = thaw(body)
        if it.http:
            from replay.http import redact_interactions

            http = redact_interactions(it.http, red)
            run.http_sha, _ = self.snapshot(http, snapshots, "$http")
        return run, run_row(run, it.stop, it.ts_ms)
