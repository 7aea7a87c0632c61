"""`replay stats`, `replay alerts`, `replay metrics` on a real store, through click's CliRunner.

The central test recreates the source document's incident ("Everything is slow"): tool calls/run
4.3 -> 11.7, p95 latency 2.1 s -> 8.4 s, spend 2x, 429/503 retries constant, success rate still
~91% -- and shows the drift alerts fire while the success rate does not move.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from replay.cli_monitor import alerts, metrics, stats
from replay.models import Event, Run, Usage, new_run_id
from replay.stats import compute_stats, load_window
from replay.store_api import StoreAPI, open_store

MIN = 60_000
DAY = 86_400_000
SVG = "{http://www.w3.org/2000/svg}"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tool calls per run: both lists average exactly the incident's numbers (4.3 and 11.7).
BASELINE_CALLS = [2, 3, 3, 4, 4, 4, 5, 5, 6, 7]
INCIDENT_CALLS = [8, 9, 10, 11, 12, 12, 13, 13, 14, 15]
OTHER_REASONS = ["error", "budget_exceeded", "max_steps"]


def make_run(
    rng: random.Random,
    *,
    agent: str,
    start: int,
    calls: int,
    per_call_ms: int,
    retry_share: float,
    reason: str,
) -> tuple[Run, list[Event]]:
    """One run with its run_start, tool and model steps and stop event, like the Recorder writes."""
    rid = new_run_id(start)
    events = [Event(run_id=rid, kind="run_start", ts_ms=start)]
    t, step, tokens_in, tokens_out = start, 0, 0, 0
    for _ in range(calls):
        step += 1
        dur = int(per_call_ms * rng.uniform(0.9, 1.1))
        t += dur
        failed = rng.random() < retry_share
        events.append(
            Event(
                run_id=rid,
                kind="tool_result",
                ts_ms=t,
                step_id=step,
                tool="http.get",
                args_sha=f"{rng.getrandbits(96):024x}",
                output_sha=f"{rng.getrandbits(96):024x}",
                duration_ms=dur,
                status="error" if failed else "ok",
                error=rng.choice(["HTTP429", "HTTP503"]) if failed else None,
            )
        )
    # One model call per two tool calls: tokens grow with calls, as the model "explains" errors.
    for _ in range(max(1, calls // 2)):
        step += 1
        tin, tout = 400 + rng.randrange(100), 80 + rng.randrange(40)
        tokens_in, tokens_out = tokens_in + tin, tokens_out + tout
        t += 5
        events.append(
            Event(
                run_id=rid,
                kind="model_result",
                ts_ms=t,
                step_id=step,
                tool="openai.chat",
                status="ok",
                duration_ms=5,
                usage=Usage(tokens_in=tin, tokens_out=tout),
            )
        )
    # Spend = $0.005 + $0.002 per tool call: 4.3 calls -> $0.0136, 11.5 calls -> $0.028 (2.06x).
    usage = Usage(
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=round(0.005 + 0.002 * calls, 6),
        tool_calls=calls,
    )
    events.append(Event(run_id=rid, kind="stop", ts_ms=t, stop_reason=reason, usage=usage))
    run = Run(
        run_id=rid,
        agent=agent,
        entrypoint="support:handle",
        started_ms=start,
        ended_ms=t,
        stop_reason=reason,
        usage=usage,
        tool_calls=calls,
        versions={"model": "m-2026-10"},
    )
    return run, events


def write_window(
    store: StoreAPI,
    rng: random.Random,
    *,
    n: int,
    start: int,
    end: int,
    calls: list[int],
    per_call_ms: int,
    retry_share: float,
    agent: str = "support-agent",
) -> None:
    """`n` runs spread over [start, end), 91% completed, the rest spread over other stop reasons."""
    completed = round(n * 0.91)
    reasons = ["completed"] * completed + [OTHER_REASONS[i % 3] for i in range(n - completed)]
    rng.shuffle(reasons)
    runs, events = [], []
    for i in range(n):
        r, ev = make_run(
            rng,
            agent=agent,
            start=start + (end - start) * i // n,
            calls=calls[i % len(calls)],
            per_call_ms=per_call_ms,
            retry_share=retry_share,
            reason=reasons[i],
        )
        runs.append(r)
        events.extend(ev)
    store.write_batch(runs=runs, events=events, snapshots=[])


@pytest.fixture
def db(store_url: str) -> str:
    """A new store on each backend: a SQLite file path, or a PostgreSQL database URL."""
    return store_url


def incident_store(db: str, *, incident: bool = True, now: int | None = None) -> int:
    """Baseline: 300 runs over the 7 days before the last 10 minutes; current: 44 runs in them.

    Both windows keep a margin from their edges, so `replay alerts` invoked a few seconds after
    `now` still sees the same runs in the same windows.
    """
    now = int(time.time() * 1000) if now is None else now
    rng = random.Random(20241008)
    store = open_store(db)
    write_window(
        store,
        rng,
        n=300,
        start=now - 10 * MIN - 7 * DAY + MIN,
        end=now - 11 * MIN,
        calls=BASELINE_CALLS,
        per_call_ms=300,
        retry_share=0.02,
    )
    if incident:  # retries up to 8x per call, no jitter: more calls, each slower, errors constant
        write_window(
            store,
            rng,
            n=44,
            start=now - 9 * MIN,
            end=now - MIN // 2,
            calls=INCIDENT_CALLS,
            per_call_ms=560,
            retry_share=0.35,
        )
    else:
        write_window(
            store,
            rng,
            n=44,
            start=now - 9 * MIN,
            end=now - MIN // 2,
            calls=BASELINE_CALLS,
            per_call_ms=300,
            retry_share=0.02,
        )
    return now


def invoke(cmd, args, env=None):
    return CliRunner().invoke(cmd, args, catch_exceptions=False, env=env)


class TestIncident:
    def test_alerts_fire_while_success_rate_stays_at_91_percent(self, db):
        """The incident pattern fires tool-calls, latency, spend and retry alerts; success stays."""
        now = incident_store(db)
        store = open_store(db)
        base = compute_stats(
            *load_window(store, since_ms=now - 10 * MIN - 7 * DAY, until_ms=now - 10 * MIN)
        )
        cur = compute_stats(*load_window(store, since_ms=now - 10 * MIN, until_ms=now + 1))
        # The recreated numbers are the source document's.
        assert (base.runs, cur.runs) == (300, 44)
        assert base.tool_calls_avg == pytest.approx(4.3, abs=0.05)
        assert cur.tool_calls_avg == pytest.approx(11.7, abs=0.3)
        assert base.latency_p95_ms == pytest.approx(2100, rel=0.1)
        assert cur.latency_p95_ms == pytest.approx(8400, rel=0.1)
        assert cur.spend_avg_usd / base.spend_avg_usd == pytest.approx(2.0, abs=0.15)
        # Success rate alone says nothing happened.
        assert base.success_rate == pytest.approx(0.91, abs=0.01)
        assert cur.success_rate == pytest.approx(0.91, abs=0.01)

        res = invoke(alerts, ["--db", db, "--window", "10m", "--baseline", "7d"])
        assert res.exit_code == 1, res.output
        lines = res.output.splitlines()
        assert lines[0] == (
            "current window: last 10m (44 runs); baseline: the 7d before it (300 runs)"
        )
        firing = {line.split()[1].rstrip(":"): line for line in lines if line.startswith("FIRING ")}
        assert set(firing) == {"tool_calls_p95", "latency_p95", "spend_per_run", "retries"}
        assert (
            "baseline 7.0" in firing["tool_calls_p95"] and "look at r_" in firing["tool_calls_p95"]
        )
        assert lines[-1] == "4 of 6 rules fired; ok: loop_detected, tool_timeout"

    def test_json_lists_the_worst_current_runs(self, db):
        """--json reports each rule's values and, for firing rules, the current window's run ids."""
        now = incident_store(db)
        res = invoke(alerts, ["--db", db, "--json", "--worst", "3"])
        assert res.exit_code == 1
        data = json.loads(res.output)
        assert data["fired"] == ["tool_calls_p95", "spend_per_run", "latency_p95", "retries"]
        current_ids = {r.run_id for r in open_store(db).runs(since_ms=now - 10 * MIN)}
        tc = next(r for r in data["results"] if r["rule"] == "tool_calls_p95")
        assert tc["fired"] is True and len(tc["runs"]) == 3 and set(tc["runs"]) <= current_ids
        assert tc["current"] >= 2 * tc["baseline"] == tc["threshold"]

    def test_same_behaviour_exits_zero(self, db):
        """Without the incident the same store layout fires nothing and exits 0."""
        incident_store(db, incident=False)
        res = invoke(alerts, ["--db", db])
        assert res.exit_code == 0, res.output
        assert "FIRING" not in res.output and res.output.splitlines()[-1].startswith(
            "0 of 6 rules fired"
        )

    def test_thresholds_are_configurable(self, db):
        """Raising the thresholds above the incident's drift silences the alerts."""
        incident_store(db)
        res = invoke(
            alerts,
            [
                "--db",
                db,
                "--tool-calls-ratio",
                "3",
                "--latency-ratio",
                "5",
                "--spend-ratio",
                "3",
                "--retry-current-min",
                "50%",
            ],
        )
        assert res.exit_code == 0, res.output


