"""The drift dashboard: one self-contained HTML file with three inline SVG charts.

Tool calls per run (avg and p95), run latency p95, and stop reasons (stacked counts), per hour or
day. No JavaScript, no network: the file opens in any browser and can be attached to an incident.
A PNG of the same charts is written only when matplotlib happens to be installed (`write_png`).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import math
import os
from collections.abc import Sequence
from html import escape
from typing import Any, NamedTuple

from replay.errors import ReplayError
from replay.stats import Stats, TimeBucket, format_stats

__all__ = ["PlotDependencyError", "RunLink", "render_html", "write_html", "write_png"]

_W, _H = 760, 260
_ML, _MR, _MT, _MB = 64, 150, 16, 44  # margins: left (y labels), right (legend), top, bottom

_REASON_COLORS = {
    "completed": "#2e7d32",
    "error": "#c62828",
    "loop_detected": "#ef6c00",
    "tool_timeout": "#6a1b9a",
    "budget_exceeded": "#8d6e63",
    "max_steps": "#d81b60",
    "denied": "#546e7a",
    "killed": "#212121",
    "cancelled": "#9e9d24",
}
_EXTRA_COLORS = ("#00838f", "#5d4037", "#3949ab", "#7cb342", "#f9a825", "#78909c")
_SERIES_COLORS = {"avg": "#1565c0", "p95": "#c62828"}


class PlotDependencyError(ReplayError, ImportError):
    """`--plot FILE.png` needs matplotlib, which is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "--plot needs matplotlib, which is not installed: use --html FILE for the same "
            "charts as a self-contained HTML report (or pip install matplotlib)"
        )


def _label(ms: int, by: str) -> str:
    t = _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc)
    return t.strftime("%m-%d %H:00" if by == "hour" else "%Y-%m-%d")


def _nice_max(v: float) -> tuple[float, int]:
    """A round axis maximum >= v and how many gridline steps divide it into round numbers."""
    if v <= 0:
        return 1.0, 5
    exp = 10 ** math.floor(math.log10(v))
    for m, steps in ((1, 5), (2, 4), (5, 5), (10, 5)):
        if v <= m * exp * (1 + 1e-9):
            return m * exp, steps
    return 10 * exp, 5


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.1f}"


class _Chart:
    """Axes shared by the three charts: x = bucket index, y = 0 .. a round maximum."""

    def __init__(
        self, chart_id: str, title: str, buckets: Sequence[TimeBucket], by: str, ymax: float
    ) -> None:
        self.id, self.title, self.buckets, self.by = chart_id, title, buckets, by
        self.ymax, self.steps = _nice_max(ymax)
        self.n = max(len(buckets), 1)
        self.pw, self.ph = _W - _ML - _MR, _H - _MT - _MB
        self.parts: list[str] = []

    def x(self, i: int) -> float:
        return _ML + (i + 0.5) * self.pw / self.n

    def y(self, v: float) -> float:
        return _MT + self.ph - (v / self.ymax) * self.ph

    def axes(self, unit: str) -> None:
        p = self.parts
        for k in range(self.steps + 1):
            v = self.ymax * k / self.steps
            y = self.y(v)
            p.append(
                f'<line x1="{_ML}" y1="{y:.1f}" x2="{_ML + self.pw}" y2="{y:.1f}" '
                'stroke="#e0e0e0"/>'
            )
            p.append(
                f'<text x="{_ML - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                f'fill="#555">{_fmt(v)}</text>'
            )
        p.append(
            f'<text x="14" y="{_MT + self.ph / 2:.1f}" font-size="11" fill="#555" '
            f'transform="rotate(-90 14 {_MT + self.ph / 2:.1f})" '
            f'text-anchor="middle">{escape(unit)}</text>'
        )
        step = max(1, math.ceil(self.n / 8))
        for i, b in enumerate(self.buckets):
            if i % step == 0:
                p.append(
                    f'<text x="{self.x(i):.1f}" y="{_MT + self.ph + 16}" text-anchor="middle" '
                    'font-size="11" '
                    f'fill="#555">{escape(_label(b.start_ms, self.by))}</text>'
                )
        p.append(
            f'<line x1="{_ML}" y1="{_MT + self.ph}" x2="{_ML + self.pw}" y2="{_MT + self.ph}" '
            'stroke="#999"/>'
        )

    def legend(self, items: Sequence[tuple[str, str]]) -> None:
        for k, (name, color) in enumerate(items):
            y = _MT + 8 + k * 18
            self.parts.append(
                f'<rect x="{_W - _MR + 12}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
            )
            self.parts.append(
                f'<text x="{_W - _MR + 28}" y="{y}" font-size="12">{escape(name)}</text>'
            )

    def svg(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" id="{self.id}" class="chart" width="{_W}" '
            f'height="{_H}" '
            f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(self.title)}">'
            + "".join(self.parts)
            + "</svg>"
        )


