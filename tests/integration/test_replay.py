"""Replay against a real store and real cassettes: the fixed tool layer, entrypoints, errors."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from replay import UnrecordedCall, replay_run
from replay.cassette import cassette_from_store, import_cassette, load_cassette, write_cassette
from replay.errors import CassetteDecodeError, EntrypointError, RunNotFoundError
from replay.store import Store
from replay.store_api import is_server_url, open_store

AGENT_SOURCE = """
import os, socket
from dataclasses import dataclass
from pydantic import BaseModel
from replay import Recorder, StopRun
import replay

rec = Recorder(os.environ["AGENT_DB"])
BODY_CALLS = []
MODE = {"emails": 1, "extra_args": False, "connect": False}

class Order(BaseModel):
    id: int
    total: float

@dataclass
class Customer:
    name: str
    tier: str

class Upstream429(Exception):
    def __init__(self, status, detail):
        super().__init__(f"{status} {detail}")

@rec.tool("kb.search")
def kb_search(query: str) -> list:
    BODY_CALLS.append("kb.search")
    return [f"article about {query}"]

@rec.tool("orders.get")
def get_order(order_id: int) -> Order:
    BODY_CALLS.append("orders.get")
    return Order(id=order_id, total=12.5)

@rec.tool("crm.get")
def get_customer(cid: int) -> Customer:
    BODY_CALLS.append("crm.get")
    return Customer(name="Ann", tier="gold")

@rec.tool("http.get")
def http_get(url: str) -> dict:
    BODY_CALLS.append("http.get")
    if "flaky" in url:
        raise TimeoutError("upstream timed out")
    if "strict" in url:
        raise Upstream429(429, "slow down")
    return {"url": url, "status": 200}

@rec.tool("email.send")
def send_email(to: str, body: str) -> dict:
    BODY_CALLS.append("email.send")
    return {"sent": True}

@rec.agent("support-agent", versions={"model": "m-1", "prompt": "p-1"})
def handle(ticket: dict) -> str:
    kb_search(ticket["subject"])
    order = get_order(ticket["order"])
    assert isinstance(order, Order), type(order)
    customer = get_customer(1)
    assert isinstance(customer, Customer), type(customer)
    try:
        http_get("https://flaky.invalid/x")
    except TimeoutError:
        pass
    try:
        http_get("https://strict.invalid/x")
    except Exception as exc:
        replay_error = type(exc).__name__
    if MODE["connect"]:
        socket.create_connection(("127.0.0.1", 9))
    for _ in range(MODE["emails"]):
        send_email(ticket["email"], "body" + ("!" if MODE["extra_args"] else ""))
    return f"{customer.name}: {order.total}"

@rec.agent("async-agent")
async def ahandle(q: str) -> str:
    r = kb_search(q)
    return r[0]

def plain(ticket):
    return kb_search(ticket["subject"])

