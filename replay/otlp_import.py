"""Import OTLP JSON traces (GenAI agent and tool spans captured by another tool) as runs.

``replay import --format otlp FILE`` reads the OTLP/HTTP JSON encoding (``resourceSpans`` ->
``scopeSpans`` -> ``spans``; one request per file, or one per line as the collector's file
exporter writes them) and understands three ways of describing agent work:

- OpenInference (Phoenix, Arize): ``openinference.span.kind`` AGENT / TOOL / LLM,
  ``tool.name``, ``input.value`` / ``output.value`` (``*.mime_type``), ``llm.model_name``,
  ``llm.token_count.prompt`` / ``completion``.
- OpenLLMetry (Traceloop): ``traceloop.span.kind`` workflow / agent / tool / task,
  ``traceloop.entity.name``, ``traceloop.entity.input`` (``{"args": [...], "kwargs": {...}}``)
  and ``traceloop.entity.output``; LLM spans by ``llm.request.type``.
- OpenTelemetry GenAI conventions: ``gen_ai.operation.name`` invoke_agent / execute_tool / chat,
  ``gen_ai.agent.name``, ``gen_ai.tool.name``, ``gen_ai.tool.call.arguments`` /
  ``gen_ai.tool.call.result``, ``gen_ai.usage.input_tokens`` / ``output_tokens`` (and what
  `replay.otel` exports: ``replay.run_id``, ``replay.stop_reason``, ``replay.input`` …).

One run per agent span that is not inside another agent span; a trace without agent spans gives
one run per root span that has tool or model spans under it. Its tool and model spans become
steps, numbered by start time, nested tool spans keep their parent step. Arguments and results
are redacted and hashed exactly as the recorder does (with the target store's key, or
``REPLAY_REDACTION_KEY``), so an imported tool call's ``args_sha`` equals the one the recorder
gives the same call, and a replay can answer it. The stop reason is ``replay.stop_reason`` when
present, else ``error`` for a span with status ERROR, else ``completed``.

Run ids are derived from the trace and span ids (or taken from ``replay.run_id``), so importing a
file twice adds nothing the second time. Imported runs are pinned, like imported cassettes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from replay.cassette import RUN_ID_PATTERN, read_input_file
from replay.errors import CassetteDecodeError, RunNotFoundError
from replay.hashing import sha_of_canonical, truncated_snapshot
from replay.models import STOP_REASONS, Event, Run, Usage
from replay.processors import RedactionConfig, Redactor

__all__ = ["ImportedRun", "OtlpDecodeError", "import_otlp", "load_otlp", "runs_from_otlp"]

#: Larger files are refused rather than read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_ERROR_CODES = {2, "2", "STATUS_CODE_ERROR", "ERROR"}


class OtlpDecodeError(CassetteDecodeError):
    """An OTLP JSON file that cannot be read; names the file and the place, never a value."""


@dataclass
class _Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    error: bool
    status_message: str
    exc_type: str | None
    exc_message: str | None
    order: int
    children: list[_Span] = field(default_factory=list)

    @property
    def role(self) -> str | None:
        """ "agent", "tool", "model" or None (a span that is only structure)."""
        a = self.attrs
        oi = str(a.get("openinference.span.kind", "")).upper()
        tl = str(a.get("traceloop.span.kind", "")).lower()
        op = str(a.get("gen_ai.operation.name", "")).lower()
        if oi == "TOOL" or tl == "tool" or op == "execute_tool":
            return "tool"
        if (
            oi == "AGENT"
            or tl in ("agent", "workflow")
            or op in ("invoke_agent", "invoke_workflow")
        ):
            return "agent"
        if (
            oi == "LLM"
            or op in ("chat", "text_completion", "generate_content")
            or (not oi and not tl and "llm.request.type" in a)
        ):
            return "model"
        return None


@dataclass
class ImportedRun:
    """One run built from a trace: what `Store.write_batch` takes."""

    run: Run
    events: list[Event]
    snapshots: list[tuple[str, bytes, str | None, bool]]


# ---- reading the file --------------------------------------------------------------------------


def load_otlp(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The export requests in an OTLP JSON file: one JSON object, or one per line.

    Raises:
        OtlpDecodeError: missing, unreadable, too large, not JSON, or no ``resourceSpans``.
    """
    p = Path(path)
    raw = read_input_file(
        p,
        OtlpDecodeError,
        "no such file (export traces as OTLP JSON, e.g. the collector's file exporter)",
        MAX_FILE_BYTES,
        "an OTLP import",
    )
    docs: list[Any]
    try:
        docs = [orjson.loads(raw)]
    except orjson.JSONDecodeError:
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    docs.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    raise OtlpDecodeError(
                        str(p),
                        f"line {n}: not valid JSON "
                        "(expected one OTLP JSON object, or one per line)",
                    ) from None
    out = []
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or not isinstance(d.get("resourceSpans"), list):
            where = f"object {i + 1}: " if len(docs) > 1 else ""
            raise OtlpDecodeError(
                str(p),
                f"{where}no resourceSpans list: not an OTLP JSON trace export "
                "(resourceSpans -> scopeSpans -> spans, the OTLP/HTTP JSON encoding)",
            )
        out.append(d)
    return out


