"""The example support agent: healthy runs, the incident (v1), the fix (v2), and their replays."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from replay.demo import load_example
from replay.replayer import replay_run
from replay.store import Store

load_example()  # examples/ is in the checkout, not in the installed package (as for `replay demo`)

from examples.support_agent import rec, use_version, version  # noqa: E402
from examples.support_agent.agent import handle  # noqa: E402
from examples.support_agent.config import VERSIONS  # noqa: E402
from examples.support_agent.scenario import fake_outbox, record_batch, ticket  # noqa: E402
from examples.support_agent.upstream import FakeClock, HTTPStatusError, Upstream, use  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INCIDENT_TEST = ROOT / "tests" / "incidents" / "test_incident_duplicate_email.py"
INCIDENT_TICKETS = [ticket(i) for i in range(20, 25)]


def _cassette() -> Path:
    """The committed incident cassette, named by the incident test."""
    line = next(ln for ln in INCIDENT_TEST.read_text().splitlines() if ln.startswith("CASSETTE = "))
    return ROOT / line.split('"')[1]


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example's recorder writes into a fresh store; simulated time does not sleep."""
    monkeypatch.setenv("SUPPORT_AGENT_TIME_SCALE", "0")
    path = tmp_path / "replay.db"
    previous = rec.db
    rec.reopen(path)
    try:
        yield path
    finally:
        rec.reopen(previous)


def _runs(path: Path, run_ids: list[str]) -> list[tuple]:
    rec.flush()
    store = Store(path)
    try:
        return [
            (store.get_run(r), [e for e in store.events(r) if e.kind == "tool_result"])
            for r in run_ids
        ]
    finally:
        store.close()


def test_healthy_run_makes_four_tool_calls(store_path):
    """On a healthy upstream a run searches, fetches the order and the customer, emails once and
    completes.
    """
    batch = record_batch([ticket(i) for i in range(3)], flaky=False, version="v1")
    for run, steps in _runs(store_path, batch.run_ids):
        assert [e.tool for e in steps] == ["kb.search", "http.get", "http.get", "email.send"]
        assert run.stop_reason == "completed"
    assert batch.duplicates == 0 and sum(batch.delivered.values()) == 3


def test_v1_on_a_flaky_upstream_loops_and_emails_twice(store_path):
    """Deploy v1 on a flaky upstream makes about 12 tool calls a run and sends the same email
    twice, yet completes.
    """
    batch = record_batch(INCIDENT_TICKETS, flaky=True, version="v1")
    runs = _runs(store_path, batch.run_ids)
    assert 10 <= sum(r.tool_calls for r, _ in runs) / len(runs) <= 14
    for run, steps in runs:
        sends = [e for e in steps if e.tool == "email.send"]
        assert [e.status for e in sends] == ["error", "ok"]
        assert sends[0].args_sha == sends[1].args_sha
        assert sends[0].error == "replay.HTTPStatusError[503]"
        assert run.stop_reason == "completed"
        assert run.versions == VERSIONS["v1"]
    assert batch.duplicates == len(INCIDENT_TICKETS)


def test_v2_on_a_flaky_upstream_never_loops_and_emails_once(store_path):
    """Deploy v2 on the same flaky upstream searches once, makes at most 4 tool calls and emails
    each customer once.
    """
    batch = record_batch(INCIDENT_TICKETS, flaky=True, version="v2")
    for run, steps in _runs(store_path, batch.run_ids):
        assert [e.tool for e in steps].count("kb.search") == 1
        assert run.tool_calls <= 4
        assert run.stop_reason in ("completed", "escalated")
        assert run.versions == VERSIONS["v2"]
    assert batch.duplicates == 0 and sum(batch.delivered.values()) == len(INCIDENT_TICKETS)


def test_v2_retries_with_an_idempotency_key_deliver_once():
    """v2's email.send retries a lost acknowledgement with the same idempotency key, so one email
    is delivered.
    """
    outbox, stubs = fake_outbox(lost_acks=1)
    with use_version("v2"):
        answer = stubs["email.send"]("a@example.com", "Re: order", "Your order shipped.")
    assert answer["status"] == "duplicate_suppressed"
    assert outbox.delivered == {"a@example.com": 1}
    assert outbox.requests["POST /emails"] == 2


def test_v1_retries_http_get_eight_times_without_jitter():
    """v1's http.get makes 9 attempts 50 ms apart against an upstream that stays down, then raises
    with the status.
    """
    up = Upstream(clock=FakeClock(scale=0), down=[(0, 10_000, 503)])
    with use_version("v1"), use(up), pytest.raises(HTTPStatusError) as info:
        from examples.support_agent.tools import http_get

        http_get("https://api.shop.test/orders/A-3001")
    assert info.value.status_code == 503
    assert "after 9 attempt(s)" in str(info.value)
    assert up.requests["GET /orders"] == 9
    assert up.clock.now_ms == 9 * 40 + 8 * 50


def test_http_status_error_rebuilds_from_its_message():
    """An HTTPStatusError rebuilt from its message (as a replay does) keeps its status code."""
    exc = HTTPStatusError(429, "GET /orders/A-3001")
    assert HTTPStatusError(str(exc)).status_code == 429


def test_version_flag_is_read_at_call_time(monkeypatch):
    """The deploy flag is read from SUPPORT_AGENT_VERSION at each call, use_version overrides it,
    v2 is the default.
    """
    monkeypatch.delenv("SUPPORT_AGENT_VERSION", raising=False)
    assert version() == "v2"
    monkeypatch.setenv("SUPPORT_AGENT_VERSION", "v1")
    assert version() == "v1"
    with use_version("v2"):
        assert version() == "v2"
    monkeypatch.setenv("SUPPORT_AGENT_VERSION", "v3")
    with pytest.raises(ValueError, match="v1, v2"):
        version()


def test_replaying_the_incident_cassette_with_v1_reproduces_it():
    """The committed cassette replayed against the code that ran (v1) matches the recording step
    for step.
    """
    with use_version("v1"):
        result = replay_run(str(_cassette()))
    assert result.diff.is_empty, result.diff.to_text(color=False)
    assert result.stop_reason == "completed"
    assert len(result.calls("email.send")) == 2


def test_replaying_the_incident_cassette_with_v2_shows_the_fix():
    """Against v2 the same cassette diverges: 3 tool calls instead of 17, one email, stop reason
    escalated.
    """
    outbox, stubs = fake_outbox()
    with use_version("v2"):
        result = replay_run(str(_cassette()), agent=handle, stubs=stubs)
    assert result.diff.stop_reason_before == "completed"
    assert result.diff.stop_reason_after == "escalated"
    assert (result.diff.tool_calls_before, result.diff.tool_calls_after) == (17, 3)
    assert sum(outbox.delivered.values()) == 1
    assert result.replayed.versions == VERSIONS["v2"] != result.recorded.versions


def test_the_incident_test_fails_against_v1(pytester, monkeypatch):
    """The incident test holds the fix: run with SUPPORT_AGENT_VERSION=v1 (the code that ran) it
    fails.
    """
    monkeypatch.setenv("SUPPORT_AGENT_VERSION", "v1")  # the child pytest inherits the environment
    monkeypatch.setenv("SUPPORT_AGENT_TIME_SCALE", "0")
    proc = pytester.run(
        sys.executable,
        "-m",
        "pytest",
        str(INCIDENT_TEST),
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),
    )
    out = proc.stdout.str()
    assert proc.ret == 1, out
    assert "1 failed" in out
    assert "emails received per recipient: {'u" in out  # a pseudonymised address, emailed twice
    assert "@redacted.invalid': 2}" in out
