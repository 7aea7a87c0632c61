"""The replayed run, kept in memory: what a replay's recorder writes when no ``record_to`` is given.

The replayed run is recorded like any run (redacted and hashed by the writer thread), but into
`MemorySink` instead of a temporary SQLite store: the writer's rows stay as they are, and the
diff reads them back without a database round trip or a second validation of what this process
just wrote. With ``record_to`` the replay writes to that store as before.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from replay.event_table import EVENT_FIELDS, EventTable
from replay.hashing import thaw
from replay.models import Run, Usage
from replay.processors import Redactor
from replay.writer import StepItem

__all__ = ["AnsweredStepSink", "MemorySink"]


class MemorySink:
    """A store the writer can write one replayed run into, held in memory (the writer's side of
    `replay.store.Store`: ``secret_key``, ``write_rows``, ``touch_runs``, ``events``, ``close``)."""

    def __init__(self, secret_key: bytes, redact_name: Callable[[str], str] = str) -> None:
        self.secret_key = secret_key
        self._rows: list[tuple[Any, ...]] = []
        self._runs: dict[str, Run] = {}
        self._snapshots: dict[str, tuple[bytes, str | None, bool]] = {}
        # Steps answered from the recording (`AnsweredStepSink`), as the agent's path handed them
        # over: their names redacted when read (`events`), not one at a time on that path.
        self._answered: list[AnsweredStep] = []
        #: `RunState.finish_ok`'s way in for an `AnsweredStep` (the list's own append: per call)
        self.add_answered_step = self._answered.append
        self._redact_name = redact_name
        self._names: dict[str, str] = {}  # tool name -> redacted, for the run's steps

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

    def set_args_sha(self, run_id: str, shas: Mapping[int, str]) -> None:
        """Give answered steps of `run_id` not read yet their final args_sha, by step id (see
        `replay.replay_layer.ReplaySession.settle_args`)."""
        answered = self._answered
        for k, step in enumerate(answered):
            sha = shas.get(step[3])
            if sha is not None and step[0] == run_id:
                answered[k] = (*step[:5], sha, *step[6:])

    def add_answered(self, item: StepItem) -> None:
        """A step answered from the recording (a recorded error): its args_sha and output_sha are
        the recorded ones."""
        self._answered.append(_answered_step(item))

    def events(self, run_id: str) -> EventTable:
        """The run's events in store order (run_start, the steps by step_id, stop), as rows: an
        answered step becomes an `Event` only when it is read (`EventTable`)."""
        answered = self._answered
        if set(map(_RUN_ID, answered)) - {run_id}:
            answered = [step for step in answered if step[0] == run_id]
        answered = self._named(answered)
        rest = []
        for row in self._rows:
            if row[0] != run_id:
                continue
            usage = _USAGE(row)
            if usage is not None:
                row = (
                    *row[:_AT_USAGE],
                    Usage.model_validate(orjson.loads(usage)),
                    *row[_AT_USAGE + 1 :],
                )
            rest.append(row)
        return EventTable(_store_order(answered, rest))

    def _named(self, answered: list[AnsweredStep]) -> list[AnsweredStep]:
        """`answered` with their tool and error names pseudonymised as the writer would (most
        names stay as they are: then the same list)."""
        name, names = self._redact_name, self._names
        tools = set(map(_TOOL, answered))
        for tool in tools - names.keys():
            names[tool] = name(tool)
        if all(names[tool] == tool for tool in tools) and not any(map(_ERROR, answered)):
            return answered
        renamed = []
        for step in answered:
            fields = list(step)
            fields[_AT_TOOL] = names[fields[_AT_TOOL]]
            if fields[_AT_ERROR] is not None:
                fields[_AT_ERROR] = name(fields[_AT_ERROR])
            renamed.append(tuple(fields))
        return renamed

    def snapshot_values(
        self, shas: Iterable[str | None] | None = None
    ) -> Mapping[str, tuple[Any, str | None, bool]]:
        """sha -> (value, type name, truncated) of the shas this sink holds (all: no `shas`)."""
        held = self._snapshots
        wanted = held if shas is None else [sha for sha in shas if sha and sha in held]
        return {
            sha: (thaw(body), type_name, truncated)
            for sha in wanted
            for body, type_name, truncated in (held[sha],)
        }


def _store_order(
    answered: list[AnsweredStep], rest: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """run_start, the steps by step_id, stop: the order `Store.events` returns (event rows).

    The answered steps come in the order they finished, which is their step order unless calls
    overlapped: then (and when other steps came through the writer) the whole run is sorted.
    """
    ids = [i or 0 for i in map(_STEP_ID, answered)]
    if all(k in _KIND_RANK for k in map(_KIND, rest)) and ids == sorted(ids):
        starts = [r for r in rest if r[1] == "run_start"]
        return starts + answered + [r for r in rest if r[1] != "run_start"]
    return sorted(answered + rest, key=lambda r: (_KIND_RANK.get(r[1], 1), r[3] or 0))


_KIND_RANK = {"run_start": 0, "stop": 2}
_AT_USAGE, _AT_TOOL, _AT_ERROR = (EVENT_FIELDS.index(f) for f in ("usage", "tool", "error"))
_RUN_ID, _KIND, _STEP_ID, _TOOL, _ERROR, _USAGE = (
    operator.itemgetter(EVENT_FIELDS.index(f))
    for f in ("run_id", "kind", "step_id", "tool", "error", "usage")
)


#: A step answered from the recording as `RunState.finish_ok` hands it over: the values of its
#: `Event`'s fields in declaration order, its tool and error names not redacted yet.
AnsweredStep = tuple[Any, ...]


class AnsweredStepSink:
    """A replay's step sink: a step answered from the recording goes straight to memory.

    Its args were hashed by the replay layer and its output is the recorded snapshot, so the
    writer would only pseudonymise its names: that is done when the run is read back
    (`MemorySink.events`), without a queue, a thread switch or a second pass over the rows.
    `RunState.finish_ok` hands such a step to `answered` as a tuple (`AnsweredStep`); a recorded
    error raised again comes to `submit` as a `StepItem` and goes to memory too. Any other step (a
    stub's answer, an unrecorded call, a live tool) goes to the writer to be redacted and hashed.
    While the ``replay.events`` logger is on, every step goes to the writer, which logs it.
    """

    def __init__(self, writer: Any, redactor: Redactor, memory: MemorySink) -> None:
        self.writer = writer
        self.memory = memory
        direct = not logging.getLogger("replay.events").isEnabledFor(logging.INFO)
        self._direct = direct
        #: `RunState.finish_ok`'s way in for an answered step (None: through `submit`, logged)
        self.answered: Callable[[AnsweredStep], None] | None = (
            memory.add_answered_step if direct else None
        )

    def submit(self, item: Any) -> None:
        if (
            self._direct
            and type(item) is StepItem
            and item.args_sha is not None
            and item.output_sha is not None
        ):
            self.memory.add_answered(item)
        else:
            self.writer.submit(item)


def _answered_step(item: StepItem) -> AnsweredStep:
    """A `StepItem` answered from the recording (a recorded error) as an `AnsweredStep`."""
    return (
        item.run_id,
        item.kind,
        item.ts_ms,
        item.step_id,
        item.tool,
        item.args_sha,
        item.output_sha,
        item.duration_ms,
        "ok" if item.error is None else "error",
        None if item.error is None else item.error[0],
        None,
        item.usage,
        item.parent_step_id,
        item.concurrent_group,
    )
