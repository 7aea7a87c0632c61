"""The replayed run, kept in memory: what a replay's recorder writes when no ``record_to`` is given.

The replayed run is recorded like any run (redacted and hashed by the writer thread), but into
`MemorySink` instead of a temporary SQLite store: the writer's rows stay as they are, and the
diff reads them back without a database round trip or a second validation of what this process
just wrote. With ``record_to`` the replay writes to that store as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from replay.hashing import thaw
from replay.models import Event, Run, Usage, trusted_event
from replay.processors import Redactor
from replay.store import EVENT_COLUMNS
from replay.writer import StepItem

__all__ = ["AnsweredStepSink", "MemorySink"]


class MemorySink:
    """A store the writer can write one replayed run into, held in memory (the writer's side of
    `replay.store.Store`: ``secret_key``, ``write_rows``, ``touch_runs``, ``events``, ``close``)."""

    def __init__(self, secret_key: bytes) -> None:
        self.secret_key = secret_key
        self._rows: list[tuple[Any, ...]] = []
        self._runs: dict[str, Run] = {}
        self._snapshots: dict[str, tuple[bytes, str | None, bool]] = {}
        self._answered: list[Event] = []  # steps answered from the recording (`AnsweredStepSink`)

    def write_rows(
        self,
        rows: Sequence[tuple[Any, ...]],
        *,
        runs: Sequence[Run] = (),
        snapshots: Sequence[tuple[str, bytes, str | None, bool]] = (),
    ) -> None:
        self._rows.extend(rows)
        for run in runs:
            self._runs[run.run_id] = run
        for sha, body, type_name, truncated in snapshots:
            self._snapshots[sha] = (body, type_name, truncated)

    def touch_runs(self, run_ids: Iterable[str], now_ms: int | None = None) -> None:
        """Heartbeats mean nothing in memory: the replay's own process is alive."""

    def close(self) -> None:
        """Nothing to release; the rows stay readable until the sink is dropped."""

    def get_run(self, run_id: str) -> Run:
        return self._runs[run_id]

    def add_answered(self, event: Event) -> None:
        self._answered.append(event)

    def events(self, run_id: str) -> list[Event]:
        """The run's events in store order: run_start, the steps by step_id, stop."""
        out = [e for e in self._answered if e.run_id == run_id]
        for row in self._rows:
            if row[0] != run_id:
                continue
            fields = dict(zip(EVENT_COLUMNS, row, strict=True))
            usage = fields["usage"]
            if usage is not None:
                fields["usage"] = Usage.model_validate(orjson.loads(usage))
            out.append(trusted_event(fields))
        return _store_order(out)

    def snapshot_values(
        self, shas: Iterable[str | None]
    ) -> Mapping[str, tuple[Any, str | None, bool]]:
        """sha -> (value, type name, truncated) for the shas this sink holds."""
        return {
            sha: (thaw(body), type_name, truncated)
            for sha in shas
            if sha and (found := self._snapshots.get(sha)) is not None
            for body, type_name, truncated in (found,)
        }


def _store_order(events: list[Event]) -> list[Event]:
    """run_start, the steps by step_id, stop: the order `Store.events` returns."""
    return sorted(events, key=lambda e: (_KIND_RANK.get(e.kind, 1), e.step_id or 0))


_KIND_RANK = {"run_start": 0, "stop": 2}


class AnsweredStepSink:
    """A replay's step sink: a step answered from the recording becomes an `Event` at once.

    Its args were hashed by the replay layer and its output is the recorded snapshot, so the
    writer would only pseudonymise its names: that is done here, on the replay's own thread,
    without a queue, a thread switch or a second pass over the rows. Any other step (a stub's
    answer, an unrecorded call, a live tool) goes to the writer to be redacted and hashed. While
    the ``replay.events`` logger is on, every step goes to the writer, which logs it.
    """

    def __init__(self, writer: Any, redactor: Redactor, memory: MemorySink) -> None:
        self.writer = writer
        self.memory = memory
        self._name = redactor.redact_name
        self._direct = not logging.getLogger("replay.events").isEnabledFor(logging.INFO)

    def submit(self, item: Any) -> None:
        if not (
            self._direct
            and isinstance(item, StepItem)
            and item.args_sha is not None
            and item.output_sha is not None
        ):
            self.writer.submit(item)
            return
        name = self._name
        self.memory.add_answered(
            trusted_event(
                {
                    "run_id": item.run_id,
                    "kind": item.kind,
                    "ts_ms": item.ts_ms,
                    "step_id": item.step_id,
                    "tool": name(item.tool),
                    "args_sha": item.args_sha,
                    "output_sha": item.output_sha,
                    "duration_ms": item.duration_ms,
                    "status": "ok" if item.error is None else "error",
                    "error": None if item.error is None else name(item.error[0]),
                    "stop_reason": None,
                    "usage": item.usage,
                    "parent_step_id": item.parent_step_id,
                    "concurrent_group": item.concurrent_group,
                }
            )
        )
