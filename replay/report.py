"""Reports over many replays: JSON, Markdown (a CI comment) and JUnit XML."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from replay.diff import RunDiff

__all__ = ["REPORT_SUFFIXES", "Outcome", "counts", "render_report", "summary_line", "write_report"]

REPORT_SUFFIXES = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".xml": "junit"}


@dataclasses.dataclass
class Outcome:
    """The result of replaying one recording: matched, diverged, blessed or error."""

    source: str
    run_id: str | None
    status: str  # "matched" | "diverged" | "blessed" | "error"
    diff: RunDiff | None = None
    error: str | None = None
    seconds: float = 0.0
    #: why it diverged beyond the diff (a usage gate, a refused bless), or what blessing wrote
    note: str | None = None
    #: the cassette a bless rewrote, as shown to the user
    blessed_path: str | None = None
    #: why blessing this replay would freeze something that is not a behaviour (a crash, a call
    #: the recording cannot answer); None when a bless may take it
    bless_problem: str | None = None

    def summary(self) -> str:
        """One line: ``r_…  diverged at step 5 (stop reason loop_detected -> completed)``."""
        line = self._status_line()
        return f"{line}: {self.note}" if self.note and self.status != "error" else line

    def _status_line(self) -> str:
        rid = self.run_id or self.source
        if self.status == "error":
            return f"{rid}  error: {self.error}"
        if self.diff is None or self.status == "matched":
            steps = "" if self.diff is None else f" ({self.diff.tool_calls_after} tool calls)"
            return f"{rid}  {self.status}{steps}"
        first = self.diff.first_divergence
        where = ""
        if first is not None:
            index = (
                first.recorded_index if first.recorded_index is not None else first.replayed_index
            )
            where = f" at step {(index or 0) + 1}"
        stop = ""
        if self.diff.stop_reason_before != self.diff.stop_reason_after:
            stop = f" (stop reason {self.diff.stop_reason_before} -> {self.diff.stop_reason_after})"
        return f"{rid}  {self.status}{where}{stop}"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "run_id": self.run_id,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "diff": None if self.diff is None else self.diff.to_json(),
            "note": self.note,
            "blessed_path": self.blessed_path,
            "bless_problem": self.bless_problem,
        }


def counts(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Outcomes per status: replayed (all), matched, diverged, blessed, error."""
    out = {"replayed": 0, "matched": 0, "diverged": 0, "blessed": 0, "error": 0}
    for o in outcomes:
        out["replayed"] += 1
        out[o.status] = out.get(o.status, 0) + 1
    return out


def summary_line(outcomes: Iterable[Outcome] | Mapping[str, int]) -> str:
    """``N runs replayed: M matched, D diverged, B blessed`` (``, E errors`` when there are any).

    The one wording of the count line: `replay run`, the pytest summary and the reports.
    """
    c = dict(outcomes) if isinstance(outcomes, Mapping) else counts(outcomes)
    n, e = c["replayed"], c["error"]
    line = (
        f"{n} run{'' if n == 1 else 's'} replayed: {c['matched']} matched, "
        f"{c['diverged']} diverged, {c['blessed']} blessed"
    )
    return line + (f", {e} error{'' if e == 1 else 's'}" if e else "")


def render_report(outcomes: Sequence[Outcome], fmt: str) -> str:
    """Render `outcomes` as ``json``, ``markdown`` or ``junit``.

    Raises:
        ValueError: another format, naming the ones understood.
    """
    render = _RENDERERS.get(fmt)
    if render is None:
        raise ValueError(f"unknown report format {fmt!r}: use json, markdown or junit")
    return render(outcomes)


def _render_json(outcomes: Sequence[Outcome]) -> str:
    data = {"summary": counts(outcomes), "runs": [o.to_json() for o in outcomes]}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _render_markdown(outcomes: Sequence[Outcome]) -> str:
    c = counts(outcomes)
    icon = {"matched": "✅", "diverged": "❌", "blessed": "📝", "error": "⚠️"}
    verdict = (
        "all replays match"
        if c["diverged"] + c["error"] == 0
        else f"{c['diverged']} diverged, {c['error']} errors"
    )
    lines = [
        f"## agent-replay: {verdict}",
        "",
        f"{summary_line(c)}.",
        "",
        "| | run | result |",
        "|---|---|---|",
    ]
    for o in outcomes:
        result = o.summary().split("  ", 1)[-1]
        lines.append(f"| {icon.get(o.status, '')} | `{o.run_id or o.source}` | {result} |")
    for o in outcomes:
        if o.status == "diverged" and o.diff is not None:
            lines += [
                "",
                f"<details><summary>diff of <code>{o.run_id}</code></summary>",
                "",
                o.diff.to_markdown(),
                "",
                "</details>",
            ]
    return "\n".join(lines) + "\n"


def _render_junit(outcomes: Sequence[Outcome]) -> str:
    c = counts(outcomes)
    cases = []
    for o in outcomes:
        name = quoteattr(o.run_id or o.source)
        body = ""
        if o.status == "diverged" and o.diff is not None:
            text = escape(o.diff.to_text(color=False))
            body = f"<failure message={quoteattr(o.summary())}>{text}</failure>"
        elif o.status == "error":
            body = f"<error message={quoteattr(o.error or 'error')}/>"
        cases.append(
            f'  <testcase classname="agent-replay" name={name} time="{o.seconds:.3f}">'
            f"{body}</testcase>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<testsuite name="agent-replay" tests="{c["replayed"]}" failures="{c["diverged"]}" '
        f'errors="{c["error"]}">\n' + "\n".join(cases) + "\n</testsuite>\n"
    )


_RENDERERS: dict[str, Callable[[Sequence[Outcome]], str]] = {
    "json": _render_json,
    "markdown": _render_markdown,
    "junit": _render_junit,
}


def write_report(outcomes: Sequence[Outcome], path: str | os.PathLike[str]) -> Path:
    """Write the report in the format its suffix names (.json, .md, .xml).

    Raises:
        ValueError: another suffix, naming the ones understood.
    """
    p = Path(path)
    fmt = REPORT_SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"report file {p}: the suffix must be one of {', '.join(REPORT_SUFFIXES)}")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_report(outcomes, fmt), encoding="utf-8")
    return p
