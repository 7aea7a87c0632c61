"""The demo's own retry loop (inside ``http.get``) under upstream faults, with the tool live.

A fault on ``http.get`` replaces the tool's whole answer, so the retry policy inside the tool never
runs (see test_faults_demo_agent.py). The demo's ``http.get`` does not use a real HTTP client (it
calls the in-process fake upstream, `replay.demo_agent.upstream`), so the HTTP layer has nothing to
fault; the nearest honest equivalent: ``http.get`` runs live (``live={"http.get"}``) against the
demo's healthy upstream, whose ``get`` is put behind `replay.faults.CallFaults` (the fault spec
syntax, on the calls the tool makes). Everything else answers from the incident recording.
v1 retries 8 times 50 ms apart; v2 twice, with exponential backoff and jitter.
"""

from __future__ import annotations

import pytest

from examples.support_agent.config import use_version
from examples.support_agent.scenario import fake_outbox
from examples.support_agent.upstream import FakeClock, Upstream, use
from replay import replay_run
from replay.faults import CallFaults

INCIDENT = "cassettes/incidents/r_01m80g7tce74qmb7zv96pmd1t5.json"
OWN_ERROR = "examples.support_agent.upstream:HTTPStatusError"


def _replay(version, fault):
    """Replay the incident as `version` with http.get live and its upstream faulted per `fault`.

    Returns the result, the fault plan (requests counted) and the simulated time of each request.
    """
    up = Upstream.healthy(clock=FakeClock(scale=0))
    plan = CallFaults({"upstream.get": fault}, client=OWN_ERROR)
    faulted = plan.wrap("upstream.get", up.get)
    times = []

    def get(path):
        times.append(up.clock.now_ms)
        return faulted(path)

    up.get = get
    _outbox, stubs = fake_outbox()
    with use_version(version), use(up):
        result = replay_run(INCIDENT, stubs=stubs, live={"http.get"})
    return result, plan, times


def _counts(result):
    return {t: len(result.calls(t)) for t in ("kb.search", "http.get", "email.send")}


@pytest.mark.parametrize("fault", ["503", "429", "429:retry-after=2"])
def test_incident_policy_hammers_where_the_fix_is_bounded(fault):
    """Upstream down: v1 sends 63 requests (7 calls x 9 attempts), v2 sends 3 and escalates."""
    v1, plan1, _ = _replay("v1", fault)
    v2, plan2, _ = _replay("v2", fault)
    assert plan1.calls == {"upstream.get": 63}
    assert _counts(v1) == {"kb.search": 7, "http.get": 7, "email.send": 0}
    assert v1.stop_reason == "completed"
    assert plan2.calls == {"upstream.get": 3}
    assert _counts(v2) == {"kb.search": 1, "http.get": 1, "email.send": 1}
    assert v2.stop_reason == "escalated"
    status = fault[:3]
    assert v2.calls("http.get")[0].error.endswith(f"HTTPStatusError[{status}]")
    assert "live" in v2.diff.to_text()


def test_incident_retries_in_lockstep_the_fix_backs_off_with_jitter():
    """v1 waits a fixed 50 ms between attempts (no jitter); v2 ~600 then ~1200 ms, jittered."""
    _, _, t1 = _replay("v1", "503")
    _, _, t2 = _replay("v2", "503")
    gaps1 = {round(b - a, 6) for a, b in zip(t1[:8], t1[1:9], strict=True)}  # one call's 9
    assert gaps1 == {50.0}
    assert len(t2) == 3
    g1, g2 = (b - a for a, b in zip(t2, t2[1:], strict=False))
    assert 300 <= g1 <= 600 and 600 <= g2 <= 1200
    assert g2 != 2 * g1  # jittered: not the plain doubling


def test_neither_policy_retries_a_timeout_inside_the_tool():
    """A timeout is not a retryable status: one request per http.get call (v1: 7 calls, v2: 1)."""
    v1, plan1, _ = _replay("v1", "timeout")
    v2, plan2, _ = _replay("v2", "timeout")
    assert (plan1.calls, plan2.calls) == ({"upstream.get": 7}, {"upstream.get": 1})
    assert (v1.stop_reason, v2.stop_reason) == ("completed", "escalated")


def test_a_short_outage_is_absorbed_by_the_fixs_two_retries():
    """Two failed requests then recovery: v2's third attempt succeeds, no escalation."""
    v2, plan2, _ = _replay("v2", "503@first:2")
    assert plan2.injected == [(1, "upstream.get=503@first:2"), (2, "upstream.get=503@first:2")]
    assert plan2.calls["upstream.get"] >= 3
    assert v2.stop_reason != "escalated"
    assert v2.calls("http.get")[0].status == "ok"
