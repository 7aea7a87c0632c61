"""Benchmark of `replay.diff.diff_traces` on 10,000-step runs (issue 3, Speed).

Run: ``python benchmarks/bench_diff.py`` (prints a table; about 6 s). ``run()`` returns the rows
as dicts for a report. Reference rows are measured in the same process on the same data:
a positional compare of the key tuples (the floor) and difflib.SequenceMatcher over the whole
key-tuple lists (what a naive alignment costs).
"""

from __future__ import annotations

import difflib
import random
import statistics
import sys
import time
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay.diff import Trace, diff_traces  # noqa: E402
from replay.hashing import sha  # noqa: E402
from replay.models import Event, Run, Usage  # noqa: E402

N = 10_000
TOOLS = ["http.get", "crm.lookup", "openai.chat", "email.send", "kb.search", "crm.update"]
_KEY = attrgetter("kind", "tool", "args_sha", "status", "error")


def _event(run_id: str, i: int, tool: str, arg: int, out: int, status: str = "ok") -> Event:
    return Event.model_construct(
        run_id=run_id,
        kind="model_result" if tool == "openai.chat" else "tool_result",
        ts_ms=1_700_000_000_000 + i,
        step_id=i + 1,
        tool=tool,
        args_sha=sha({"a": arg}),
        output_sha=sha({"o": out}),
        duration_ms=3,
        status=status,
        error=None if status == "ok" else "TimeoutError",
        usage=None,
        stop_reason=None,
        parent_step_id=None,
    )


def make_grouped_pair(
    n: int = N, groups: int = 1000, changed: float = 0.0, seed: int = 5
) -> tuple[Trace, Trace]:
    """A recording with `groups` concurrent groups (2-6 parallel calls each) and a replay that ran
    every group in another order, numbering its groups its own way; `changed` of the grouped calls
    get new args in the replay."""
    rnd = random.Random(seed)
    starts = sorted(rnd.sample(range(0, n - 8, 8), groups))
    group_of: list[int | None] = [None] * n
    spans = []
    for s0 in starts:
        size = rnd.randint(2, 6)
        for i in range(s0, s0 + size):
            group_of[i] = s0 + 1
        spans.append((s0, s0 + size))
    spec = [(rnd.choice(TOOLS), i) for i in range(n)]
    rec = [
        _event("r_rec", i, t, a, a).model_copy(update={"concurrent_group": group_of[i]})
        for i, (t, a) in enumerate(spec)
    ]
    order = list(range(n))
    for a, b in spans:
        block = order[a:b]
        rnd.shuffle(block)
        order[a:b] = block
    grouped = [i for i in range(n) if group_of[i] is not None]
    edits = set(rnd.sample(grouped, int(len(grouped) * changed)))
    rep = []
    for k, i in enumerate(order):
        t, a = spec[i]
        g = group_of[i]
        e = _event("r_rep", k, t, a + (10**6 if i in edits else 0), a)
        rep.append(e.model_copy(update={"concurrent_group": None if g is None else g + 7}))
    return Trace(_run("r_rec", n), rec, {}), Trace(_run("r_rep", n), rep, {})


def _run(run_id: str, n_steps: int) -> Run:
    return Run(
        run_id=run_id,
        agent="bench",
        started_ms=0,
        stop_reason="completed",
        tool_calls=n_steps,
        usage=Usage(tokens_in=5000, tokens_out=900, cost_usd=0.02),
        output={"reply": "done"},
    )


def make_pair(
    n: int = N, changed: float = 0.01, output_changes: int = 0, seed: int = 7
) -> tuple[Trace, Trace, int]:
    """A recorded trace and a replay with `changed` of the steps inserted, deleted or re-argued."""
    rnd = random.Random(seed)
    # ~10% of calls repeat an earlier one (polling, retries): keys are not all unique.
    spec = []
    for i in range(n):
        tool = rnd.choice(TOOLS)
        arg = rnd.randrange(i) if i > 10 and rnd.random() < 0.1 else i
        spec.append((tool, arg))
    rec = [_event("r_rec", i, t, a, a) for i, (t, a) in enumerate(spec)]
    rep_spec = list(spec)
    n_edits = int(n * changed)
    positions = sorted(rnd.sample(range(1, n - 1), n_edits), reverse=True)
    for k, p in enumerate(positions):
        op = k % 3
        if op == 0:
            rep_spec.insert(p, (rnd.choice(TOOLS), 10**6 + k))
        elif op == 1:
            del rep_spec[p]
        else:
            rep_spec[p] = (rep_spec[p][0], 2 * 10**6 + k)
    outs = {a: a for _, a in rep_spec}
    for k in rnd.sample(range(n), output_changes):
        outs[spec[k][1]] = -1 - k
    rep = [_event("r_rep", i, t, a, outs[a]) for i, (t, a) in enumerate(rep_spec)]
    snapshots_a = {e.output_sha: {"o": a, "ts": 1} for e, (_, a) in zip(rec, spec, strict=True)}
    snapshots_b = {
        e.output_sha: {"o": outs[a], "ts": 2} for e, (_, a) in zip(rep, rep_spec, strict=True)
    }
    return (
        Trace(_run("r_rec", n), rec, snapshots_a),
        Trace(_run("r_rep", len(rep)), rep, snapshots_b),
        n_edits,
    )


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _positional(a: Trace, b: Trace) -> Callable[[], Any]:
    def go() -> int:
        ka = list(map(_KEY, a.steps))
        kb = list(map(_KEY, b.steps))
        return sum(x != y for x, y in zip(ka, kb, strict=False))

    return go


