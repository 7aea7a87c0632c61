"""`EventTable`: a run's events as rows, read as columns, made `Event`s only when read."""

from __future__ import annotations

from typing import Any

import pytest

from replay.event_table import EVENT_FIELDS, EventTable
from replay.models import Event, Usage
from replay.store_base import EVENT_COLUMNS


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
