"""What-if replay modes on the tool-layer seam: stubs that answer only what the recording cannot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replay import Recorder, UnrecordedCall, replay_run


def _project(tmp_path: Path) -> tuple[Recorder, Any, dict[str, Any]]:
    """A recorder, an agent that looks a customer up and emails them, and the knobs a fix turns."""
    rec = Recorder(str(tmp_path / "replay.db"))
    mode: dict[str, Any] = {"subject": "refund", "real_sends": []}

    @rec.tool("crm.lookup")
    def lookup(customer_id: str) -> dict[str, str]:
        return {"id": customer_id, "plan": "pro"}

    @rec.tool("email.send")
    def send(to: str, subject: str) -> dict[str, Any]:
        mode["real_sends"].append(subject)
        return {"sent": True, "subject": subject}

    @rec.agent("mailer")
    def agent(customer_id: str) -> list[Any]:
        customer = lookup(customer_id)
        first = send(customer["id"], mode["subject"])
        second = send(customer["id"], "follow-up")
        return [first, second]

    return rec, agent, mode


def _record(tmp_path: Path) -> tuple[Recorder, Any, dict[str, Any], str]:
    rec, agent, mode = _project(tmp_path)
    agent("c-1")
    rec.flush()
    run_id = rec.last_run_id
    assert run_id is not None
    mode["real_sends"].clear()
    return rec, agent, mode, run_id


def test_stub_mode_miss_answers_only_calls_the_recording_has_no_answer_for(tmp_path: Path) -> None:
    """With stub_mode="miss", a changed call goes to the stub and unchanged ones replay."""
    rec, agent, mode, run_id = _record(tmp_path)
    mode["subject"] = "refund issued"  # the fix changes the first email's args
    stubbed: list[str] = []

    def fake_send(to: str, subject: str) -> dict[str, Any]:
        stubbed.append(subject)
        return {"sent": "stub", "subject": subject}

    res = replay_run(
        run_id, agent=agent, db=rec.db, stubs={"email.send": fake_send}, stub_mode="miss"
    )
    assert stubbed == ["refund issued"]
    assert res.output == [
        {"sent": "stub", "subject": "refund issued"},
        {"sent": True, "subject": "follow-up"},
    ]
    assert mode["real_sends"] == []
    assert res.stop_reason == "completed"
    rec.close()


def test_stub_mode_always_answers_every_call_of_the_tool(tmp_path: Path) -> None:
    """The default stub mode still answers every call of a stubbed tool, recorded or not."""
    rec, agent, _mode, run_id = _record(tmp_path)
    stubbed: list[str] = []
    res = replay_run(
        run_id,
        agent=agent,
        db=rec.db,
        stubs={"email.send": lambda to, subject: stubbed.append(subject) or {"sent": "stub"}},
    )
    assert stubbed == ["refund", "follow-up"]
    assert res.output == [{"sent": "stub"}, {"sent": "stub"}]
    rec.close()


def test_stub_mode_miss_without_a_stub_still_raises_unrecorded(tmp_path: Path) -> None:
    """A changed call of a tool that has no stub is still an unrecorded call in miss mode."""
    rec, agent, mode, run_id = _record(tmp_path)
    mode["subject"] = "refund issued"
    res = replay_run(
        run_id,
        agent=agent,
        db=rec.db,
        stubs={"crm.lookup": lambda customer_id: {}},
        stub_mode="miss",
    )
    assert isinstance(res.exception, UnrecordedCall)
    assert not res.diff.is_empty
    rec.close()


def test_bad_stub_mode_is_refused_naming_the_choices(tmp_path: Path) -> None:
    """An unknown stub_mode is refused before the agent runs, naming the two modes."""
    rec, agent, _mode, run_id = _record(tmp_path)
    with pytest.raises(ValueError, match="'always'.*'miss'"):
        replay_run(run_id, agent=agent, db=rec.db, stubs={}, stub_mode="sometimes")
    rec.close()


def test_recorder_takes_guards_as_one_object_or_as_keywords(tmp_path: Path) -> None:
    """Recorder(guards=Guards(...)) and the older keyword form set the same limits."""
    from replay.recorder import Guards

    a = Recorder(str(tmp_path / "a.db"), guards=Guards(max_steps=3))
    b = Recorder(str(tmp_path / "b.db"), max_steps=3)
    assert a.guards == b.guards == Guards(max_steps=3)
    with pytest.raises(TypeError, match="max_stepz"):
        Recorder(str(tmp_path / "c.db"), max_stepz=3)
    for r in (a, b):
        r.close()


MODEL_AGENT = """
from replay import Recorder

