"""The run page of `replay view`: one self-contained HTML file for one recorded run.

It shows the run's header (agent, entrypoint, versions, usage, stop reason), the step timeline as
a waterfall (one bar per step, placed by its start and sized by its duration, coloured by status)
and, for each step, its redacted output behind a click (``<details>``). With a second run (another
recorded run, a cassette, or a replay made now) it adds the diff side by side: the two step
sequences aligned as `replay.diff` aligns them, each step coloured by its change kind.

Recorded data is never code: every recorded string (tool names, errors, outputs, versions) is
HTML-escaped, the page has no JavaScript at all, and a Content-Security-Policy forbids scripts
and every external resource, so a tool named ``<script>`` is shown as text and the file opens
offline.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from replay.diff import CHANGE_KINDS, RunDiff
from replay.models import Event, Run, is_step

__all__ = ["CSP", "render_run_page", "write_run_page"]

#: The page's Content-Security-Policy: no script, no network, inline styles only.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'"
)

_STATUS_COLORS = {"ok": "#2e7d32", "error": "#c62828", "timeout": "#6a1b9a", "denied": "#546e7a"}
_KIND_COLORS = {
    "same": "#ffffff",
    "extra_call": "#e3f5e1",
    "missing_call": "#fde2e1",
    "reordered": "#e8eaf6",
    "args_changed": "#fff4d6",
    "status_changed": "#fde7d0",
    "error_changed": "#fde7d0",
    "output_changed": "#e6f1fb",
}
_MAX_OUTPUT_CHARS = 20_000

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 6px}
table.meta td{padding:2px 12px 2px 0;vertical-align:top}table.meta td:first-child{color:#666}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f6f6;padding:8px;margin:4px 0;white-space:pre-wrap;word-break:break-all;
 max-height:420px;overflow:auto}
.note{color:#666;font-size:13px}
.waterfall details{border-bottom:1px solid #eee}
.waterfall summary{display:grid;grid-template-columns:48px 240px 1fr 70px;gap:8px;
 align-items:center;cursor:pointer;padding:3px 0;font-size:13px;list-style:none}
.waterfall summary::-webkit-details-marker{display:none}
.waterfall summary:hover{background:#f3f7fc}
.track{position:relative;height:14px;background:#fafafa;border-left:1px solid #ddd}
.bar{position:absolute;top:2px;height:10px;min-width:2px;border-radius:2px}
.ms{text-align:right;color:#555}.num{color:#888;text-align:right}
.tool{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.child .tool{padding-left:16px}
.detail{padding:4px 0 10px 56px}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px;
 border:1px solid #ccc}
table.diff{border-collapse:collapse;width:100%;font-size:13px}
table.diff td,table.diff th{border:1px solid #e2e2e2;padding:3px 6px;text-align:left;
 vertical-align:top}
table.diff td.kind{white-space:nowrap;font-size:12px;color:#444}
.verdict{font-weight:600}
"""


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    t = _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _e(value: Any) -> str:
    """Any recorded value as escaped HTML text (quotes too: it may land in an attribute)."""
    return escape("" if value is None else str(value), quote=True)


def _pretty(value: Any) -> str:
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _MAX_OUTPUT_CHARS:
        text = (
            text[:_MAX_OUTPUT_CHARS] + f"\n... ({len(text) - _MAX_OUTPUT_CHARS:,} more characters)"
        )
    return text


def _steps(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if is_step(e, nested=True)]


def _output_of(e: Event, snapshots: Mapping[str, Any]) -> tuple[bool, Any]:
    if not e.output_sha or e.output_sha not in snapshots:
        return False, None
    snap = snapshots[e.output_sha]
    return True, snap[0] if isinstance(snap, tuple) else snap


def _header(run: Run, label: str) -> str:
    u = run.usage
    versions = " ".join(f"{k}={v}" for k, v in sorted(run.versions.items())) or "(none recorded)"
    latency = "-" if run.ended_ms is None else f"{run.ended_ms - run.started_ms:,} ms"
    rows = [
        ("agent", run.agent),
        ("entrypoint", run.entrypoint or "-"),
        ("versions", versions),
        ("started", _iso(run.started_ms)),
        ("latency", latency),
        (
            "usage",
            f"{u.tokens_in:,} tokens in, {u.tokens_out:,} out, ${u.cost_usd:.4f}, "
            f"{run.tool_calls} tool calls",
        ),
        ("stop reason", run.stop_reason or "(no stop event: still running, or the process died)"),
    ]
    if run.replay_of:
        rows.insert(0, ("replay of", run.replay_of))
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta" id="{_e(label)}-meta">{body}</table>'


def _http_under(http: Sequence[Any], step_id: int | None) -> list[str]:
    """One line per HTTP request made under the step (redacted as stored).

    Each line: attempt, method, URL, status.
    """
    mine = [i for i in http if isinstance(i, dict) and i.get("step_id") == step_id]
    out = []
    for n, i in enumerate(mine, 1):
        req, resp = i.get("request") or {}, i.get("response") or {}
        status = resp.get("status")
        code = status.get("code") if isinstance(status, dict) else status
        out.append(
            f"attempt {n}/{len(mine)}  {req.get('method', '?')} {req.get('uri', '?')} -> "
            f"{code if code is not None else '?'}"
        )
    return out