replay.register_agent("plain", plain)  # recorded with rec.run(): registered by hand for replay
"""


@pytest.fixture
def agent_mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Any:
    """The test agent module, recording into a new store on each backend."""
    name = f"agent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(AGENT_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AGENT_DB", store_url)
    mod = importlib.import_module(name)
    yield mod
    mod.rec.close()
    sys.modules.pop(name, None)


@pytest.fixture
def recorded(agent_mod: Any) -> tuple[Any, str]:
    agent_mod.handle({"subject": "refund", "order": 42, "email": "ann@example.com"})
    agent_mod.rec.flush()
    agent_mod.BODY_CALLS.clear()
    return agent_mod, agent_mod.rec.last_run_id


def test_unchanged_code_replays_to_an_empty_diff(recorded: tuple[Any, str]) -> None:
    """Replaying a run against unchanged code reproduces its steps, output and stop reason."""
    mod, rid = recorded
    res = replay_run(rid, db=mod.rec.db)
    assert res.diff.is_empty, res.diff.to_text()
    assert res.stop_reason == "completed" and res.output == "Ann: 12.5"
    assert [s.tool for s in res.steps] == [
        "kb.search",
        "orders.get",
        "crm.get",
        "http.get",
        "http.get",
        "email.send",
    ]
    assert res.replayed.replay_of == rid and res.recorded.run_id == rid
    assert len(res.calls("http.get")) == 2


def test_real_tool_bodies_are_never_entered(recorded: tuple[Any, str]) -> None:
    """During a replay no tool body runs: every answer comes from the recording."""
    mod, rid = recorded
    replay_run(rid, db=mod.rec.db)
    assert mod.BODY_CALLS == []


def test_sockets_cannot_connect_during_a_replay(recorded: tuple[Any, str]) -> None:
    """A connection attempted inside a replayed agent is refused, and the run ends with error."""
    mod, rid = recorded
    mod.MODE["connect"] = True
    res = replay_run(rid, db=mod.rec.db)
    assert type(res.exception).__name__ == "NetworkBlockedError"
    assert "blocked a connection" in str(res.exception)
    assert res.stop_reason == "error" and not res.diff.is_empty


def test_recorded_errors_are_raised_again(recorded: tuple[Any, str]) -> None:
    """A recorded builtin error comes back as its class, and so does a user error whose __init__
    takes other arguments.
    """
    mod, rid = recorded
    seen: list[BaseException] = []
    original = mod.http_get.__wrapped__

    def agent(ticket: dict) -> None:
        for url in ("https://flaky.invalid/x", "https://strict.invalid/x"):
            try:
                mod.kb_search(ticket["subject"]) if False else None
                mod.http_get(url)
            except BaseException as exc:  # noqa: BLE001
                seen.append(exc)

    replay_run(rid, db=mod.rec.db, agent=agent, on_unrecorded="none")
    assert isinstance(seen[0], TimeoutError) and str(seen[0]) == "upstream timed out"
    assert type(seen[1]) is mod.Upstream429 and str(seen[1]) == "429 slow down"
    assert original is not None


def test_outputs_are_rebuilt_as_the_recorded_types(recorded: tuple[Any, str]) -> None:
    """Pydantic models and dataclasses come back as their classes (the agent asserts isinstance)."""
    mod, rid = recorded
    res = replay_run(rid, db=mod.rec.db)
    assert res.exception is None, res.exception


def test_an_unrecorded_call_raises_inside_the_agent_and_shows_in_the_diff(
    recorded: tuple[Any, str],
) -> None:
    """New args after a fix raise UnrecordedCall naming the tool and the recorded calls; the diff
    shows it.
    """
    mod, rid = recorded
    mod.MODE["extra_args"] = True
    res = replay_run(rid, db=mod.rec.db)
    assert isinstance(res.exception, UnrecordedCall)
    msg = str(res.exception)
    assert "email.send" in msg and res.exception.args_sha in msg
    with open_store(mod.rec.db) as s:
        recorded_email = [e for e in s.events(rid) if e.tool == "email.send"][0]
    assert recorded_email.args_sha in msg
    assert "stubs=" in msg
    assert not res.diff.is_empty and res.stop_reason == "error"


def test_stubs_answer_chosen_tools(recorded: tuple[Any, str]) -> None:
    """A stub answers its tool in the replay, even for args the recording does not have."""
    mod, rid = recorded
    mod.MODE["extra_args"] = True
    mod.MODE["emails"] = 2
    sent: list[tuple[str, str]] = []
    res = replay_run(
        rid,
        db=mod.rec.db,
        stubs={"email.send": lambda to, body: sent.append((to, body)) or {"sent": 1}},
    )
    assert res.exception is None
    assert len(sent) == 2 and len(res.calls("email.send")) == 2
    kinds = {c.kind for c in res.diff.changes}
    assert kinds & {"extra_call", "args_changed"}


def test_a_duplicate_email_is_an_extra_call(recorded: tuple[Any, str]) -> None:
    """Sending the same email twice after a change shows as one extra call with the same args."""
    mod, rid = recorded
    mod.MODE["emails"] = 2
    res = replay_run(rid, db=mod.rec.db, stubs={"email.send": lambda to, body: {"sent": True}})
    extra = [c for c in res.diff.changes if c.kind == "extra_call"]
    assert len(extra) == 1 and extra[0].replayed.tool == "email.send"


def test_tool_renamed_since_the_recording_lists_the_recorded_tools(
    recorded: tuple[Any, str],
) -> None:
    """A call of a tool the recording never saw says so and lists the recorded tool names."""
    mod, rid = recorded

    @mod.rec.tool("kb.lookup")
    def kb_lookup(query: str) -> list:
        return []

    res = replay_run(rid, db=mod.rec.db, agent=lambda ticket: kb_lookup(ticket["subject"]))
    msg = str(res.exception)
    assert "no call of kb.lookup" in msg and "kb.search" in msg and "email.send" in msg


def test_cassette_export_is_stable_and_replays(recorded: tuple[Any, str], tmp_path: Path) -> None:
    """Exporting twice gives identical bytes, and the cassette replays like the store."""
    mod, rid = recorded
    with open_store(mod.rec.db) as s:
        a = write_cassette(cassette_from_store(s, rid), tmp_path / "c" / f"{rid}.json")
        first = a.read_bytes()
        write_cassette(cassette_from_store(s, rid), a)
    assert a.read_bytes() == first
    data = json.loads(first)
    assert data["format"] == "agent-replay-cassette" and data["version"] == 1
    res = replay_run(str(a))
    assert res.diff.is_empty, res.diff.to_text()


def test_export_refuses_to_overwrite_a_different_file(
    recorded: tuple[Any, str], tmp_path: Path
) -> None:
    """An existing cassette with other content is not overwritten without force."""
    mod, rid = recorded
    target = tmp_path / "x.json"
    target.write_text("{}")
    with open_store(mod.rec.db) as s:
        cas = cassette_from_store(s, rid)
    with pytest.raises(FileExistsError, match="--force"):
        write_cassette(cas, target)
    write_cassette(cas, target, force=True)
    assert load_cassette(target).run.run_id == rid


def test_import_twice_adds_nothing(recorded: tuple[Any, str], tmp_path: Path) -> None:
    """Importing a cassette into a store adds the run once; a second import is a no-op."""
    mod, rid = recorded
    with open_store(mod.rec.db) as s:
        path = write_cassette(cassette_from_store(s, rid), tmp_path / "c.json")
    with Store(tmp_path / "other.db") as other:
        assert import_cassette(other, path) is True
        assert import_cassette(other, path) is False
        assert other.count_runs() == 1
        assert len(other.events(rid)) == len(load_cassette(path).events)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["events"][3].pop("kind"), "events[3].kind: Field required"),
        (
            lambda d: d.update(version=9),
            "cassette format version 9; this agent-replay reads up to 1: upgrade it",
        ),
        (lambda d: d.update(format="vcr"), "format: expected 'agent-replay-cassette'"),
        (
            lambda d: d["run"].update(stop_reason="Bad Reason"),
            "run.stop_reason: Value error, invalid stop reason",
        ),
    ],
    ids=["missing-field", "newer-version", "other-format", "bad-stop-reason"],
)
def test_broken_cassettes_name_the_file_and_the_field(
    recorded: tuple[Any, str], tmp_path: Path, mutate: Any, message: str
) -> None:
    """A broken cassette raises CassetteDecodeError naming the file and the field."""
    mod, rid = recorded
    with open_store(mod.rec.db) as s:
        path = write_cassette(cassette_from_store(s, rid), tmp_path / "c.json")
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(CassetteDecodeError) as info:
        load_cassette(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_not_json_and_missing_cassettes(tmp_path: Path) -> None:
    """A cassette that is not JSON or does not exist is named with the problem."""
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(CassetteDecodeError, match="bad.json: not valid JSON"):
        load_cassette(bad)
    with pytest.raises(CassetteDecodeError, match="no such cassette file"):
        replay_run(str(tmp_path / "missing.json"))


def test_unknown_run_id_names_the_store(recorded: tuple[Any, str]) -> None:
    """An unknown run id names the store, its run count and `replay runs`."""
    mod, _ = recorded
    with open_store(mod.rec.db) as s:
        name = s.display_name  # the file's name, or the URL without its password
    with pytest.raises(RunNotFoundError) as info:
        replay_run("r_nope", db=mod.rec.db)
    assert str(info.value) == f"no run 'r_nope' in {name} (1 run; list them with `replay runs`)"
    if not is_server_url(mod.rec.db):
        assert name == "replay.db"


def test_entrypoint_errors_name_the_entrypoint_and_the_fix(recorded: tuple[Any, str]) -> None:
    """A missing module, a missing attribute and a nested function each say what to pass instead."""
    mod, rid = recorded
    with pytest.raises(
        EntrypointError, match=r"module 'no_such_mod' cannot be imported .*pass agent="
    ):
        replay_run(rid, db=mod.rec.db, agent="no_such_mod:handle")
    with pytest.raises(EntrypointError, match=r"has no attribute 'gone' .*renamed or moved"):
        replay_run(rid, db=mod.rec.db, agent=f"{mod.__name__}:gone")
    with pytest.raises(EntrypointError, match="not of the form module:function"):
        replay_run(rid, db=mod.rec.db, agent="handle")


def test_changed_signature_names_the_parameter(recorded: tuple[Any, str]) -> None:
    """When the agent's signature no longer fits the recorded input, the error names the
    parameter."""
    mod, rid = recorded

    def handle(ticket: dict, channel: str) -> None: ...

    with pytest.raises(
        EntrypointError, match=r"requires parameter\(s\) 'channel' that the recorded input"
    ):
        replay_run(rid, db=mod.rec.db, agent=handle)

    def handle2(request: dict) -> None: ...

    with pytest.raises(
        EntrypointError, match=r"has parameter\(s\) 'ticket' that handle2\(\) no longer accepts"
    ):
        replay_run(rid, db=mod.rec.db, agent=handle2)


async def _run_and_id(fn: Any, arg: str, rec: Any) -> str:
    await fn(arg)
    return rec.last_run_id  # set in this task's context


def test_async_agents_are_awaited(agent_mod: Any) -> None:
    """An async agent is replayed and awaited automatically."""
    import asyncio

    rid = asyncio.run(_run_and_id(agent_mod.ahandle, "billing", agent_mod.rec))
    agent_mod.rec.flush()
    res = replay_run(rid, db=agent_mod.rec.db)
    assert res.diff.is_empty and res.output == "article about billing"


def test_rec_run_is_replayed_with_its_input_value(agent_mod: Any) -> None:
    """A run recorded with rec.run(name, input=value) replays as agent(value)."""
    with agent_mod.rec.run(
        "plain", input={"subject": "x"}, entrypoint=f"{agent_mod.__name__}:plain"
    ) as run:
        run.set_output(agent_mod.plain({"subject": "x"}))
    agent_mod.rec.flush()
    res = replay_run(run.run_id, db=agent_mod.rec.db)
    assert res.diff.is_empty and res.output == ["article about x"]


def test_order_insensitive_mode_ignores_reordering(recorded: tuple[Any, str]) -> None:
    """With ordered=False, the same calls in another order are not a divergence."""
    mod, rid = recorded

    def reordered(ticket: dict) -> str:
        customer = mod.get_customer(1)
        order = mod.get_order(ticket["order"])
        mod.kb_search(ticket["subject"])
        for url in ("https://strict.invalid/x", "https://flaky.invalid/x"):
            try:
                mod.http_get(url)
            except Exception:  # noqa: BLE001
                pass
        mod.send_email(ticket["email"], "body")
        return f"{customer.name}: {order.total}"

    strict = replay_run(rid, db=mod.rec.db, agent=reordered)
    assert not strict.diff.is_empty
    loose = replay_run(rid, db=mod.rec.db, agent=reordered, ordered=False)
    assert loose.diff.is_empty, loose.diff.to_text()


def test_replay_changes_nothing_in_the_store(recorded: tuple[Any, str]) -> None:
    """A replay (even a diverging one) adds no run to the production store."""
    mod, rid = recorded
    mod.MODE["emails"] = 3
    replay_run(rid, db=mod.rec.db)
    with open_store(mod.rec.db) as s:
        assert s.count_runs() == 1


def test_shared_redaction_key_keeps_code_constants_replayable_from_cassettes(
    agent_mod: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With REPLAY_REDACTION_KEY set when recording and replaying, a PII constant in the agent's
    code matches.
    """
    monkeypatch.setenv("REPLAY_REDACTION_KEY", "team-secret")

    def constant_sender(ticket: dict) -> dict:
        return agent_mod.send_email("billing@shop.example", "hello")

    with agent_mod.rec.run("sender", input={"x": 1}) as run:
        constant_sender({"x": 1})
    agent_mod.rec.flush()
    with open_store(agent_mod.rec.db) as s:
        path = write_cassette(cassette_from_store(s, run.run_id), tmp_path / "c.json")
    assert "billing@shop.example" not in path.read_text()
    assert replay_run(str(path), agent=constant_sender).diff.is_empty
    monkeypatch.delenv("REPLAY_REDACTION_KEY")
    assert isinstance(replay_run(str(path), agent=constant_sender).exception, UnrecordedCall)


def test_replay_run_async_inside_a_running_loop(agent_mod: Any) -> None:
    """replay_run_async replays an async agent from inside an event loop that is already running."""
    import asyncio

    from replay.replayer import replay_run_async

    async def main() -> Any:
        rid = await _run_and_id(agent_mod.ahandle, "returns", agent_mod.rec)
        agent_mod.rec.flush()
        return await replay_run_async(rid, db=agent_mod.rec.db)

    res = asyncio.run(main())
    assert res.diff.is_empty and res.output == "article about returns"
