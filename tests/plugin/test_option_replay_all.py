"""``--replay-all``: one item per cassette under the cassettes folder (the deploy gate)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def mixed(project: Any) -> dict[str, str]:
    """A cassettes folder with two runs the current agent matches and one it no longer does."""
    stale = project.record(project.TWO_EMAILS)  # recorded by the old code: two emails
    project.export(stale)
    ok_a = project.record(project.ONE_EMAIL, customer_id="c-1")
    ok_b = project.record(project.ONE_EMAIL, customer_id="c-2")
    project.export(ok_a)
    project.export(ok_b)
    project.write_agent(project.ONE_EMAIL)  # the code checked out now
    return {"stale": stale, "ok_a": ok_a, "ok_b": ok_b}


def test_help_lists_the_flag(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay-all."""
    pytester.runpytest("--help").stdout.fnmatch_lines(
        ["*--replay-all*Replay every cassette under the cassettes*"]
    )


def test_every_cassette_is_an_item_and_the_gate_fails_on_the_diverged_one(
    project: Any, mixed: dict[str, str]
) -> None:
    """Over a mixed folder, the matching cassettes pass, the stale one fails, and the summary counts
    them."""
    result = project.pytester.runpytest("--replay-all")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"FAILED cassettes/{mixed['stale']}.json::{mixed['stale']}*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= 3 runs replayed: 2 matched, 1 diverged, 0 blessed =*",
            "bless the new behaviour with: pytest --replay-all * --replay-update",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_k_selects_runs_by_id(project: Any, mixed: dict[str, str]) -> None:
    """-k with a run id runs that replay only; the others are deselected."""
    result = project.pytester.runpytest("--replay-all", "-k", mixed["ok_a"])
    result.assert_outcomes(passed=1, deselected=2)


def test_k_selects_runs_by_agent_name(project: Any, mixed: dict[str, str]) -> None:
    """-k with the agent's name selects its runs, and -k 'not NAME' none of them."""
    project.pytester.runpytest("--replay-all", "-k", "support-agent").assert_outcomes(
        passed=2, failed=1
    )
    project.pytester.runpytest("--replay-all", "-k", "not support-agent").assert_outcomes(
        deselected=3
    )


def test_last_failed_reruns_only_the_diverged_run(project: Any, mixed: dict[str, str]) -> None:
    """--lf after a gate failure replays only the run that diverged."""
    project.pytester.runpytest("--replay-all").assert_outcomes(passed=2, failed=1)
    result = project.pytester.runpytest("--replay-all", "--lf", "-v")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines([f"*{mixed['stale']} FAILED*"])


def test_x_stops_at_the_first_diverged_run(project: Any) -> None:
    """-x stops the gate after the first replay that diverges."""
    for customer in ("c-1", "c-2"):
        project.export(project.record(project.TWO_EMAILS, customer_id=customer))
    project.write_agent(project.ONE_EMAIL)
    result = project.pytester.runpytest("--replay-all", "-x")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_marker_expression_selects_the_replays(project: Any, mixed: dict[str, str]) -> None:
    """Each replay item carries the `replay` marker, so -m replay selects the gate alone."""
    project.pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    project.pytester.runpytest(".", "--replay-all", "-m", "replay").assert_outcomes(
        passed=2, failed=1, deselected=1
    )


def test_empty_folder_collects_nothing(project: Any) -> None:
    """An empty cassettes folder gives no item and a zero count, not an error."""
    (project.path / "cassettes").mkdir()
    result = project.pytester.runpytest("--replay-all")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*= 0 runs replayed: 0 matched, 0 diverged, 0 blessed =*"])


def test_missing_folder_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """Without a cassettes folder, --replay-all stops before collecting, naming the folder and the
    fix."""
    result = pytester.runpytest("--replay-all")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --replay-all: no cassettes folder at {pytester.path / 'cassettes'} (ini "
            "replay_cassettes)*"
        ]
    )


def test_incident_cassettes_are_left_to_their_incident_tests(
    project: Any, mixed: dict[str, str]
) -> None:
    """Cassettes under an incidents/ folder are not gate items; the rest of the folder still is."""
    stale = mixed["stale"]
    (project.pytester.path / "cassettes" / "incidents").mkdir()
    (project.pytester.path / "cassettes" / f"{stale}.json").rename(
        project.pytester.path / "cassettes" / "incidents" / f"{stale}.json"
    )
    result = project.pytester.runpytest("--replay-all")
    result.assert_outcomes(passed=2)
    explicit = project.pytester.runpytest("--replay", f"cassettes/incidents/{stale}.json")
    explicit.assert_outcomes(failed=1)