class TestAlertsBadInput:
    def test_too_few_runs_says_how_many_it_needs(self, db):
        """A window with fewer runs than --min-runs exits 0 with the counts and the minimum."""
        incident_store(db)
        res = invoke(alerts, ["--db", db, "--min-runs", "50"])
        assert res.exit_code == 0
        assert res.output.splitlines()[1] == (
            "not enough runs to judge: the current window has 44 runs; each window needs at least "
            "50 "
            "(widen --window/--baseline or lower --min-runs)"
        )

    def test_empty_store_is_not_an_alert(self, db):
        """An empty store exits 0 and says both windows have 0 runs."""
        open_store(db)
        res = invoke(alerts, ["--db", db])
        assert res.exit_code == 0
        assert "the current window has 0 runs and the baseline has 0 runs" in res.output

    @pytest.mark.parametrize(
        "args", [["--window", "10 minutes"], ["--baseline", "7"], ["--window", "0m"]]
    )
    def test_unparsable_duration_exits_2(self, db, args):
        """An unparsable duration exits 2 naming the option, the input and the accepted format."""
        open_store(db)
        res = invoke(alerts, ["--db", db, *args])
        assert res.exit_code == 2
        assert f"cannot parse {args[0]} {args[1]!r}" in res.output and "10m, 24h, 7d" in res.output

    def test_unknown_agent_exits_2_listing_known_agents(self, db):
        """An unknown --agent exits 2 and lists the agents the store knows."""
        incident_store(db)
        res = invoke(alerts, ["--db", db, "--agent", "billing"])
        assert res.exit_code == 2
        assert "unknown agent 'billing'" in res.output and "'support-agent'" in res.output

    def test_missing_store_exits_2(self, tmp_path):
        """A --db path with no store exits 2 and says how to point at one, creating nothing."""
        path = str(tmp_path / "nope.db")
        res = invoke(alerts, ["--db", path])
        assert res.exit_code == 2 and "no store at" in res.output and "REPLAY_DB" in res.output
        assert not os.path.exists(path)

    def test_bad_share_exits_2(self, db):
        """A threshold share outside 0..1 exits 2 naming the option."""
        open_store(db)
        res = invoke(alerts, ["--db", db, "--retry-current-min", "250%"])
        assert res.exit_code == 2 and "--retry-current-min" in res.output