def _line_chart(
    chart_id: str,
    title: str,
    unit: str,
    buckets: Sequence[TimeBucket],
    by: str,
    series: dict[str, list[float | None]],
) -> str:
    values = [v for vs in series.values() for v in vs if v is not None]
    chart = _Chart(chart_id, title, buckets, by, max(values, default=0.0))
    chart.axes(unit)
    for name, vs in series.items():
        color = _SERIES_COLORS.get(name, "#333")
        # One polyline per run of consecutive buckets with data: empty buckets leave a gap.
        segment: list[str] = []
        for i, v in enumerate([*vs, None]):
            if v is not None:
                segment.append(f"{chart.x(i):.1f},{chart.y(v):.1f}")
            elif segment:
                chart.parts.append(
                    f'<polyline points="{" ".join(segment)}" fill="none" stroke="{color}" '
                    'stroke-width="2"/>'
                )
                segment = []
        for i, v in enumerate(vs):
            if v is None:
                continue
            when = _label(buckets[i].start_ms, by)
            chart.parts.append(
                f'<circle class="point" cx="{chart.x(i):.1f}" cy="{chart.y(v):.1f}" r="3" '
                f'fill="{color}" '
                f'data-series="{name}" data-start-ms="{buckets[i].start_ms}" data-value="{v:.6g}">'
                f"<title>{escape(when)} {escape(name)}: {_fmt(v)} {escape(unit)}</title></circle>"
            )
    chart.legend([(n, _SERIES_COLORS.get(n, "#333")) for n in series])
    return chart.svg()


def _stop_chart(buckets: Sequence[TimeBucket], by: str) -> str:
    reasons: list[str] = []
    for b in buckets:
        for r in b.stats.stop_reasons:
            if r not in reasons:
                reasons.append(r)
    order = [r for r in _REASON_COLORS if r in reasons] + sorted(
        r for r in reasons if r not in _REASON_COLORS
    )
    extra = iter(_EXTRA_COLORS * (len(order) // len(_EXTRA_COLORS) + 1))
    colors = {r: _REASON_COLORS.get(r) or next(extra) for r in order}
    chart = _Chart(
        "chart-stop-reasons",
        "Stop reasons",
        buckets,
        by,
        max((b.stats.finished_runs for b in buckets), default=0),
    )
    chart.axes("runs")
    bw = max(2.0, chart.pw / chart.n * 0.7)
    for i, b in enumerate(buckets):
        base = 0
        when = _label(b.start_ms, by)
        shares = b.stats.stop_reason_shares
        for r in order:
            c = b.stats.stop_reasons.get(r, 0)
            if not c:
                continue
            y0, y1 = chart.y(base), chart.y(base + c)
            chart.parts.append(
                f'<rect class="bar" x="{chart.x(i) - bw / 2:.1f}" y="{y1:.1f}" width="{bw:.1f}" '
                f'height="{y0 - y1:.1f}" fill="{colors[r]}" data-reason="{escape(r)}" '
                f'data-start-ms="{b.start_ms}" data-count="{c}">'
                f"<title>{escape(when)} {escape(r)}: {c} runs "
                f"({shares[r] * 100:.1f}%)</title></rect>"
            )
            base += c
    chart.legend([(r, colors[r]) for r in order])
    return chart.svg()


def render_html(
    buckets: Sequence[TimeBucket],
    *,
    by: str = "hour",
    title: str = "agent-replay: drift dashboard",
    subtitle: str = "",
    overall: Stats | None = None,
    runs: Sequence[RunLink] = (),
) -> str:
    """The dashboard as one well-formed HTML document (it also parses as XML).

    Charts have the ids ``chart-tool-calls``, ``chart-latency-p95`` and ``chart-stop-reasons``;
    every data point is a ``circle.point`` or ``rect.bar`` with ``data-*`` attributes and a
    tooltip. `runs` adds a table ``#runs`` linking each run to its run page (`replay view`).
    """
    tool_calls = _line_chart(
        "chart-tool-calls",
        "Tool calls per run",
        "tool calls",
        buckets,
        by,
        {
            "avg": [b.stats.tool_calls_avg for b in buckets],
            "p95": [b.stats.tool_calls_p95 for b in buckets],
        },
    )
    latency = _line_chart(
        "chart-latency-p95",
        "Run latency p95",
        "ms",
        buckets,
        by,
        {"p95": [b.stats.latency_p95_ms for b in buckets]},
    )
    stops = _stop_chart(buckets, by)
    summary = f"<pre>{escape(format_stats(overall))}</pre>" if overall is not None else ""
    per = "hour" if by == "hour" else "day"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}"
        "h2{font-size:16px;margin:24px 0 4px}pre{background:#f6f6f6;padding:12px}"
        ".note{color:#666;font-size:13px}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        + (f'<p class="note">{escape(subtitle)}</p>' if subtitle else "")
        + summary
        + f'<p class="note">One point per {per} (UTC) by run start; empty {per}s leave gaps.</p>'
        + f"<h2>Tool calls per run</h2>{tool_calls}"
        + f"<h2>Run latency p95</h2>{latency}"
        + f"<h2>Stop reasons</h2>{stops}"
        + _runs_table(runs)
        + "</body></html>\n"
    )


