"""OpenTelemetry export of recorded runs (optional extra: ``pip install 'agent-replay[otel]'``).

Each run becomes one ``invoke_agent {agent}`` span with its tool and model steps as child spans
(``execute_tool {tool}``, ``chat {model}``), named and attributed with the OpenTelemetry GenAI
semantic conventions, plus ``replay.*`` attributes that join a span to its recording::

    from replay.otel import OtelExporter
    rec.add_listener(OtelExporter("http://collector:4318"))   # live: each run as it ends

    exporter = OtelExporter()                                  # batch: OTEL_EXPORTER_OTLP_* env
    exporter.export_store(store, since_ms=...); exporter.shutdown()   # `replay otel-export`

What leaves the process is read back from the store after the writer redacted and hashed it: the
hashes, names, times, statuses, error class names, usage and stop reason. Redacted argument and
output snapshots are sent only with ``include_content=True`` (arguments only where the recorder
stored them, ``store_args="redacted"``): ``gen_ai.tool.call.arguments`` / ``result`` on tool
spans, ``replay.args`` / ``replay.result`` on model spans, ``replay.error_body`` on failed steps,
``replay.input`` / ``replay.output`` on the agent span. Raw values never reach this module.

Span and trace ids are derived from the run id, so sending a run again (a backfill after the
collector was down) gives the same ids instead of a second trace.

No-loss rules: the store is the record; the export is a copy. Spans go through the SDK's
``BatchSpanProcessor`` (a bounded queue, a background thread) to the OTLP/HTTP exporter, which
retries a failed request (connection errors, 429, 502, 503, 504) with backoff until its timeout.
A batch that still fails, or spans that find the queue full (the collector down for long), are
dropped from the export only: they are counted (`OtelExporter.failed`), warned about once, and can
be sent again from the store with ``replay otel-export --since``. Export never raises into
recording. At interpreter exit the recorders are closed first (their last runs reach the
listener), then every exporter is shut down, which sends what is queued.

Metrics: where this extra is installed the exporter also records the OTel metrics
``agent_stop_total`` (counter, by ``agent`` and ``stop_reason``) and ``agent_run_duration``
(histogram, seconds, by ``agent``), next to the Prometheus endpoint of `replay.metrics`.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from replay.errors import ReplayError
from replay.models import Event, Run, is_step

if TYPE_CHECKING:
    from replay.store_api import StoreAPI as Store

__all__ = [
    "ERROR_STOP_REASONS",
    "OtelDependencyError",
    "OtelExportWarning",
    "OtelExporter",
    "otlp_json",
    "run_spans",
    "signal_url",
    "span_id_for",
    "trace_id_for",
]

log = logging.getLogger("replay")

#: Stop reasons that mark the ``invoke_agent`` span's status as ERROR (``error.type`` = the reason).
#: ``completed`` is OK; ``denied``, ``cancelled`` and user-defined reasons leave the status unset.
ERROR_STOP_REASONS = frozenset(
    {"error", "killed", "tool_timeout", "loop_detected", "budget_exceeded", "max_steps"}
)

#: Seconds, for the run duration histogram: the Prometheus exporter's millisecond buckets / 1000.
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2,
    3,
    5,
    8,
    10,
    15,
    20,
    30,
    45,
    60,
)


#: Spans per request when `OtelExporter.export_store` sends stored runs (batch=False).
_BACKFILL_SPANS = 512


class OtelDependencyError(ReplayError, ImportError):
    """The OpenTelemetry SDK or OTLP exporter, needed for export, is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "OpenTelemetry export needs opentelemetry-sdk and "
            "opentelemetry-exporter-otlp-proto-http, "
            "which are not installed: pip install 'agent-replay[otel]'"
        )


class OtelExportWarning(RuntimeWarning):
    """Some spans could not be exported; recording goes on and the runs stay in the store."""


def _require_sdk() -> None:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise OtelDependencyError() from exc


