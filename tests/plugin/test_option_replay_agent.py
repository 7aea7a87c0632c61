"""`--replay-agent MODULE[:FN]` and the ini option `replay_agents`: the agent modules replays may
import."""

from __future__ import annotations

from typing import Any

import pytest


def test_help_lists_the_option(pytester: pytest.Pytester) -> None:
    """`pytest --help` documents --replay-agent and the replay_agents ini option."""
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--replay-agent=MODULE:FN*", "*replay_agents*"])


def _unlisted(project: Any) -> str:
    """A cassette of the project's agent, in a project whose pyproject does not list the agent
    module."""
    run_id, _ = project.cassette()
    (project.path / "pyproject.toml").unlink()
    return run_id


def test_unlisted_agent_module_is_not_imported(project: Any) -> None:
    """Without the module named anywhere, the recorded entrypoint is not imported and the error says
    how to name it."""
    run_id = _unlisted(project)
    result = project.pytester.runpytest("--replay-all")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            f"*cannot replay run {run_id}: it needs agent 'support-agent'*the project does not "
            "list it*--replay-agent your.module:handle*"
        ]
    )


def test_flag_names_the_agent_module(project: Any) -> None:
    """--replay-agent support_agent:handle lets the replay import and call the registered agent."""
    _unlisted(project)
    project.pytester.runpytest(
        "--replay-all", "--replay-agent", "support_agent:handle"
    ).assert_outcomes(passed=1)
    project.pytester.runpytest("--replay-all", "--replay-agent", "support_agent").assert_outcomes(
        passed=1
    )


def test_ini_names_the_agent_module(project: Any) -> None:
    """The ini option replay_agents lists modules to import for replays."""
    _unlisted(project)
    project.pytester.makeini("[pytest]\nreplay_agents =\n    support_agent\n")
    project.pytester.runpytest("--replay-all").assert_outcomes(passed=1)


def test_flag_refuses_a_function_that_is_not_an_agent(project: Any) -> None:
    """--replay-agent MODULE:FN naming a plain function is refused: only registered agents are
    called."""
    _unlisted(project)
    result = project.pytester.runpytest("--replay-all", "--replay-agent", "support_agent:lookup")
    result.stdout.fnmatch_lines(
        [
            "*--replay-agent support_agent:lookup: lookup is not an agent: decorate it with "
            "@rec.agent(NAME)*"
        ]
    )
