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