def signal_url(endpoint: str, signal: str) -> str:
    """The OTLP/HTTP URL of `signal` ("traces", "metrics") for a base `endpoint`.

    ``http://collector:4318`` -> ``http://collector:4318/v1/traces`` (the rule of
    ``OTEL_EXPORTER_OTLP_ENDPOINT``); a URL that already ends in ``/v1/<signal>`` is kept.
    """
    url = endpoint.rstrip("/")
    if url.endswith(f"/v1/{signal}"):
        return url
    for other in ("traces", "metrics", "logs"):
        if url.endswith(f"/v1/{other}"):
            url = url[: -len(f"/v1/{other}")]
    return f"{url}/v1/{signal}"


def trace_id_for(run_id: str) -> int:
    """The 128-bit trace id of a run: stable, so a run sent twice is one trace."""
    n = int.from_bytes(hashlib.sha256(f"agent-replay/trace/{run_id}".encode()).digest()[:16], "big")
    return n or 1


def span_id_for(run_id: str, step_id: int | None) -> int:
    """The 64-bit span id of a run's agent span (`step_id` None) or of one of its steps."""
    n = int.from_bytes(
        hashlib.sha256(f"agent-replay/span/{run_id}/{step_id}".encode()).digest()[:8], "big"
    )
    return n or 1


def _ns(ms: int | float) -> int:
    return int(ms) * 1_000_000


def _content(value: Any) -> str:
    """A stored (redacted) value as JSON text: a string too, so an importer reads back the same
    value.
    """
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def run_spans(
    run: Run,
    events: Sequence[Event],
    *,
    resource: Any = None,
    snapshots: dict[str, tuple[bytes, str | None, bool]] | None = None,
) -> list[Any]:
    """The finished spans of one run (SDK ``ReadableSpan``), the ``invoke_agent`` span first.

    Args:
        run: the run row, as stored (redacted).
        events: its stored events (run_start, steps, stop); only tool and model steps make spans.
        resource: the SDK ``Resource`` the spans carry.
        snapshots: stored snapshots by sha (redacted bodies); when given, the agent span carries
            the redacted input and output and each step its redacted result (and its arguments
            where they were stored). Leave it None to send hashes only.

    Raises:
        OtelDependencyError: the SDK is not installed.
    """
    _require_sdk()
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    scope = InstrumentationScope("agent-replay", _version())
    ctx = _span_contexts(run.run_id)
    steps = [e for e in events if is_step(e, nested=True) and e.step_id is not None]
    stop = next((e for e in events if e.kind == "stop"), None)
    start_ms = run.started_ms
    end_ms = run.ended_ms
    if end_ms is None:
        end_ms = max([stop.ts_ms if stop else start_ms] + [e.ts_ms for e in steps])
    model = run.versions.get("model")
    step_ids = {e.step_id for e in steps}

    def span(name: str, step: int | None, parent: int | None, parts: tuple[Any, ...]) -> Any:
        kind, attributes, status, begin, end = parts
        return ReadableSpan(
            name,
            context=ctx(step),
            parent=None if step is None else ctx(parent),
            resource=resource,
            attributes=attributes,
            kind=kind,
            status=status,
            start_time=_ns(begin),
            end_time=_ns(end),
            instrumentation_scope=scope,
        )

    parts = (*_agent_span_parts(run, steps, snapshots), start_ms, max(end_ms, start_ms))
    spans: list[Any] = [span(f"invoke_agent {run.agent}", None, None, parts)]
    for e in steps:
        assert e.step_id is not None and e.tool is not None
        parent = e.parent_step_id if e.parent_step_id in step_ids else None
        name, kind, sattrs, sstatus = _step_span_parts(e, run.run_id, model, snapshots)
        begin = e.ts_ms - max(e.duration_ms or 0, 0)
        spans.append(span(name, e.step_id, parent, (kind, sattrs, sstatus, begin, e.ts_ms)))
    return spans


def _span_contexts(rid: str) -> Callable[[int | None], Any]:
    """The span contexts of one run, by step id (None: the agent span), made once each."""
    from opentelemetry.trace import SpanContext, TraceFlags

    trace_id = trace_id_for(rid)
    flags = TraceFlags(TraceFlags.SAMPLED)
    ctxs: dict[int | None, Any] = {}

    def ctx(step: int | None) -> Any:
        c = ctxs.get(step)
        if c is None:
            c = ctxs[step] = SpanContext(
                trace_id, span_id_for(rid, step), is_remote=False, trace_flags=flags
            )
        return c

    return ctx


