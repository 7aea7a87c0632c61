"""Faults on async tools: the replay layer's `acall` faults them, with or without an async stub."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from replay import Recorder, replay_run
from replay.faults import ToolHTTPError, ToolTimeout

SEEN: list[Any] = []


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Any, str, Any]:
    """An async agent calling an async tool twice, recorded once."""
    rec = Recorder(tmp_path / "rec.db")

    @rec.tool("orders.lookup")
    async def lookup(order_id: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"id": order_id, "status": "shipped"}

    @rec.agent("async-orders")
    async def agent(first: str) -> str:
        SEEN.clear()
        for order_id in (first, "B-2"):
            try:
                SEEN.append(await lookup(order_id))
            except Exception as exc:  # noqa: BLE001 - the test reads what the tool raised
                SEEN.append(exc)
        return "done"

    async def record() -> str:
        await agent("A-1")
        return rec.last_run_id

    run_id = asyncio.run(record())
    rec.flush()
    yield rec, run_id, agent
    rec.close()


def test_async_tool_answers_the_fault_error(recorded: tuple[Any, str, Any]) -> None:
    """A faulted async call raises the fault error in the agent, the diff names the fault, the next
    call replays."""
    rec, run_id, agent = recorded
    res = replay_run(run_id, db=rec.db, agent=agent, faults="orders.lookup=503@first:1")
    assert isinstance(SEEN[0], ToolHTTPError) and SEEN[0].status_code == 503
    assert SEEN[1] == {"id": "B-2", "status": "shipped"}
    assert [s.status for s in res.calls("orders.lookup")] == ["error", "ok"]
    assert "(fault: 503@first:1)" in res.diff.to_text(width=200, color=False)


def test_async_stub_is_faulted_too(recorded: tuple[Any, str, Any]) -> None:
    """An async stub does not escape a fault: timeout raises, drift drops a field of its answer."""
    rec, run_id, agent = recorded

    async def stub(order_id: str) -> dict[str, Any]:
        return {"id": order_id, "status": "stubbed"}

    stubs = {"orders.lookup": stub}
    replay_run(run_id, db=rec.db, agent=agent, stubs=stubs, faults="orders.lookup=timeout@call:2")
    assert SEEN[0] == {"id": "A-1", "status": "stubbed"} and isinstance(SEEN[1], ToolTimeout)
    replay_run(
        run_id, db=rec.db, agent=agent, stubs=stubs, faults="orders.lookup=drift:field=status"
    )
    assert SEEN == [{"id": "A-1"}, {"id": "B-2"}]


@pytest.mark.parametrize("stubbed", [False, True])
def test_a_slow_fault_on_the_real_clock_lets_the_event_loop_run(
    tmp_path: Path, stubbed: bool
) -> None:
    """With ``clock="real"`` a ``slow`` fault on an async tool (answered from the recording or by
    an async stub) waits with the event loop free: a task running beside it keeps ticking, and
    the call is answered as recorded after the delay."""
    rec = Recorder(tmp_path / "slow.db")

    @rec.tool("orders.lookup")
    async def lookup(order_id: str) -> dict[str, Any]:
        return {"id": order_id, "status": "shipped"}

    ticks: list[int] = []

    async def ticker() -> None:
        for i in range(100):
            ticks.append(i)
            await asyncio.sleep(0.02)

    @rec.agent("slow-orders")
    async def agent() -> Any:
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        ticks.clear()
        answer = await lookup("A-1")
        during = len(ticks)
        task.cancel()
        return {"answer": answer, "ticks": during}

    async def record() -> str | None:
        await agent()
        return rec.last_run_id

    run_id = asyncio.run(record())
    rec.flush()

    async def stub(order_id: str) -> dict[str, Any]:
        return {"id": order_id, "status": "shipped"}

    res = replay_run(
        run_id,
        db=rec.db,
        agent=agent,
        clock="real",
        stubs={"orders.lookup": stub} if stubbed else None,
        faults="orders.lookup=slow:300ms",
    )
    rec.close()
    assert res.exception is None, res.exception
    assert res.output["answer"] == {"id": "A-1", "status": "shipped"}
    assert res.output["ticks"] >= 5  # a blocking sleep would have let none run