class TestStats:
    def test_text_report_over_the_incident_store(self, db):
        """`replay stats` prints every promised figure for the window, reading REPLAY_DB."""
        incident_store(db)
        res = invoke(stats, ["--since", "30m"], env={"REPLAY_DB": db})
        assert res.exit_code == 0, res.output
        assert res.output.startswith("44 runs in the last 30m\n")
        for label in (
            "tool calls / run",
            "run latency",
            "tokens / request",
            "(per model call)",
            "spend / run",
            "tool-call errors",
            "HTTP429",
            "HTTP503",
            "success rate",
            "90.9% completed",
            "stop reasons",
        ):
            assert label in res.output

    def test_json_by_day(self, db):
        """--json --by day gives the overall figures plus one entry per day with the same keys."""
        incident_store(db)
        data = json.loads(
            invoke(stats, ["--db", db, "--json", "--by", "day", "--since", "8d"]).output
        )
        assert data["runs"] == 344 and data["message"] is None
        assert data["success_rate"] == pytest.approx(313 / 344)
        assert sum(b["runs"] for b in data["buckets"]) == 344
        assert 8 <= len(data["buckets"]) <= 9
        assert set(data["buckets"][-1]) >= {
            "start_ms",
            "tool_calls_p95",
            "latency_p95_ms",
            "stop_reasons",
        }

    def test_agent_filter(self, db):
        """--agent restricts the figures to that agent's runs."""
        now = incident_store(db)
        write_window(
            open_store(db),
            random.Random(1),
            n=5,
            start=now - 5 * MIN,
            end=now - MIN,
            calls=[1],
            per_call_ms=10,
            retry_share=0,
            agent="billing",
        )
        assert (
            json.loads(invoke(stats, ["--db", db, "--json", "--agent", "billing"]).output)["runs"]
            == 5
        )
        assert (
            json.loads(invoke(stats, ["--db", db, "--json", "--since", "8d"]).output)["runs"] == 349
        )

    def test_empty_store_says_so(self, db):
        """An empty store prints that there are no runs and that the store has 0, exit 0."""
        open_store(db)
        res = invoke(stats, ["--db", db, "--agent", "x"])
        assert res.exit_code == 0
        assert res.output.startswith("no runs in the last 7d for agent 'x' (store has 0 runs")

    def test_empty_window_says_so_with_the_store_count(self, db):
        """A window with no runs names the window and how many runs the store does have."""
        incident_store(db)
        res = invoke(stats, ["--db", db, "--since", "10s", "--json"])
        assert json.loads(res.output)["message"] == "no runs in the last 10s (store has 344 runs)"

    def test_unknown_agent_exits_2(self, db):
        """An unknown --agent exits 2 listing the known agents."""
        incident_store(db)
        res = invoke(stats, ["--db", db, "--agent", "nobody"])
        assert res.exit_code == 2 and "known agents are 'support-agent'" in res.output

    def test_bad_since_exits_2(self, db):
        """An unparsable --since exits 2."""
        open_store(db)
        assert invoke(stats, ["--db", db, "--since", "yesterday"]).exit_code == 2


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


