"""Parallel tool calls: recorded as concurrent groups and replayed without false divergences.

Three real ways agents run tools at the same time: pydantic-ai (its FunctionModel answering with
two tool calls in one response; pydantic-ai runs sync tools in worker threads), `asyncio.gather`
and a `ThreadPoolExecutor` with `replay.propagate`. Recording: the tool bodies meet at a barrier
or sleep, so their calls really are in flight together. Replay: answers are instant and the
agent's own jitter shuffles the order, which must not count as a divergence; real changes must.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import replay
from replay import Recorder, replay_run
from replay.cassette import cassette_from_store, write_cassette

pydantic_ai = pytest.importorskip("pydantic_ai")  # in the test extra; skipped only without it

from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart  # noqa: E402
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402

REPLAYS = 100


def _steps(events: list[Any]) -> list[tuple[int | None, str | None, int | None]]:
    return [(e.step_id, e.tool, e.concurrent_group) for e in events if e.step_id is not None]


# ---- a pydantic-ai agent ------------------------------------------------------------------------


class PydanticAgent:
    """A support agent on pydantic-ai: turn 1 asks for a customer and the weather at once,
    turn 2 charges, turn 3 answers. `plan` mutates what the model asks for (a changed agent)."""

    def __init__(self, db: Path, *, record_model: bool = False) -> None:
        self.rec = rec = Recorder(db)
        self.plan = "same"
        self.barrier: threading.Barrier | None = None
        self.threads: set[str] = set()

        def meet() -> None:
            self.threads.add(threading.current_thread().name)
            if self.barrier is not None:
                self.barrier.wait()  # both calls of the turn are in flight: a real overlap

        @rec.tool("db.customer")
        def db_customer(cid: int) -> dict:
            meet()
            return {"id": cid, "name": "Ann", "tier": "gold"}

        @rec.tool("weather.get")
        def get_weather(city: str) -> str:
            meet()
            return f"sunny in {city}"

        @rec.tool("billing.charge")
        def charge(cid: int, cents: int) -> dict:
            return {"charged": cents, "cid": cid}

        @rec.model("llm.decide")
        def decide(turn: int, cid: int, city: str) -> dict:
            """The model's answer, OpenAI-shaped: the tool calls of one turn in one response."""
            calls = [
                [("db_customer", {"cid": cid}), ("get_weather", {"city": city})],
                [("charge", {"cid": cid, "cents": 500})],
            ]
            todo = calls[turn] if turn < len(calls) else []
            return {
                "choices": [
                    {
                        "message": {
                            "tool_calls": [
                                {"function": {"name": n, "arguments": a}} for n, a in todo
                            ]
                        }
                    }
                ]
            }

        def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            turn = sum(isinstance(m, ModelResponse) for m in messages)
            cid, city = self.ticket
            if record_model:  # the model call is a recorded step: replay answers it
                calls = decide(turn, cid, city)["choices"][0]["message"]["tool_calls"]
                parts = [
                    ToolCallPart(c["function"]["name"], c["function"]["arguments"]) for c in calls
                ]
                turns = [parts, []] if turn == 0 else [[], parts]
                if turn == 1 and self.plan == "move":  # the changed agent defers the weather a turn
                    turns[1] = [ToolCallPart("get_weather", {"city": city}), *parts]
                first, second = turns
            else:
                first = [
                    ToolCallPart("db_customer", {"cid": cid}),
                    ToolCallPart("get_weather", {"city": city}),
                ]
                second = [ToolCallPart("charge", {"cid": cid, "cents": 500})]
            if self.plan == "drop":
                first = first[:1]
            elif self.plan == "duplicate":
                first = [*first, ToolCallPart("get_weather", {"city": city})]
            elif self.plan == "args":
                first = [first[0], ToolCallPart("get_weather", {"city": city + "-x"})]
            elif self.plan == "move":
                first = first[:1] if record_model else first
                if not record_model:
                    first, second = first[:1], [first[1], *second]
            plan = [first, second]
            if turn < len(plan):
                random.shuffle(plan[turn])  # the model may list the calls in any order
                return ModelResponse(parts=plan[turn])
            results = [
                p.content
                for m in messages
                for p in getattr(m, "parts", [])
                if isinstance(p, ToolReturnPart)
            ]
            return ModelResponse(parts=[TextPart(f"done after {len(results)} tool results")])

        agent = Agent(FunctionModel(model))
        for fn in (db_customer, get_weather, charge):
            agent.tool_plain(fn)
        self.ticket = (0, "")

        @rec.agent("pydantic-support")
        def handle(cid: int, city: str) -> str:
            self.ticket = (cid, city)
            return agent.run_sync(f"help customer {cid}").output

        self.handle = handle