rec = Recorder("replay.db")
PROMPT = {"text": "summarise the ticket"}
CALLS = {"crm": 0, "llm": 0}


@rec.model("llm")
def llm(prompt: str) -> dict:
    CALLS["llm"] += 1
    return {"answer": "refund", "prompt_len": len(prompt)}


@rec.tool("crm.lookup")
def lookup(customer_id: str) -> dict:
    CALLS["crm"] += 1
    return {"id": customer_id, "plan": "pro", "calls": CALLS["crm"]}


@rec.agent("model-agent")
def handle(customer_id: str) -> str:
    customer = lookup(customer_id)
    first = llm(PROMPT["text"] + " for " + customer["plan"])
    second = llm("now write the email")
    return first["answer"] + "/" + second["answer"]
"""


@pytest.fixture
def model_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A recorded run of an agent that calls a CRM tool then a model twice, in its own folder."""
    import importlib
    import sys
    import uuid

    name = f"model_agent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODEL_AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(name)
    mod.handle("c-1")
    mod.rec.flush()
    run_id = mod.rec.last_run_id
    mod.CALLS.update(crm=0, llm=0)
    yield mod, run_id, f"{name}:handle"
    mod.rec.close()
    sys.modules.pop(name, None)


def test_match_sequence_answers_a_changed_prompt_from_the_recording(model_agent: Any) -> None:
    """With match={"llm": "sequence"} a changed prompt still replays, marked in the diff."""
    mod, run_id, _ = model_agent
    mod.PROMPT["text"] = "summarise the ticket politely"
    strict = replay_run(run_id, agent=mod.handle, db=mod.rec.db)
    assert isinstance(strict.exception, UnrecordedCall)
    res = replay_run(run_id, agent=mod.handle, db=mod.rec.db, match={"llm": "sequence"})
    assert res.exception is None and res.output == "refund/refund"
    assert mod.CALLS["llm"] == 0
    assert list(res.marks.values()) == ["args changed, answered from recording"]
    changed = [c for c in res.diff.changes if c.kind == "args_changed"]
    assert len(changed) == 1 and "answered from recording" in changed[0].note
    assert "args changed, answered from recording" in res.diff.to_text()


def test_match_ignore_answers_the_next_recorded_call_of_the_tool(tmp_path: Path) -> None:
    """An ignore rule answers a call whose only change is an idempotency key from the recording."""
    rec = Recorder(str(tmp_path / "replay.db"))
    key = {"n": 0}
    sent: list[str] = []

    @rec.tool("email.send")
    def send(to: str, idempotency_key: str) -> dict[str, Any]:
        sent.append(to)
        return {"sent": True, "to": to}

    @rec.agent("mailer")
    def agent(to: str) -> dict[str, Any]:
        key["n"] += 1
        return send(to, idempotency_key=f"key-{key['n']}")

    agent("c-1")
    rec.flush()
    run_id = rec.last_run_id
    sent.clear()
    res = replay_run(
        run_id, agent=agent, db=rec.db, match={"email.send": {"ignore": ["idempotency_key"]}}
    )
    assert res.exception is None and res.output == {"sent": True, "to": "c-1"}
    assert sent == []
    assert list(res.marks.values()) == ["args changed, answered from recording"]
    rec.close()


def test_bad_match_rule_is_refused_naming_the_tool(tmp_path: Path) -> None:
    """A match rule that is not sequence/exact/ignore is refused before the agent runs."""
    rec, agent, _mode, run_id = _record(tmp_path)
    with pytest.raises(ValueError, match=r"match\['email.send'\].*sequence"):
        replay_run(run_id, agent=agent, db=rec.db, match={"email.send": "fuzzy"})
    rec.close()