class TestDashboard:
    def test_html_report_has_three_charts_with_data_points(self, db, tmp_path):
        """--html writes a well-formed page with tool-call, latency and stop-reason charts and
        points."""
        incident_store(db)
        out = tmp_path / "drift.html"
        res = invoke(stats, ["--db", db, "--since", "8d", "--by", "day", "--html", str(out)])
        assert res.exit_code == 0, res.output
        assert f"wrote {out}" in res.output
        text = out.read_text(encoding="utf-8")
        parser = _Collect()
        parser.feed(text)
        assert parser.tags.count("svg") == 3
        root = ET.fromstring(text.split("\n", 1)[1])  # well-formed XML after the doctype line
        charts = {svg.get("id"): svg for svg in root.iter(f"{SVG}svg")}
        assert set(charts) == {"chart-tool-calls", "chart-latency-p95", "chart-stop-reasons"}
        points = [c for c in charts["chart-tool-calls"].iter(f"{SVG}circle")]
        days = {p.get("data-start-ms") for p in points}
        assert 8 <= len(days) <= 9  # one point per day with runs, per series
        assert {p.get("data-series") for p in points} == {"avg", "p95"}
        last_avg = max(
            (p for p in points if p.get("data-series") == "avg"),
            key=lambda p: int(p.get("data-start-ms")),
        )
        assert float(last_avg.get("data-value")) > 4.3  # today's bucket holds the incident runs
        assert len(list(charts["chart-latency-p95"].iter(f"{SVG}circle"))) == len(days)
        bars = list(charts["chart-stop-reasons"].iter(f"{SVG}rect"))
        counted = sum(int(b.get("data-count")) for b in bars if b.get("data-count"))
        assert counted == 344
        assert {b.get("data-reason") for b in bars if b.get("data-reason")} == {
            "completed",
            "error",
            "budget_exceeded",
            "max_steps",
        }
        assert "<script" not in text and "http://" not in text.replace(
            "http://www.w3.org/2000/svg", ""
        )

    def test_plot_without_matplotlib_suggests_html(self, db, tmp_path):
        """--plot without matplotlib exits 2 before any work and suggests --html."""
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("matplotlib is installed")
        open_store(db)
        res = invoke(stats, ["--db", db, "--plot", str(tmp_path / "x.png")])
        assert res.exit_code == 2 and "--html FILE" in res.output
        assert not (tmp_path / "x.png").exists()