@pytest.fixture()
def pyd(tmp_path: Path) -> PydanticAgent:
    a = PydanticAgent(tmp_path / "pyd.db")
    yield a
    a.rec.close()


def _record(rec: Recorder, fn: Any, inputs: list[tuple[Any, ...]]) -> list[str]:
    ids = []
    for args in inputs:
        fn(*args)
        ids.append(rec.last_run_id)
    rec.flush()
    return ids


def test_pydantic_ai_parallel_calls_replay_without_divergence(
    pyd: PydanticAgent, tmp_path: Path
) -> None:
    """100 replays of pydantic-ai runs with two tool calls per response: 0 diverged, groups kept."""
    pyd.barrier = threading.Barrier(2, timeout=10)
    ids = _record(pyd.rec, pyd.handle, [(7, "Paris"), (8, "Oslo"), (9, "Lima"), (10, "Rome")])
    assert any("worker" in t.lower() for t in pyd.threads), pyd.threads  # pydantic-ai's own threads
    store = pyd.rec.open_store()
    recorded = {rid: store.events(rid) for rid in ids}
    for events in recorded.values():
        steps = _steps(events)
        assert [t for _, t, _ in steps][2] == "billing.charge"
        assert steps[0][2] == steps[1][2] == steps[0][0] and steps[2][2] is None, steps
    pyd.barrier = None  # replay never runs tool bodies; nothing waits there
    orders: Counter[tuple[str | None, ...]] = Counter()
    diverged = 0
    for n in range(REPLAYS):
        result = replay_run(ids[n % len(ids)], agent=pyd.handle, db=store.path)
        diverged += not result.diff.is_empty
        orders[tuple(s.tool for s in result.steps)] += 1
        assert [s.concurrent_group for s in result.steps] == [1, 1, None]
    store.close()
    assert diverged == 0
    assert len(orders) == 2, orders  # both interleavings were replayed, and both matched


def test_pydantic_ai_mutations_of_a_parallel_pair_are_caught(tmp_path: Path) -> None:
    """Dropping, duplicating or changing one call of the pair, or moving it a turn later, diverges.

    The model call is a recorded step here (its response names both calls: one group, no overlap
    needed), so a call moved to the next turn is seen crossing the model call between turns.
    """
    pyd = PydanticAgent(tmp_path / "m.db", record_model=True)
    (rid,) = _record(pyd.rec, pyd.handle, [(7, "Paris")])
    steps = _steps(pyd.rec.open_store().events(rid))
    assert {t for _, t, _ in steps[1:3]} == {"db.customer", "weather.get"}, steps
    assert [g for _, _, g in steps] == [None, 2, 2, None, None, None], steps
    clean = sum(
        replay_run(rid, agent=pyd.handle, db=pyd.rec.open_store().path).diff.is_empty
        for _ in range(20)
    )
    assert clean == 20
    db = pyd.rec.open_store().path
    expected = {
        "drop": "missing_call",
        "duplicate": "extra_call",
        "args": "args_changed",
        "move": "reordered",
    }
    caught = {}
    for plan, kind in expected.items():
        pyd.plan = plan
        for _ in range(5):  # whatever order the threads take
            d = replay_run(rid, agent=pyd.handle, db=db).diff
            assert not d.is_empty, plan
            named = [c.kind for c in d.changes if c.tool == "weather.get"]
            assert named == [kind], (
                plan,
                d,
            )  # an unrecorded call also ends the run: more may follow
        caught[plan] = kind
    assert len(caught) == 4
    pyd.rec.close()


# ---- asyncio.gather -----------------------------------------------------------------------------


def _gather_agent(rec: Recorder, jitter: random.Random) -> Any:
    @rec.tool("kb.fetch")
    async def fetch(doc: str) -> dict:
        await asyncio.sleep(0.005)  # I/O: every fetch of the batch is in flight together
        return {"doc": doc, "words": len(doc)}

    @rec.tool("email.send")
    async def send(to: str, n: int) -> str:
        return f"sent {n} docs to {to}"

    async def lookup(doc: str) -> dict:
        await asyncio.sleep(jitter.random() / 1000)  # the agent's own jitter, also in replay
        return await fetch(doc)

    @rec.agent("gather-agent")
    async def handle(docs: list) -> str:
        found = await asyncio.gather(*(lookup(d) for d in docs))
        found += await asyncio.gather(*(lookup(d + "-more") for d in docs[:2]))
        return await send("ann@example.com", len(found))

    return handle