def _run_tokens(run: Run, steps: Sequence[Event]) -> tuple[int, int]:
    """The run's tokens in and out: the run row's usage, else the sum over its steps."""
    tokens_in, tokens_out = run.usage.tokens_in, run.usage.tokens_out
    if not (tokens_in or tokens_out):
        for e in steps:
            if e.usage is not None:
                tokens_in += e.usage.tokens_in
                tokens_out += e.usage.tokens_out
    return tokens_in, tokens_out


def _agent_span_parts(
    run: Run,
    steps: Sequence[Event],
    snapshots: dict[str, tuple[bytes, str | None, bool]] | None,
) -> tuple[Any, dict[str, Any], Any]:
    """The ``invoke_agent`` span's kind, attributes and status (from the stop reason)."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tokens_in, tokens_out = _run_tokens(run, steps)
    model = run.versions.get("model")
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": run.agent,
        "replay.run_id": run.run_id,
        "replay.tool_calls": run.tool_calls or sum(1 for e in steps if e.kind == "tool_result"),
    }
    if model:
        attrs["gen_ai.request.model"] = model
    if run.stop_reason is not None:
        attrs["replay.stop_reason"] = run.stop_reason
        attrs["gen_ai.response.finish_reasons"] = (run.stop_reason,)
    if run.input_sha:
        attrs["replay.args_sha"] = run.input_sha
    if run.output_sha:
        attrs["replay.output_sha"] = run.output_sha
    if tokens_in or tokens_out:
        attrs["gen_ai.usage.input_tokens"] = tokens_in
        attrs["gen_ai.usage.output_tokens"] = tokens_out
    if run.usage.cost_usd:
        attrs["replay.cost_usd"] = run.usage.cost_usd
    if run.replay_of:
        attrs["replay.replay_of"] = run.replay_of
    for k, v in sorted(run.versions.items()):
        attrs[f"replay.version.{k}"] = str(v)
    for k, v in sorted(run.labels.items()):
        attrs[f"replay.label.{k}"] = str(v)
    if snapshots is not None:
        if run.input is not None:
            attrs["replay.input"] = _content(run.input)
        if run.output is not None:
            attrs["replay.output"] = _content(run.output)
    if run.stop_reason == "completed":
        status = Status(StatusCode.OK)
    elif run.stop_reason in ERROR_STOP_REASONS:
        attrs["error.type"] = run.stop_reason
        status = Status(StatusCode.ERROR, run.stop_reason)
    else:
        status = Status(StatusCode.UNSET)
    return SpanKind.INTERNAL, attrs, status


def _step_span_parts(
    e: Event,
    rid: str,
    model: str | None,
    snapshots: dict[str, tuple[bytes, str | None, bool]] | None,
) -> tuple[str, Any, dict[str, Any], Any]:
    """One step's span name, kind, attributes and status."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    is_model = e.kind == "model_result"
    sattrs: dict[str, Any] = {"replay.run_id": rid, "replay.step_id": e.step_id}
    if is_model:
        name = f"chat {model or e.tool}"
        sattrs["gen_ai.operation.name"] = "chat"
        sattrs["gen_ai.request.model"] = model or e.tool
        sattrs["replay.tool"] = e.tool
        kind = SpanKind.CLIENT
        if e.usage is not None:
            sattrs["gen_ai.usage.input_tokens"] = e.usage.tokens_in
            sattrs["gen_ai.usage.output_tokens"] = e.usage.tokens_out
            if e.usage.cost_usd:
                sattrs["replay.cost_usd"] = e.usage.cost_usd
    else:
        name = f"execute_tool {e.tool}"
        sattrs["gen_ai.operation.name"] = "execute_tool"
        sattrs["gen_ai.tool.name"] = e.tool
        sattrs["gen_ai.tool.type"] = "function"
        kind = SpanKind.INTERNAL
    if e.args_sha:
        sattrs["replay.args_sha"] = e.args_sha
    if e.output_sha:
        sattrs["replay.output_sha"] = e.output_sha
    if e.duration_ms is not None:
        sattrs["replay.duration_ms"] = e.duration_ms
    if snapshots is not None:
        _step_content(e, is_model, snapshots, sattrs)
    if e.status == "error":
        sattrs["error.type"] = e.error or "_OTHER"
        sstatus = Status(StatusCode.ERROR, e.error or None)
    else:
        sstatus = Status(StatusCode.UNSET)
    return name, kind, sattrs, sstatus


