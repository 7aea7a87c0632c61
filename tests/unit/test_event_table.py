"""`EventTable`: a run's events as rows, read as columns, made `Event`s only when read."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from replay.diff import Trace, diff_traces
from replay.event_table import EVENT_FIELDS, EventTable
from replay.models import Event, Usage
from replay.store_base import EVENT_COLUMNS
from tests.unit.test_diff import trace


def _row(step_id: int | None, kind: str = "tool_result", **fields: Any) -> tuple[Any, ...]:
    values = {name: None for name in EVENT_FIELDS}
    values.update(run_id="r_a", kind=kind, ts_ms=1000 + (step_id or 0), step_id=step_id)
    if kind in ("tool_result", "model_result"):
        values.update(tool="kb.search", args_sha=f"a{step_id}", output_sha=f"o{step_id}")
        values.update(status="ok", duration_ms=3)
    values.update(fields)
    return tuple(values[name] for name in EVENT_FIELDS)


def _table() -> EventTable:
    usage = Usage(tokens_in=20, tokens_out=5, cost_usd=0.001, tool_calls=0)
    return EventTable(
        [
            _row(None, "run_start"),
            _row(1),
            _row(2, "model_result", tool="llm", usage=usage),
            _row(3, parent_step_id=2, tool="inner"),
            _row(4, status="error", error="TimeoutError"),
            _row(None, "stop", stop_reason="completed"),
        ]
    )


def test_the_rows_hold_the_fields_in_the_order_the_store_writes_its_columns() -> None:
    # `MemorySink` reads the writer's rows (EVENT_COLUMNS order) as event rows without reordering
    assert EVENT_FIELDS == EVENT_COLUMNS == tuple(Event.model_fields)


def test_items_are_the_events_the_rows_hold_made_once() -> None:
    table = _table()
    step = table[2]
    assert isinstance(step, Event)
    assert (step.kind, step.tool, step.step_id, step.usage and step.usage.tokens_in) == (
        "model_result",
        "llm",
        2,
        20,
    )
    assert table[2] is step  # the same object each time it is read
    assert list(table)[2] is step  # iterating makes the others, keeps the one made
    assert table[-1].stop_reason == "completed"
    assert [e.step_id for e in table[1:3]] == [1, 2]
    assert Event.model_validate(step.model_dump()) == step  # a valid event, all fields set


def test_columns_come_from_the_rows_without_making_events() -> None:
    table = _table()
    assert table.column("tool") == [None, "kb.search", "llm", "inner", "kb.search", None]
    assert table.column("step_id", "status")[4] == (4, "error")
    assert table._made is None  # nothing was made to read them


def test_steps_are_the_top_level_tool_and_model_calls() -> None:
    steps = _table().steps()
    assert isinstance(steps, EventTable)
    assert steps.column("step_id") == [1, 2, 4]  # not run_start, stop or the nested call
    assert [e.step_id for e in steps.subset([2, 0])] == [4, 1]


def test_a_table_equals_the_list_of_its_events() -> None:
    table, other = _table(), _table()
    events = list(table)
    assert table == other and table == events and events == list(other)
    assert table != events[:-1]
    assert table != EventTable(other.rows[:-1])
    assert repr(table) == repr(events)
    with pytest.raises(TypeError):
        hash(table)


def _as_table(trace: Trace) -> Trace:
    """The same trace with its steps as an `EventTable` (how a replay hands them to the diff)."""
    rows = [tuple(getattr(e, name) for name in EVENT_FIELDS) for e in trace.steps]
    return dataclasses.replace(trace, steps=EventTable(rows))


@pytest.mark.parametrize("seed", range(8))
def test_the_diff_of_event_tables_is_the_diff_of_their_events(seed: int) -> None:
    """Changed args throughout (a changed prompt), plus extra, missing and failed steps: the diff
    read from tables (columns, events made when read) has the changes the list of events has."""
    rnd = random.Random(seed)
    recorded = [("llm", {"prompt": i}) for i in range(40)]
    replayed = [("llm", {"prompt": i, "v": 2}) for i in range(40)]
    for _ in range(4):
        k = rnd.randrange(len(replayed))
        edit = rnd.choice(["extra", "missing", "error", "tool"])
        if edit == "extra":
            replayed.insert(k, ("kb.search", {"q": k}))
        elif edit == "missing":
            del replayed[k]
        elif edit == "error":
            replayed[k] = (*replayed[k], {"status": "error", "error": "TimeoutError"})
        else:
            replayed[k] = ("kb.search", {"prompt": k})
    a, b = trace(recorded), trace(replayed, run_id="r_new")
    from_lists = diff_traces(a, b)
    from_tables = diff_traces(_as_table(a), _as_table(b))
    assert from_lists.changes and any(c.kind == "args_changed" for c in from_lists.changes)
    assert [c.to_json() for c in from_tables.changes] == [c.to_json() for c in from_lists.changes]
    assert from_tables.changes == from_lists.changes
    assert from_tables.to_text() == from_lists.to_text()


def test_a_change_between_tables_makes_its_events_when_read() -> None:
    a = _as_table(trace([("llm", {"prompt": i}) for i in range(3)]))
    b = _as_table(trace([("llm", {"prompt": i, "v": 2}) for i in range(3)], run_id="r_new"))
    changes = diff_traces(a, b).changes
    assert [c.kind for c in changes] == ["args_changed"] * 3
    assert isinstance(a.steps, EventTable) and isinstance(b.steps, EventTable)
    assert a.steps._made is None and b.steps._made is None  # nothing made to decide or count
    change = changes[1]
    assert change.recorded is a.steps[1] and change.replayed is b.steps[1]
    assert change.recorded is not None and change.recorded.args_sha != change.replayed.args_sha
    assert "args" in change.note and change.tool == "llm"
    copied = dataclasses.replace(change, note="edited")  # still a StepChange like any other
    assert copied.recorded is change.recorded and copied.note == "edited"
