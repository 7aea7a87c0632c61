"""The most common agent shape, recorded and replayed for real: the openai SDK's tool loop.

A local OpenAI-compatible server (and an Anthropic-compatible one) on 127.0.0.1 answers chat
completions with ``tool_calls`` and then a final answer; the tools call a local HTTP service
through ``requests`` and ``httpx``; tool results go back with plain ``json.dumps(result)``, and
the assistant message object is appended as the SDK returned it. Twelve runs are recorded (sync
and async clients, one failing on a 503), the servers are stopped, and every run is replayed
offline with no shared redaction key, from the store and from exported cassettes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
import requests
from _local_http import LocalService

from replay import Recorder, current_run_id, replay_run
from replay.cassette import cassette_from_store, write_cassette
from replay.store import Store

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look an order up.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "status_page",
            "description": "Read the status page.",
            "parameters": {"type": "object", "properties": {"code": {"type": "integer"}}},
        },
    },
]
ANTHROPIC_TOOLS = [
    {
        "name": "get_order",
        "description": "Look an order up.",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    }
]

SYNC_TICKETS = [f"Where is my order A-{1000 + i}?" for i in range(6)] + [
    "Orders A-2001 and A-2002 both late"
]
ASYNC_TICKETS = ["Async: where is A-3001?", "Async: A-3002 and A-3003 please"]
FAILING_TICKET = "Nothing loads, check the status page"
ANTHROPIC_TICKETS = ["Where is A-4001?", "A-4002 and A-4003 are missing"]


class Agents:
    """The agent code under test, bound to one Recorder and one service URL."""

    def __init__(self, rec: Recorder, url: str, *, fixed: bool = False) -> None:
        self.url = url
        self.fixed = fixed
        self.async_run_ids: list[str | None] = []
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key="test-key", max_retries=0)
        self.anthropic = anthropic.Anthropic(base_url=url, api_key="test-key", max_retries=0)

        @rec.model("openai.chat")
        def chat(messages: list, tools: list) -> Any:
            return self.client.chat.completions.create(
                model="local", messages=messages, tools=tools
            )

        @rec.model("openai.chat")
        async def achat(messages: list, tools: list) -> Any:
            # One client per call: each recorded run has its own event loop (asyncio.run).
            async with openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key="test-key", max_retries=0
            ) as client:
                return await client.chat.completions.create(
                    model="local", messages=messages, tools=tools
                )

        @rec.model("anthropic.messages")
        def claude(messages: list, tools: list) -> Any:
            return self.anthropic.messages.create(
                model="local", max_tokens=200, messages=messages, tools=tools
            )

        @rec.tool("get_order")
        def get_order(order_id: str) -> dict:
            return requests.get(f"{self.url}/orders/{order_id}", timeout=5).json()

        @rec.tool("get_order")
        async def aget_order(order_id: str) -> dict:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{self.url}/orders/{order_id}")).json()

        @rec.tool("status_page")
        def status_page(code: int) -> dict:
            resp = httpx.get(f"{self.url}/status/{code}")
            resp.raise_for_status()
            return resp.json()

        def run_tool(name: str, args: dict) -> Any:
            if name == "get_order":
                return get_order(**args)
            for attempt in range(2):
                try:
                    return status_page(**args)
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code not in (429, 503):
                        raise
                    if (
                        self.fixed
                    ):  # the fix: a 503 is an answer to report, not a reason to retry and crash
                        return {
                            "unavailable": exc.response.status_code,
                            "retry_after": exc.response.headers.get("retry-after"),
                        }
                    if attempt == 1:
                        raise
            raise AssertionError("unreachable")

        def system() -> dict:
            return {
                "role": "system",
                "content": f"Today is {dt.date.today().isoformat()}. Be brief.",
            }

        @rec.agent("openai-support")
        def handle(ticket: str) -> str:
            messages: list[Any] = [system(), {"role": "user", "content": ticket}]
            for _ in range(4):
                resp = chat(messages, TOOLS)
                msg = resp.choices[0].message
                if not msg.tool_calls:
                    return msg.content or ""
                messages.append(msg)
                for call in msg.tool_calls:
                    result = run_tool(call.function.name, json.loads(call.function.arguments))
                    if isinstance(result, dict) and "unavailable" in result:
                        return f"Service unavailable, retry after {result['retry_after']}s"
                    messages.append(
                        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                    )
            return "gave up"

        @rec.agent("openai-support-async")
        async def ahandle(ticket: str) -> str:
            # rec.last_run_id is per context and asyncio.run runs in a copy: keep the id here.
            self.async_run_ids.append(current_run_id())
            messages: list[Any] = [system(), {"role": "user", "content": ticket}]
            for _ in range(4):
                resp = await achat(messages, TOOLS)
                msg = resp.choices[0].message
                if not msg.tool_calls:
                    return msg.content or ""
                messages.append(msg)
                results = await asyncio.gather(
                    *(aget_order(**json.loads(c.function.arguments)) for c in msg.tool_calls)
                )
                for call, result in zip(msg.tool_calls, results, strict=True):
                    messages.append(
                        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                    )
            return "gave up"

        @rec.agent("anthropic-support")
        def handle_claude(ticket: str) -> str:
            messages: list[Any] = [{"role": "user", "content": ticket}]
            for _ in range(4):
                resp = claude(messages, ANTHROPIC_TOOLS)
                uses = [b for b in resp.content if b.type == "tool_use"]
                if not uses:
                    return "".join(b.text for b in resp.content if b.type == "text")
                messages.append({"role": "assistant", "content": resp.content})
                messages.append(
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": u.id,
                                "content": json.dumps(get_order(**u.input)),
                            }
                            for u in uses
                        ],
                    }
                )
            return "gave up"

        self.handle, self.ahandle, self.handle_claude = handle, ahandle, handle_claude


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Twelve openai-loop runs and two anthropic-loop runs recorded against local servers, then the
    servers stopped.
    """
    root = tmp_path_factory.mktemp("sdk")
    db = root / "rec.db"
    rec = Recorder(db)
    runs: dict[str, list[str]] = {"sync": [], "async": [], "failing": [], "anthropic": []}
    outputs: dict[str, Any] = {}
    with LocalService() as svc:
        agents = Agents(rec, svc.url)
        for ticket in SYNC_TICKETS:
            outputs[ticket] = agents.handle(ticket)
            runs["sync"].append(rec.last_run_id)
        for ticket in ASYNC_TICKETS:
            outputs[ticket] = asyncio.run(agents.ahandle(ticket))
        runs["async"] = list(agents.async_run_ids)
        with pytest.raises(httpx.HTTPStatusError):
            agents.handle(FAILING_TICKET)
        runs["failing"].append(rec.last_run_id)
        for ticket in ANTHROPIC_TICKETS:
            outputs[ticket] = agents.handle_claude(ticket)
            runs["anthropic"].append(rec.last_run_id)
        url = svc.url
    rec.close()
    cassettes = root / "cassettes"
    with Store(db) as store:
        for rid in [rid for ids in runs.values() for rid in ids]:
            write_cassette(cassette_from_store(store, rid), cassettes / f"{rid}.json")
    return {"db": db, "runs": runs, "outputs": outputs, "url": url, "cassettes": cassettes}


