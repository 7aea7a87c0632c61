"""The seed incident under faults: the fixed support agent stops after a bounded number of calls.

The incident (shop API answering 429/503, retries without jitter, "try another query" on every
failure) is replayed with ``http.get`` failing on every call, as timeout, refused connection, 429
(with and without ``retry-after``) and 503. The fix (v2, the code checked out now) gives up
after one failed call, sends one holding email and escalates; the incident code (v1) searches
the knowledge base again and again (7 ``http.get`` + 7 ``kb.search`` calls) and still ends
``completed``. A lost email acknowledgement (``email.send=503@first:1``) makes v1 send twice;
v2 never sends a second email.
"""

from __future__ import annotations

import pytest

from examples.support_agent.config import use_version
from examples.support_agent.scenario import fake_outbox
from replay import replay_run

INCIDENT = "cassettes/incidents/r_01m80g7tce74qmb7zv96pmd1t5.json"
HEALTHY = "cassettes/r_01m80gmdyh3mzb4kap3c6mfw3a.json"
HTTP_FAULTS = ["timeout", "connect", 429, "429:retry-after=2", 503]
# The healthy run recorded no error, so nothing says which class the tools raise: name it.
OWN_ERROR = "client=examples.support_agent.upstream:HTTPStatusError"
OUTBOX, STUBS = fake_outbox()


@pytest.fixture(autouse=True)
def _deployed_fix():
    """Replay as the fix (v2) whatever SUPPORT_AGENT_VERSION says; v1 is asked for by name below.

    The walkthrough runs ``SUPPORT_AGENT_VERSION=v1 pytest tests/incidents`` to show the duplicate
    email test failing; this file compares both versions side by side instead.
    """
    with use_version("v2"):
        yield


def _counts(result):
    return {t: len(result.calls(t)) for t in ("kb.search", "http.get", "email.send")}


@pytest.mark.replay(INCIDENT, stubs=STUBS, faults={"http.get": HTTP_FAULTS})
def test_fixed_agent_escalates_after_one_failed_call(replayed, replay_fault):
    """Under each http.get fault the fix makes one http.get call, one holding email, escalates."""
    assert replay_fault.startswith("http.get=")
    assert replayed.stop_reason == "escalated"
    assert _counts(replayed) == {"kb.search": 1, "http.get": 1, "email.send": 1}
    assert replayed.replayed.tool_calls == 3 < replayed.recorded.tool_calls
    assert replayed.exception is None


@pytest.mark.parametrize("fault", HTTP_FAULTS)
def test_incident_agent_keeps_searching_under_each_fault(fault):
    """The incident code (v1) answers every failure with another search: 14 calls, still
    'completed'."""
    with use_version("v1"):
        result = replay_run(INCIDENT, faults={"http.get": fault})
    assert _counts(result) == {"kb.search": 7, "http.get": 7, "email.send": 0}
    assert result.stop_reason == "completed"
    assert result.output.startswith("could not answer ticket")


@pytest.mark.parametrize("fault", HTTP_FAULTS)
def test_fixed_agent_bounded_where_the_incident_agent_is_not(fault):
    """Side by side, per fault: the fix makes at most 3 tool calls, the incident code more than 4x
    that."""
    calls = {}
    for version in ("v1", "v2"):
        _outbox, stubs = fake_outbox()
        with use_version(version):
            result = replay_run(INCIDENT, stubs=stubs, faults={"http.get": fault})
        calls[version] = result.replayed.tool_calls
    assert calls == {"v1": 14, "v2": 3}


def test_the_error_raised_is_the_tools_own_class_with_its_status():
    """A 503 fault on http.get raises the demo's own HTTPStatusError (what the recording shows the
    tool raises)."""
    result = replay_run(INCIDENT, stubs=fake_outbox()[1], faults="http.get=503")
    step = result.calls("http.get")[0]
    assert step.status == "error" and step.error.endswith("HTTPStatusError[503]")


@pytest.mark.parametrize("version, sends", [("v1", 2), ("v2", 1)])
def test_lost_email_acknowledgement(version, sends):
    """With the first email.send answered 503, v1 sends the email again and v2 escalates without a
    second send."""
    with use_version(version):
        result = replay_run(HEALTHY, faults=f"email.send=503:{OWN_ERROR}@first:1")
    assert len(result.calls("email.send")) == sends
    assert result.stop_reason == ("completed" if version == "v1" else "escalated")
    first = result.calls("email.send")[0]
    assert first.status == "error" and first.error.endswith("[503]")
    if version == "v1":  # the retry got the recorded answer: the fault did not use it up
        assert result.calls("email.send")[1].status == "ok"


def test_transient_fault_on_the_first_calls_only():
    """http.get=503@first:1 fails one call; the fix escalates on it, so the second recorded answer
    is never asked for."""
    result = replay_run(HEALTHY, stubs=fake_outbox()[1], faults=f"http.get=503:{OWN_ERROR}@first:1")
    assert [s.status for s in result.calls("http.get")] == ["error"]
    assert result.stop_reason == "escalated"
