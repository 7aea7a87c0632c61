"""The replayed run held in memory (`MemorySink`): what `replay.replayer` diffs against."""

from __future__ import annotations

from typing import Any

from replay.replayed_run import MemorySink
from replay.store_base import make_event_row


def _answered(run_id: str, step_id: int, tool: str = "kb.search") -> tuple[Any, ...]:
    """An answered step as `RunState.finish_ok` hands it over: Event's fields in order."""
    return (run_id, "tool_result", 1000 + step_id, step_id, tool, f"a{step_id}", f"o{step_id}", 0,
            "ok", None, None, None, None, None)  # fmt: skip


def _sink_with(*steps: tuple[Any, ...]) -> MemorySink:
    sink = MemorySink(b"k" * 32, redact_name=lambda name: name.replace("secret", "[name]"))
    for run_id in ("r_a", "r_b"):
        sink.write_rows(
            [
                make_event_row(run_id=run_id, kind="run_start", ts_ms=1000),
                make_event_row(run_id=run_id, kind="stop", ts_ms=2000, stop_reason="completed"),
            ]
        )
    for step in steps:
        sink.add_answered_step(step)
    return sink


def test_each_run_gets_its_own_answered_steps_between_its_start_and_stop() -> None:
    sink = _sink_with(_answered("r_a", 1), _answered("r_b", 1), _answered("r_a", 2))
    a, b = sink.events("r_a"), sink.events("r_b")
    assert [(e.kind, e.step_id) for e in a] == [
        ("run_start", None),
        ("tool_result", 1),
        ("tool_result", 2),
        ("stop", None),
    ]
    assert [(e.run_id, e.step_id) for e in b if e.step_id] == [("r_b", 1)]
    assert sink.events("r_a") == a  # read again: the same events


def test_steps_that_finished_out_of_order_come_back_by_step_id() -> None:
    sink = _sink_with(_answered("r_a", 2), _answered("r_a", 1), _answered("r_a", 3))
    assert [e.step_id for e in sink.events("r_a")] == [None, 1, 2, 3, None]


def test_tool_names_are_redacted_when_the_run_is_read_and_steps_keep_their_fields() -> None:
    sink = _sink_with(_answered("r_a", 1, tool="secret.lookup"))
    (step,) = [e for e in sink.events("r_a") if e.step_id]
    assert step.tool == "[name].lookup"
    assert (step.args_sha, step.output_sha, step.ts_ms, step.status) == ("a1", "o1", 1001, "ok")


def test_steps_answered_after_a_read_are_in_the_next_read() -> None:
    sink = _sink_with(_answered("r_a", 1))
    assert len(sink.events("r_a")) == 3
    sink.add_answered_step(_answered("r_a", 2))
    assert [e.step_id for e in sink.events("r_a")] == [None, 1, 2, None]


def test_error_names_are_redacted_when_the_run_is_read() -> None:
    failed = (*_answered("r_a", 2)[:8], "error", "secret.TimeoutError", *_answered("r_a", 2)[10:])
    sink = _sink_with(_answered("r_a", 1), failed)
    steps = [e for e in sink.events("r_a") if e.step_id]
    assert [(e.status, e.error) for e in steps] == [("ok", None), ("error", "[name].TimeoutError")]
    assert [e.tool for e in steps] == ["kb.search", "kb.search"]
