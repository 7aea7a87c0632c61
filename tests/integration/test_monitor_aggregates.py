"""stats, alerts and metrics from SQL aggregates equal what the per-event computation gives."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from _monitor_data import DAY, EVERYTHING_FIRES, HOUR, build_store

from replay.alerts import RULES, AlertRules, alerts_for_store, evaluate
from replay.errors import CorruptRowWarning
from replay.metrics import AlertWindows, PrometheusExporter
from replay.models import Event, Run, new_run_id
from replay.stats import compute_stats, compute_stats_by, load_window, stats_for_store
from replay.store_api import open_store
from tests.pg import drop_database, execute, new_database

pytest.importorskip("prometheus_client")


@pytest.fixture(scope="module", params=["one-batch", "split"])
def generated(module_store_url, request):
    """The generated store, on each backend (SQLite file, PostgreSQL database), written in one
    batch (every run row holds its step totals) or spread over batches (some rows hold none)."""
    if request.param == "one-batch":
        store, now = build_store(module_store_url)
        yield store, now
        store.close()
        return
    if not module_store_url.startswith("postgres"):  # a second store: a file of its own
        store, now = build_store(module_store_url.replace(".db", "-split.db"), split=True)
        yield store, now
        store.close()
        return
    admin = request.getfixturevalue("pg_admin_url")
    url = new_database(admin)
    try:
        store, now = build_store(url, split=True)
        yield store, now
        store.close()
    finally:
        drop_database(admin, url)


WINDOWS = [
    pytest.param(None, None, id="all"),
    pytest.param(3 * DAY, None, id="3d"),
    pytest.param(None, "support", id="agent"),
    pytest.param(9 * DAY, "batch", id="agent-without-model-steps"),
    pytest.param(HOUR, "billing", id="nearly-empty"),
]


@pytest.mark.parametrize(("span", "agent"), WINDOWS)
def test_store_stats_equal_the_per_event_computation(generated, span, agent):
    """Every figure of `replay stats` from SQL equals compute_stats over the window's models."""
    store, now = generated
    since = None if span is None else now - span
    report = stats_for_store(store, since_ms=since, until_ms=now + 1, agent=agent)
    runs, steps = load_window(store, since_ms=since, until_ms=now + 1, agent=agent)
    assert report.stats == compute_stats(runs, steps)
    assert report.stats.runs == len(runs)


def test_generated_store_exercises_every_case(generated):
    """The generated store holds inferred kills, replays, unknown errors and both token bases."""
    store, now = generated
    stats = stats_for_store(store, since_ms=None, until_ms=now + 1).stats
    batch = stats_for_store(store, since_ms=None, until_ms=now + 1, agent="batch").stats
    runs = store.runs(include_replays=True)
    assert any(r.stop_inferred for r in runs) and any(r.replay_of for r in runs)
    assert any(r.stop_reason is None for r in runs)  # open runs stay unfinished
    assert stats.stop_reasons["killed"] > sum(
        1 for r in runs if r.stop_reason == "killed" and not r.stop_inferred and not r.replay_of
    )
    assert "unknown" in stats.errors_by_class and stats.tokens_basis == "model_result"
    assert batch.tokens_basis == "run"


@pytest.mark.parametrize("by", ["hour", "day"])
def test_store_buckets_equal_the_per_event_buckets(generated, by):
    """Per-hour and per-day stats from SQL equal compute_stats_by, empty buckets included."""
    store, now = generated
    since = now - 4 * DAY
    report = stats_for_store(store, since_ms=since, until_ms=now + 1, by=by)
    runs, steps = load_window(store, since_ms=since, until_ms=now + 1)
    expected = compute_stats_by(runs, steps, by, since_ms=since, until_ms=now + 1)
    assert [(b.start_ms, b.stats) for b in report.buckets] == [
        (b.start_ms, b.stats) for b in expected
    ]


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(AlertRules(min_runs=5), id="defaults"),
        pytest.param(
            EVERYTHING_FIRES,
            id="everything-fires",
        ),
    ],
)
def test_store_alerts_equal_the_per_event_evaluation(generated, rules):
    """alerts_for_store judges and names the same runs as evaluate over the windows' models."""
    store, now = generated
    fired = set()
    for window, baseline in ((3 * DAY, 6 * DAY), (6 * DAY, 3 * DAY)):
        report = alerts_for_store(
            store, window_ms=window, baseline_ms=baseline, rules=rules, now_ms=now
        )
        cur = load_window(store, since_ms=now - window, until_ms=now + 1)
        base = load_window(store, since_ms=now - window - baseline, until_ms=now - window)
        assert report.results == evaluate(*cur, *base, rules)
        assert report.current_runs == len(cur[0]) and report.baseline_runs == len(base[0])
        fired |= {r.rule for r in report.results if r.fired and r.runs}
    if rules is EVERYTHING_FIRES:
        assert fired == set(RULES)  # every rule's worst-runs query was compared


def test_metrics_from_the_store_equal_the_listener_feed(generated):
    """observe_store counts the same metrics as feeding each finished run and its events."""
    store, now = generated
    from_store = PrometheusExporter()
    counted = from_store.observe_store(store, now - 5 * DAY)
    by_hand = PrometheusExporter()
    runs = [
        r
        for r in store.runs(since_ms=now - 5 * DAY)
        if r.stop_reason is not None and r.replay_of is None
    ]
    for r in runs:
        by_hand(r, store.events(r.run_id))
    assert counted == len(runs) and any(r.stop_inferred for r in runs)

    def samples(exporter):
        return sorted(
            (s["name"], sorted(s["labels"].items()), round(s["value"], 9))
            for fam in exporter.to_json()
            for s in fam["samples"]
            if not s["name"].endswith("_created")
        )

    assert samples(from_store) == samples(by_hand)
    assert from_store.observe_store(store, now - 5 * DAY) == 0  # nothing counted twice


