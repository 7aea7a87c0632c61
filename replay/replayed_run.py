"""The replayed run, kept in memory: what a replay's recorder writes when no ``record_to`` is given.

The replayed run is recorded like any run (redacted and hashed by the writer thread), but into
`MemorySink` instead of a temporary SQLite store: the writer's rows stay as they are, and the
diff reads them back without a database round trip or a second validation of what this process
just wrote. With ``record_to`` the replay writes to that store as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from replay.hashing import thaw
from replay.models import Event, Run, Usage, trusted_event

__all__ = ["MemorySink"]

# The order of the writer's event tuples (`replay.store.EVENT_COLUMNS`, kept in step with it by
# `tests/integration/test_replay_scale.py`).
_FIELDS = (
    "run_id",
    "kind",
    "ts_ms",
    "step_id",
    "tool",
    "args_sha",
    "output_sha",
    "duration_ms",
    "status",
    "error",
    "stop_reason",
    "usage",
    "parent_step_id",
    "concurrent_group",
)


class MemorySink:
    """A store the writer can write one replayed run into, held in memory (the writer's side of
    `replay.store.Store`: ``secret_key``, ``write_rows``, ``touch_runs``, ``events``, ``close``)."""

    def __init__(self, secret_key: bytes) -> None:
        self.secret_key = secret_key
        self._rows: list[tuple[Any, ...]] = []
        self._runs: dict[str, Run] = {}
        self._snapshots: dict[str, tuple[bytes, str | None, bool]] = {}

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

    def events(self, run_id: str) -> list[Event]:
        """The run's events in the order written: run_start, steps as they finished, stop."""
        out = []
        for row in self._rows:
            if row[0] != run_id:
                continue
            fields = dict(zip(_FIELDS, row, strict=True))
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