def test_asyncio_gather_replays_without_divergence(tmp_path: Path) -> None:
    """100 replays of asyncio.gather runs whose calls come in another order each time: 0
    diverged."""
    rec = Recorder(tmp_path / "g.db")
    handle = _gather_agent(rec, random.Random(1))
    for _ in range(3):
        asyncio.run(handle(["a", "bb", "ccc", "dddd"]))
    rec.flush()
    store = rec.open_store()
    ids = [r.run_id for r in store.runs()]
    steps = _steps(store.events(ids[0]))
    assert [g for _, _, g in steps] == [1, 1, 1, 1, 5, 5, None], steps
    orders = set()
    diverged = 0
    for n in range(REPLAYS):
        result = replay_run(ids[n % 3], agent=handle, db=store.path)
        diverged += not result.diff.is_empty
        orders.add(tuple(s.args_sha for s in result.steps))
    assert diverged == 0
    assert len(orders) > 3, len(orders)  # the interleaving really changed between replays
    store.close()
    rec.close()


# ---- a thread pool ------------------------------------------------------------------------------


def _pool_agent(
    rec: Recorder, jitter: random.Random, barrier: list[threading.Barrier | None]
) -> Any:
    @rec.tool("search")
    def search(q: str) -> list:
        if barrier[0] is not None:
            barrier[0].wait()
        return [q.upper()]

    @rec.tool("charge")
    def charge(n: int) -> str:
        return f"charged {n}"

    def lookup(q: str) -> list:
        time.sleep(jitter.random() / 2000)
        return search(q)

    @rec.agent("pool-agent")
    def handle(queries: list) -> str:
        with ThreadPoolExecutor(max_workers=len(queries)) as pool:
            hits = list(pool.map(replay.propagate(lookup), queries))
        return charge(len(hits))

    return handle


def test_thread_pool_replays_without_divergence_and_keeps_groups_in_a_blessed_cassette(
    tmp_path: Path,
) -> None:
    """100 replays of ThreadPoolExecutor runs: 0 diverged; a cassette of a replay keeps the
    group."""
    from replay.cassette import cassette_from_replay, load_cassette

    rec = Recorder(tmp_path / "p.db")
    barrier: list[threading.Barrier | None] = [threading.Barrier(3, timeout=10)]
    handle = _pool_agent(rec, random.Random(2), barrier)
    ids = _record(rec, handle, [(["x", "y", "z"],), (["k", "l", "m"],)])
    barrier[0] = None
    store = rec.open_store()
    assert [g for _, _, g in _steps(store.events(ids[0]))] == [1, 1, 1, None]
    cas = write_cassette(cassette_from_store(store, ids[0]), tmp_path / "run.json")
    diverged = 0
    orders = set()
    last = None
    for n in range(REPLAYS):
        source = cas if n % 2 else ids[n % 2]
        last = replay_run(str(source), agent=handle, db=store.path)
        diverged += not last.diff.is_empty
        orders.add(tuple(s.args_sha for s in last.steps))
    assert diverged == 0
    assert len(orders) > 1, len(orders)
    assert last is not None
    blessed = write_cassette(cassette_from_replay(last), tmp_path / "blessed.json", force=True)
    groups = [e.concurrent_group for e in load_cassette(blessed).steps]
    assert groups[:3] == [1, 1, 1] and groups[3] is None
    assert replay_run(str(blessed), agent=handle).diff.is_empty
    store.close()
    rec.close()


def test_a_dropped_parallel_call_in_a_thread_pool_is_caught(tmp_path: Path) -> None:
    """A fix that searches one query fewer in the pool diverges with that missing call."""
    rec = Recorder(tmp_path / "p.db")
    barrier: list[threading.Barrier | None] = [threading.Barrier(3, timeout=10)]
    handle = _pool_agent(rec, random.Random(3), barrier)
    (rid,) = _record(rec, handle, [(["x", "y", "z"],)])
    barrier[0] = None

    @rec.agent("pool-agent")
    def fewer(queries: list) -> str:
        return handle.__wrapped__(queries[:2])

    store = rec.open_store()
    d = replay_run(rid, agent=fewer, db=store.path).diff
    assert [(c.kind, c.tool) for c in d.changes] == [
        ("missing_call", "search"),
        ("args_changed", "charge"),
    ]
    store.close()
    rec.close()


