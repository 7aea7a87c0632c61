"""Prometheus metrics of agent runs (optional extra: ``pip install 'agent-replay[metrics]'``).

Metric names are the ones the source document's PromQL uses, so these work as written::

    histogram_quantile(0.95, sum(rate(agent_tool_calls_bucket[5m])) by (le))
    sum(rate(agent_stop_total[10m])) by (stop_reason)
    histogram_quantile(0.95, sum(rate(agent_run_latency_ms_bucket[5m])) by (le))

Exported, all labelled by ``agent`` (the queries above sum it away):

- ``agent_tool_calls`` histogram: tool calls per run.
- ``agent_run_latency_seconds`` histogram: run wall time in seconds (Prometheus' base unit;
  ``histogram_quantile(0.95, sum(rate(agent_run_latency_seconds_bucket[5m])) by (le))``).
- ``agent_run_latency_ms`` histogram: the same in milliseconds, kept for the source document's
  PromQL above.
- ``agent_stop_total{stop_reason}`` counter: finished runs by stop reason.
- ``agent_tokens_total{direction="in"|"out"}`` counter, ``agent_spend_usd_total`` counter.
- ``agent_tool_errors_total{error_bucket="429"|"5xx"|"timeout"|"other"}`` counter: failed tool
  calls (see `replay.stats.classify_error`), for the "retries turning constant" signal.
- ``agent_alert_firing{rule}`` gauge (not labelled by agent): 1 while a rule of the alert
  registry (`replay.alerts.REGISTRY`) fires, when `serve_store` is given `AlertWindows`.

Two ways to feed it: live, as a Recorder listener (``rec.add_listener(exporter)``, called once
per finished run), or from a store (`PrometheusExporter.observe_store`, which `replay metrics`
polls).

Counters and histograms are cumulative. Served from a store, they start from the store's totals
(every finished run it holds, by default) and grow with each new run, so restarting
`replay metrics` exposes the same values as before plus the new runs: Prometheus sees no counter
reset and ``rate()`` does not spike. (Starting from only a recent window, as ``--since 1h`` does,
makes a restart look like a reset followed by the whole window at once.) A ``prune`` that removes
runs lowers the totals the next start counts from; Prometheus reads that as one counter reset.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from replay import queries
from replay.alerts import REGISTRY, AlertReport, AlertRules, alerts_for_store
from replay.errors import ReplayError
from replay.models import Event, Run
from replay.stats import classify_error, run_tool_calls

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from replay.store_api import StoreAPI as Store

__all__ = [
    "AlertWindows",
    "LATENCY_BUCKETS_MS",
    "LATENCY_BUCKETS_S",
    "TOOL_CALL_BUCKETS",
    "MetricsDependencyError",
    "PrometheusExporter",
    "serve_store",
]

#: Fibonacci buckets: fine where agents normally are (1-8 calls), coarse in loop territory.
TOOL_CALL_BUCKETS: tuple[float, ...] = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
#: Milliseconds, up to 60 s.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    50,
    100,
    250,
    500,
    1000,
    2000,
    3000,
    5000,
    8000,
    10000,
    15000,
    20000,
    30000,
    45000,
    60000,
)
#: The same bounds in seconds, for ``agent_run_latency_seconds``.
LATENCY_BUCKETS_S: tuple[float, ...] = tuple(b / 1000 for b in LATENCY_BUCKETS_MS)


class _RunFigures(NamedTuple):
    """What the metrics count of one finished run."""

    agent: str
    stop_reason: str
    tool_calls: int
    latency_ms: int | None
    tokens_in: int
    tokens_out: int
    cost_usd: float


@dataclass(frozen=True)
class AlertWindows:
    """The alert windows `serve_store` judges on each poll: the last `window_ms` against the
    `baseline_ms` before it, with `rules` (defaults when None)."""

    window_ms: int
    baseline_ms: int
    agent: str | None = None
    rules: AlertRules | None = None

    def judge(self, store: Store) -> AlertReport:
        return alerts_for_store(
            store,
            window_ms=self.window_ms,
            baseline_ms=self.baseline_ms,
            agent=self.agent,
            rules=self.rules,
        )


class MetricsDependencyError(ReplayError, ImportError):
    """prometheus-client, needed for metrics, is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "Prometheus metrics need prometheus-client, which is not installed: "
            "pip install 'agent-replay[metrics]'"
        )


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MetricsDependencyError() from exc
    return prometheus_client


