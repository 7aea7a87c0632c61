"""replay.metrics: the Prometheus exposition the source document's PromQL reads, over HTTP."""

from __future__ import annotations

import sys
import threading
import urllib.request

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from replay.metrics import MetricsDependencyError, PrometheusExporter, serve_store  # noqa: E402
from replay.models import Event, Run, Usage  # noqa: E402
from replay.store_api import open_store  # noqa: E402

T0 = 1_760_000_000_000


def run(
    rid: str,
    *,
    calls: int,
    latency: int,
    reason: str = "completed",
    agent: str = "support",
    tokens: tuple[int, int] = (100, 20),
    cost: float = 0.01,
    start: int = T0,
    replay_of: str | None = None,
) -> Run:
    return Run(
        run_id=rid,
        agent=agent,
        started_ms=start,
        ended_ms=start + latency,
        stop_reason=reason,
        tool_calls=calls,
        usage=Usage(tokens_in=tokens[0], tokens_out=tokens[1], cost_usd=cost, tool_calls=calls),
        replay_of=replay_of,
        host="h",
    )


def failed_tool(rid: str, step: int, error: str, ts: int = T0) -> Event:
    return Event(
        run_id=rid,
        kind="tool_result",
        ts_ms=ts + step,
        step_id=step,
        tool="http.get",
        status="error",
        error=error,
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (le, count) pairs, +Inf last."""
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


class TestExporter:
    def test_histograms_and_counters_count_each_finished_run(self):
        """Each finished run adds one observation per histogram and to stop/token/spend counters."""
        exp = PrometheusExporter()
        exp(run("r1", calls=4, latency=2000), [failed_tool("r1", 1, "HTTP429")])
        exp(
            run("r2", calls=12, latency=8400, reason="loop_detected", cost=0.03),
            [failed_tool("r2", 1, "HTTP503")],
        )
        exp(run("r3", calls=1, latency=400, agent="billing"))
        s = samples(exp.exposition().decode())
        sup = (("agent", "support"),)
        assert s[("agent_tool_calls_bucket", (("agent", "support"), ("le", "3.0")))] == 0
        assert s[("agent_tool_calls_bucket", (("agent", "support"), ("le", "5.0")))] == 1
        assert s[("agent_tool_calls_bucket", (("agent", "support"), ("le", "13.0")))] == 2
        assert s[("agent_tool_calls_count", sup)] == 2 and s[("agent_tool_calls_sum", sup)] == 16
        assert s[("agent_run_latency_ms_bucket", (("agent", "support"), ("le", "2000.0")))] == 1
        assert s[("agent_run_latency_ms_bucket", (("agent", "support"), ("le", "10000.0")))] == 2
        assert s[("agent_stop_total", (("agent", "support"), ("stop_reason", "completed")))] == 1
        assert (
            s[("agent_stop_total", (("agent", "support"), ("stop_reason", "loop_detected")))] == 1
        )
        assert s[("agent_stop_total", (("agent", "billing"), ("stop_reason", "completed")))] == 1
        assert s[("agent_tokens_total", (("agent", "support"), ("direction", "in")))] == 200
        assert s[("agent_tokens_total", (("agent", "support"), ("direction", "out")))] == 40
        assert s[("agent_spend_usd_total", sup)] == pytest.approx(0.04)
        assert s[("agent_tool_errors_total", (("agent", "support"), ("error_bucket", "429")))] == 1
        assert s[("agent_tool_errors_total", (("agent", "support"), ("error_bucket", "5xx")))] == 1

    def test_unfinished_and_replayed_runs_are_not_counted(self):
        """Runs still running (no stop reason) and replayed runs leave the metrics untouched."""
        exp = PrometheusExporter()
        unfinished = run("r1", calls=3, latency=10).model_copy(
            update={"stop_reason": None, "ended_ms": None}
        )
        exp(unfinished)
        exp(run("r2", calls=3, latency=10, replay_of="r0"))
        assert "agent_tool_calls_count" not in exp.exposition().decode()

    def test_tokens_and_spend_fall_back_to_model_steps(self):
        """A run without usage totals gets its tokens and spend from its model_result steps."""
        exp = PrometheusExporter()
        model = Event(
            run_id="r1",
            kind="model_result",
            ts_ms=T0,
            step_id=1,
            tool="llm",
            status="ok",
            usage=Usage(tokens_in=7, tokens_out=3, cost_usd=0.5),
        )
        exp(run("r1", calls=0, latency=10, tokens=(0, 0), cost=0.0), [model])
        s = samples(exp.exposition().decode())
        assert s[("agent_tokens_total", (("agent", "support"), ("direction", "in")))] == 7
        assert s[("agent_spend_usd_total", (("agent", "support"),))] == 0.5

    def test_seed_promql_shapes_work(self):
        """The seed's PromQL works as written: `_bucket` series with `le`, stops by stop_reason."""
        exp = PrometheusExporter()
        for i, calls in enumerate([2, 3, 3, 4, 4, 4, 5, 5, 6, 7] * 2):
            exp(run(f"r{i}", calls=calls, latency=300 * calls, agent="a" if i % 2 else "b"))
        fams = {f.name: f for f in text_string_to_metric_families(exp.exposition().decode())}
        assert fams["agent_tool_calls"].type == "histogram"
        assert fams["agent_run_latency_ms"].type == "histogram"
        assert fams["agent_stop"].type == "counter"  # exposed as agent_stop_total
        # sum(...) by (le): add the agents' buckets, then histogram_quantile(0.95, ...).
        summed: dict[float, float] = {}
        for s in fams["agent_tool_calls"].samples:
            if s.name == "agent_tool_calls_bucket":
                le = float(s.labels["le"])
                summed[le] = summed.get(le, 0) + s.value
        p95 = bucket_quantile(0.95, sorted(summed.items()))
        assert 5 < p95 <= 8  # the 7-call runs sit in the (5, 8] bucket
        stop_labels = {
            tuple(sorted(s.labels))
            for s in fams["agent_stop"].samples
            if s.name == "agent_stop_total"
        }
        assert stop_labels == {("agent", "stop_reason")}

    def test_mounts_in_a_given_registry(self):
        """Passing a registry registers the metrics there, next to the application's own."""
        reg = prometheus_client.CollectorRegistry()
        own = prometheus_client.Counter("app_requests_total", "app", registry=reg)
        own.inc()
        exp = PrometheusExporter(registry=reg)
        exp(run("r1", calls=2, latency=100))
        text = prometheus_client.generate_latest(reg).decode()
        assert (
            "app_requests_total 1.0" in text
            and 'agent_tool_calls_count{agent="support"} 1.0' in text
        )

    def test_missing_prometheus_client_names_the_extra(self, monkeypatch):
        """Without prometheus-client the error says to install agent-replay[metrics]."""
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        with pytest.raises(MetricsDependencyError, match=r"pip install 'agent-replay\[metrics\]'"):
            PrometheusExporter()


class TestServe:
    def test_scrape_over_http(self):
        """exporter.serve binds 127.0.0.1 on a free port, /metrics returns the counts; shutdown
        stops it."""
        exp = PrometheusExporter()
        exp(run("r1", calls=5, latency=2100))
        server, thread = exp.serve(0, "127.0.0.1")
        try:
            port = server.server_address[1]
            body = (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
                .read()
                .decode()
            )
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
        assert 'agent_tool_calls_bucket{agent="support",le="5.0"} 1.0' in body
        assert 'agent_stop_total{agent="support",stop_reason="completed"} 1.0' in body
        assert not thread.is_alive()


class TestStore:
    def test_observe_store_counts_each_run_once(self, store_url):
        """observe_store counts finished runs once across polls and picks up new ones."""
        store = open_store(store_url)
        store.write_batch(
            runs=[run("r_a", calls=3, latency=100), run("r_b", calls=9, latency=200, start=T0 + 1)],
            events=[failed_tool("r_b", 1, "HTTP429", T0 + 1)],
            snapshots=[],
        )
        exp = PrometheusExporter()
        assert exp.observe_store(store, T0) == 2
        assert exp.observe_store(store, T0) == 0
        store.write_batch(
            runs=[run("r_c", calls=1, latency=50, start=T0 + 2)], events=[], snapshots=[]
        )
        assert exp.observe_store(store, T0) == 1
        s = samples(exp.exposition().decode())
        assert s[("agent_tool_calls_count", (("agent", "support"),))] == 3
        assert s[("agent_tool_errors_total", (("agent", "support"), ("error_bucket", "429")))] == 1

    def test_serve_store_scrape_and_stop(self, store_url):
        """serve_store serves the store's runs on 127.0.0.1 and returns once stop is set."""
        path = store_url
        store = open_store(path)
        store.write_batch(
            runs=[run("r_a", calls=3, latency=100, reason="tool_timeout")], events=[], snapshots=[]
        )
        stop = threading.Event()
        bound: list[int] = []
        ready = threading.Event()

        def on_ready(server):
            bound.append(server.server_address[1])
            ready.set()

        def target():  # the store is opened in the serving thread, as `replay metrics` does
            serve_store(
                open_store(path),
                port=0,
                host="127.0.0.1",
                interval_s=0.05,
                stop=stop,
                on_ready=on_ready,
            )

        t = threading.Thread(target=target)
        t.start()
        try:
            assert ready.wait(10)
            body = (
                urllib.request.urlopen(f"http://127.0.0.1:{bound[0]}/metrics", timeout=10)
                .read()
                .decode()
            )
        finally:
            stop.set()
            t.join(timeout=10)
        assert 'agent_stop_total{agent="support",stop_reason="tool_timeout"} 1.0' in body
        assert not t.is_alive()


def test_the_recorder_updates_the_metrics_live(store_url) -> None:
    """An exporter added with rec.add_listener counts each run as it ends, errors by bucket too."""
    from replay import Recorder

    rec = Recorder(store_url)
    exp = PrometheusExporter()
    rec.add_listener(exp)

    class HTTP503(Exception):
        status_code = 503

    @rec.tool("http.get")
    def get(i: int) -> int:
        if i == 1:
            raise HTTP503("unavailable")
        return i

    @rec.agent("support-agent")
    def handle() -> None:
        for i in range(3):
            try:
                get(i)
            except HTTP503:
                pass

    handle()
    handle()
    rec.flush()
    s = samples(exp.exposition().decode())
    assert s[("agent_tool_calls_count", (("agent", "support-agent"),))] == 2
    assert s[("agent_tool_calls_sum", (("agent", "support-agent"),))] == 6
    assert s[("agent_stop_total", (("agent", "support-agent"), ("stop_reason", "completed")))] == 2
    errors = {k: v for k, v in s.items() if k[0] == "agent_tool_errors_total"}
    assert sum(errors.values()) == 2 and any(("error_bucket", "5xx") in k[1] for k in errors)
    rec.close()


def prometheus_increase(values: list[float]) -> float:
    """What Prometheus' increase() makes of successive scrapes: a drop is a reset to 0."""
    total = 0.0
    for before, after in zip(values, values[1:], strict=False):
        total += after - before if after >= before else after
    return total


class TestRestart:
    def test_a_restarted_server_does_not_recount_runs(self, store_url):
        """Across restarts of `replay metrics`, agent_stop_total grows by the runs that finished
        only."""
        import json
        import time

        from click.testing import CliRunner

        from replay.cli_monitor import metrics

        db = store_url
        now = int(time.time() * 1000)
        store = open_store(db)
        # Runs of last week and of the last minutes: a restart must resume from all of them.
        store.write_batch(
            runs=[
                run(f"r_old{i}", calls=2, latency=100, start=now - 7 * 86_400_000 + i)
                for i in range(20)
            ]
            + [run(f"r_new{i}", calls=2, latency=100, start=now - 60_000 + i) for i in range(10)],
            events=[],
            snapshots=[],
        )

        def start_and_scrape() -> float:  # one start of the server, one scrape
            res = CliRunner().invoke(metrics, ["--db", db, "--once", "--json"])
            assert res.exit_code == 0, res.output
            for fam in json.loads(res.output)["metrics"]:
                for smp in fam["samples"]:
                    if (
                        smp["name"] == "agent_stop_total"
                        and smp["labels"]["stop_reason"] == "completed"
                    ):
                        return smp["value"]
            raise AssertionError(res.output)

        scrapes = [start_and_scrape()]
        store.write_batch(
            runs=[run("r_after1", calls=2, latency=100, start=now + 1)], events=[], snapshots=[]
        )
        scrapes.append(start_and_scrape())
        store.write_batch(
            runs=[run("r_after2", calls=2, latency=100, start=now + 2)], events=[], snapshots=[]
        )
        scrapes.append(start_and_scrape())
        assert scrapes == [30, 31, 32]
        assert prometheus_increase(scrapes) == 2  # the two runs that finished between the restarts

    def test_latency_in_seconds_next_to_milliseconds(self):
        """agent_run_latency_seconds buckets wall time in seconds; the _ms histogram stays too."""
        exp = PrometheusExporter()
        for i, ms in enumerate((120, 1500, 7000)):
            exp(run(f"r_{i}", calls=1, latency=ms))
        s = samples(exp.exposition().decode())
        a = (("agent", "support"),)
        assert s[("agent_run_latency_seconds_sum", a)] == pytest.approx(8.62)
        assert s[("agent_run_latency_seconds_bucket", (("agent", "support"), ("le", "0.25")))] == 1
        assert s[("agent_run_latency_seconds_bucket", (("agent", "support"), ("le", "2.0")))] == 2
        assert s[("agent_run_latency_ms_sum", a)] == 8620
        assert s[("agent_run_latency_ms_bucket", (("agent", "support"), ("le", "250.0")))] == 1