def test_live_tool_runs_for_real_and_is_marked_while_the_rest_replays(model_agent: Any) -> None:
    """live={"crm.*"} runs the CRM tool's body; the model still answers from the recording."""
    mod, run_id, _ = model_agent
    mod.CALLS["crm"] = 10  # the live CRM now answers something else than it recorded
    res = replay_run(run_id, agent=mod.handle, db=mod.rec.db, live={"crm.*"})
    assert res.exception is None and res.output == "refund/refund"
    assert mod.CALLS == {"crm": 11, "llm": 0}
    assert res.marks == {1: "live"}
    assert [s.tool for s in res.steps] == ["crm.lookup", "llm", "llm"]
    assert res.steps[0].output_sha is not None
    # The live answer differs from the recorded one (a call counter): the diff says so, marked.
    (change,) = [c for c in res.diff.changes if c.replayed is not None and c.replayed.step_id == 1]
    assert "live" in change.note


def test_cli_replay_run_takes_match_and_live(model_agent: Any) -> None:
    """`replay run --match llm=sequence` replays a changed prompt; `--live` runs the tool."""
    import json

    from click.testing import CliRunner

    from replay.cli import cli

    mod, run_id, entry = model_agent
    mod.PROMPT["text"] = "summarise the ticket politely"
    db = str(mod.rec.db)
    res = CliRunner().invoke(
        cli,
        ["run", run_id, "--db", db, "--agent", entry, "--match", "llm=sequence", "--json"],
    )
    data = json.loads(res.output)
    assert "answered from recording" in json.dumps(data)
    assert mod.CALLS["llm"] == 0
    bad = CliRunner().invoke(cli, ["run", run_id, "--db", db, "--match", "llm"])
    assert bad.exit_code == 2 and "TOOL=sequence" in bad.output
    live = CliRunner().invoke(
        cli, ["run", run_id, "--db", db, "--agent", entry, "--live", "crm.*", "--json"]
    )
    assert mod.CALLS["crm"] == 1, live.output


def _prompt_agent(tmp_path: Path) -> tuple[Recorder, Any, dict[str, Any]]:
    """An agent that sends a model each prompt of its input in turn (sync and async)."""
    rec = Recorder(str(tmp_path / "replay.db"))
    knobs: dict[str, Any] = {"prompts": []}

    @rec.model("llm")
    def llm(prompt: str) -> dict[str, str]:
        return {"answer": "ok"}

    @rec.model("allm")
    async def allm(prompt: str) -> dict[str, str]:
        return {"answer": "ok"}

    @rec.agent("prompter")
    def agent(n: int) -> int:
        if "hook" in knobs:
            knobs["hook"]()
        return sum(len(llm(p)["answer"]) for p in knobs["prompts"])

    @rec.agent("aprompter")
    async def aagent(n: int) -> int:
        return sum([len((await allm(p))["answer"]) for p in knobs["prompts"]])

    knobs["agents"] = {"llm": agent, "allm": aagent}
    return rec, knobs, knobs["agents"]


def _record_prompts(rec: Recorder, agent: Any, knobs: dict[str, Any], prompts: list[str]) -> str:
    import asyncio
    import inspect

    from replay.store import Store

    knobs["prompts"] = prompts
    out = agent(len(prompts))
    if inspect.isawaitable(out):
        asyncio.run(out)  # its run ends in asyncio.run's context: not `rec.last_run_id`
    rec.flush()
    with Store(rec.db) as store:
        return store.runs(limit=1)[0].run_id


def _args_shas(rec: Recorder, run_id: str) -> list[str | None]:
    from replay.store import Store

    with Store(rec.db) as store:
        return [e.args_sha for e in store.events(run_id) if e.tool is not None]


