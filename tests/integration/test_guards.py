"""Guards end a run with their stop reason and raise StopRun inside the agent."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from replay import Recorder, StopRun
from replay.store import Store


@pytest.fixture
def rec(tmp_path: Path) -> Any:
    r = Recorder(tmp_path / "replay.db")
    yield r
    r.close()


def finished(rec: Recorder) -> tuple[Any, list[Any]]:
    rec.flush()
    with Store(rec.db) as s:
        # An async agent run by asyncio.run() ends in the task's context: take the newest run.
        run = s.get_run(rec.last_run_id) if rec.last_run_id else s.runs(limit=1)[0]
        return run, s.events(run.run_id)


def test_max_steps_stops_the_run(rec: Recorder) -> None:
    """The call past max_steps raises StopRun and the run ends with max_steps."""

    @rec.tool("t")
    def t(i: int) -> int:
        return i

    @rec.agent("a", max_steps=3)
    def handle() -> None:
        for i in range(10):
            t(i)

    with pytest.raises(StopRun) as info:
        handle()
    assert info.value.stop_reason == "max_steps"
    run, events = finished(rec)
    assert run.stop_reason == "max_steps" and run.tool_calls == 3
    assert [e.stop_reason for e in events if e.kind == "stop"] == ["max_steps"]


def test_max_repeats_detects_a_loop(rec: Recorder) -> None:
    """The same tool with the same args more than max_repeats times ends the run with
    loop_detected.
    """

    @rec.tool("http.get")
    def get(url: str) -> str:
        return "429"

    @rec.agent("a", max_repeats=2)
    def handle() -> None:
        get("/other")
        while True:
            get("/orders/1")

    with pytest.raises(StopRun, match="loop_detected"):
        handle()
    run, _ = finished(rec)
    assert run.stop_reason == "loop_detected" and run.tool_calls == 3


def test_budget_guards_stop_on_tokens_and_spend(rec: Recorder) -> None:
    """Tokens past max_tokens, or spend past max_spend_usd, end the run with budget_exceeded."""

    @rec.model("llm")
    def llm(p: str) -> dict:
        return {"usage": {"prompt_tokens": 400, "completion_tokens": 100}}

    @rec.agent("a", max_tokens=1200)
    def by_tokens() -> None:
        for _ in range(5):
            llm("x")

    with pytest.raises(StopRun, match="budget_exceeded"):
        by_tokens()
    run, events = finished(rec)
    assert run.stop_reason == "budget_exceeded" and run.usage.tokens_in == 1200

    with pytest.raises(StopRun, match="budget_exceeded"), rec.run("b", max_spend_usd=1.0):
        rec.usage(cost_usd=0.6)
        rec.usage(cost_usd=0.6)
    run, _ = finished(rec)
    assert run.stop_reason == "budget_exceeded"


def test_a_tripped_run_refuses_further_tool_calls(rec: Recorder) -> None:
    """After a guard trips, an agent that swallows StopRun cannot keep calling tools in that run."""
    calls = []

    @rec.tool("t")
    def t() -> None:
        calls.append(1)

    @rec.agent("a", max_steps=1)
    def handle() -> str:
        t()
        try:
            t()
        except StopRun:
            pass
        with pytest.raises(StopRun):
            t()
        return "gave up"

    assert handle() == "gave up"
    run, _ = finished(rec)
    assert calls == [1] and run.stop_reason == "max_steps"


def test_sync_tool_timeout_interrupts_the_call_in_the_main_thread(rec: Recorder) -> None:
    """A sync tool past tool_timeout_s is interrupted (SIGALRM in the main thread) and the run ends
    tool_timeout.
    """
    finished_work = []

    @rec.tool("slow")
    def slow() -> None:
        time.sleep(5)
        finished_work.append(1)

    @rec.agent("a", tool_timeout_s=0.1)
    def handle() -> None:
        slow()

    t0 = time.monotonic()
    with pytest.raises(StopRun, match="tool_timeout"):
        handle()
    assert time.monotonic() - t0 < 3
    run, events = finished(rec)
    step = next(e for e in events if e.kind == "tool_result")
    assert run.stop_reason == "tool_timeout" and step.error == "TimeoutError" and not finished_work


def test_sync_tool_timeout_off_the_main_thread_discards_a_late_result(rec: Recorder) -> None:
    """Off the main thread the call is not interrupted: it finishes, its result is discarded, the
    run ends tool_timeout.
    """
    out: list[Any] = []

    @rec.tool("slow")
    def slow() -> str:
        time.sleep(0.3)
        return "late"

    @rec.agent("a", tool_timeout_s=0.05)
    def handle() -> str:
        return slow()

    def worker() -> None:
        try:
            handle()
        except StopRun as exc:
            out.append(exc.stop_reason)

    th = threading.Thread(target=worker)
    th.start()
    th.join(5)
    assert out == ["tool_timeout"]
    assert threading.active_count() >= 1  # no helper thread was started for the call


def test_async_tool_timeout(rec: Recorder) -> None:
    """An async tool past tool_timeout_s is cancelled and the run ends tool_timeout."""

    @rec.tool("slow")
    async def slow() -> None:
        await asyncio.sleep(5)

    @rec.agent("a", tool_timeout_s=0.05)
    async def handle() -> None:
        await slow()

    with pytest.raises((StopRun, asyncio.TimeoutError)):
        asyncio.run(handle())
    run, _ = finished(rec)
    assert run.stop_reason == "tool_timeout"


def test_unknown_guard_name_is_refused(rec: Recorder) -> None:
    """A misspelt guard is refused at decoration time, naming the valid guards."""
    with pytest.raises(TypeError, match="max_repeats"):
        rec.agent("a", max_repeat=3)
