"""`write_incident_test` and ``replay export RUN_ID --test DIR``: a ready incident test using the
marker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replay.cassette import load_cassette
from replay.cli import cli
from replay.incident import write_incident_test


def test_generated_test_states_the_recorded_facts(project: Any) -> None:
    """The file names the stop reason, the tool calls, the repeated call with its args hash,
    versions and usage."""
    run_id, cassette = project.cassette(project.TWO_EMAILS)
    cas = load_cassette(cassette)
    send_sha = next(e.args_sha for e in cas.steps if e.tool == "email.send")
    path = write_incident_test(cas, cassette, project.path / "tests" / "incidents")
    assert path == project.path / "tests" / "incidents" / f"test_incident_{run_id}.py"
    text = path.read_text()
    for fact in (
        "    stop reason: completed",
        "    steps: 3 (crm.lookup x1, email.send x2)",
        f"      email.send x2 (args_sha {send_sha})",
        "    versions: model=m-1, prompt=p-1",
        "    usage: 150 tokens, $0.0100, 3 tool calls",
        f'CASSETTE = Path(__file__).parent / "../../cassettes/{run_id}.json"',
        "@pytest.mark.replay(CASSETTE)",
        f"    assert sum(s.args_sha == {send_sha!r} for s in replayed.calls('email.send')) <= 1",
    ):
        assert fact in text, fact
    compile(text, str(path), "exec")


def test_generated_test_fails_on_the_bug_and_passes_after_the_fix(project: Any) -> None:
    """Run as is, the incident test fails while the agent still repeats the email and passes once it
    is fixed."""
    _, cassette = project.cassette(project.TWO_EMAILS)
    write_incident_test(load_cassette(cassette), cassette, project.path / "tests" / "incidents")
    result = project.pytester.runpytest("tests/incidents", "--strict-markers")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 2 <= 1*"])
    project.write_agent(project.ONE_EMAIL)
    project.pytester.runpytest("tests/incidents", "--strict-markers").assert_outcomes(passed=1)


def test_a_run_that_did_not_complete_asks_for_completion(project: Any) -> None:
    """For a run that stopped with another reason, the test records it and asserts the fix
    completes."""
    _, cassette = project.cassette('replay.stop("budget_exceeded")')
    text = write_incident_test(
        load_cassette(cassette), cassette, project.path / "incidents"
    ).read_text()
    assert "    stop reason: budget_exceeded" in text
    assert (
        "    # Recorded: the run stopped with 'budget_exceeded'. The fix should let it complete."
        in text
    )
    assert (
        '    assert replayed.stop_reason == "completed", replayed.diff.to_text(color=False)' in text
    )
    assert "    repeated calls: none" in text


def test_an_edited_test_is_not_overwritten_without_force(project: Any) -> None:
    """Writing again over an edited test raises; the same content is fine, and force overwrites."""
    _, cassette = project.cassette()
    cas = load_cassette(cassette)
    folder = project.path / "incidents"
    path = write_incident_test(cas, cassette, folder)
    assert write_incident_test(cas, cassette, folder) == path
    path.write_text(path.read_text() + "# my edit\n")
    with pytest.raises(
        FileExistsError, match="exists and differs .*: pass --force to overwrite it"
    ):
        write_incident_test(cas, cassette, folder)
    write_incident_test(cas, cassette, folder, force=True)
    assert "# my edit" not in path.read_text()


def test_replay_export_with_test_writes_a_runnable_incident_test(project: Any) -> None:
    """`replay export RUN_ID --test DIR` writes the cassette and the test, and the test runs under
    pytest."""
    run_id = project.record(project.TWO_EMAILS)
    result = CliRunner().invoke(
        cli,
        ["export", run_id, "--db", "replay.db", "--test", "tests/incidents"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    test_path = Path("tests/incidents") / f"test_incident_{run_id}.py"
    assert f"wrote {test_path}: run it with pytest {test_path}" in result.output
    project.write_agent(project.ONE_EMAIL)
    project.pytester.runpytest(str(test_path)).assert_outcomes(passed=1)