def test_replay_show_brackets_a_concurrent_group(tmp_path: Path) -> None:
    """`replay show` draws a bracket over the steps of a group and counts the groups; --json has
    the field.
    """
    import json

    from click.testing import CliRunner

    from replay.cli import cli

    rec = Recorder(tmp_path / "p.db")
    barrier: list[threading.Barrier | None] = [threading.Barrier(2, timeout=10)]
    handle = _pool_agent(rec, random.Random(4), barrier)
    (rid,) = _record(rec, handle, [(["x", "y"],)])
    rec.close()
    out = CliRunner().invoke(cli, ["show", rid, "--db", str(tmp_path / "p.db")])
    assert out.exit_code == 0, out.output
    rows = [line.split() for line in out.output.splitlines() if line.strip()[:1].isdigit()]
    assert [r[2:4] for r in rows[:2]] == [["┌", "search"], ["│", "search"]], out.output
    assert rows[2][2] == "charge"  # ran alone: no bracket
    assert "concurrent  1 group(s) of parallel calls" in out.output
    data = json.loads(
        CliRunner().invoke(cli, ["show", rid, "--db", str(tmp_path / "p.db"), "--json"]).output
    )
    assert [e["concurrent_group"] for e in data["events"] if e["step_id"]] == [1, 1, None]


def test_sequential_and_nested_calls_get_no_group_and_overlaps_chain_into_one(
    tmp_path: Path,
) -> None:
    """Calls one after another get no group; a chain of overlapping calls is one group; a tool's
    own sub-calls are grouped at their level only; a model call ends what a response announced."""
    rec = Recorder(tmp_path / "s.db")
    gate = {"a": threading.Event(), "b": threading.Event()}

    @rec.tool("leaf")
    def leaf(n: int) -> int:
        return n

    inner_barrier = threading.Barrier(2, timeout=10)

    @rec.tool("inner")
    def inner(k: int) -> int:
        inner_barrier.wait()
        return k

    @rec.tool("outer")
    def outer(n: int) -> list:
        with ThreadPoolExecutor(2) as pool:  # two sub-calls in flight together, inside this step
            return list(pool.map(replay.propagate(inner), [n, n + 1]))

    @rec.tool("slow")
    def slow(name: str, wait_for: str | None, release: str | None) -> str:
        if release:
            gate[release].set()
        if wait_for:
            gate[wait_for].wait(10)
        return name

    @rec.model("llm")
    def llm(calls: int) -> dict:
        return {"choices": [{"message": {"tool_calls": [{"id": i} for i in range(calls)]}}]}

    @rec.agent("mixed")
    def handle() -> str:
        leaf(1)
        leaf(2)  # 1-2: one after another
        outer(10)  # 3, its sub-calls 4-5
        # A chain: x runs until y starts, y until z starts; x ends before z starts (no direct
        # overlap).
        with ThreadPoolExecutor(3) as pool:
            fx = pool.submit(replay.propagate(slow), "x", "a", None)
            fy = pool.submit(replay.propagate(slow), "y", "b", "a")
            fx.result()  # x is done before z starts
            fz = pool.submit(replay.propagate(slow), "z", None, "b")
            fy.result(), fz.result()
        llm(2)
        leaf(3)
        llm(0)  # a model call before the second announced call: that announcement ends
        leaf(4)
        return "ok"

    handle()
    rec.flush()
    store = rec.open_store()
    ev = {e.step_id: e for e in store.events(rec.last_run_id) if e.step_id}
    store.close()
    rec.close()
    assert [ev[i].concurrent_group for i in (1, 2, 3)] == [None, None, None]
    assert (
        ev[4].parent_step_id == ev[5].parent_step_id == 3
        and ev[4].concurrent_group == ev[5].concurrent_group == 4
    )
    chain = sorted((e for e in ev.values() if e.tool == "slow"), key=lambda e: e.step_id)
    assert (
        len({e.concurrent_group for e in chain}) == 1
        and chain[0].concurrent_group == chain[0].step_id
    )
    after = [
        e for e in sorted(ev.values(), key=lambda e: e.step_id) if e.step_id > chain[-1].step_id
    ]
    assert [(e.tool, e.concurrent_group) for e in after] == [
        ("llm", None),
        ("leaf", after[1].step_id),
        ("llm", None),
        ("leaf", None),
    ]