def _step_detail(
    e: Event, dur: int, begin: int, snapshots: Mapping[str, Any], http: Sequence[Any]
) -> list[str]:
    """The HTML shown when a waterfall step is opened: what it was, its hashes, its HTTP requests
    and its redacted output.
    """
    kind = "model" if e.kind == "model_result" else "tool"
    has, value = _output_of(e, snapshots)
    detail = [
        f"<div>{kind} <code>{_e(e.tool or '-')}</code> &middot; status "
        f"<b>{_e(e.status or '-')}</b>"
        f" &middot; {dur:,} ms &middot; started +{begin:,} ms</div>"
    ]
    if e.error:
        detail.append(f"<div>error <code>{_e(e.error)}</code></div>")
    detail.append(
        f'<div class="note">args_sha <code>{_e(e.args_sha or "-")}</code> &middot; '
        f"output_sha <code>{_e(e.output_sha or '-')}</code></div>"
    )
    requests = _http_under(http, e.step_id)
    if requests:
        detail.append(
            "<div>HTTP requests under this step:</div><pre "
            f'class="http">{_e(chr(10).join(requests))}</pre>'
        )
    if has:
        detail.append(f'<div>redacted output:</div><pre class="output">{_e(_pretty(value))}</pre>')
    else:
        detail.append('<div class="note">(no output stored for this step)</div>')
    return detail


def _waterfall(
    run: Run,
    events: Sequence[Event],
    snapshots: Mapping[str, Any],
    prefix: str,
    http: Sequence[Any] = (),
) -> str:
    steps = _steps(events)
    if not steps:
        return '<p class="note" id="waterfall-empty">(no tool or model calls)</p>'
    start = run.started_ms
    end = max([run.ended_ms or start, *(e.ts_ms for e in steps)])
    span = max(end - start, 1)
    rows = []
    for e in steps:
        dur = max(e.duration_ms or 0, 0)
        begin = max((e.ts_ms - dur) - start, 0)
        left = min(begin / span * 100, 99.7)
        width = max(min(dur / span * 100, 100.0 - left), 0.3)
        color = _STATUS_COLORS.get(e.status or "", "#757575")
        detail = _step_detail(e, dur, begin, snapshots, http)
        child = " child" if e.parent_step_id is not None else ""
        title = f"{e.tool or '-'}: {e.status or '-'}, {dur} ms" + (
            f", {e.error}" if e.error else ""
        )
        rows.append(
            f'<details class="step{child}" id="{prefix}step-{e.step_id}" data-step="{e.step_id}" '
            f'data-status="{_e(e.status or "")}">'
            f'<summary><span class="num">{e.step_id}</span><span '
            f'class="tool">{_e(e.tool or "-")}</span>'
            f'<span class="track"><span class="bar" title="{_e(title)}" '
            f'style="left:{left:.3f}%;width:{width:.3f}%;background:{color}"></span></span>'
            f'<span class="ms">{dur:,} ms</span></summary>'
            f'<div class="detail">{"".join(detail)}</div></details>'
        )
    legend = "".join(
        f'<span><i style="background:{c}"></i>{s}</span>' for s, c in _STATUS_COLORS.items()
    )
    return (
        f'<p class="legend">{legend}<span class="note">0 to {span:,} ms; click a step for its '
        'redacted output</span></p><div class="waterfall" '
        f'id="{prefix}waterfall">{"".join(rows)}</div>'
    )


def _aligned_rows(diff: RunDiff, n: int, m: int) -> list[tuple[int | None, int | None, str, str]]:
    """(recorded index, other index, kind of left cell, kind of right cell) in step order."""
    left: dict[int, str] = {}
    right: dict[int, str] = {}
    for c in diff.changes:
        if c.recorded_index is not None:
            left.setdefault(c.recorded_index, c.kind)
        if c.replayed_index is not None:
            right.setdefault(c.replayed_index, c.kind)
    rows: list[tuple[int | None, int | None, str, str]] = []
    i = j = 0
    while i < n or j < m:
        if i < n and left.get(i) == "missing_call":
            rows.append((i, None, "missing_call", ""))
            i += 1
        elif j < m and right.get(j) == "extra_call":
            rows.append((None, j, "", "extra_call"))
            j += 1
        elif i < n and j < m:
            rows.append((i, j, left.get(i, "same"), right.get(j, "same")))
            i += 1
            j += 1
        elif i < n:
            rows.append((i, None, left.get(i, "missing_call"), ""))
            i += 1
        else:
            rows.append((None, j, "", right.get(j, "extra_call")))
            j += 1
    return rows


