"""``--replay-update``: bless, i.e. rewrite each diverging cassette with the new trace."""

from __future__ import annotations

from typing import Any

import pytest

from replay.cassette import load_cassette


def test_help_lists_the_flag(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay-update."""
    pytester.runpytest("--help").stdout.fnmatch_lines(
        ["*--replay-update*Bless: rewrite each diverging cassette*"]
    )


def test_bless_rewrites_the_diverging_cassette_and_then_it_passes(project: Any) -> None:
    """After a fix, --replay-update rewrites the cassette with the new trace, reports it, and the
    gate passes."""
    run_id, cassette = project.cassette(project.TWO_EMAILS)  # the incident: two emails
    project.write_agent(project.ONE_EMAIL)  # the fix
    project.pytester.runpytest("--replay-all").assert_outcomes(failed=1)

    result = project.pytester.runpytest("--replay-all", "--replay-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*= 1 run replayed: 0 matched, 0 diverged, 1 blessed =*",
            f"blessed {run_id}: rewrote cassettes/{run_id}.json",
        ]
    )
    blessed = load_cassette(cassette)
    assert blessed.run.run_id == run_id
    assert [e.tool for e in blessed.steps] == ["crm.lookup", "email.send"]

    again = project.pytester.runpytest("--replay-all")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*= 1 run replayed: 1 matched, 0 diverged, 0 blessed =*"])


def test_matching_cassettes_are_left_untouched(project: Any) -> None:
    """A bless does not rewrite a cassette that still matches."""
    _, cassette = project.cassette()
    project.write_agent()
    before = cassette.read_bytes()
    mtime = cassette.stat().st_mtime_ns
    project.pytester.runpytest("--replay-all", "--replay-update").assert_outcomes(passed=1)
    assert cassette.read_bytes() == before
    assert cassette.stat().st_mtime_ns == mtime


def test_without_the_flag_nothing_on_disk_changes(project: Any) -> None:
    """A diverging replay without --replay-update leaves the cassettes folder byte for byte as it
    was."""
    _, cassette = project.cassette(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    before = {p.name: p.read_bytes() for p in cassette.parent.iterdir()}
    project.pytester.runpytest("--replay-all").assert_outcomes(failed=1)
    assert {p.name: p.read_bytes() for p in cassette.parent.iterdir()} == before


def test_a_run_from_the_store_is_blessed_into_the_cassettes_folder(project: Any) -> None:
    """Blessing `--replay RUN_ID` writes cassettes/<run_id>.json, which then passes."""
    run_id = project.record(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    result = project.pytester.runpytest("--replay", run_id, "--replay-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"blessed {run_id}: rewrote cassettes/{run_id}.json"])
    project.pytester.runpytest("--replay-all").assert_outcomes(passed=1)


def test_a_replay_with_unrecorded_calls_is_not_blessed(project: Any) -> None:
    """New calls the recording cannot answer are not frozen into the cassette: the item fails and
    says why."""
    _, cassette = project.cassette(project.ONE_EMAIL)
    project.write_agent(project.TWO_EMAILS)
    before = cassette.read_bytes()
    result = project.pytester.runpytest("--replay-all", "--replay-update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "not blessed: the replay made 1 call(s) the recording has no answer for (email.send)*",
            "*= 1 run replayed: 0 matched, 1 diverged, 0 blessed =*",
            "1 diverging run(s) could not be blessed: see the failures above",
        ]
    )
    assert cassette.read_bytes() == before


def test_update_without_replays_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """--replay-update alone has nothing to bless and stops before any work."""
    result = pytester.runpytest("--replay-update")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --replay-update blesses the runs replayed by --replay or --replay-all*"]
    )


def test_a_run_whose_snapshots_expired_is_not_blessed(project: Any) -> None:
    """--replay-update of a store run whose snapshots were pruned fails naming the expired steps,
    and writes no cassette."""
    import time

    from replay.store import Store

    run_id = project.record(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    with Store(project.db) as s:
        assert s.prune(now_ms=int(time.time() * 1000) + 20 * 86_400_000).snapshots > 0
    result = project.pytester.runpytest("--replay", run_id, "--replay-update")
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(["*cannot replay run*step 1 crm.lookup (expired since*"])
    assert not (project.pytester.path / "cassettes" / f"{run_id}.json").exists()
