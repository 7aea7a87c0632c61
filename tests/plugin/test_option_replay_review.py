"""``--replay-review`` and ``replay review``: pending cassette changes, accepted or skipped one at a
time."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from replay.cassette import load_cassette
from replay.cli import cli
from replay.review import pending_changes, review


def test_update_prints_what_changed_per_cassette(project: Any) -> None:
    """--replay-update says per blessed cassette what changed: steps added and removed, usage."""
    project.cassette(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    result = project.pytester.runpytest("--replay-all", "--replay-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["blessed *", "  steps 3 -> 2 (-email.send)"])


def test_review_writes_pending_beside_the_cassette_and_leaves_it(project: Any) -> None:
    """--replay-review writes <cassette>.pending and keeps the blessed cassette as it was."""
    run_id, cassette = project.cassette(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    before = cassette.read_bytes()
    result = project.pytester.runpytest("--replay-all", "--replay-review")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*review them with `replay review`*"])
    assert cassette.read_bytes() == before
    pending = cassette.with_name(cassette.name + ".pending")
    assert [e.tool for e in load_cassette(pending).steps] == ["crm.lookup", "email.send"]
    assert pending.stat().st_mode & 0o777 == 0o600
    # --replay-all reads *.json only: the pending file is no second gate item
    project.pytester.runpytest("--replay-all").assert_outcomes(failed=1)


def _pending_project(project: Any) -> Any:
    project.cassette(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    project.pytester.runpytest("--replay-all", "--replay-review").assert_outcomes(passed=1)
    return project.path / "cassettes"


def test_cli_without_a_terminal_lists_and_exits_1(project: Any) -> None:
    """`replay review` with no terminal and no flag lists the change and exits 1, never waiting for
    input."""
    folder = _pending_project(project)
    result = CliRunner().invoke(cli, ["review", str(folder)])
    assert result.exit_code == 1
    assert "steps 3 -> 2 (-email.send)" in result.output
    assert "no terminal to ask" in result.output


def test_cli_json_lists_and_changes_nothing(project: Any) -> None:
    """--json lists pending changes with their summary and leaves the files alone."""
    folder = _pending_project(project)
    result = CliRunner().invoke(cli, ["review", str(folder), "--json"])
    assert result.exit_code == 0
    assert '"summary": "steps 3 -> 2 (-email.send)"' in result.output
    assert len(pending_changes(folder)) == 1


def test_cli_accept_all_blesses_and_then_the_gate_passes(project: Any) -> None:
    """--accept-all moves each pending trace over its cassette; the gate then passes."""
    folder = _pending_project(project)
    result = CliRunner().invoke(cli, ["review", str(folder), "--accept-all"])
    assert result.exit_code == 0, result.output
    assert "1 accepted, 0 skipped, 0 rejected" in result.output
    assert pending_changes(folder) == []
    project.pytester.runpytest("--replay-all").assert_outcomes(passed=1)


def test_cli_reject_all_deletes_the_pending_files(project: Any) -> None:
    """--reject-all deletes the pending traces and keeps the cassettes."""
    folder = _pending_project(project)
    result = CliRunner().invoke(cli, ["review", str(folder), "--reject-all"])
    assert "0 accepted, 0 skipped, 1 rejected" in result.output
    assert pending_changes(folder) == []
    project.pytester.runpytest("--replay-all").assert_outcomes(failed=1)


def test_one_at_a_time_skip_keeps_it_pending(project: Any) -> None:
    """Walking the changes, skip leaves the pending file for later and quit skips the rest."""
    folder = _pending_project(project)
    changes = pending_changes(folder)
    done = review(changes, lambda c: "quit")
    assert [len(done[k]) for k in ("accept", "skip", "reject")] == [0, 1, 0]
    assert len(pending_changes(folder)) == 1
    with pytest.raises(ValueError, match="review decision 'yes'"):
        review(changes, lambda c: "yes")


def test_cli_in_a_terminal_asks_per_cassette(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a terminal each change is shown with its diff and a prompt; 'a' accepts it."""
    import replay.cli_review

    folder = _pending_project(project)
    monkeypatch.setattr(replay.cli_review, "_is_terminal", lambda: True)
    result = CliRunner().invoke(cli, ["review", str(folder)], input="a\n")
    assert result.exit_code == 0, result.output
    assert "steps 3 -> 2 (-email.send)" in result.output
    assert "accept, skip, reject or quit? [a/s/r/q]" in result.output
    assert "1 accepted, 0 skipped, 0 rejected" in result.output
    assert pending_changes(folder) == []