def _cell(e: Event | None, kind: str) -> str:
    if e is None:
        return '<td class="kind"></td><td></td>'
    color = _KIND_COLORS.get(kind, "#ffffff")
    label = "" if kind == "same" else kind.replace("_", " ")
    err = f"<br><code>{_e(e.error)}</code>" if e.error else ""
    return (
        f'<td class="kind" style="background:{color}">{_e(label)}</td>'
        f'<td style="background:{color}" data-kind="{_e(kind)}"><b>{e.step_id}</b> '
        f"{_e(e.tool or '-')} "
        f'<span class="note">{_e(e.status or "-")} &middot; args '
        f"{_e((e.args_sha or '-')[:8])}</span>{err}</td>"
    )


def _diff_section(
    diff: RunDiff, left: Sequence[Event], right: Sequence[Event], right_label: str
) -> str:
    a, b = (
        [e for e in left if e.parent_step_id is None],
        [e for e in right if e.parent_step_id is None],
    )
    rows = []
    for i, j, lk, rk in _aligned_rows(diff, len(a), len(b)):
        rows.append(
            "<tr>"
            + _cell(a[i] if i is not None else None, lk)
            + _cell(b[j] if j is not None else None, rk)
            + "</tr>"
        )
    counts = (
        ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in diff.counts().items() if n)
        or "no step changed"
    )
    legend = "".join(
        f'<span><i style="background:{_KIND_COLORS[k]}"></i>{k.replace("_", " ")}</span>'
        for k in CHANGE_KINDS
    )
    facts = [
        ("verdict", diff.headline()),
        ("changes", counts),
        ("stop reason", f"{diff.stop_reason_before} -> {diff.stop_reason_after}"),
        ("tool calls", f"{diff.tool_calls_before} -> {diff.tool_calls_after}"),
        (
            "tokens",
            f"{diff.usage_before.tokens_in + diff.usage_before.tokens_out:,} -> "
            f"{diff.usage_after.tokens_in + diff.usage_after.tokens_out:,}",
        ),
        ("cost", f"${diff.usage_before.cost_usd:.4f} -> ${diff.usage_after.cost_usd:.4f}"),
    ]
    meta = "".join(
        f"<tr><td>{_e(k)}</td><td{' class=verdict' if k == 'verdict' else ''}>{_e(v)}</td></tr>"
        for k, v in facts
    )
    right_head = (
        right_label if diff.replayed_id in right_label else f"{right_label} ({diff.replayed_id})"
    )
    out = ""
    if diff.output_diff:
        out = (
            "<div>final output changed:</div>"
            f'<pre class="output">{_e(_pretty(diff.output_diff))}</pre>'
        )
    return (
        f'<section id="diff" data-verdict="{"match" if diff.is_empty else "diverged"}">'
        f'<h2>Diff: this run against {_e(right_label)}</h2><table class="meta">{meta}</table>'
        f'<p class="legend">{legend}</p>'
        f'<table class="diff"><thead><tr><th colspan="2">this run ({_e(diff.recorded_id)})</th>'
        f'<th colspan="2">{_e(right_head)}</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{out}</section>"
    )


def render_run_page(
    run: Run,
    events: Sequence[Event],
    snapshots: Mapping[str, Any],
    *,
    other: tuple[Run, Sequence[Event], Mapping[str, Any], str] | None = None,
    diff: RunDiff | None = None,
    generated_ms: int | None = None,
    http: Sequence[Any] = (),
) -> str:
    """The run page as one HTML document (no script, no external resource).

    Args:
        run, events, snapshots: the run (snapshots: sha -> redacted value, or
            (value, type, truncated)).
        http: the run's recorded HTTP interactions (redacted); each step lists the ones it made.
        other: the run compared against: (run, events, snapshots, label such as "replay (now)").
        diff: `RunDiff` of `run` (reference) against `other`.

    Ids a test or a user can rely on: ``#waterfall`` (one ``details.step`` per step,
    ``data-step`` and ``data-status``), ``#step-N``, ``#diff`` (``data-verdict``) and, with
    `other`, ``#other-waterfall``.
    """
    title = f"run {run.run_id}"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>{_e(title)} - agent-replay</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _header(run, "run"),
        "<h2>Steps</h2>",
        _waterfall(run, events, snapshots, "", http),
    ]
    if other is not None and diff is not None:
        o_run, o_events, o_snaps, label = other
        parts.append(_diff_section(diff, _steps(events), _steps(o_events), label))
        parts.append(
            f"<h2>{_e(label if o_run.run_id in label else f'{label}: {o_run.run_id}')}</h2>"
        )
        parts.append(_header(o_run, "other"))
        parts.append(_waterfall(o_run, o_events, o_snaps, "other-"))
    when = _iso(generated_ms) if generated_ms is not None else ""
    parts.append(
        f'<p class="note">agent-replay run page{" written " + when if when else ""}; outputs are '
        "the redacted snapshots the store keeps.</p></body></html>\n"
    )
    return "".join(parts)


def write_run_page(path: str | os.PathLike[str], html: str) -> None:
    """Write `html` to `path` atomically, mode 0600, never through a symlink (`atomic_write`)."""
    from replay.cassette import atomic_write

    atomic_write(path, html)