def _seqmatcher(a: Trace, b: Trace) -> Callable[[], Any]:
    def go() -> Any:
        ka = list(map(_KEY, a.steps))
        kb = list(map(_KEY, b.steps))
        return difflib.SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes()

    return go


def _row(name: str, value: float, ref_name: str, ref: float, target_ms: float) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 2),
        "unit": "ms",
        "reference_name": ref_name,
        "reference_value": round(ref, 2),
        "ratio": round(value / ref, 3) if ref else None,
        "target": f"<= {target_ms:g} ms",
        "ok": value <= target_ms,
    }


def run() -> list[dict[str, Any]]:
    """Measure and return the benchmark rows (baselines measured in the same run)."""
    rows: list[dict[str, Any]] = []
    rec, rep, n_edits = make_pair()
    d = diff_traces(rec, rep)
    found = len(d.changes)
    assert n_edits * 0.9 <= found <= n_edits * 1.1, (n_edits, found)  # a real alignment
    t_diff = _median_ms(lambda: diff_traces(rec, rep), 21)
    t_pos = _median_ms(_positional(rec, rep), 21)
    t_sm = _median_ms(_seqmatcher(rec, rep), 3)
    name = f"diff 10k steps, 1% changed ({found} changes)"
    rows.append(_row(name, t_diff, "positional compare of key tuples", t_pos, 50))
    rows.append(_row(name, t_diff, "difflib.SequenceMatcher, whole key lists", t_sm, 50))

    same = Trace(rec.run, list(rec.steps), rec.outputs)
    same_b = Trace(
        _run("r_rep", N), [e.model_copy(update={"run_id": "r_rep"}) for e in rec.steps], rec.outputs
    )
    assert diff_traces(same, same_b).is_empty
    t_same = _median_ms(lambda: diff_traces(same, same_b), 21)
    rows.append(
        _row("diff 10k identical steps", t_same, "positional compare of key tuples", t_pos, 50)
    )

    rec2, rep2, _ = make_pair(output_changes=20, seed=11)
    d2 = diff_traces(rec2, rep2, ignore=["output:root['ts']"])
    assert len(d2.changes) > found * 0.9
    t_out = _median_ms(lambda: diff_traces(rec2, rep2, ignore=["output:root['ts']"]), 11)
    rows.append(
        _row(
            "diff 10k steps, 1% changed + 20 outputs (deepdiff)",
            t_out,
            "diff 10k steps, 1% changed",
            t_diff,
            100,
        )
    )

    ga, gb = make_grouped_pair()
    dg = diff_traces(ga, gb)
    assert dg.is_empty and dg.groups_before == 1000, dg.headline()
    t_groups = _median_ms(lambda: diff_traces(ga, gb), 21)
    rows.append(
        _row(
            "diff 10k steps, 1,000 concurrent groups each replayed in another order",
            t_groups,
            "diff 10k identical steps",
            t_same,
            50,
        )
    )
    ga2, gb2 = make_grouped_pair(changed=0.01, seed=6)
    dg2 = diff_traces(ga2, gb2)
    assert dg2.counts()["args_changed"] >= 0.9 * len(dg2.changes) > 0, dg2.counts()
    t_groups2 = _median_ms(lambda: diff_traces(ga2, gb2), 21)
    rows.append(
        _row(
            f"diff 10k steps, 1,000 groups reordered, 1% of grouped calls changed "
            f"({len(dg2.changes)} changes)",
            t_groups2,
            "diff 10k steps, 1% changed",
            t_diff,
            50,
        )
    )

    t_render = _median_ms(lambda: (d.to_text(color=False), d.to_markdown(), d.to_json()), 11)
    rows.append(
        _row(
            f"render text + markdown + json ({found} changes)",
            t_render,
            "diff 10k steps, 1% changed",
            t_diff,
            20,
        )
    )
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    head = ("name", "value", "reference", "ref value", "ratio", "target", "ok")
    table = [head] + [
        (
            r["name"],
            f"{r['value']:.2f} {r['unit']}",
            r["reference_name"],
            f"{r['reference_value']:.2f} {r['unit']}",
            f"{r['ratio']:.3f}x",
            r["target"],
            "yes" if r["ok"] else "NO",
        )
        for r in rows
    ]
    widths = [max(len(str(row[c])) for row in table) for c in range(len(head))]
    for k, row in enumerate(table):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    _print(run())