def _step_content(
    e: Event,
    is_model: bool,
    snapshots: dict[str, tuple[bytes, str | None, bool]],
    sattrs: dict[str, Any],
) -> None:
    """Add a step's redacted arguments and result (or error body) to its span attributes.

    Tools: the GenAI attributes. Model calls and error bodies have no GenAI attribute that holds
    them as recorded, so they go under replay.* (which `replay import` reads back).
    """
    args = snapshots.get(e.args_sha or "")
    if args is not None and args[1] == "$args" and not args[2]:
        key = "replay.args" if is_model else "gen_ai.tool.call.arguments"
        sattrs[key] = args[0].decode("utf-8", "replace")
    out = snapshots.get(e.output_sha or "")
    if out is not None and not out[2]:
        if e.status == "error":
            sattrs["replay.error_body"] = out[0].decode("utf-8", "replace")
        else:
            key = "replay.result" if is_model else "gen_ai.tool.call.result"
            sattrs[key] = out[0].decode("utf-8", "replace")


@functools.lru_cache(maxsize=1)
def otlp_json(spans: Sequence[Any]) -> dict[str, Any]:
    """SDK spans as one OTLP/HTTP JSON export request (hex ids, integer enums), which
    ``replay import --format otlp`` and OTLP/HTTP JSON receivers read.

    Raises:
        OtelDependencyError: the ``otel`` extra is not installed.
    """
    _require_sdk()
    import base64

    from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    doc: dict[str, Any] = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if sp.get(k):
                        sp[k] = base64.b64decode(sp[k]).hex()
    return doc


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agent-replay")
    except Exception:  # noqa: BLE001 - a version is a nicety
        return "0"


class _CountingExporter:
    """Wraps a SpanExporter: counts exported and failed spans, warns once on the first failure."""

    def __init__(self, inner: Any, owner: OtelExporter) -> None:
        self.inner = inner
        self.owner = owner

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - an exporter bug must not stop the processor
            self.owner._failed_export(len(spans), type(exc).__name__)
            return SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            with self.owner._lock:
                self.owner.exported += len(spans)
        else:
            self.owner._failed_export(len(spans), "the collector did not accept them")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


_exporters: weakref.WeakSet[OtelExporter] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    """At exit: end the recorders' runs first (their stops reach the listeners), then send what is
    queued.

    atexit runs handlers last-registered-first, so without this a process that exits without
    ``exporter.shutdown()`` would lose the spans still queued and the runs ending at exit.
    """
    try:
        from replay.lifecycle import close_all

        close_all()  # idempotent: the recorder's own handler closing them again is a no-op
    except Exception:  # noqa: BLE001 - never raise at interpreter exit
        pass
    for exporter in list(_exporters):
        try:
            exporter.shutdown()
        except Exception:  # noqa: BLE001
            pass