@pytest.mark.parametrize(("tool", "every"), [("llm", 7), ("allm", 7), ("llm", 1)])
def test_match_sequence_hashes_changed_args_as_the_recorder_does(
    tmp_path: Path, tool: str, every: int
) -> None:
    """Under match="sequence" the replayed steps keep the args_sha the recorder gives their args,
    PII redacted first, also where the check of many args at once finds some (every 7th, or
    every one, holds an email) and the check goes on in smaller batches; the sha of raw args is
    nowhere."""
    import hashlib

    from replay.hashing import canonical_bytes

    rec, knobs, agents = _prompt_agent(tmp_path)
    agent = agents[tool]
    old = [f"ticket {i}: where is my order?" for i in range(120)]
    new = [
        f"ticket {i}: mail ana{i}@example.com" if i % every == 0 else f"ticket {i}: where is it?"
        for i in range(120)
    ]
    recorded = _record_prompts(rec, agent, knobs, old)
    expected = _args_shas(rec, _record_prompts(rec, agent, knobs, new))  # the recorder's shas
    res = replay_run(recorded, agent=agent, db=rec.db, match={tool: "sequence"})
    assert res.exception is None
    assert [s.args_sha for s in res.steps] == expected
    assert len(res.marks) == 120 and len(res.diff.changes) == 120
    raw = {hashlib.sha256(canonical_bytes({"prompt": p})).hexdigest()[:24] for p in new if "@" in p}
    shown = res.diff.to_text() + str(res.diff.to_json())
    assert not raw & set(expected)
    assert not any(sha[:8] in shown for sha in raw)
    rec.close()


def test_match_sequence_leaves_args_with_pii_unmarked_when_they_did_not_change(
    tmp_path: Path,
) -> None:
    """Args that hold an email and did not change hash to the recorded args_sha once redacted:
    not marked changed, and the replay matches."""
    rec, knobs, agents = _prompt_agent(tmp_path)
    prompts = [f"write to ana{i}@example.com" for i in range(40)]
    recorded = _record_prompts(rec, agents["llm"], knobs, prompts)
    res = replay_run(recorded, agent=agents["llm"], db=rec.db, match={"llm": "sequence"})
    assert res.exception is None
    assert res.marks == {} and res.diff.is_empty, res.diff.to_text()
    assert [s.args_sha for s in res.steps] == _args_shas(rec, recorded)
    rec.close()


def test_match_sequence_names_an_extra_call_by_its_redacted_args_sha(tmp_path: Path) -> None:
    """A call past the recorded ones is unrecorded, named by the args_sha the recorder would
    give it (the email redacted), not by a hash of the raw args."""
    rec, knobs, agents = _prompt_agent(tmp_path)
    recorded = _record_prompts(rec, agents["llm"], knobs, ["hello"])
    expected = _args_shas(rec, _record_prompts(rec, agents["llm"], knobs, ["mail ana@example.com"]))
    knobs["prompts"] = ["hello again", "mail ana@example.com"]
    res = replay_run(recorded, agent=agents["llm"], db=rec.db, match={"llm": "sequence"})
    assert isinstance(res.exception, UnrecordedCall)
    assert res.exception.args_sha == expected[0]
    rec.close()


def test_a_long_replay_freezes_the_recording_and_leaves_the_collector_as_it_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From `GC_FREEZE_EVENTS` events on, the loaded recording is kept out of the collector's
    scans while the agent runs and unfrozen after (with what the replay built, into the oldest
    generation), also when the agent raises; an application's own freeze is neither joined nor
    undone."""
    import gc

    import replay.replayer as replayer

    monkeypatch.setattr(replayer, "GC_FREEZE_EVENTS", 3)
    rec, knobs, agents = _prompt_agent(tmp_path)
    recorded = _record_prompts(rec, agents["llm"], knobs, ["a", "b", "c"])
    seen: list[int] = []

    def hook() -> None:
        seen.append(gc.get_freeze_count())
        if knobs.get("boom"):
            raise RuntimeError("agent failed")

    knobs["hook"] = hook
    assert gc.get_freeze_count() == 0
    res = replay_run(recorded, agent=agents["llm"], db=rec.db)
    assert res.exception is None and seen[-1] > 0 and gc.get_freeze_count() == 0
    # what the replay built (the result, its diff) is in the oldest generation: no young
    # collection walks it
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(res) in oldest and id(res.diff) in oldest
    knobs["boom"] = True
    res = replay_run(recorded, agent=agents["llm"], db=rec.db)
    assert isinstance(res.exception, RuntimeError) and gc.get_freeze_count() == 0
    knobs["boom"] = False
    gc.freeze()  # the application's own (a forking server's)
    try:
        mine = gc.get_freeze_count()  # frozen objects that die leave it: it only shrinks
        replay_run(recorded, agent=agents["llm"], db=rec.db)
        assert 0 < seen[-1] <= mine and 0 < gc.get_freeze_count() <= mine
    finally:
        gc.unfreeze()
    rec.close()
