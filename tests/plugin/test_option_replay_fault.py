"""``--replay-fault`` and the marker's ``faults=``: one test item per fault."""

from __future__ import annotations

from typing import Any

import pytest

#: The email is sent inside a try: a failed send ends the run "escalated", never a second send.
COPES = """
rec.usage(tokens_in=100, tokens_out=50, cost_usd=0.01)
try:
    send(customer["id"], "your refund is on its way")
except Exception:
    replay.stop("escalated")
"""


def test_help_lists_the_flag(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay-fault with its syntax."""
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--replay-fault=TOOL=FAULT*"])


def test_one_item_per_fault_passing_when_the_agent_copes(project: Any) -> None:
    """Each --replay-fault makes its own item, named [fault]; an agent that catches the error
    passes."""
    run_id, _ = project.cassette(COPES)
    result = project.pytester.runpytest(
        "--replay-all",
        "--replay-fault",
        "email.send=timeout",
        "--replay-fault",
        "email.send=503",
        "-v",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [f"*{run_id}?email.send=timeout? PASSED*", f"*{run_id}?email.send=503? PASSED*"]
    )


def test_an_agent_that_crashes_under_the_fault_fails(project: Any) -> None:
    """An agent that lets the fault's error escape fails its item, saying what it raised."""
    project.cassette()  # sends without a try
    result = project.pytester.runpytest("--replay-all", "--replay-fault", "email.send=503")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the agent raised ToolHTTPError under the fault*"])


def test_a_bad_fault_spec_is_an_error_naming_it(project: Any) -> None:
    """A misspelt tool is reported with the spec and the recording's tools."""
    project.cassette(COPES)
    result = project.pytester.runpytest("--replay-all", "--replay-fault", "emial.send=503")
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*fault 'emial.send=503': the recording * has no call of 'emial.send'*"]
    )


def test_marker_faults_make_one_item_each_with_the_test_assertions(project: Any) -> None:
    """@pytest.mark.replay(..., faults={...}) runs the test once per fault, ids like
    [email.send=503]."""
    _, cassette = project.cassette(COPES)
    project.pytester.makepyfile(
        test_incident=f"""
        import pytest

        FAULTS = {{"email.send": ["timeout", 503, "429:retry-after=2"]}}

        @pytest.mark.replay({str(cassette)!r}, faults=FAULTS)
        def test_escalates_without_a_second_email(replayed, replay_fault):
            assert replay_fault.startswith("email.send=")
            assert replayed.stop_reason == "escalated"
            assert len(replayed.calls("email.send")) == 1
        """
    )
    result = project.pytester.runpytest("test_incident.py", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*test_escalates_without_a_second_email?email.send=timeout? PASSED*",
            "*test_escalates_without_a_second_email?email.send=503? PASSED*",
            "*test_escalates_without_a_second_email?email.send=429:retry-after=2? PASSED*",
        ]
    )


def test_marker_with_a_bad_fault_is_a_collection_error(project: Any) -> None:
    """A marker fault that does not parse is a collection error naming the test and the spec."""
    _, cassette = project.cassette(COPES)
    project.pytester.makepyfile(
        test_bad=f"""
        import pytest

        @pytest.mark.replay({str(cassette)!r}, faults={{"email.send": ["teapot"]}})
        def test_x(replayed):
            pass
        """
    )
    result = project.pytester.runpytest("test_bad.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*test_bad.py::test_x: @pytest.mark.replay(faults=...): fault 'email.send=teapot'*"]
    )
