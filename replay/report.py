"""Reports over many replays: JSON, Markdown (a CI comment) and JUnit XML."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from replay.diff import RunDiff

__all__ = ["Outcome", "render_report", "write_report", "REPORT_SUFFIXES"]

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

    def summary(self) -> str:
        """One line: ``r_…  diverged at step 5 (stop reason loop_detected -> completed)``."""
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
        }


def _counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    out = {"replayed": len(outcomes), "matched": 0, "diverged": 0, "blessed": 0, "error": 0}
    for o in outcomes:
        out[o.status] = out.get(o.status, 0) + 1
    return out


def render_report(outcomes: Sequence[Outcome], fmt: str) -> str:
    """Render `outcomes` as ``json``, ``markdown`` or ``junit``."""
    counts = _counts(outcomes)
    if fmt == "json":
        return (
            json.dumps(
                {"summary": counts, "runs": [o.to_json() for o in outcomes]},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
    if fmt == "markdown":
        icon = {"matched": "✅", "diverged": "❌", "blessed": "📝", "error": "⚠️"}
        verdict = (
            "all replays match"
            if counts["diverged"] + counts["error"] == 0
            else (f"{counts['diverged']} diverged, {counts['error']} errors")
        )
        lines = [
            f"## agent-replay: {verdict}",
            "",
            f"{counts['replayed']} run{'' if counts['replayed'] == 1 else 's'} replayed: {counts['matched']} matched, {counts['diverged']} diverged, "
            f"{counts['blessed']} blessed, {counts['error']} errors.",
            "",
            "| | run | result |",
            "|---|---|---|",
        ]
        for o in outcomes:
            lines.append(
                f"| {icon.get(o.status, '')} | `{o.run_id or o.source}` | {o.summary().split('  ', 1)[-1]} |"
            )
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
    if fmt == "junit":
        cases = []
        for o in outcomes:
            name = quoteattr(o.run_id or o.source)
            body = ""
            if o.status == "diverged" and o.diff is not None:
                body = f"<failure message={quoteattr(o.summary())}>{escape(o.diff.to_text(color=False))}</failure>"
            elif o.status == "error":
                body = f"<error message={quoteattr(o.error or 'error')}/>"
            cases.append(
                f'  <testcase classname="agent-replay" name={name} time="{o.seconds:.3f}">{body}</testcase>'
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            f'<testsuite name="agent-replay" tests="{counts["replayed"]}" failures="{counts["diverged"]}" '
            f'errors="{counts["error"]}">\n' + "\n".join(cases) + "\n</testsuite>\n"
        )
    raise ValueError(f"unknown report format {fmt!r}: use json, markdown or junit")


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