@pytest.fixture()
def offline(recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Agents:
    """The same agent code on a fresh Recorder, the servers down and no shared redaction key."""
    monkeypatch.delenv("REPLAY_REDACTION_KEY", raising=False)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{recorded['url']}/orders/A-1", timeout=2)
    rec = Recorder(recorded["db"].parent / "unused.db")
    yield Agents(rec, recorded["url"])
    rec.close()


def test_recording_covers_the_loop(recorded: dict[str, Any]) -> None:
    """Twelve openai runs were recorded (sync, async, one failing with a 503) and each made model
    and tool steps.
    """
    runs = recorded["runs"]
    assert len(runs["sync"]) + len(runs["async"]) + len(runs["failing"]) >= 10
    with Store(recorded["db"]) as store:
        failing = store.get_run(runs["failing"][0])
        assert failing.stop_reason == "error"
        steps = [e for e in store.events(failing.run_id) if e.kind == "tool_result"]
        assert [e.error for e in steps] == ["httpx.HTTPStatusError[503]"] * 2
        for rid in runs["sync"] + runs["async"]:
            kinds = [e.kind for e in store.events(rid)]
            assert kinds.count("model_result") == 2 and "tool_result" in kinds


@pytest.mark.parametrize("source", ["store", "cassette"])
def test_every_unchanged_run_replays_identically(
    recorded: dict[str, Any], offline: Agents, source: str
) -> None:
    """Offline, with no shared key, every recorded run replays with an empty diff and the same
    answer.
    """
    runs = recorded["runs"]
    agent_for = {
        "sync": offline.handle,
        "failing": offline.handle,
        "async": offline.ahandle,
        "anthropic": offline.handle_claude,
    }
    for kind, ids in runs.items():
        for rid in ids:
            src = str(recorded["cassettes"] / f"{rid}.json") if source == "cassette" else rid
            res = replay_run(src, db=recorded["db"], agent=agent_for[kind])
            assert res.diff.is_empty, f"{kind} run {rid}:\n{res.diff}"
            if kind == "failing":
                assert isinstance(res.exception, httpx.HTTPStatusError)
                assert res.exception.response.status_code == 503
            else:
                assert res.exception is None, res.exception
                assert res.output == recorded["outputs"][_ticket(kind, ids.index(rid))]


def _ticket(kind: str, i: int) -> str:
    return {"sync": SYNC_TICKETS, "async": ASYNC_TICKETS, "anthropic": ANTHROPIC_TICKETS}[kind][i]


def test_a_fix_changes_exactly_what_it_should(recorded: dict[str, Any], offline: Agents) -> None:
    """The retry fix removes the second status-page call and the crash in the failing run, and
    nothing else anywhere.
    """
    rec = Recorder(recorded["db"].parent / "fixed.db")
    fixed = Agents(rec, recorded["url"], fixed=True)
    try:
        res = replay_run(recorded["runs"]["failing"][0], db=recorded["db"], agent=fixed.handle)
        assert res.exception is None and res.output == "Service unavailable, retry after 7s"
        assert res.diff.stop_reason_before == "error" and res.diff.stop_reason_after == "completed"
        changed = [(c.kind, (c.recorded or c.replayed).tool) for c in res.diff.changes]
        assert changed == [("missing_call", "status_page")], str(res.diff)
        for rid in recorded["runs"]["sync"]:
            same = replay_run(rid, db=recorded["db"], agent=fixed.handle)
            assert same.diff.is_empty, str(same.diff)
    finally:
        rec.close()
