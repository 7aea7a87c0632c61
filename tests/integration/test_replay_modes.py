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
        run_id, agent=agent, db=rec.db, stubs={"crm.lookup": lambda customer_id: {}}, stub_mode="miss"
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
