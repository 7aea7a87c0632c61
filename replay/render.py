"""How a `RunDiff` reads: text for terminals and pytest (ANSI colour), Markdown for CI comments.

`RunDiff.to_text` / `to_markdown` delegate here. Colour follows the terminal: on only when stdout
is a tty and ``NO_COLOR`` is unset, unless the caller says otherwise.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from replay.models import Event, Usage

if TYPE_CHECKING:  # types only: diff.py imports this module to render
    from replay.diff import RunDiff, StepChange

__all__ = ["GROUP_MARK", "ddiff_lines", "render_markdown", "render_text", "short_sha"]

_KIND_LABEL = {
    "extra_call": "extra call",
    "missing_call": "missing call",
    "reordered": "reordered",
    "args_changed": "args changed",
    "status_changed": "status changed",
    "error_changed": "error changed",
    "output_changed": "output changed",
}
_MARK = {"extra_call": "+", "missing_call": "-", "reordered": ">"}


def _auto_color() -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class _Style:
    _CODES = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1", "dim": "2"}

    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, *styles: str) -> str:
        if not self.on or not styles:
            return text
        codes = ";".join(self._CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


def short_sha(sha: str | None) -> str:
    """A short hash for display (8 hex, like a short git sha)."""
    return sha[:8] if sha else "-"


def _tokens(u: Usage) -> int:
    return u.tokens_in + u.tokens_out


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _val(v: Any, limit: int = 24) -> str:
    s = json.dumps(v, ensure_ascii=False, sort_keys=True) if not isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def ddiff_lines(dd: Mapping[str, Any]) -> list[str]:
    """One short line per changed path of a deepdiff result (verbose_level 2, JSON form)."""
    out: list[str] = []
    for cat, entries in dd.items():
        items = entries.items() if isinstance(entries, Mapping) else ((p, None) for p in entries)
        for path, info in items:
            if cat == "values_changed" and isinstance(info, Mapping):
                old, new = _val(info.get("old_value")), _val(info.get("new_value"))
                out.append(f"{path}: {old} -> {new}")
            elif cat == "type_changes" and isinstance(info, Mapping):
                out.append(
                    f"{path}: {info.get('old_type')} {_val(info.get('old_value'))} -> "
                    f"{info.get('new_type')} {_val(info.get('new_value'))}"
                )
            elif cat.endswith("_added"):
                out.append(f"{path} added" + ("" if info is None else f": {_val(info)}"))
            elif cat.endswith("_removed"):
                out.append(f"{path} removed" + ("" if info is None else f": {_val(info)}"))
            else:
                out.append(f"{path}: {cat.replace('_', ' ')}")
    return out or ["changed"]


#: marks a step of a concurrent group (parallel calls, compared as a set) in reports
GROUP_MARK = "∥"


def _grouped(c: StepChange) -> bool:
    return any(e is not None and e.concurrent_group is not None for e in (c.recorded, c.replayed))


def _step_label(c: StepChange) -> str:
    return _step_label_plain(c) + (f" {GROUP_MARK}" if _grouped(c) else "")


def _step_label_plain(c: StepChange) -> str:
    r, p = c.recorded_index, c.replayed_index
    if c.kind == "extra_call":
        return f"step {(p or 0) + 1}"
    if c.kind == "missing_call" or p is None:
        return f"step {(r or 0) + 1}"
    if r is None or r == p:
        return f"step {(r if r is not None else p) + 1}"
    return f"step {r + 1}→{p + 1}"


def _groups_line(d: RunDiff) -> str | None:
    if not (d.groups_before or d.groups_after):
        return None
    return (
        f"concurrent groups: {d.groups_before} recorded, {d.groups_after} replayed, "
        f"each compared as a set ({GROUP_MARK} marks their steps)"
    )


def _short_tool(tool: str | None, limit: int) -> str:
    """A long tool name cut in the middle, so the args and the note after it stay visible."""
    name = tool or "?"
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return name[:head] + "…" + name[len(name) - (limit - 1 - head) :]


def _describe(label: str, e: Event | None, index: int | None, tw: int, *, out: bool = False) -> str:
    if e is None or index is None:
        return f"{label}  -"
    status: str = e.status or "-"
    if e.status == "error" and e.error:
        status += f" {e.error}"
    tail = f"  out {short_sha(e.output_sha)}" if out else ""
    tool = _short_tool(e.tool, tw)
    mark = f" {GROUP_MARK}" if e.concurrent_group is not None else ""
    return f"{label}  step {index + 1}{mark}  {tool}  args {short_sha(e.args_sha)}  {status}{tail}"


def _change_line(c: StepChange, tw: int) -> str:
    mark = _MARK.get(c.kind, "~")
    ev = c.replayed if c.kind == "extra_call" else (c.recorded or c.replayed)
    tool = _short_tool(ev.tool if ev is not None else None, tw)
    if c.kind in ("extra_call", "missing_call", "reordered"):
        args = short_sha(ev.args_sha if ev is not None else None)
        return f"{mark} {_step_label(c)}  {tool}  args {args}  ({c.note})"
    return f"{mark} {_step_label(c)}  {tool}  {c.note}"


def _fmt_int(n: float) -> str:
    return f"{int(n):,}"


def _fmt_pct(p: float | None) -> str:
    if p is None:
        return ""
    if math.isinf(p):
        return " (new)"
    return f" ({p:+.1f}%)"


def _usage_rows(d: RunDiff) -> list[tuple[str, str, str, str, bool]]:
    """(label, before, after, delta, changed) for tokens and cost."""
    t0 = _tokens(d.usage_before)
    t1 = _tokens(d.usage_after)
    c0, c1 = d.usage_before.cost_usd, d.usage_after.cost_usd
    return [
        (
            "tokens",
            _fmt_int(t0),
            _fmt_int(t1),
            _fmt_pct(d.usage_delta_pct("tokens")).strip(),
            t0 != t1,
        ),
        (
            "cost",
            _fmt_cost(c0),
            _fmt_cost(c1),
            _fmt_pct(d.usage_delta_pct("cost_usd")).strip(),
            c0 != c1,
        ),
    ]


def _fmt_cost(c: float) -> str:
    return f"${c:.4f}" if c < 100 else f"${c:,.2f}"


_Lines = list[tuple[str, tuple[str, ...]]]  # (plain text, styles): fitted, then coloured


def render_text(
    d: RunDiff, *, width: int = 80, color: bool | None = None, max_changes: int = 20
) -> str:
    """A report for terminals and pytest failures, every line at most ``width`` characters.

    ``color=None`` colours only when stdout is a tty and NO_COLOR is unset.
    """
    st = _Style(_auto_color() if color is None else color)
    width = max(width, 20)
    tw = max(12, width - 48)  # room for the tool name on a step line
    lines: _Lines = [(d.headline(), ("bold", "green" if d.is_empty else "red"))]
    if d.first_divergence is not None:
        _first_divergence(lines, d.first_divergence, width, tw)
    if d.changes:
        _change_list(lines, d, tw, max_changes)
    _figures(lines, d)
    return "\n".join(st(_fit(text, width), *styles) for text, styles in lines)


def _first_divergence(lines: _Lines, first: StepChange, width: int, tw: int) -> None:
    """Where the replay first left the recording: both sides of the step and the reason."""
    lines.append((f"first divergence: {_KIND_LABEL.get(first.kind, first.kind)}", ("bold",)))
    if first.kind in ("extra_call", "missing_call"):
        extra = first.kind == "extra_call"
        here, there = ("  replayed", "  recorded") if extra else ("  recorded", "  replayed")
        ev, index = (
            (first.replayed, first.replayed_index)
            if extra
            else (first.recorded, first.recorded_index)
        )
        lines.append((_describe(here, ev, index, tw), ()))
        if first.nearest is not None:
            near = _describe(there, first.nearest, first.nearest_index, tw)
            lines.append((near + "  (nearest)", ("dim",)))
        else:
            lines.append((f"{there}  no call of {_short_tool(first.tool, tw)}", ("dim",)))
    else:
        out = first.kind == "output_changed"
        lines.append(
            (_describe("  recorded", first.recorded, first.recorded_index, tw, out=out), ())
        )
        lines.append(
            (_describe("  replayed", first.replayed, first.replayed_index, tw, out=out), ())
        )
    # The reason is the line users read first: wrap it rather than cut it.
    for ln in textwrap.wrap(first.detail, width - 2, subsequent_indent="  ")[:3]:
        lines.append((f"  {ln}", ()))
    if first.output_diff:
        lines.extend((f"    {ln}", ()) for ln in ddiff_lines(first.output_diff)[:5])


def _change_list(lines: _Lines, d: RunDiff, tw: int, max_changes: int) -> None:
    """The count of changes per kind, then one line per change (at most `max_changes`)."""
    summary = ", ".join(
        f"{n} {_KIND_LABEL[k]}{'s' if n > 1 and k.endswith('_call') else ''}"
        for k, n in d.counts().items()
        if n
    )
    lines.append((f"changes ({len(d.changes)}): {summary}", ("bold",)))
    for c in d.changes[:max_changes]:
        style = {"+": "green", "-": "red", ">": "cyan"}.get(_MARK.get(c.kind, "~"), "yellow")
        lines.append(("  " + _change_line(c, tw), (style,)))
    if len(d.changes) > max_changes:
        lines.append((f"  … and {len(d.changes) - max_changes} more", ("dim",)))


def _figures(lines: _Lines, d: RunDiff) -> None:
    """HTTP attempts, concurrent groups, stop reason, tool calls, usage and the final output."""
    lines.extend((f"http: {h.text()}", ("yellow",)) for h in d.http_attempts)
    groups = _groups_line(d)
    if groups is not None:
        lines.append((groups, ("dim",)))
    if d.stop_reason_changed:
        lines.append((f"stop reason: {d.stop_reason_before} -> {d.stop_reason_after}", ("red",)))
    else:
        lines.append((f"stop reason: {d.stop_reason_before}", ()))
    dt = d.tool_calls_after - d.tool_calls_before
    if dt:
        calls = f"tool calls: {d.tool_calls_before} -> {d.tool_calls_after} ({dt:+d})"
    else:
        calls = f"tool calls: {d.tool_calls_before}"
    lines.append((calls, ()))
    rows = _usage_rows(d)
    if any(r[4] for r in rows):
        for label, before, after, delta, changed in rows:
            text = (
                f"{label}: {before} -> {after} {delta}" if changed else f"{label}: {before} (same)"
            )
            lines.append((text, ()))
    elif not d.is_empty and (
        d.usage_before.tokens_in or d.usage_before.tokens_out or d.usage_before.cost_usd
    ):
        lines.append((f"usage: {rows[0][1]} tokens, {rows[1][1]} (same)", ()))
    if d.output_diff:
        lines.append(("final output changed:", ("bold",)))
        ol = ddiff_lines(d.output_diff)
        lines.extend((f"  {ln}", ()) for ln in ol[:8])
        if len(ol) > 8:
            lines.append((f"  … and {len(ol) - 8} more", ("dim",)))


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_code(text: str | None) -> str:
    if not text:
        return "-"
    return f"`{text}`" if "`" not in text else _md_cell(text)


def _md_detail(c: StepChange) -> str:
    # The tool has its own column.
    prefix = f"{c.tool} "
    return c.detail[len(prefix) :] if c.tool and c.detail.startswith(prefix) else c.detail


def render_markdown(d: RunDiff, *, max_changes: int = 50) -> str:
    """A Markdown report for a CI comment: verdict heading, table of changes, run figures."""
    out: list[str] = []
    head = d.headline().replace(d.recorded_id, f"`{d.recorded_id}`", 1)
    out.append(f"### {head[:1].upper()}{head[1:]}")
    first = d.first_divergence
    if first is not None:
        out += [
            "",
            f"First divergence ({_KIND_LABEL.get(first.kind, first.kind)}): "
            f"{_md_cell(first.detail)}",
        ]
    if d.changes:
        out += ["", "| | step | tool | change | detail |", "|---|---|---|---|---|"]
        for c in d.changes[:max_changes]:
            mark = _MARK.get(c.kind, "~")
            out.append(
                f"| {_md_cell(mark)} | {_step_label(c).removeprefix('step ')} | "
                f"{_md_cell(_md_code(c.tool))} | {_KIND_LABEL.get(c.kind, c.kind)} | "
                f"{_md_cell(_md_detail(c))} |"
            )
        if len(d.changes) > max_changes:
            out.append(f"| | | | | … and {len(d.changes) - max_changes} more |")
    if d.http_attempts:
        out += [""] + [f"- HTTP: {_md_cell(h.text())}" for h in d.http_attempts]
    groups = _groups_line(d)
    if groups is not None:
        out += ["", groups[:1].upper() + groups[1:] + "."]
    dt = d.tool_calls_after - d.tool_calls_before
    out += [
        "",
        "| | recorded | replayed |",
        "|---|---|---|",
        f"| stop reason | {_md_cell(str(d.stop_reason_before))} | "
        f"{_md_cell(str(d.stop_reason_after))}{' (changed)' if d.stop_reason_changed else ''} |",
        f"| tool calls | {d.tool_calls_before} | {d.tool_calls_after}"
        f"{f' ({dt:+d})' if dt else ''} |",
    ]
    for label, before, after, delta, changed in _usage_rows(d):
        out.append(f"| {label} | {before} | {after}{f' {delta}' if changed else ''} |")
    if d.output_diff:
        out += ["", "Final output changed:", ""]
        ol = ddiff_lines(d.output_diff)
        out += [f"- {_md_code(ln)}" for ln in ol[:20]]
        if len(ol) > 20:
            out.append(f"- … and {len(ol) - 20} more")
    return "\n".join(out) + "\n"
