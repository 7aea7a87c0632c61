"""``--replay-max-token-delta-pct PCT`` (ini ``replay_max_token_delta_pct``, default 20): the token
gate."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def doubled(project: Any) -> str:
    """A cassette of the 150-token run, replayed by code that takes the same steps for 300
    tokens."""
    _, cassette = project.cassette(project.ONE_EMAIL)
    project.write_agent(project.DOUBLE_TOKENS)
    return str(cassette)


def test_help_lists_the_flag_and_its_default(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pytest --help` shows the flag with its default of 20 percent."""
    monkeypatch.setenv("COLUMNS", "250")  # one help line per option
    pytester.runpytest("--help").stdout.fnmatch_lines(
        ["*--replay-max-token-delta-pct=PCT*", "*(ini replay_max_token_delta_pct; default: 20)*"]
    )


def test_same_steps_but_double_the_tokens_fails_by_default(project: Any, doubled: str) -> None:
    """Same steps, twice the tokens: the default 20% gate fails the replay and names the limit."""
    result = project.pytester.runpytest("--replay", doubled)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            (
                "usage gate: tokens 150 -> 300 (+100.0%) is above the 20% limit "
                "(--replay-max-token-delta-pct, ini replay_max_token_delta_pct)"
            ),
        ]
    )


def test_a_higher_limit_lets_it_pass(project: Any, doubled: str) -> None:
    """With the limit at the growth exactly, the replay passes: only growth above the limit
    fails."""
    project.pytester.runpytest(
        "--replay", doubled, "--replay-max-token-delta-pct", "100"
    ).assert_outcomes(passed=1)


def test_ini_option_sets_the_limit(project: Any, doubled: str) -> None:
    """ini replay_max_token_delta_pct sets the limit."""
    project.pytester.makeini("[pytest]\nreplay_max_token_delta_pct = 100\n")
    project.pytester.runpytest("--replay", doubled).assert_outcomes(passed=1)


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A non-number in the ini option is rejected, naming the option and the value."""
    pytester.makeini("[pytest]\nreplay_max_token_delta_pct = lots\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ini replay_max_token_delta_pct = 'lots': expected a number of percent*"]
    )


def test_bless_rewrites_a_cassette_that_only_broke_the_gate(project: Any, doubled: str) -> None:
    """A usage-only divergence is blessed like any other, and the new usage then passes."""
    project.pytester.runpytest("--replay", doubled, "--replay-update").assert_outcomes(passed=1)
    project.pytester.runpytest("--replay", doubled).assert_outcomes(passed=1)
