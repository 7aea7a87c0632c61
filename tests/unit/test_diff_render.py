"""The text, Markdown and JSON renderings of `RunDiff` (what pytest, the CLI and CI show)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from replay.diff import RunDiff, Trace, diff_traces
from replay.hashing import sha
from replay.models import Event, Run, Usage

ANSI = re.compile(r"\x1b\[[0-9;]*m")

Spec = tuple[Any, ...]


def trace(
    specs: list[Spec],
    *,
    run_id: str = "r_rec",
    stop: str = "completed",
    usage: Usage | None = None,
    output: Any = None,
) -> Trace:
    steps: list[Event] = []
    outputs: dict[str, Any] = {}
    for n, spec in enumerate(specs):
        tool, args, *rest = spec
        opts = dict(rest[0]) if rest else {}
        out = opts.pop("out", {"tool": tool, "args": args})
        e = Event(
            run_id=run_id,
            kind="tool_result",
            ts_ms=1_700_000_000_000 + n,
            step_id=n + 1,
            tool=tool,
            args_sha=sha({"args": args}),
            output_sha=sha(out),
            duration_ms=3,
            status=opts.pop("status", "ok"),
            error=opts.pop("error", None),
        )
        steps.append(e)
        outputs[e.output_sha] = out
    run = Run(
        run_id=run_id,
        agent="support-agent",
        started_ms=0,
        stop_reason=stop,
        usage=usage or Usage(),
        tool_calls=len(steps),
        output=output,
    )
    return Trace(run=run, steps=steps, outputs=outputs)


def a8(args: Any) -> str:
    return sha({"args": args})[:8]


BASE: list[Spec] = [
    ("crm.lookup", "c1"),
    ("kb.search", "refund"),
    ("openai.chat", "m1"),
    ("email.send", "cust"),
    ("crm.update", "c1"),
    ("openai.chat", "m2"),
]
TIMEOUT = {"status": "error", "error": "TimeoutError"}


def incident() -> RunDiff:
    """The seed incident replayed after the fix: no retry storm, no duplicate email."""
    recorded = BASE[:5] + [("email.send", "cust")] + [("http.get", "a", TIMEOUT)] * 3 + BASE[5:]
    replayed = BASE[:1] + [("kb.search", "refund", {"status": "error", "error": "HTTPStatusError"})]
    replayed += BASE[2:5] + [("openai.chat", "m2")]
    return diff_traces(
        trace(
            recorded,
            stop="loop_detected",
            output={"reply": "Sent twice", "n": 2},
            usage=Usage(tokens_in=1000, tokens_out=200, cost_usd=0.02),
        ),
        trace(
            replayed,
            run_id="r_rep",
            output={"reply": "Sent", "n": 2},
            usage=Usage(tokens_in=400, tokens_out=100, cost_usd=0.008),
        ),
    )


# -- text --------------------------------------------------------------------------------------


def test_text_report_of_a_diverged_run_verbatim() -> None:
    """The full text report: verdict, first divergence with both sides, changes, run figures."""
    assert incident().to_text(color=False) == "\n".join(
        [
            "replay diverged from recording r_rec at step 2",
            "first divergence: status changed",
            f"  recorded  step 2  kb.search  args {a8('refund')}  ok",
            f"  replayed  step 2  kb.search  args {a8('refund')}  error HTTPStatusError",
            "  kb.search status ok -> error (HTTPStatusError)",
            "changes (5): 4 missing calls, 1 status changed",
            "  ~ step 2  kb.search  status ok -> error (HTTPStatusError)",
            f"  - step 6  email.send  args {a8('cust')}  (missing call; same args as step 4)",
            f"  - step 7  http.get  args {a8('a')}  (missing call; tool not called)",
            f"  - step 8  http.get  args {a8('a')}  (missing call; same args as step 7)",
            f"  - step 9  http.get  args {a8('a')}  (missing call; same args as step 8)",
            "stop reason: loop_detected -> completed",
            "tool calls: 10 -> 6 (-4)",
            "tokens: 1,200 -> 500 (-58.3%)",
            "cost: $0.0200 -> $0.0080 (-60.0%)",
            "final output changed:",
            "  root['reply']: 'Sent twice' -> 'Sent'",
        ]
    )


def test_text_report_of_a_matching_run_verbatim() -> None:
    """A matching run is three short lines: verdict with the step count, stop reason, calls."""
    d = diff_traces(trace(BASE), trace(BASE, run_id="r_rep"))
    assert str(d) == (
        "replay matches recording r_rec (6 steps)\nstop reason: completed\ntool calls: 6"
    )


def test_extra_call_text_shows_the_nearest_recorded_step() -> None:
    """The duplicate email: the extra call line and the recorded call it repeats."""
    replayed = BASE[:5] + [("email.send", "cust")] + BASE[5:]
    text = diff_traces(trace(BASE), trace(replayed, run_id="r_rep")).to_text(color=False)
    lines = text.splitlines()
    assert lines[:6] == [
        "replay diverged from recording r_rec at step 6",
        "first divergence: extra call",
        f"  replayed  step 6  email.send  args {a8('cust')}  ok",
        f"  recorded  step 4  email.send  args {a8('cust')}  ok  (nearest)",
        "  email.send called again with the same args (as step 4)",
        "changes (1): 1 extra call",
    ]
    assert lines[6] == (
        f"  + step 6  email.send  args {a8('cust')}  (extra call; same args as step 4)"
    )


def test_changed_and_reordered_lines_show_both_step_numbers_when_they_differ() -> None:
    """After an insertion, a changed step shows recorded→replayed step numbers."""
    replayed = [("new.tool", 0)] + BASE[:3] + [("email.send", "other")] + BASE[4:]
    lines = str(diff_traces(trace(BASE), trace(replayed, run_id="r_rep"))).splitlines()
    assert f"  ~ step 4→5  email.send  args {a8('cust')} -> {a8('other')}" in lines
    assert "  + step 1  new.tool  args " + a8(0) + "  (extra call; new tool)" in lines


def test_output_change_text_shows_the_changed_paths() -> None:
    """An output change prints the deepdiff path with old and new values."""
    d = diff_traces(
        trace([("crm.lookup", "c1", {"out": {"status": "open", "vip": True}})]),
        trace([("crm.lookup", "c1", {"out": {"status": "closed", "vip": True}})], run_id="r_rep"),
    )
    lines = str(d).splitlines()
    assert "  crm.lookup output changed: root['status']: 'open' -> 'closed'" in lines
    assert "    root['status']: 'open' -> 'closed'" in lines
    assert "  ~ step 1  crm.lookup  output root['status']: 'open' -> 'closed'" in lines


def test_stop_reason_only_divergence_headline() -> None:
    """With no step change the verdict line names the stop reason change."""
    d = diff_traces(trace(BASE, stop="loop_detected"), trace(BASE, run_id="r_rep"))
    assert str(d).splitlines()[:2] == [
        "replay diverged from recording r_rec: stop reason loop_detected -> completed",
        "stop reason: loop_detected -> completed",
    ]


def _wide_diff() -> RunDiff:
    long_tool = "enterprise.customer_relationship_management.lookup_customer_by_email_address"
    recorded = [(long_tool, i) for i in range(40)]
    replayed = [(long_tool, i if i % 2 else -i - 1) for i in range(40)] + [("x" * 90, 1)]
    return diff_traces(
        trace(recorded, output={"k" * 100: "v" * 100}),
        trace(replayed, run_id="r_rep", output={"k" * 100: "w" * 100}),
    )


@pytest.mark.parametrize("width", [80, 60])
def test_text_fits_the_width(width: int) -> None:
    """Every line, long tool names and values included, fits in the requested columns."""
    text = _wide_diff().to_text(width=width, color=False)
    assert max(len(line) for line in text.splitlines()) <= width
    assert any(line.endswith("…") for line in text.splitlines())  # something was cut


def test_long_change_lists_are_cut_after_twenty() -> None:
    """Only the first twenty changes are listed, then a count of the rest."""
    d = _wide_diff()
    assert len(d.changes) == 21
    lines = str(d).splitlines()
    change_lines = [ln for ln in lines if re.match(r"  [-+~>] step ", ln)]
    assert len(change_lines) == 20
    assert "  … and 1 more" in lines


def test_no_ansi_codes_without_color() -> None:
    """color=False gives plain text; color=True colours the same text."""
    d = incident()
    plain = d.to_text(color=False)
    coloured = d.to_text(color=True)
    assert not ANSI.search(plain)
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == plain


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_color_only_on_a_tty_and_respects_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    """color=None colours on a tty unless NO_COLOR is set, and never when piped."""
    d = incident()
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr("sys.stdout", _Tty())
    assert ANSI.search(d.to_text())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ANSI.search(d.to_text())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert not ANSI.search(d.to_text())


def test_str_is_the_plain_text_report() -> None:
    """str(diff) is to_text without colour, so print(result.diff) is readable anywhere."""
    d = incident()
    assert str(d) == d.to_text(color=False)


# -- markdown ----------------------------------------------------------------------------------


def test_markdown_report_verbatim() -> None:
    """A CI comment: verdict heading, first divergence, table of changes, run figures."""
    replayed = BASE[:5] + [("email.send", "cust")] + BASE[5:]
    d = diff_traces(
        trace(BASE, usage=Usage(tokens_in=100, cost_usd=0.01)),
        trace(
            replayed, run_id="r_rep", stop="max_steps", usage=Usage(tokens_in=150, cost_usd=0.01)
        ),
    )
    assert d.to_markdown() == "\n".join(
        [
            "### Replay diverged from recording `r_rec` at step 6",
            "",
            "First divergence (extra call): email.send called again with the same args (as step 4)",
            "",
            "| | step | tool | change | detail |",
            "|---|---|---|---|---|",
            "| + | 6 | `email.send` | extra call | called again with the same args (as step 4) |",
            "",
            "| | recorded | replayed |",
            "|---|---|---|",
            "| stop reason | completed | max_steps (changed) |",
            "| tool calls | 6 | 7 (+1) |",
            "| tokens | 100 | 150 (+50.0%) |",
            "| cost | $0.0100 | $0.0100 |",
            "",
        ]
    )


def test_markdown_of_a_match_has_no_change_table() -> None:
    """A matching run renders the verdict and the run figures only."""
    md = diff_traces(trace(BASE), trace(BASE, run_id="r_rep")).to_markdown()
    assert md.startswith("### Replay matches recording `r_rec` (6 steps)\n")
    assert "| step |" not in md and "| stop reason | completed | completed |" in md


def test_markdown_escapes_pipes_in_cells() -> None:
    """A tool name with a pipe does not break the table."""
    d = diff_traces(trace([]), trace([("a|b", 1)], run_id="r_rep"))
    row = next(ln for ln in d.to_markdown().splitlines() if ln.startswith("| + "))
    assert "`a\\|b`" in row
    assert len(re.split(r"(?<!\\)\|", row)) == 7  # 5 cells between 6 unescaped pipes


# -- JSON --------------------------------------------------------------------------------------


def test_json_is_serializable_and_complete() -> None:
    """to_json holds the verdict, every change with its events as dicts, and the run figures."""
    d = incident()
    data = json.loads(json.dumps(d.to_json()))
    assert data["verdict"] == "diverged" and data["is_empty"] is False
    assert data["headline"] == "replay diverged from recording r_rec at step 2"
    assert [c["kind"] for c in data["changes"]] == ["status_changed"] + ["missing_call"] * 4
    assert data["first_divergence"] == data["changes"][0]
    first = data["changes"][0]
    assert (first["recorded_step"], first["replayed_step"]) == (2, 2)
    assert first["recorded"]["tool"] == "kb.search"
    assert first["replayed"]["error"] == "HTTPStatusError"
    assert data["changes"][1]["replayed"] is None and data["changes"][1]["nearest_step"] == 4
    assert data["counts"]["missing_call"] == 4 and data["counts"]["extra_call"] == 0
    assert data["stop_reason"] == {"before": "loop_detected", "after": "completed", "changed": True}
    assert data["tool_calls"] == {"before": 10, "after": 6, "delta": -4}
    assert data["usage"]["delta_pct"]["cost_usd"] == pytest.approx(-60.0)
    assert data["output_diff"]["values_changed"]["root['reply']"]["new_value"] == "Sent"


def test_json_writes_null_for_an_undefined_percentage() -> None:
    """A usage figure that was 0 in the recording has a null delta in JSON (never Infinity)."""
    d = diff_traces(trace(BASE), trace(BASE, run_id="r_rep", usage=Usage(tokens_in=5)))
    data = d.to_json()
    assert data["usage"]["delta_pct"]["tokens"] is None
    assert "Infinity" not in json.dumps(data)
