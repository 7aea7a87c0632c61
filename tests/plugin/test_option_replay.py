"""``--replay RUN_ID_OR_CASSETTE``: one test item per recorded run."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest


def test_help_lists_the_flag(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay in the agent-replay group."""
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        ["agent-replay: replay recorded agent runs:", "*--replay=RUN_ID_OR_CASSETTE*"]
    )


def test_matching_cassette_passes_without_any_test_file(project: Any) -> None:
    """A cassette whose replay matches gives one passing item, in a folder without test files."""
    run_id, cassette = project.cassette()
    project.write_agent()
    result = project.pytester.runpytest("--replay", str(cassette), "-v")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([rf"cassettes/{run_id}\.json::{run_id} PASSED.*"])
    result.stdout.fnmatch_lines(["*= 1 run replayed: 1 matched, 0 diverged, 0 blessed =*"])


def test_run_id_is_read_from_the_store(project: Any) -> None:
    """A run id is replayed from ./replay.db, and the item is named after the run."""
    run_id = project.record()
    result = project.pytester.runpytest("--replay", run_id, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([rf"replay\.db::{run_id} PASSED.*"])


def test_run_id_prefix_names_the_full_run(project: Any) -> None:
    """An unambiguous run id prefix selects the run; the item carries the full id."""
    run_id = project.record()
    result = project.pytester.runpytest("--replay", run_id[:20], "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"replay.db::{run_id}"])


def test_diverging_replay_fails_with_the_first_divergence_and_stop_reason(project: Any) -> None:
    """A replay that sends the email twice fails with the diff: first divergence and stop reason
    change."""
    run_id, cassette = project.cassette()
    project.write_agent(project.TWO_EMAILS)
    result = project.pytester.runpytest("--replay", str(cassette))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*replay diverged from recording {run_id} at step 3*",
            "first divergence: extra call",
            "  replayed  step 3  email.send  args *  error replay.UnrecordedCall*",
            "*stop reason: completed -> error*",
            "the agent raised UnrecordedCall: unrecorded call email.send*",
            f"recording: cassettes/{run_id}.json",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "replayer.py" not in result.stdout.str()


def test_flag_is_repeatable(project: Any) -> None:
    """Each --replay adds one item; a cassette and a store run id can be mixed."""
    first = project.record()
    second, cassette = project.cassette(customer_id="c-2")
    result = project.pytester.runpytest(
        "--replay", first, "--replay", str(cassette), "--collect-only", "-q"
    )
    result.stdout.fnmatch_lines(
        [f"cassettes/{second}.json::{second}", f"replay.db::{first}"], consecutive=False
    )
    result.stdout.fnmatch_lines(["2 tests collected*"])


def test_replays_run_alongside_the_test_files(project: Any) -> None:
    """The replay items are added to the session's own tests, not instead of them."""
    _, cassette = project.cassette()
    project.pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = project.pytester.runpytest(".", "--replay", str(cassette))
    result.assert_outcomes(passed=2)


def test_without_paths_only_the_replays_run(project: Any) -> None:
    """`pytest --replay X` with no paths named runs the replay alone, not the suite from
    testpaths."""
    _, cassette = project.cassette()
    project.pytester.makepyfile(test_plain="def test_plain():\n    assert False\n")
    result = project.pytester.runpytest("--replay", str(cassette))
    result.assert_outcomes(passed=1)


def test_console_script_finds_the_agent_without_the_project_on_sys_path(project: Any) -> None:
    """Through the `pytest` script, which does not put the working folder on sys.path, the
    entrypoint still imports."""
    script = os.path.join(
        os.path.dirname(sys.executable), "pytest"
    )  # beside the interpreter, not on PATH
    if not os.path.exists(script):
        pytest.fail(
            "no pytest console script next to this Python: install pytest into this environment"
        )
    _, cassette = project.cassette()
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH"
    }  # pytester.run would add the folder
    proc = subprocess.run(
        [script, "-p", "no:cacheprovider", "--replay", str(cassette)],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 run replayed: 1 matched, 0 diverged, 0 blessed" in proc.stdout
