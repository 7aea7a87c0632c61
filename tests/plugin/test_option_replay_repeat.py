"""``--replay-repeat K``, ``--replay-flaky`` and ``--replay-quarantine``: flaky runs against the
gate."""

from __future__ import annotations

from typing import Any

import pytest

#: Four emails in a random order: the step sequence changes from replay to replay.
SHUFFLED = """
import random
rec.usage(tokens_in=100, tokens_out=50, cost_usd=0.01)
bodies = ["a", "b", "c", "d"]
random.shuffle(bodies)
for b in bodies:
    send(customer["id"], b)
"""


def test_help_lists_the_flags(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay-repeat, --replay-flaky and --replay-quarantine."""
    pytester.runpytest("--help").stdout.fnmatch_lines(
        ["*--replay-repeat=K*", "*--replay-flaky*", "*--replay-quarantine=FILE*"]
    )


def test_a_stable_run_passes(project: Any) -> None:
    """A deterministic agent replayed 4 times passes."""
    project.cassette()
    project.pytester.runpytest("--replay-all", "--replay-repeat", "4").assert_outcomes(passed=1)


def test_a_flaky_run_fails_with_the_first_difference_and_cause(project: Any) -> None:
    """A random email order fails the gate: sequences counted, first differing step, cause named."""
    project.cassette(SHUFFLED)
    result = project.pytester.runpytest("--replay-all", "--replay-repeat", "8")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*flaky: * step sequences in 8 replays, first difference at step *likely cause: random"]
    )


#: The in-process inner run finds `replay` already imported (not rewritable): only the flaky
#: warning is counted.
QUIET = ("-W", "ignore::pytest.PytestAssertRewriteWarning")


def test_warn_policy_and_quarantine_let_it_pass(project: Any) -> None:
    """--replay-flaky warn passes with a warning; a quarantine list passes the runs it names."""
    run_id, _ = project.cassette(SHUFFLED)
    project.pytester.runpytest(
        "--replay-all", "--replay-repeat", "8", "--replay-flaky", "warn", *QUIET
    ).assert_outcomes(passed=1, warnings=1)
    (project.path / "quarantine.txt").write_text(f"{run_id}\n")
    project.pytester.runpytest(
        "--replay-all", "--replay-repeat", "8", "--replay-quarantine", "quarantine.txt", *QUIET
    ).assert_outcomes(passed=1, warnings=1)


def test_marker_repeat_fails_a_flaky_incident_test(project: Any) -> None:
    """@pytest.mark.replay(..., repeat=8) fails the test when the replays disagree."""
    _, cassette = project.cassette(SHUFFLED)
    project.pytester.makepyfile(
        test_flaky_incident=f"""
        import pytest

        @pytest.mark.replay({str(cassette)!r}, repeat=8, ordered=False)
        def test_four_emails(replayed):
            assert len(replayed.calls("email.send")) == 4
        """
    )
    result = project.pytester.runpytest("test_flaky_incident.py")
    result.assert_outcomes(errors=1)  # the `replayed` fixture fails: the test body never runs
    result.stdout.fnmatch_lines(["*flaky: * step sequences in 8 replays*"])