class RunLink(NamedTuple):
    """One row of the dashboard's run table: a run and the relative link to its run page."""

    run_id: str
    agent: str
    started_ms: int
    tool_calls: int
    latency_ms: int | None
    stop_reason: str | None
    href: str


def _utc(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _runs_table(runs: Sequence[RunLink]) -> str:
    if not runs:
        return ""
    rows = "".join(
        f'<tr><td><a href="{escape(r.href, quote=True)}">{escape(r.run_id)}</a></td>'
        f"<td>{escape(r.agent)}</td><td>{escape(_utc(r.started_ms))}</td>"
        f'<td style="text-align:right">{r.tool_calls}</td>'
        f'<td style="text-align:right">{"-" if r.latency_ms is None else f"{r.latency_ms:,}"}</td>'
        f"<td>{escape(r.stop_reason or '-')}</td></tr>"
        for r in runs
    )
    return (
        '<h2>Runs to look at</h2><p class="note">The runs with the most tool calls and the slowest '
        "ones; each links to its run page (steps, outputs, versions).</p>"
        '<table id="runs" style="border-collapse:collapse;font-size:13px" cellpadding="4">'
        "<tr><th>run</th><th>agent</th><th>started (UTC)</th><th>tool calls</th><th>latency ms</th>"
        f"<th>stop reason</th></tr>{rows}</table>"
    )


def write_html(path: str | os.PathLike[str], buckets: Sequence[TimeBucket], **kwargs: Any) -> None:
    """Write `render_html` to `path` (UTF-8)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(buckets, **kwargs))


def write_png(
    path: str | os.PathLike[str], buckets: Sequence[TimeBucket], *, by: str = "hour"
) -> None:
    """The same three charts as a PNG, with matplotlib.

    Raises:
        PlotDependencyError: matplotlib is not installed (suggests --html instead).
    """
    try:
        # Through importlib: matplotlib is an optional extra, typed as Any whether installed or not.
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError as exc:
        raise PlotDependencyError() from exc
    xs = [_dt.datetime.fromtimestamp(b.start_ms / 1000, _dt.timezone.utc) for b in buckets]
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    a1.plot(xs, [b.stats.tool_calls_avg for b in buckets], marker="o", label="avg")
    a1.plot(xs, [b.stats.tool_calls_p95 for b in buckets], marker="o", label="p95")
    a1.set_title("Tool calls per run")
    a1.legend()
    a2.plot(xs, [b.stats.latency_p95_ms for b in buckets], marker="o", color="#c62828")
    a2.set_title("Run latency p95 (ms)")
    reasons = sorted({r for b in buckets for r in b.stats.stop_reasons})
    bottom = [0.0] * len(buckets)
    width = (xs[1] - xs[0]) * 0.7 if len(xs) > 1 else 0.03
    for r in reasons:
        counts = [b.stats.stop_reasons.get(r, 0) for b in buckets]
        a3.bar(xs, counts, bottom=bottom, width=width, label=r, color=_REASON_COLORS.get(r))
        bottom = [x + c for x, c in zip(bottom, counts, strict=True)]
    a3.set_title("Stop reasons (runs)")
    a3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    plt.close(fig)
