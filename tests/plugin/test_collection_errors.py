"""Recordings that cannot be replayed are collection errors with a message, never a traceback."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest


def _assert_clean(result: pytest.RunResult) -> None:
    out = result.stdout.str()
    assert "Traceback" not in out
    assert "_engine.py" not in out and "replayer.py" not in out


def test_unknown_run_id_names_the_store_and_suggests_replay_runs(project: Any) -> None:
    """An unknown run id is a collection error naming the store, its run count and `replay runs`."""
    project.record()
    result = project.pytester.runpytest("--replay", "r_01doesnotexist")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting replay.db*",
            "--replay r_01doesnotexist: no run 'r_01doesnotexist' in *replay.db (1 run; list them "
            "with `replay runs`)",
            "*Interrupted: 1 error during collection*",
        ]
    )
    _assert_clean(result)


def test_cassette_with_a_broken_field_names_the_file_and_the_field(project: Any) -> None:
    """A cassette failing validation is reported with its path and the field that is wrong."""
    run_id, cassette = project.cassette()
    data = json.loads(cassette.read_text())
    del data["events"][1]["ts_ms"]
    cassette.write_text(json.dumps(data))
    result = project.pytester.runpytest("--replay-all")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            f"*ERROR collecting cassettes/{run_id}.json*",
            f"cassettes/{run_id}.json: events[1].ts_ms: Field required",
        ]
    )
    _assert_clean(result)


def test_cassette_that_is_not_json_names_the_file(project: Any) -> None:
    """A cassette that is not JSON at all is reported with its path."""
    folder = project.path / "cassettes"
    folder.mkdir()
    (folder / "broken.json").write_text("{ not json")
    result = project.pytester.runpytest("--replay-all")
    result.stdout.fnmatch_lines(["cassettes/broken.json: not valid JSON: *"])
    _assert_clean(result)


def test_entrypoint_module_gone_is_reported(project: Any) -> None:
    """A recording whose agent module cannot be imported says which entrypoint and how to fix it."""
    run_id, _ = project.cassette()
    (project.path / "support_agent.py").unlink()
    result = project.pytester.runpytest("--replay-all")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            (
                f"cassettes/{run_id}.json: cannot replay run {run_id}: */pyproject.toml "
                "?tool.agent-replay? agents "
                "support_agent: module 'support_agent' cannot be imported (ModuleNotFoundError: "
                "*); run from the "
                "project root or fix the import. In pytest: set options.agent in a "
                "pytest_replay_configure hook*"
            ),
        ]
    )
    _assert_clean(result)


def test_entrypoint_renamed_is_reported(project: Any) -> None:
    """A renamed agent function still replays under its agent name; a renamed agent name is reported
    with the fix."""
    run_id, _ = project.cassette()
    agent = project.path / "support_agent.py"
    agent.write_text(agent.read_text().replace("def handle(", "def handle_ticket("))
    project.pytester.runpytest("--replay", run_id).assert_outcomes(passed=1)
    agent.write_text(agent.read_text().replace('rec.agent("support-agent"', 'rec.agent("helpdesk"'))
    sys.modules.pop("support_agent", None)
    result = project.pytester.runpytest("--replay", run_id)
    result.stdout.fnmatch_lines(
        [
            (
                f"--replay {run_id} (replay.db): cannot replay run {run_id}: it needs agent "
                "'support-agent', and no "
                "function is registered under that name (registered agents: *'helpdesk'*); *"
                "Register it one of these ways: *--replay-agent your.module:handle*"
            )
        ]
    )
    _assert_clean(result)


def test_other_replays_run_with_continue_on_collection_errors(project: Any) -> None:
    """With --continue-on-collection-errors the good recordings still replay and the error is
    counted."""
    project.cassette()
    project.write_agent()
    (project.path / "cassettes" / "broken.json").write_text("[]")
    result = project.pytester.runpytest("--replay-all", "--continue-on-collection-errors")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "cassettes/broken.json: not a cassette: the top level must be a JSON object",
            "*= 2 runs replayed: 1 matched, 0 diverged, 0 blessed, 1 error =*",
        ]
    )
