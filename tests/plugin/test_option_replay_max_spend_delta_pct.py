"""``--replay-max-spend-delta-pct PCT`` (ini ``replay_max_spend_delta_pct``, default 20): the spend
gate."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def doubled(project: Any) -> str:
    """A cassette of the one-cent run, replayed by code that takes the same steps for two cents."""
    _, cassette = project.cassette(project.ONE_EMAIL)
    project.write_agent(project.DOUBLE_SPEND)
    return str(cassette)


def test_help_lists_the_flag_and_its_default(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pytest --help` shows the flag with its default of 20 percent."""
    monkeypatch.setenv("COLUMNS", "250")  # one help line per option
    pytester.runpytest("--help").stdout.fnmatch_lines(
        ["*--replay-max-spend-delta-pct=PCT*", "*(ini replay_max_spend_delta_pct; default: 20)*"]
    )


def test_same_steps_but_double_the_spend_fails_by_default(project: Any, doubled: str) -> None:
    """Same steps, same stop reason, twice the spend: the default 20% gate fails the replay."""
    result = project.pytester.runpytest("--replay", doubled)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "replay of r_* broke a usage gate (same steps, stop reason and output)",
            "cost: $0.0100 -> $0.0200 (+100.0%)",
            (
                "usage gate: spend $0.0100 -> $0.0200 (+100.0%) is above the 20% limit "
                "(--replay-max-spend-delta-pct, ini replay_max_spend_delta_pct)"
            ),
        ]
    )
    result.stdout.no_fnmatch_line("replay matches recording*")


def test_a_higher_limit_lets_it_pass(project: Any, doubled: str) -> None:
    """With the limit above the growth, the same replay passes."""
    project.pytester.runpytest(
        "--replay", doubled, "--replay-max-spend-delta-pct", "150"
    ).assert_outcomes(passed=1)


def test_ini_option_sets_the_limit(project: Any, doubled: str) -> None:
    """ini replay_max_spend_delta_pct sets the limit; the flag still wins over it."""
    project.pytester.makeini("[pytest]\nreplay_max_spend_delta_pct = 150\n")
    project.pytester.runpytest("--replay", doubled).assert_outcomes(passed=1)
    project.pytester.runpytest(
        "--replay", doubled, "--replay-max-spend-delta-pct", "50"
    ).assert_outcomes(failed=1)


def test_a_cheaper_replay_never_fails(project: Any) -> None:
    """Spend that drops (two cents recorded, one cent now) passes even with a zero limit."""
    _, cassette = project.cassette(project.DOUBLE_SPEND)
    project.write_agent(project.ONE_EMAIL)
    project.pytester.runpytest(
        "--replay", str(cassette), "--replay-max-spend-delta-pct", "0"
    ).assert_outcomes(passed=1)


def test_negative_limit_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A negative limit is rejected before any work."""
    result = pytester.runpytest("--replay-max-spend-delta-pct", "-5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --replay-max-spend-delta-pct = -5: expected a percentage of 0 or more*"]
    )
