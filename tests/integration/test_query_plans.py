"""runs, stats, alerts, metrics and prune reach runs and events through indexes, not full scans."""

from __future__ import annotations

import re
import sqlite3

import pytest
from _monitor_data import DAY, EVERYTHING_FIRES, build_store

from replay.alerts import alerts_for_store
from replay.metrics import PrometheusExporter
from replay.stats import stats_for_store

pytest.importorskip("prometheus_client")

#: A plan step that reads a whole table: ``SCAN runs`` / ``SCAN e`` with no index after it.
FULL_SCAN = re.compile(r"^SCAN (runs|events|r|e)$")


def plans(path, statements):
    """EXPLAIN QUERY PLAN of each traced statement that reads runs or events."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for sql in statements:
            if not re.match(r"\s*(SELECT|DELETE|UPDATE)\b", sql, re.I):
                continue
            if not re.search(r"\b(runs|events)\b", sql):
                continue
            out[sql] = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        return out
    finally:
        conn.close()


@pytest.fixture
def traced(tmp_path):
    store, now = build_store(tmp_path / "replay.db", n_runs=300)
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    yield store, now, statements
    store.db.conn.set_trace_callback(None)
    store.close()


def assert_indexed(store, statements):
    found = plans(store.path, statements)
    assert found, "no statement was traced"
    scans = {
        sql[:120]: steps for sql, steps in found.items() if any(FULL_SCAN.match(s) for s in steps)
    }
    assert scans == {}


def test_stats_queries_use_indexes(traced):
    """`replay stats` over a window (all agents, one agent, by day) searches the indexes only."""
    store, now, statements = traced
    stats_for_store(store, since_ms=now - 7 * DAY, until_ms=now + 1)
    stats_for_store(store, since_ms=now - 7 * DAY, until_ms=now + 1, agent="support", by="day")
    assert_indexed(store, statements)


def test_alert_queries_use_indexes(traced):
    """`replay alerts`, including each firing rule's worst-runs query, searches the indexes only."""
    store, now, statements = traced
    rules = EVERYTHING_FIRES
    report = alerts_for_store(
        store, window_ms=3 * DAY, baseline_ms=6 * DAY, rules=rules, now_ms=now
    )
    assert report.fired  # the worst-runs queries ran
    assert_indexed(store, statements)


def test_runs_listing_uses_indexes(traced):
    """`replay runs` with and without filters reads runs through an index, newest first."""
    store, now, statements = traced
    store.runs(limit=50)
    store.runs(agent="support", since_ms=now - DAY, limit=50)
    store.runs(stop_reason="loop_detected", limit=50)
    assert_indexed(store, statements)


def test_metrics_poll_uses_indexes(traced):
    """A metrics poll (runs started in the lookback) searches the indexes only."""
    store, now, statements = traced
    PrometheusExporter().observe_store(store, now - DAY)
    assert_indexed(store, statements)


def test_prune_uses_indexes(traced):
    """prune finds expired runs, events and snapshots through indexes and keys, not table scans."""
    store, now, statements = traced
    result = store.prune(now_ms=now + 60 * DAY)
    assert result.runs > 0 and result.events > 0
    assert_indexed(store, statements)