def _any_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return None
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError):
            return None
    if "arrayValue" in v:
        vals = (v["arrayValue"] or {}).get("values") or []
        return [_any_value(x) for x in vals] if isinstance(vals, list) else []
    if "kvlistValue" in v:
        return _attrs((v["kvlistValue"] or {}).get("values") or [])
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _attrs(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(items, list):
        for kv in items:
            if isinstance(kv, dict) and isinstance(kv.get("key"), str):
                out[kv["key"]] = _any_value(kv.get("value"))
    return out


def _hex_id(value: Any, nbytes: int) -> str:
    """A trace or span id as lowercase hex: OTLP JSON writes hex; protobuf's JSON mapping,
    base64."""
    if not isinstance(value, str) or not value:
        return ""
    s = value.strip()
    if len(s) == nbytes * 2:
        try:
            int(s, 16)
            return s.lower()
        except ValueError:
            pass
    try:
        b = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return ""
    return b.hex() if len(b) == nbytes else ""


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _spans(docs: list[dict[str, Any]], where: str) -> list[_Span]:
    spans: list[_Span] = []
    for d in docs:
        for ri, rs in enumerate(d.get("resourceSpans") or []):
            if not isinstance(rs, dict):
                continue
            for si, ss in enumerate(
                rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
            ):
                if not isinstance(ss, dict):
                    continue
                for pi, sp in enumerate(ss.get("spans") or []):
                    loc = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                    if not isinstance(sp, dict):
                        raise OtlpDecodeError(where, f"{loc}: a span must be a JSON object")
                    tid, sid = _hex_id(sp.get("traceId"), 16), _hex_id(sp.get("spanId"), 8)
                    if not tid or not sid:
                        raise OtlpDecodeError(
                            where,
                            f"{loc}: traceId and spanId must be 32 and 16 hex digits "
                            "(or their base64)",
                        )
                    raw_status = sp.get("status")
                    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
                    exc_type = exc_msg = None
                    for ev in sp.get("events") or []:
                        if isinstance(ev, dict) and ev.get("name") == "exception":
                            ea = _attrs(ev.get("attributes"))
                            exc_type = exc_type or _str(ea.get("exception.type"))
                            exc_msg = exc_msg or _str(ea.get("exception.message"))
                    start = _int(sp.get("startTimeUnixNano"))
                    spans.append(
                        _Span(
                            trace_id=tid,
                            span_id=sid,
                            parent_id=_hex_id(sp.get("parentSpanId"), 8),
                            name=_str(sp.get("name")) or "",
                            start_ns=start,
                            end_ns=max(_int(sp.get("endTimeUnixNano")), start),
                            attrs=_attrs(sp.get("attributes")),
                            error=status.get("code") in _ERROR_CODES,
                            status_message=_str(status.get("message")) or "",
                            exc_type=exc_type,
                            exc_message=exc_msg,
                            order=len(spans),
                        )
                    )
    return spans


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


# ---- reading values ----------------------------------------------------------------------------


def _json_or_text(v: Any, mime: Any = None) -> Any:
    """An attribute value that holds JSON text parsed, a plain-text one kept as text."""
    if not isinstance(v, str):
        return v
    if isinstance(mime, str) and "json" not in mime.lower():
        return v
    try:
        return json.loads(v)
    except ValueError:
        return v


def _first(a: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if a.get(k) is not None:
            return a[k]
    return None


def _traceloop_args(v: Any) -> Any:
    """``traceloop.entity.input`` is ``{"args": [...], "kwargs": {...}}``: the keyword arguments
    are the call's.
    """
    if isinstance(v, dict) and set(v) <= {"args", "kwargs"} and "kwargs" in v:
        if not v.get("args") and isinstance(v.get("kwargs"), dict):
            return v["kwargs"]
    return v


def _is_kwargs(v: Any) -> bool:
    v = _json_or_text(v)
    return isinstance(v, dict) and _traceloop_args(v) is not v


def _span_label(s: _Span, keys: tuple[str, ...], prefix: str, default: str) -> str:
    """The first non-empty string among `keys`, else the span name without `prefix`."""
    name = _first(s.attrs, *keys)
    if isinstance(name, str) and name:
        return name
    return s.name.removeprefix(prefix).strip() or default


def _tool_name(s: _Span) -> str:
    keys = ("gen_ai.tool.name", "tool.name", "traceloop.entity.name")
    return _span_label(s, keys, "execute_tool ", "tool")


def _model_name(s: _Span) -> str:
    keys = ("replay.tool", "gen_ai.request.model", "llm.model_name", "gen_ai.response.model")
    return _span_label(s, keys, "chat ", "model")


def _agent_name(s: _Span) -> str:
    keys = ("gen_ai.agent.name", "agent.name", "traceloop.entity.name", "traceloop.workflow.name")
    return _span_label(s, keys, "invoke_agent ", "agent")


_MISSING = object()


def _first_value(a: dict[str, Any], side: str, keys: tuple[str, ...], default: Any) -> Any:
    """The first of `keys` a span carries, parsed, then OpenInference's ``{side}.value`` (with its
    mime type), then ``gen_ai.{side}.messages``; `default` when there is none.
    """
    for key in keys:
        if a.get(key) is not None:
            return _json_or_text(a[key])
    if a.get(f"{side}.value") is not None:
        return _json_or_text(a[f"{side}.value"], a.get(f"{side}.mime_type"))
    if a.get(f"gen_ai.{side}.messages") is not None:
        return _json_or_text(a[f"gen_ai.{side}.messages"])
    return default


def _args(s: _Span) -> Any:
    a = s.attrs
    if a.get("replay.args") is None and a.get("gen_ai.tool.call.arguments") is None:
        if a.get("traceloop.entity.input") is not None:
            return _traceloop_args(_json_or_text(a["traceloop.entity.input"]))
    return _first_value(a, "input", ("replay.args", "gen_ai.tool.call.arguments"), {})


def _result(s: _Span) -> Any:
    keys = ("replay.result", "gen_ai.tool.call.result", "traceloop.entity.output")
    return _first_value(s.attrs, "output", keys, _MISSING)


def _run_input(s: _Span) -> Any:
    a = s.attrs
    if a.get("replay.input") is not None:
        return _json_or_text(a["replay.input"])
    v = _args(s)
    return None if v == {} else v


def _run_output(s: _Span) -> Any:
    a = s.attrs
    if a.get("replay.output") is not None:
        return _json_or_text(a["replay.output"])
    v = _result(s)
    return None if v is _MISSING else v


def _tokens(a: dict[str, Any]) -> tuple[int, int]:
    tin = _first(
        a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
    )
    tout = _first(
        a,
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    )
    return _int(tin), _int(tout)


def _error_name(s: _Span) -> str:
    name = _first(s.attrs, "error.type") or s.exc_type or "Error"
    name = str(name)
    return name.removeprefix("builtins.")


# ---- building runs -----------------------------------------------------------------------------


def _run_id(s: _Span) -> str:
    own = s.attrs.get("replay.run_id")
    if isinstance(own, str) and RUN_ID_PATTERN.fullmatch(own):
        return own
    ms = (s.start_ns // 1_000_000) & ((1 << 48) - 1)
    rand = int.from_bytes(
        hashlib.sha256(f"otlp/{s.trace_id}/{s.span_id}".encode()).digest()[:10], "big"
    )
    n = (ms << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[n & 31])
        n >>= 5
    return "r_" + "".join(reversed(chars))


def _walk(s: _Span) -> Iterator[_Span]:
    """The spans under `s`, depth first, children by start time. Iterative and cycle-safe: a
    hostile file may nest spans thousands deep or make two spans each other's parent."""
    seen = {id(s)}
    stack = [iter(sorted(s.children, key=lambda c: (c.start_ns, c.order)))]
    while stack:
        c = next(stack[-1], None)
        if c is None:
            stack.pop()
            continue
        if id(c) in seen:
            continue
        seen.add(id(c))
        yield c
        stack.append(iter(sorted(c.children, key=lambda x: (x.start_ns, x.order))))


class _Builder:
    def __init__(self, redactor: Redactor, max_snapshot_bytes: int) -> None:
        self.redactor = redactor
        self.max_snapshot_bytes = max_snapshot_bytes
        self.snapshots: dict[str, tuple[str, bytes, str | None, bool]] = {}
        self.by_id: dict[str, _Span] = {}  # the spans of the trace being built, by span id

    def snapshot(self, value: Any, type_name: str | None = None) -> tuple[str, Any]:
        """Redact `value`, keep it content-addressed; (sha, the redacted value) as the writer
        does."""
        body = self.redactor.canonical(value)
        digest = sha_of_canonical(body)
        if digest not in self.snapshots:
            stored, truncated = truncated_snapshot(body, digest, self.max_snapshot_bytes)
            self.snapshots[digest] = (digest, stored, type_name, truncated)
        return digest, orjson.loads(body)

    def text(self, s: str) -> str:
        """A name, label or version, redacted as the writer redacts them."""
        return self.redactor.redact_name(s)

    def run(self, root: _Span) -> ImportedRun:
        rid = _run_id(root)
        a = root.attrs
        steps: list[Event] = []
        step_of: dict[str, int] = {}
        model = _first(a, "gen_ai.request.model", "llm.model_name")
        for s in _walk(root):
            if s.role not in ("tool", "model"):
                continue
            step_id = len(steps) + 1
            step_of[s.span_id] = step_id
            steps.append(self.step(s, rid, step_id, self.parent_step(s, root, step_of)))
            if s.role == "model":
                model = model or _first(s.attrs, "gen_ai.request.model", "llm.model_name")
        stop_reason = a.get("replay.stop_reason")
        if not (isinstance(stop_reason, str) and (stop_reason in STOP_REASONS)):
            stop_reason = "error" if root.error else "completed"
        run = self.run_row(root, rid, steps, model, stop_reason)
        events = [
            Event(run_id=rid, kind="run_start", ts_ms=run.started_ms, args_sha=run.input_sha),
            *steps,
            Event(
                run_id=rid,
                kind="stop",
                ts_ms=root.end_ns // 1_000_000,
                output_sha=run.output_sha,
                stop_reason=stop_reason,
                usage=run.usage,
            ),
        ]
        return ImportedRun(run=run, events=events, snapshots=[])

    def parent_step(self, s: _Span, root: _Span, step_of: dict[str, int]) -> int | None:
        """The step id of the nearest step span above `s` in its trace (None: under the agent)."""
        p, up = s.parent_id, set()
        while p and p != root.span_id and p in self.by_id and p not in up:
            # `up`: duplicate ids cannot loop
            if p in step_of:
                return step_of[p]
            up.add(p)
            p = self.by_id[p].parent_id
        return None

    def step(self, s: _Span, rid: str, step_id: int, parent: int | None) -> Event:
        """One tool or model span as a step event, its args and result kept as snapshots."""
        args_sha, _ = self.snapshot(_args(s))
        usage = None
        if s.role == "model":
            tool = self.text(_model_name(s))
            tin, tout = _tokens(s.attrs)
            usage = Usage(tokens_in=tin, tokens_out=tout)
        else:
            tool = self.text(_tool_name(s))
        error = None
        if s.error:
            error = self.text(_error_name(s))
            body = _json_or_text(s.attrs.get("replay.error_body"))  # as replay.otel exported it
            if not (isinstance(body, dict) and body.get("error") == error):
                body = {
                    "error": error,
                    "module": "",
                    "qualname": "",
                    "message": s.exc_message or s.status_message,
                }
            output_sha: str | None = self.snapshot(body, "$error")[0]
        else:
            result = _result(s)
            output_sha = None if result is _MISSING else self.snapshot(result)[0]
        return Event(
            run_id=rid,
            kind="model_result" if s.role == "model" else "tool_result",
            ts_ms=s.end_ns // 1_000_000,
            step_id=step_id,
            tool=tool,
            args_sha=args_sha,
            output_sha=output_sha,
            duration_ms=(s.end_ns - s.start_ns) // 1_000_000,
            status="error" if error else "ok",
            error=error,
            usage=usage,
            parent_step_id=parent,
        )

    def attrs_under(self, a: dict[str, Any], prefix: str) -> dict[str, str]:
        """The root span's ``prefix*`` attributes (versions, labels), names and values redacted."""
        return {
            k.removeprefix(prefix): self.text(str(v))
            for k, v in a.items()
            if k.startswith(prefix) and v is not None
        }

    def run_row(
        self, root: _Span, rid: str, steps: list[Event], model: Any, stop_reason: str
    ) -> Run:
        """The run row: agent, versions, labels, times, usage summed over its steps, input and
        output snapshots."""
        a = root.attrs
        versions = self.attrs_under(a, "replay.version.")
        if model and "model" not in versions:
            versions["model"] = self.text(str(model))
        labels = self.attrs_under(a, "replay.label.")
        labels.setdefault("imported_from", "otlp")
        labels.setdefault("trace_id", root.trace_id)
        tokens_in = sum(e.usage.tokens_in for e in steps if e.usage is not None)
        tokens_out = sum(e.usage.tokens_out for e in steps if e.usage is not None)
        tool_calls = sum(1 for e in steps if e.kind == "tool_result")
        run = Run(
            run_id=rid,
            agent=self.text(_agent_name(root)),
            versions=versions,
            labels=labels,
            started_ms=root.start_ns // 1_000_000,
            ended_ms=root.end_ns // 1_000_000,
            stop_reason=stop_reason,
            usage=Usage(tokens_in=tokens_in, tokens_out=tokens_out, tool_calls=tool_calls),
            tool_calls=tool_calls,
            pinned=True,
            host="",
            key_fingerprint=self.redactor.key_fingerprint,
            # replay.otel and OpenLLMetry (kwargs) carry the bound arguments; others the agent's one
            # input value.
            call_style="bound"
            if "replay.input" in a or _is_kwargs(a.get("traceloop.entity.input"))
            else "value",
        )
        inp = _run_input(root)
        if inp is not None:
            run.input_sha, run.input = self.snapshot(inp)
        out = _run_output(root)
        if out is not None:
            run.output_sha, run.output = self.snapshot(out)
        return run


def runs_from_otlp(
    docs: list[dict[str, Any]],
    redactor: Redactor,
    *,
    where: str = "<otlp>",
    max_snapshot_bytes: int = 1_000_000,
) -> list[ImportedRun]:
    """Build runs from parsed OTLP JSON export requests (see the module docstring for the rules).

    Raises:
        OtlpDecodeError: a span without well-formed ids, or no agent, tool or model span at all.
    """
    spans = _spans(docs, where)
    by_key = {(s.trace_id, s.span_id): s for s in spans}
    for s in spans:
        parent = by_key.get((s.trace_id, s.parent_id)) if s.parent_id else None
        if parent is not None and parent is not s:
            parent.children.append(s)

    def parent_of(s: _Span) -> _Span | None:
        return by_key.get((s.trace_id, s.parent_id)) if s.parent_id else None

    def under_agent(s: _Span) -> bool:
        p, seen = parent_of(s), 0
        while p is not None and seen < 10_000:
            if p.role == "agent":
                return True
            p, seen = parent_of(p), seen + 1
        return False

    roots = [s for s in spans if s.role == "agent" and not under_agent(s)]
    covered = set()
    for r in roots:
        covered.add(id(r))
        covered.update(id(c) for c in _walk(r))
    # Traces without agent spans: each outermost span with tool or model spans under it (or itself
    # one).
    for s in spans:
        if id(s) in covered or parent_of(s) is not None:
            continue
        if s.role in ("tool", "model") or any(c.role in ("tool", "model") for c in _walk(s)):
            roots.append(s)
    if not roots:
        raise OtlpDecodeError(
            where,
            "no agent, tool or LLM span found: the import reads OpenInference "
            "(openinference.span.kind), OpenLLMetry (traceloop.span.kind) "
            "or OTel GenAI (gen_ai.operation.name) spans",
        )
    builder = _Builder(redactor, max_snapshot_bytes)
    out = []
    for root in sorted(roots, key=lambda s: (s.start_ns, s.order)):
        builder.by_id = {s.span_id: s for s in spans if s.trace_id == root.trace_id}
        builder.snapshots = {}
        imported = builder.run(root)
        imported.snapshots = list(builder.snapshots.values())
        out.append(imported)
    return out


@dataclass
class ImportResult:
    """What `import_otlp` did: the run ids added and those already in the store."""

    added: list[str]
    skipped: list[str]


def import_otlp(
    store: Any,
    path: str | os.PathLike[str],
    *,
    redaction: RedactionConfig | None = None,
    redaction_key: bytes | None = None,
) -> ImportResult:
    """Import the runs of an OTLP JSON file into `store`; a run already there is left as it is.

    Values are redacted with the key the recorder would use for this store (`redaction_key`,
    else ``REPLAY_REDACTION_KEY``, else the store's own key), so args hashes join.

    Raises:
        OtlpDecodeError: the file cannot be read or holds no agent, tool or LLM span.
    """
    from replay.guards import shared_redaction_key

    docs = load_otlp(path)
    key = redaction_key or shared_redaction_key() or store.secret_key
    runs = runs_from_otlp(docs, Redactor(key, redaction), where=str(path))
    result = ImportResult(added=[], skipped=[])
    for imp in runs:
        try:
            store.get_run(imp.run.run_id)
            result.skipped.append(imp.run.run_id)
            continue
        except RunNotFoundError:
            pass
        store.write_batch(runs=[imp.run], events=imp.events, snapshots=imp.snapshots)
        result.added.append(imp.run.run_id)
    return result
