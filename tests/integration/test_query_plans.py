"""runs, stats, alerts, metrics and prune reach runs and events through indexes, not full scans."""

from __future__ import annotations

import re
import sqlite3

import pytest
from _monitor_data import DAY, EVERYTHING_FIRES, build_store

from replay.alerts import alerts_for_store
from replay.metrics import PrometheusExporter
from replay.models import Event
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
    # Spread over batches: some run rows hold no step totals, so stats reads their events too.
    store, now = build_store(tmp_path / "replay.db", n_runs=300, split=True)
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


def _untotalled_steps(store, now):
    """Stats of a window with runs that hold no step totals (their steps are read from events)."""
    (n,) = store.query(
        "SELECT count(*) FROM runs WHERE tool_steps IS NULL AND started_ms >= ?", [now - DAY]
    )[0]
    assert n > 0


def _write_late(store, now):
    """A run row written again and a step of another run written without its row: the store
    reads the first's events for its totals and empties the second's."""
    first, second = store.runs(since_ms=now - DAY, limit=2)
    late = Event(run_id=second.run_id, kind="tool_result", ts_ms=now, step_id=999, tool="t")
    store.write_batch(runs=[first], events=[late])


def test_writing_run_rows_reads_their_events_by_key(traced):
    """Writing a run row reads its events for its step totals by key, and emptying the totals of
    runs whose events came without their row finds them by key."""
    store, now, statements = traced
    _write_late(store, now)
    assert any("tool_steps = NULL" in s for s in statements)
    assert any("FROM events WHERE run_id IN" in s for s in statements)
    assert_indexed(store, statements)


def test_stats_queries_use_indexes(traced):
    """`replay stats` over a window (all agents, one agent, by day) searches the indexes only."""
    store, now, statements = traced
    _untotalled_steps(store, now)
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


# -- PostgreSQL ----------------------------------------------------------------------------------

#: Partial indexes: scanning one whole reads only the few rows it holds (pinned runs).
PG_PARTIAL = {"runs_pinned"}


@pytest.fixture
def pg_traced(pg_url, monkeypatch):
    """A generated store on the server; each statement the store sends that reads runs or events
    is planned (`pg_plan`) on a second connection just before it runs, on the rows it will see."""
    import psycopg

    store, now = build_store(pg_url, n_runs=300, split=True)
    planner = psycopg.connect(pg_url, autocommit=True)
    planner.execute("ANALYZE")
    for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
        planner.execute(f"SET {setting} = off")
    plans: dict[str, list[str]] = {}
    real = psycopg.Cursor.execute

    def execute(cur, query, params=None, **kw):
        if (
            isinstance(query, str)
            and re.match(r"\s*(WITH|SELECT|DELETE|UPDATE)\b", query, re.I)
            and re.search(r"\b(runs|events)\b", query)
        ):
            plans[query] = pg_plan(planner, query, params)
        return real(cur, query, params, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    yield store, now, plans
    monkeypatch.undo()
    planner.close()
    store.close()


def pg_full_reads(node, limited):
    """The scan nodes of a JSON plan that read all of runs or events: a Seq Scan, or an index
    scan with no condition (a whole index, then the table) unless a LIMIT stops it early or the
    index is partial. A whole covering index (Index Only Scan) is allowed, as SQLite's ``SCAN
    runs USING COVERING INDEX`` is above."""
    found = []
    if node.get("Relation Name") in ("runs", "events"):
        kind = node["Node Type"]
        whole = kind == "Seq Scan" or (
            kind == "Index Scan"  # a bitmap heap scan's condition is on its index scan below
            and "Index Cond" not in node
            and node.get("Index Name") not in PG_PARTIAL
            and not limited
        )
        if whole:
            found.append(f"{kind} on {node['Relation Name']} {node.get('Index Name', '')}")
    bitmap = node.get("Node Type") == "Bitmap Index Scan"
    if bitmap and "Index Cond" not in node and node.get("Index Name") not in PG_PARTIAL:
        found.append(f"Bitmap Index Scan {node.get('Index Name')} without a condition")
    for child in node.get("Plans", []):
        found += pg_full_reads(child, limited or node["Node Type"] == "Limit")
    return found


def pg_plan(planner, sql, params):
    """The whole-table reads in the plan of `sql`, planned with sequential scans, hash and merge
    joins off: on a small test store the planner would rather read whole tables, so this asks
    whether an index *can* serve each access (the window's runs by started_ms then their events
    by key; a prune batch's keys one by one); whatever is left reads every row."""
    (plan,) = planner.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    return pg_full_reads(plan[0]["Plan"], False)


def assert_pg_indexed(plans):
    assert plans, "no statement was recorded"
    full = {sql[:120]: reads for sql, reads in plans.items() if reads}
    assert not full, "\n".join(f"{sql}: {reads}" for sql, reads in full.items())


def test_postgresql_runs_stats_alerts_and_prune_use_indexes(pg_traced):
    """On PostgreSQL, `runs`, `stats`, `alerts`, a metrics poll and `prune` reach runs and events
    through indexes: no statement's plan reads either table whole."""
    store, now, plans = pg_traced
    store.runs(limit=50)
    store.runs(agent="support", since_ms=now - DAY, limit=50)
    store.runs(stop_reason="loop_detected", limit=50)
    # Windows of a fraction of the store: over most of it, reading whole tables is right.
    _untotalled_steps(store, now)
    stats_for_store(store, since_ms=now - DAY, until_ms=now + 1)
    stats_for_store(store, since_ms=now - 2 * DAY, until_ms=now + 1, agent="support", by="day")
    report = alerts_for_store(
        store, window_ms=DAY, baseline_ms=DAY, rules=EVERYTHING_FIRES, now_ms=now
    )
    assert report.fired  # the worst-runs queries ran
    PrometheusExporter().observe_store(store, now - DAY)
    assert any("tool_steps IS NULL" in sql for sql in plans)  # the steps of untotalled runs
    _write_late(store, now)
    assert any("tool_steps = NULL" in sql for sql in plans)
    assert_pg_indexed(plans)
    plans.clear()
    result = store.prune(now_ms=now + 60 * DAY)
    assert result.runs > 0 and result.events > 0
    assert_pg_indexed(plans)
