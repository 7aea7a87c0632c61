"""Incident: the support agent emailed a customer twice while the shop API was flaky.

Recorded by `replay demo` on deploy v1 (8 retries without jitter, no idempotency key, "try another
query" on errors): 17 tool calls, ``email.send`` twice with the same args_sha, stop reason
``completed``. This test replays that run against the code checked out now (v2) and holds the
fix: no retry loop, one email, the ticket escalated. Against v1 it fails
(tests/integration/test_support_agent.py checks that).

The fix sends a holding email the recording has no answer for: ``stubs=`` answers ``email.send``
with a fake outbox that behaves like the incident's gateway (the first send is delivered, then
answered 503), running the deployed ``email.send`` code against it, so the outbox counts what the
customer would have received.
"""

from __future__ import annotations

import pytest

from examples.support_agent.scenario import fake_outbox

CASSETTE = "cassettes/incidents/r_01m80g7tce74qmb7zv96pmd1t5.json"
OUTBOX, STUBS = fake_outbox()


@pytest.mark.replay(CASSETTE, stubs=STUBS)
def test_fixed_agent_escalates_and_emails_the_customer_once(replayed):
    """Replayed against the fix, the incident run stops after the first failure, escalates, and
    sends one email.
    """
    sent = [e for e in replayed.recording.steps if e.tool == "email.send"]
    assert [e.args_sha for e in sent] == [sent[0].args_sha] * 2, (
        "the cassette is the duplicate-email run"
    )

    received = dict(OUTBOX.delivered)
    assert list(received.values()) == [1], f"emails received per recipient: {received}"
    assert len(replayed.calls("email.send")) == 1
    assert replayed.stop_reason == "escalated"
    assert len(replayed.calls("kb.search")) == 1, "a failed call is no reason to search again"
    assert replayed.replayed.tool_calls <= 4 < replayed.recorded.tool_calls
