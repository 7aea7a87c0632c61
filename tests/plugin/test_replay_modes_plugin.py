"""Replay modes from pytest: marker stub_mode, match and live; --replay-match, --replay-live."""

from __future__ import annotations

from typing import Any


def test_marker_stub_mode_miss_replays_recorded_calls_and_stubs_new_ones(project: Any) -> None:
    """A fix that changes the email's body is answered by the stub; the lookup still replays."""
    run_id, _ = project.cassette(project.ONE_EMAIL)
    project.write_agent('send(customer["id"], "your refund was issued today")')
    project.pytester.makepyfile(
        test_fix=f"""
        import pytest

        SENT = []

        def fake_send(to, body):
            SENT.append(body)
            return {{"sent": "stub"}}

        @pytest.mark.replay(
            "cassettes/{run_id}.json", stubs={{"email.send": fake_send}}, stub_mode="miss"
        )
        def test_fix(replayed):
            assert SENT == ["your refund was issued today"]
            assert replayed.exception is None
            assert [s.tool for s in replayed.steps] == ["crm.lookup", "email.send"]
        """
    )
    project.pytester.runpytest().assert_outcomes(passed=1)


MODEL_AGENT = """
from replay import Recorder

rec = Recorder("replay.db")
PROMPT = "{prompt}"


@rec.model("llm")
def draft(prompt: str) -> str:
    return "refund on its way"


@rec.tool("email.send")
def send(to: str, body: str) -> dict:
    return {{"sent": True}}


@rec.agent("model-agent")
def handle(ticket: dict) -> str:
    reply = draft(PROMPT + " " + ticket["customer_id"])
    send(ticket["customer_id"], reply)
    return reply
"""


def test_replay_match_option_answers_a_changed_prompt(project: Any) -> None:
    """`--replay-match llm=sequence` answers a model whose prompt a fix changed, marked."""
    import importlib
    import sys

    (project.path / "pyproject.toml").write_text('[tool.agent-replay]\nagents = ["model_agent"]\n')
    project.pytester.makepyfile(model_agent=MODEL_AGENT.format(prompt="be brief"))
    mod = importlib.import_module("model_agent")
    try:
        mod.handle({"customer_id": "c-1"})
        run_id = mod.rec.last_run_id
        mod.rec.flush()
    finally:
        mod.rec.close()
        sys.modules.pop("model_agent", None)
    project.pytester.makepyfile(model_agent=MODEL_AGENT.format(prompt="be brief and kind"))
    for stale in project.path.glob("__pycache__/model_agent.*.pyc"):
        stale.unlink()
    strict = project.pytester.runpytest("--replay", run_id, "--replay-db", "replay.db")
    strict.stdout.fnmatch_lines(["*UnrecordedCall*"])
    loose = project.pytester.runpytest(
        "--replay", run_id, "--replay-db", "replay.db", "--replay-match", "llm=sequence"
    )
    loose.stdout.fnmatch_lines(["*args changed, answered from recording*"])
    loose.stdout.no_fnmatch_line("*UnrecordedCall*")


def test_marker_live_runs_the_tool_for_real_and_marks_it(project: Any) -> None:
    """`@pytest.mark.replay(..., live=["crm.*"])` runs the CRM tool's body; the email replays."""
    run_id, _ = project.cassette(project.ONE_EMAIL)
    project.pytester.makepyfile(
        test_live=f"""
        import pytest

        @pytest.mark.replay("cassettes/{run_id}.json", live=["crm.*"])
        def test_live(replayed):
            assert replayed.marks == {{1: "live"}}
            assert [s.tool for s in replayed.steps] == ["crm.lookup", "email.send"]
            assert replayed.diff.is_empty
        """
    )
    project.pytester.runpytest().assert_outcomes(passed=1)


def test_replay_live_option_runs_the_tool_for_real(project: Any) -> None:
    """`--replay-live crm.lookup` runs the changed CRM tool for real: its new answer shows."""
    run_id = project.record(project.ONE_EMAIL)
    project.write_agent(project.ONE_EMAIL)
    path = project.path / f"{project.module}.py"
    path.write_text(path.read_text().replace('"plan": "pro"', '"plan": "free"'))
    for stale in project.path.glob(f"__pycache__/{project.module}.*.pyc"):
        stale.unlink()
    replayed = project.pytester.runpytest("--replay", run_id, "--replay-db", "replay.db")
    replayed.assert_outcomes(passed=1)  # answered from the recording: the change is not seen
    live = project.pytester.runpytest(
        "--replay", run_id, "--replay-db", "replay.db", "--replay-live", "crm.lookup"
    )
    live.assert_outcomes(failed=1)
    live.stdout.fnmatch_lines(["*crm.lookup*live*"])