class OtelExporter:
    """Sends finished runs as OTLP spans (and OTel metrics); a Recorder listener or a batch sender.

    Args:
        endpoint: the collector's OTLP/HTTP base URL (``http://localhost:4318``) or its full
            ``/v1/traces`` URL. None reads ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
            ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and ``OTEL_EXPORTER_OTLP_HEADERS``) as the SDK does.
        headers: extra request headers (an ``Authorization`` for Langfuse, an API key for Phoenix).
        timeout: seconds per export request, retries included.
        span_exporter: any SDK ``SpanExporter`` instead of OTLP/HTTP (tests use
            ``InMemorySpanExporter``).
        batch: True sends through a ``BatchSpanProcessor`` (off the caller's thread); False
            exports each run's spans in one synchronous request, for tests and batch jobs.
        metrics: also record ``agent_stop_total`` and ``agent_run_duration`` as OTel metrics.
        meter_provider: where those metrics go. None: a provider of this exporter's own that
            pushes OTLP to the same collector when `span_exporter` is None, else the global one.
        include_content: also send the redacted input, output and tool results stored with the
            run (never raw values). Off by default: hashes only.
        include_replays: also send runs written by replay (``replay_of`` set).
        service_name: the resource's ``service.name`` (default ``$OTEL_SERVICE_NAME``, else
            ``agent-replay``).
        warn: warn once (log and `OtelExportWarning`) at the first failed export; the CLI,
            which reports failures itself, turns it off.

    Raises:
        OtelDependencyError: the ``otel`` extra is not installed.
    """

    #: Tells the recorder's writer to hand this listener every stored event of the run.
    wants_steps = True

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        span_exporter: Any = None,
        batch: bool = True,
        metrics: bool = True,
        meter_provider: Any = None,
        include_content: bool = False,
        include_replays: bool = False,
        service_name: str | None = None,
        warn: bool = True,
    ) -> None:
        _require_sdk()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        self.include_content = include_content
        self.include_replays = include_replays
        self.resource = Resource.create(
            {"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME") or "agent-replay"}
        )
        self._lock = threading.Lock()
        #: spans handed to the processor, spans the collector accepted, spans dropped after retries
        #: (a run that could not be made into spans at all, e.g. one the writer spooled, counts 1)
        self.sent = 0
        self.exported = 0
        self.failed = 0
        self._warned = not warn
        self._closed = False
        _exporters.add(self)
        own_otlp = span_exporter is None
        if span_exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter(
                endpoint=signal_url(endpoint, "traces") if endpoint else None,
                headers=headers,
                timeout=timeout,
            )
        self.span_exporter = span_exporter
        self._counting = _CountingExporter(span_exporter, self)
        self.batch = batch
        self.processor = (
            BatchSpanProcessor(self._counting) if batch else SimpleSpanProcessor(self._counting)  # type: ignore[arg-type]
        )

        self._own_meter_provider: Any = None
        self._stops: Any = None
        self._duration: Any = None
        if metrics:
            self._init_metrics(endpoint, headers, timeout, meter_provider, own_otlp)

    def _init_metrics(
        self,
        endpoint: str | None,
        headers: dict[str, str] | None,
        timeout: float,
        meter_provider: Any,
        own_otlp: bool,
    ) -> None:
        """Create the ``agent_stop_total`` counter and ``agent_run_duration`` histogram.

        Without a `meter_provider`: one of this exporter's own that pushes OTLP to the same
        collector when the spans go there too (`own_otlp`), else the global one.
        """
        if meter_provider is None and own_otlp:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(
                    endpoint=signal_url(endpoint, "metrics") if endpoint else None,
                    headers=headers,
                    timeout=timeout,
                )
            )
            meter_provider = self._own_meter_provider = MeterProvider(
                metric_readers=[reader], resource=self.resource
            )
        elif meter_provider is None:
            from opentelemetry import metrics as _metrics

            meter_provider = _metrics.get_meter_provider()
        meter = meter_provider.get_meter("agent-replay", _version())
        self._stops = meter.create_counter(
            "agent_stop_total", unit="{run}", description="Finished agent runs by stop reason"
        )
        try:
            self._duration = meter.create_histogram(
                "agent_run_duration",
                unit="s",
                description="Agent run wall time",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S),
            )
        except TypeError:  # an API without bucket advice
            self._duration = meter.create_histogram(
                "agent_run_duration", unit="s", description="Agent run wall time"
            )

    # ---- failures ------------------------------------------------------------------------------

    def _failed_export(self, n: int, why: str) -> None:
        with self._lock:
            self.failed += n
            first = not self._warned
            self._warned = True
        if first:
            msg = (
                f"agent-replay could not export {n} span(s) to OpenTelemetry ({why}); recording "
                f"goes on "
                "and the runs stay in the store: send them again with `replay otel-export --since "
                "1h`. "
                "Later failures are counted in OtelExporter.failed."
            )
            log.warning(msg)
            warnings.warn(msg, OtelExportWarning, stacklevel=2)

    # ---- the listener --------------------------------------------------------------------------

    def __call__(
        self, run: Run, events: Sequence[Event] | None = (), store: Store | None = None
    ) -> None:
        """Export one finished run (a Recorder listener: called on the writer thread). Never raises.

        `events` are the run's stored events; `store` (optional) supplies the redacted snapshots
        when ``include_content`` is on. ``events=None`` means the writer spooled the run (the
        store was unavailable): it is counted as failed, for ``replay otel-export`` to send later.
        """
        if run.stop_reason is None or (run.replay_of is not None and not self.include_replays):
            return
        if events is None:
            self._failed_export(1, "the run was spooled: the store was unavailable")
            return
        try:
            snaps = None
            if self.include_content and store is not None:
                shas = (
                    {run.input_sha, run.output_sha}
                    | {e.output_sha for e in events}
                    | {e.args_sha for e in events}
                )
                snaps = store.snapshots(s for s in shas if s)
            elif self.include_content:
                snaps = {}
            self._emit(run_spans(run, events, resource=self.resource, snapshots=snaps))
            self._observe(run)
        except Exception as exc:  # noqa: BLE001 - export must never break recording
            self._failed_export(1, type(exc).__name__)

    def _emit(self, spans: list[Any]) -> None:
        if self._closed:
            self._failed_export(len(spans), "the exporter was shut down")
            return
        with self._lock:
            self.sent += len(spans)
        if self.batch:
            for span in spans:
                self.processor.on_end(span)
        else:  # one request for the whole run (SimpleSpanProcessor would send one per span)
            self._counting.export(spans)

    def _observe(self, run: Run) -> None:
        if self._stops is None or run.stop_reason is None:
            return
        self._stops.add(1, {"agent": run.agent, "stop_reason": run.stop_reason})
        if run.latency_ms is not None:
            self._duration.record(max(run.latency_ms, 0) / 1000.0, {"agent": run.agent})

    # ---- batch ---------------------------------------------------------------------------------

    def export_store(
        self,
        store: Store,
        *,
        run_ids: Iterable[str] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        agent: str | None = None,
        metrics: bool = False,
    ) -> int:
        """Send finished runs from `store` (these ids, or those started in the window); returns how
        many.

        Metrics are not counted by default: a backfill would count runs a live exporter already
        counted. Runs without a stop reason (still running) are skipped.

        Raises:
            RunNotFoundError: a run id is not in the store.
        """
        runs = (
            [store.get_run(r) for r in run_ids]
            if run_ids is not None
            else list(reversed(store.runs(agent=agent, since_ms=since_ms, until_ms=until_ms)))
        )
        n = 0
        pending: list[Any] = []
        for run in runs:
            if run.stop_reason is None or (run.replay_of is not None and not self.include_replays):
                continue
            events = store.events(run.run_id)
            snaps = None
            if self.include_content:
                shas = (
                    {run.input_sha, run.output_sha}
                    | {e.output_sha for e in events}
                    | {e.args_sha for e in events}
                )
                snaps = store.snapshots(s for s in shas if s)
            pending.extend(run_spans(run, events, resource=self.resource, snapshots=snaps))
            if len(pending) >= _BACKFILL_SPANS:  # a few requests for many runs, not one per run
                self._emit(pending)
                pending = []
            if metrics:
                self._observe(run)
            n += 1
        if pending:
            self._emit(pending)
        return n

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send what is queued now; False when that did not finish in `timeout_s`."""
        ok = bool(self.processor.force_flush(int(timeout_s * 1000)))
        if self._own_meter_provider is not None:
            ok = bool(self._own_meter_provider.force_flush(int(timeout_s * 1000))) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop the background threads. Spans of runs ending later are counted as
        failed."""
        if self._closed:
            return
        self.processor.shutdown()
        self._closed = True
        if self._own_meter_provider is not None:
            self._own_meter_provider.shutdown()
