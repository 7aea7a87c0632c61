"""``--replay-report FILE`` (ini ``replay_report``): a JSON or Markdown report of the replays."""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture
def gate(project: Any) -> dict[str, str]:
    """One cassette that matches the current agent and one that diverges from it."""
    stale = project.record(project.TWO_EMAILS)
    project.export(stale)
    ok = project.record(project.ONE_EMAIL, customer_id="c-2")
    project.export(ok)
    project.write_agent(project.ONE_EMAIL)
    return {"stale": stale, "ok": ok}


def test_help_lists_the_flag(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay-report and its ini option."""
    pytester.runpytest("--help").stdout.fnmatch_lines(
        ["*--replay-report=FILE*", "*replay_report (string)*"]
    )


def test_json_report_has_the_counts_and_each_run(project: Any, gate: dict[str, str]) -> None:
    """A .json report holds the summary counts and, per run, its status and diff."""
    result = project.pytester.runpytest("--replay-all", "--replay-report", "out/replay.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["replay report: out/replay.json"])
    data = json.loads((project.path / "out" / "replay.json").read_text())
    assert data["summary"] == {"replayed": 2, "matched": 1, "diverged": 1, "blessed": 0, "error": 0}
    runs = {r["run_id"]: r for r in data["runs"]}
    assert runs[gate["ok"]]["status"] == "matched"
    stale = runs[gate["stale"]]
    assert stale["status"] == "diverged"
    assert stale["diff"]["first_divergence"]["kind"] == "missing_call"
    assert stale["source"] == f"cassettes/{gate['stale']}.json"


def test_markdown_report_is_a_ci_comment(project: Any, gate: dict[str, str]) -> None:
    """A .md report has one table line per run and the diverged run's diff folded in <details>."""
    project.pytester.runpytest("--replay-all", "--replay-report", "replay.md")
    text = (project.path / "replay.md").read_text()
    assert text.startswith("## agent-replay: 1 diverged, 0 errors\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`r_" in line]
    assert len(rows) == 2
    assert any(gate["ok"] in r and "matched" in r for r in rows)
    assert any(gate["stale"] in r and "diverged at step 3" in r for r in rows)
    assert text.count("<details>") == 1
    assert f"<details><summary>diff of <code>{gate['stale']}</code></summary>" in text


def test_ini_option_writes_the_report(project: Any, gate: dict[str, str]) -> None:
    """ini replay_report writes the report without the flag."""
    project.pytester.makeini("[pytest]\nreplay_report = reports/gate.md\n")
    project.pytester.runpytest("--replay-all")
    assert (project.path / "reports" / "gate.md").read_text().startswith("## agent-replay:")


def test_unknown_suffix_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A report file whose suffix names no format stops the run before any work, listing the
    formats."""
    result = pytester.runpytest("--replay-report", "out.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --replay-report out.txt: the suffix names the format; use .json, or .md*"]
    )