class TestMetricsCommand:
    def test_once_prints_the_exposition(self, db):
        """`replay metrics --once` prints the Prometheus text with the runs of the store."""
        incident_store(db)
        res = invoke(metrics, ["--db", db, "--once", "--since", "all"])
        assert res.exit_code == 0, res.output
        assert 'agent_tool_calls_count{agent="support-agent"} 344.0' in res.output
        assert 'agent_stop_total{agent="support-agent",stop_reason="completed"} 313.0' in res.output

    def test_once_json_prints_the_metrics_as_json(self, db):
        """`replay metrics --once --json` prints the metric families as JSON, same values as the
        text."""
        incident_store(db)
        res = invoke(metrics, ["--db", db, "--once", "--json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.output)
        fams = {f["name"]: f for f in data["metrics"]}
        assert (
            fams["agent_stop"]["type"] == "counter"
            and fams["agent_run_latency_seconds"]["type"] == "histogram"
        )
        values = {
            (s["name"], tuple(sorted(s["labels"].items()))): s["value"]
            for f in data["metrics"]
            for s in f["samples"]
        }
        assert values[("agent_tool_calls_count", (("agent", "support-agent"),))] == 344
        assert (
            values[("agent_stop_total", (("agent", "support-agent"), ("stop_reason", "completed")))]
            == 313
        )

    def test_serves_metrics_over_http(self, db):
        """`replay metrics --port 0` serves /metrics on 127.0.0.1 with the store's runs until
        stopped."""
        pytest.importorskip("prometheus_client")
        incident_store(db)
        code = "import sys; from replay.cli_monitor import metrics; metrics(sys.argv[1:])"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "--db",
                db,
                "--port",
                "0",
                "--host",
                "127.0.0.1",
                "--json",
                "--since",
                "all",
                "--interval",
                "1s",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "replay metrics printed nothing within 30 s"
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            info = json.loads(line)
            assert info["host"] == "127.0.0.1" and info["port"] > 0
            body = urllib.request.urlopen(info["url"], timeout=10).read().decode()
            assert 'agent_tool_calls_count{agent="support-agent"} 344.0' in body
            assert 'agent_run_latency_ms_bucket{agent="support-agent",le="+Inf"} 344.0' in body
        finally:
            proc.terminate()
            proc.wait(timeout=10)
