"""``--replay-cassettes DIR`` (ini ``replay_cassettes``): where --replay-all looks and blesses
write."""

from __future__ import annotations

from typing import Any

import pytest


def test_help_lists_the_flag(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay-cassettes and its ini option."""
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--replay-cassettes=DIR*", "*replay_cassettes (string)*"])


def test_flag_points_replay_all_at_another_folder(project: Any) -> None:
    """--replay-cassettes DIR replays the cassettes there and ignores ./cassettes."""
    run_id, _ = project.cassette(folder="gate")
    project.export(project.record(customer_id="c-2"))  # into ./cassettes, not replayed
    result = project.pytester.runpytest(
        "--replay-all", "--replay-cassettes", "gate", "--collect-only", "-q"
    )
    result.stdout.fnmatch_lines([f"gate/{run_id}.json::{run_id}", "1 test collected*"])


def test_ini_option_is_relative_to_the_ini_file(project: Any) -> None:
    """ini replay_cassettes names the folder relative to the ini file."""
    run_id, _ = project.cassette(folder="recordings/prod")
    project.pytester.makeini("[pytest]\nreplay_cassettes = recordings/prod\n")
    result = project.pytester.runpytest("--replay-all", "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"recordings/prod/{run_id}.json::{run_id}"])


def test_flag_wins_over_the_ini_option(project: Any) -> None:
    """The flag takes precedence over ini replay_cassettes."""
    run_id, _ = project.cassette(folder="flagged")
    project.pytester.makeini("[pytest]\nreplay_cassettes = elsewhere\n")
    result = project.pytester.runpytest(
        "--replay-all", "--replay-cassettes", "flagged", "--collect-only", "-q"
    )
    result.stdout.fnmatch_lines([f"flagged/{run_id}.json::{run_id}"])


def test_nested_folders_are_searched(project: Any) -> None:
    """Cassettes in sub-folders of the cassettes folder are part of the gate."""
    run_id, _ = project.cassette(folder="cassettes/billing")
    result = project.pytester.runpytest("--replay-all", "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"cassettes/billing/{run_id}.json::{run_id}"])


def test_missing_folder_names_the_flag(pytester: pytest.Pytester) -> None:
    """A --replay-cassettes folder that does not exist is a usage error naming it and the flag."""
    result = pytester.runpytest("--replay-all", "--replay-cassettes", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --replay-all: no cassettes folder at {pytester.path / 'nowhere'} "
            "(--replay-cassettes)*"
        ]
    )