@pytest.mark.parametrize("usage", ["not json", '{"tokens_in": -5}', '{"tokens": 1}'])
def test_an_unreadable_run_is_left_out_with_a_warning_as_the_listing_does(store_url, usage):
    """A run row whose usage cannot be read is skipped with its steps, named in one warning."""
    store, now = build_store(store_url, n_runs=60)
    bad = next(r.run_id for r in store.runs() if store.events(r.run_id))
    execute(store, "UPDATE runs SET usage = ? WHERE run_id = ?", [usage, bad])
    with pytest.warns(CorruptRowWarning, match=bad) as caught:
        stats = stats_for_store(store, since_ms=None, until_ms=now + 1).stats
    assert len(caught) == 1
    with pytest.warns(CorruptRowWarning, match=bad):
        expected = compute_stats(*load_window(store, since_ms=None, until_ms=now + 1))
    assert stats == expected
    store.close()


def test_metrics_expose_one_alert_gauge_per_registered_rule(generated):
    """agent_alert_firing{rule} is 1 for each rule that fires and 0 for the others, every rule."""
    store, now = generated
    windows = AlertWindows(3 * DAY, 6 * DAY, rules=AlertRules(min_runs=5, spend_ratio=0.1))
    report = windows.judge(store)
    exporter = PrometheusExporter()
    exporter.observe_alerts(report)
    gauges = {
        s["labels"]["rule"]: s["value"]
        for fam in exporter.to_json()
        if fam["name"] == "agent_alert_firing"
        for s in fam["samples"]
    }
    assert set(gauges) == set(RULES) and gauges["spend_per_run"] == 1
    assert gauges == {r.rule: float(r.fired) for r in report.results}


def test_run_rows_hold_the_step_totals_of_their_events(generated, request):
    """A run row written with or after its events holds their totals; one whose events came later
    without it holds none, and stats read those runs' steps from their events instead."""
    store, _now = generated
    rows = store.query("SELECT run_id, tool_steps, step_errors, model_tokens FROM runs")
    with_totals = [r for r in rows if r[1] is not None]
    for run_id, tool_steps, errors, tokens in with_totals[:60]:
        events = store.events(run_id)
        tools = [e for e in events if e.kind == "tool_result"]
        failed = Counter(e.error or "unknown" for e in tools if e.status == "error")
        model = [
            e.usage.tokens_in + e.usage.tokens_out
            for e in events
            if e.kind == "model_result" and e.usage is not None
        ]
        assert tool_steps == len(tools)
        assert (json.loads(errors) if errors else {}) == failed
        assert (json.loads(tokens) if tokens else []) == model
    assert with_totals
    if request.node.callspec.params["generated"] == "split":
        assert len(with_totals) < len(rows)


def _one_run(store, t0, *, ended_ms, steps):
    run = Run(
        run_id=new_run_id(t0),
        agent="a",
        started_ms=t0,
        ended_ms=ended_ms,
        stop_reason="completed",
    )
    events = [Event(run_id=run.run_id, kind="run_start", ts_ms=t0)] + [
        Event(
            run_id=run.run_id,
            kind="tool_result",
            ts_ms=t0 + i,
            step_id=i,
            tool="t",
            status="error",
            error="HTTP503",
        )
        for i in steps
    ]
    events.append(Event(run_id=run.run_id, kind="stop", ts_ms=ended_ms, stop_reason="completed"))
    store.write_batch(runs=[run], events=events)
    return run


def _stats_match_the_events(store, until):
    stats = stats_for_store(store, since_ms=None, until_ms=until).stats
    assert stats == compute_stats(*load_window(store, since_ms=None, until_ms=until))
    return stats


def test_steps_written_after_the_run_row_or_pruned_still_count_as_the_events_say(store_url):
    """A step written after its run's row counts, and a step pruned while its run row stays
    counts no more: the totals on the row never go stale."""
    t0 = 1_780_000_000_000
    store = open_store(store_url, event_days=1)
    try:
        run = _one_run(store, t0, ended_ms=t0 + 5 * DAY, steps=[1])
        late = Event(run_id=run.run_id, kind="tool_result", ts_ms=t0 + 9, step_id=9, tool="t")
        store.write_batch(events=[late])
        assert _stats_match_the_events(store, t0 + 6 * DAY).tool_results == 2
        store.write_batch(runs=[run])  # the row again: totals from all its events
        assert _stats_match_the_events(store, t0 + 6 * DAY).tool_results == 2
        # Its steps expire a day after they ran, the run a day after it ended.
        assert store.prune(now_ms=t0 + 3 * DAY).events == 3
        assert store.runs()[0].run_id == run.run_id
        stats = _stats_match_the_events(store, t0 + 6 * DAY)
        assert stats.tool_results == 0 and stats.tool_errors == 0
    finally:
        store.close()


def test_run_rows_written_before_step_totals_give_the_same_figures(store_url):
    """Run rows without step totals (written before schema 9) give the figures of rows with them,
    overall and per day."""
    store, now = build_store(store_url, n_runs=80)
    try:
        before = stats_for_store(store, since_ms=None, until_ms=now + 1, by="day")
        execute(store, "UPDATE runs SET tool_steps = NULL, step_errors = NULL, model_tokens = NULL")
        assert store.query("SELECT count(*) FROM runs WHERE tool_steps IS NOT NULL") == [(0,)]
        after = stats_for_store(store, since_ms=None, until_ms=now + 1, by="day")
        assert after.stats == before.stats and after.stats.tool_results > 0
        assert after.buckets == before.buckets
    finally:
        store.close()
