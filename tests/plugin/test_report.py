"""The terminal summary, the failure report of an item, and reports for CI (JUnit, unwritable
files)."""

from __future__ import annotations

import json
from typing import Any

import pytest


def test_no_summary_without_replay_options(pytester: pytest.Pytester) -> None:
    """A session that replays nothing prints no agent-replay summary."""
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*runs replayed*")


def test_summary_counts_every_status_and_ends_with_the_next_command(project: Any) -> None:
    """The count line has matched, diverged and blessed, and the last line is the exact bless
    command."""
    stale = project.record(project.TWO_EMAILS)
    project.export(stale)
    project.export(project.record(project.ONE_EMAIL, customer_id="c-2"))
    project.write_agent(project.ONE_EMAIL)
    result = project.pytester.runpytest("--replay-all", "-k", "support-agent")
    result.stdout.re_match_lines(
        [
            r"=+ 2 runs replayed: 1 matched, 1 diverged, 0 blessed =+",
            (
                r"bless the new behaviour with: pytest --replay-all -k support-agent "
                r"--basetemp=\S+ --replay-update"
            ),
        ]
    )
    lines = result.stdout.lines
    summary_at = max(i for i, line in enumerate(lines) if "runs replayed" in line)
    assert lines[summary_at + 1].startswith("bless the new behaviour with: ")


def test_failure_report_is_the_diff_without_python_frames(project: Any) -> None:
    """The item's failure section is the diff text, headed by the run, with no source lines or
    frames."""
    run_id, cassette = project.cassette(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    result = project.pytester.runpytest("--replay", str(cassette))
    result.stdout.re_match_lines(
        [
            rf"_+ replay {run_id} _+",
            rf"replay diverged from recording {run_id} at step 3",
            r"first divergence: missing call",
            r"  recorded  step 3  email.send  args [0-9a-f]{8}  ok",
        ]
    )
    out = result.stdout.str()
    # The failure section only: in-process pytester runs may add unrelated warning summaries.
    failure = (
        out.split("= FAILURES =", 1)[1]
        .split("short test summary info", 1)[0]
        .split("warnings summary", 1)[0]
    )
    assert f"replay diverged from recording {run_id}" in failure
    assert "def runtest" not in failure and "\nE " not in failure and ".py:" not in failure


def test_junit_xml_carries_the_diff(project: Any) -> None:
    """--junitxml puts the diff into the failure of the replay's testcase, for CI annotations."""
    run_id, cassette = project.cassette(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    project.pytester.runpytest("--replay", str(cassette), "--junitxml", "junit.xml")
    xml = (project.path / "junit.xml").read_text()
    assert f'name="{run_id}"' in xml
    assert f"replay diverged from recording {run_id} at step 3" in xml


def test_report_without_any_replay_is_still_written(pytester: pytest.Pytester) -> None:
    """--replay-report alone writes an empty report, so a CI step that posts it never finds it
    missing."""
    pytester.makepyfile("def test_plain():\n    assert True\n")
    pytester.runpytest("--replay-report", "replay.json").assert_outcomes(passed=1)
    data = json.loads((pytester.path / "replay.json").read_text())
    assert data == {
        "runs": [],
        "summary": {"blessed": 0, "diverged": 0, "error": 0, "matched": 0, "replayed": 0},
    }


def test_unwritable_report_fails_the_session(pytester: pytest.Pytester) -> None:
    """A report that cannot be written is named in the summary and turns a green run red (exit
    1)."""
    pytester.makepyfile("def test_plain():\n    assert True\n")
    (pytester.path / "blocker").write_text("a file, not a folder")
    result = pytester.runpytest("--replay-report", "blocker/replay.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["cannot write the replay report */blocker/replay.json: *"])
