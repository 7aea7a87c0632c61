"""``--replay-db PATH`` (ini ``replay_db``, env ``REPLAY_DB``): the store run ids are read from."""

from __future__ import annotations

import shutil
from typing import Any

import pytest


def _move_store(project: Any, target: str) -> None:
    (project.path / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(project.db), str(project.path / target))


def test_help_lists_the_flag(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay-db and its ini option."""
    pytester.runpytest("--help").stdout.fnmatch_lines(
        ["*--replay-db=PATH*", "*replay_db (string)*"]
    )


def test_flag_names_the_store(project: Any) -> None:
    """--replay-db reads the run from that store."""
    run_id = project.record()
    _move_store(project, "stores/prod.db")
    result = project.pytester.runpytest("--replay", run_id, "--replay-db", "stores/prod.db", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"stores/prod.db::{run_id} PASSED*"])


def test_env_var_names_the_store(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """REPLAY_DB is used when no flag is given."""
    run_id = project.record()
    _move_store(project, "env.db")
    monkeypatch.setenv("REPLAY_DB", "env.db")
    project.pytester.runpytest("--replay", run_id).assert_outcomes(passed=1)


def test_ini_option_names_the_store(project: Any) -> None:
    """ini replay_db is used when neither the flag nor REPLAY_DB is set."""
    run_id = project.record()
    _move_store(project, "data/runs.db")
    project.pytester.makeini("[pytest]\nreplay_db = data/runs.db\n")
    project.pytester.runpytest("--replay", run_id).assert_outcomes(passed=1)


def test_flag_wins_over_env_and_ini(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flag takes precedence over REPLAY_DB, which takes precedence over the ini option."""
    run_id = project.record()
    _move_store(project, "right.db")
    project.pytester.makeini("[pytest]\nreplay_db = wrong-ini.db\n")
    monkeypatch.setenv("REPLAY_DB", "wrong-env.db")
    project.pytester.runpytest("--replay", run_id, "--replay-db", "right.db").assert_outcomes(
        passed=1
    )
    monkeypatch.setenv("REPLAY_DB", "right.db")
    project.pytester.runpytest("--replay", run_id).assert_outcomes(passed=1)


def test_missing_store_is_a_collection_error_naming_it(project: Any) -> None:
    """A store that does not exist is reported at collection with the options that name one."""
    result = project.pytester.runpytest("--replay", "r_01nothere", "--replay-db", "missing.db")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting missing.db*",
            (
                "--replay r_01nothere: no run 'r_01nothere': the store missing.db does not exist: "
                "record runs "
                "into it first, or name the store with --replay-db PATH (ini replay_db, env "
                "REPLAY_DB)"
            ),
        ]
    )
    assert not (project.path / "missing.db").exists()


def test_flag_and_env_accept_a_postgresql_url(project: Any, pg_url: str) -> None:
    """--replay-db and REPLAY_DB take a postgresql:// URL (its ``//`` kept): the run is read from
    the server and its node id is named by the URL."""
    project.store = pg_url
    run_id = project.record()
    assert not project.db.exists()  # recorded into the server, not a file
    result = project.pytester.runpytest("--replay", run_id, "--replay-db", pg_url, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"postgresql://*::{run_id} PASSED*"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPLAY_DB", pg_url)
        project.pytester.runpytest("--replay", run_id).assert_outcomes(passed=1)


def test_marker_reads_a_run_from_a_postgresql_store(project: Any, pg_url: str) -> None:
    """@pytest.mark.replay(run_id) with REPLAY_DB set to a postgresql:// URL replays the run
    stored on the server."""
    project.store = pg_url
    run_id = project.record()
    project.pytester.makepyfile(
        test_marked=f"""
import pytest

@pytest.mark.replay({run_id!r})
def test_it(replayed):
    assert replayed.diff.is_empty
"""
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPLAY_DB", pg_url)
        project.pytester.runpytest("test_marked.py").assert_outcomes(passed=1)


def test_a_store_url_is_shown_without_its_password() -> None:
    """Node ids and messages show a store URL with its password (and query string) hidden."""
    from pytest_plugin.state import store_text

    shown = store_text("postgresql://rec:s3cret@db.internal:5432/replay?password=other")
    assert shown == "postgresql://rec:***@db.internal:5432/replay?..."
    assert store_text("postgres://db.internal/replay") == "postgres://db.internal/replay"
