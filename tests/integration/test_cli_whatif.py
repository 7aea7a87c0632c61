"""``replay run --fault`` and ``--repeat`` on the demo's incident cassettes, through the real entry
point."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from replay.cli import cli

ROOT = Path(__file__).resolve().parents[2]
INCIDENT = "cassettes/incidents/r_01m80g7tce74qmb7zv96pmd1t5.json"
HEALTHY = "cassettes/r_01m80gmdyh3mzb4kap3c6mfw3a.json"


@pytest.fixture(autouse=True)
def _in_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the project root, whose pyproject.toml names the demo agent's modules."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("SUPPORT_AGENT_VERSION", raising=False)


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["run", *args])
    return res.exit_code, res.output


#: The README's example (section "What-if replay"), run as written.
README_EXAMPLE = """
$ replay run cassettes/incidents/r_01m80g7tce74qmb7zv96pmd1t5.json --fault http.get=503 --fault http.get=timeout
r_01m80g7tce74qmb7zv96pmd1t5 [http.get=503]  coped: stopped escalated after 3 tool call(s)
r_01m80g7tce74qmb7zv96pmd1t5 [http.get=timeout]  coped: stopped escalated after 3 tool call(s)
2 runs replayed: 2 matched, 0 diverged, 0 blessed
"""  # noqa: E501 - the README's line, verbatim


def test_one_replay_per_fault_and_exit_0_when_the_agent_copes() -> None:
    """Each --fault is its own replay; the fix escalates under each: the README's output, exit 0."""
    command, *expected = README_EXAMPLE.strip().splitlines()
    res = CliRunner().invoke(cli, shlex.split(command)[2:])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == expected


def test_exit_1_when_the_agent_does_not_cope() -> None:
    """A healthy run recorded no error, so a 503 is a generic ToolHTTPError the demo does not catch:
    exit 1."""
    code, out = _run(HEALTHY, "--fault", "http.get=503")
    assert code == 1
    assert "did not cope: the agent raised ToolHTTPError under the fault" in out
    code, out = _run(
        HEALTHY, "--fault", "http.get=503:client=examples.support_agent.upstream:HTTPStatusError"
    )
    assert code == 0, out


def test_json_report_carries_the_fault() -> None:
    """--json lists each faulted replay with its fault, problems and stop reason."""
    code, out = _run(INCIDENT, "--fault", "http.get=429:retry-after=2@first:1", "--json")
    assert code == 0
    run = json.loads(out)["runs"][0]
    assert run["fault"] == "http.get=429:retry-after=2@first:1"
    assert (run["problems"], run["stop_reason"]) == ([], "escalated")


def test_bad_fault_exits_2_naming_it() -> None:
    """A fault that does not parse stops before any replay, exit 2, the message naming the spec."""
    res = CliRunner().invoke(cli, ["run", HEALTHY, "--fault", "http.get=teapot"])
    assert res.exit_code == 2
    assert "fault 'http.get=teapot': unknown fault 'teapot'" in res.output


def test_repeat_reports_a_stable_run() -> None:
    """--repeat 3 on the demo's run: one step sequence, exit 0."""
    code, out = _run(HEALTHY, "--repeat", "3")
    assert code == 0, out
    assert "r_01m80gmdyh3mzb4kap3c6mfw3a stable over 3 replays" in out


def test_console_script_runs_a_fault() -> None:
    """The installed `replay` command replays under a fault in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SUPPORT_AGENT_VERSION", None)
    proc = subprocess.run(
        [sys.executable, "-m", "replay", "run", INCIDENT, "--fault", "http.get=503"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "coped: stopped escalated" in proc.stdout