class PrometheusExporter:
    """Turns finished runs into Prometheus metrics in `registry`.

    Args:
        registry: where the metrics are registered. None (the default) makes a private
            ``CollectorRegistry`` (``exporter.registry``) so several exporters never clash; pass
            ``prometheus_client.REGISTRY`` to expose them next to your app's own metrics.

    Raises:
        MetricsDependencyError: prometheus-client is not installed.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = _prometheus()
        self.registry: CollectorRegistry = (
            prom.CollectorRegistry() if registry is None else registry
        )
        reg = self.registry

        def hist(name: str, doc: str, buckets: Sequence[float]) -> Any:
            return prom.Histogram(name, doc, ["agent"], buckets=buckets, registry=reg)

        def count(name: str, doc: str, *labels: str) -> Any:
            return prom.Counter(name, doc, ["agent", *labels], registry=reg)

        self.tool_calls = hist("agent_tool_calls", "Tool calls per agent run", TOOL_CALL_BUCKETS)
        self.run_latency_ms = hist(
            "agent_run_latency_ms", "Agent run wall time in milliseconds", LATENCY_BUCKETS_MS
        )
        self.run_latency_seconds = hist(
            "agent_run_latency_seconds", "Agent run wall time in seconds", LATENCY_BUCKETS_S
        )
        self.stops = count("agent_stop_total", "Finished agent runs by stop reason", "stop_reason")
        self.tokens = count("agent_tokens_total", "Model tokens used by agent runs", "direction")
        self.spend = count("agent_spend_usd_total", "Spend of agent runs in USD")
        self.tool_errors = count(
            "agent_tool_errors_total",
            "Failed tool calls by error bucket (429, 5xx, timeout, other)",
            "error_bucket",
        )
        self.alert_firing = prom.Gauge(
            "agent_alert_firing",
            "1 while the drift alert rule fires, else 0 (see replay alerts)",
            ["rule"],
            registry=reg,
        )
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # run_id -> started_ms, of runs observe_store counted

    def __call__(self, run: Run, steps: Sequence[Event] = ()) -> None:
        """Count one finished run; `steps` are its events (only tool/model steps are read).

        Without `steps` (a listener called with the run only) ``agent_tool_errors_total`` is not
        counted and tokens/spend come from the run's usage totals alone. Runs without a stop
        reason (still running) and runs written by replay are ignored.
        """
        if run.stop_reason is None or run.replay_of is not None:
            return
        usage = run.usage
        self._observe(
            _RunFigures(
                run.agent,
                run.stop_reason,
                run_tool_calls(run),
                run.latency_ms,
                usage.tokens_in,
                usage.tokens_out,
                usage.cost_usd,
            ),
            [
                (e.usage.tokens_in, e.usage.tokens_out, e.usage.cost_usd)
                for e in steps
                if e.kind == "model_result" and e.usage is not None
            ],
            [e.error for e in steps if e.kind == "tool_result" and e.status == "error"],
        )

    def _observe(
        self,
        run: _RunFigures,
        model_usage: Sequence[tuple[int, int, float]],
        errors: Sequence[str | None],
    ) -> None:
        """Count one finished run from plain values: the one definition both feeds share."""
        agent = run.agent
        self.tool_calls.labels(agent=agent).observe(run.tool_calls)
        if run.latency_ms is not None:
            self.run_latency_ms.labels(agent=agent).observe(max(run.latency_ms, 0))
            self.run_latency_seconds.labels(agent=agent).observe(max(run.latency_ms, 0) / 1000)
        self.stops.labels(agent=agent, stop_reason=run.stop_reason).inc()
        tokens_in, tokens_out, cost = run.tokens_in, run.tokens_out, run.cost_usd
        if not (tokens_in or tokens_out or cost):
            # A recorder that keeps usage on the model steps only: add them up.
            for t_in, t_out, c in model_usage:
                tokens_in += t_in
                tokens_out += t_out
                cost += c
        if tokens_in:
            self.tokens.labels(agent=agent, direction="in").inc(tokens_in)
        if tokens_out:
            self.tokens.labels(agent=agent, direction="out").inc(tokens_out)
        if cost > 0:
            self.spend.labels(agent=agent).inc(cost)
        for error in errors:
            bucket = classify_error(error or "unknown") or "other"
            self.tool_errors.labels(agent=agent, error_bucket=bucket).inc()

    def observe_store(self, store: Store, since_ms: int | None = None) -> int:
        """Count the finished runs in `store` started at or after `since_ms` not counted before.

        Call it repeatedly to tail a store; returns how many runs it counted this time. Only runs
        started at or after `since_ms` are remembered, so move `since_ms` forward when polling
        (`serve_store` keeps a lookback) to keep memory bounded. Reads narrow columns through
        `replay.queries` (no model object per run or event); a run inferred killed counts as
        ``killed``.
        """
        rows = queries.finished_run_rows(store, queries.Window(since_ms=since_ms))
        with self._lock:
            if since_ms is not None:
                self._seen = {k: v for k, v in self._seen.items() if v >= since_ms}
            new = [r for r in rows if r[0] not in self._seen]
            if not new:
                return 0
            steps = queries.Window(since_ms=min(r[2] for r in new))
            ids = {r[0] for r in new}
            errors: dict[str, list[str | None]] = {}
            for rid, error in queries.step_errors(store, steps):
                if rid in ids:
                    errors.setdefault(rid, []).append(error)
            bare = [r[0] for r in new if not (r[6] or r[7] or r[8])]
            model = queries.model_usage_by_run(store, steps, bare) if bare else {}
            for rid, agent, started, reason, calls, latency, t_in, t_out, cost in new:
                usage = [
                    (
                        int(u.get("tokens_in") or 0),
                        int(u.get("tokens_out") or 0),
                        float(u.get("cost_usd") or 0.0),
                    )
                    for u in model.get(rid, [])
                ]
                figures = _RunFigures(agent, reason, calls, latency, t_in, t_out, cost)
                self._observe(figures, usage, errors.get(rid, []))
                self._seen[rid] = started
        return len(new)

    def observe_alerts(self, report: AlertReport) -> None:
        """Set ``agent_alert_firing{rule}`` for every rule of the alert registry from `report`.

        A rule not judged (disabled, or too few runs) reads 0.
        """
        fired = {r.rule for r in report.fired}
        for name in REGISTRY:
            self.alert_firing.labels(rule=name).set(1 if name in fired else 0)

    def to_json(self) -> list[dict[str, Any]]:
        """The current metrics as JSON-able families: name, type, help and samples."""
        return [
            {
                "name": fam.name,
                "type": fam.type,
                "help": fam.documentation,
                "samples": [
                    {"name": smp.name, "labels": dict(smp.labels), "value": smp.value}
                    for smp in fam.samples
                ],
            }
            for fam in self.registry.collect()
        ]

    def exposition(self) -> bytes:
        """The current metrics in the Prometheus text format (what /metrics serves)."""
        return bytes(_prometheus().generate_latest(self.registry))

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[Any, threading.Thread]:
        """Serve ``/metrics`` on `host`:`port` from a daemon thread; port 0 picks a free port.

        Returns ``(server, thread)``: ``server.server_address[1]`` is the port,
        ``server.shutdown(); server.server_close()`` stops it.
        """
        server, thread = _prometheus().start_http_server(port, addr=host, registry=self.registry)
        return server, thread


def serve_store(
    store: Store,
    *,
    port: int,
    host: str = "127.0.0.1",
    since_ms: int | None = None,
    interval_s: float = 15.0,
    lookback_ms: int = 6 * 3_600_000,
    stop: threading.Event | None = None,
    on_ready: Any = None,
    alerts: AlertWindows | None = None,
) -> None:
    """Serve the metrics of `store` on `host`:`port`, counting new runs every `interval_s`.

    Starts from the runs started at or after `since_ms` (None: every run in the store, so a
    restart resumes the counters where they were; see the module docstring), then keeps looking
    back `lookback_ms` for runs that finished since the last poll (a run longer than that is
    missed). Blocks until `stop` is set (or forever); `on_ready(server)` is called once the port
    is bound. With `alerts`, each poll also judges the alert rules on those windows and sets
    ``agent_alert_firing{rule}`` (`PrometheusExporter.observe_alerts`).
    """
    exporter = PrometheusExporter()

    def poll(floor: int | None) -> None:
        exporter.observe_store(store, floor)
        if alerts is not None:
            exporter.observe_alerts(alerts.judge(store))

    poll(since_ms)
    server, _thread = exporter.serve(port, host)
    stop = stop or threading.Event()
    try:
        if on_ready is not None:
            on_ready(server)
        while not stop.wait(interval_s):
            floor = int(time.time() * 1000) - lookback_ms
            poll(floor if since_ms is None else max(since_ms, floor))
    finally:
        server.shutdown()
        server.server_close()
