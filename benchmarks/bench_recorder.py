"""Benchmark of the Recorder against a hand-rolled logger (issue 2, Speed and memory).

Run: ``python benchmarks/bench_recorder.py``. The reference is measured in the same process on
the same 1 KB args + 1 KB output: ``json.dumps(sort_keys=True, separators=(",", ":"))`` + sha256
of the args and of the output, a dict built, appended to a list (the seed's logger).

Figures:
- agent-path latency: median time the recorder adds to one tool call on the agent's own thread;
- total CPU per recorded call: process CPU time (all threads: freeze, redact, hash, write) / calls;
  both, and the logger's, are the medians of `ROUNDS` interleaved rounds of 5,000 calls;
- memory: RSS growth of a 100,000-step run;
- concurrent-group bookkeeping (parallel tool calls): the same recorder with and without it,
  alternating small batches in one run, so load on a shared machine hits both alike.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay import Recorder  # noqa: E402

WORDS = (
    "order refund shipping invoice customer account delivery status tracking warehouse "
    "priority express standard return exchange discount coupon payment pending review"
).split()


def payload(seed: int, size: int = 1024) -> dict[str, Any]:
    """About `size` bytes of typical tool JSON: ids, text, numbers, a URL; no PII."""
    words = [WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(400)]
    out: dict[str, Any] = {
        "request_id": f"req-{seed:08d}",
        "url": f"https://api.internal.invalid/v2/orders/{seed}?expand=items",
        "limit": 20,
        "offset": seed % 100,
        "score": 0.75,
        "ok": True,
        "items": [
            {"sku": f"SKU-{seed + i:06d}", "qty": i + 1, "price": 9.99 + i} for i in range(6)
        ],
    }
    text = ""
    i = 0
    while len(json.dumps(out)) + len(text) < size - 20:
        text += words[i % len(words)] + " "
        i += 1
    out["note"] = text.strip()
    return out


def reference_logger(
    n: int, args: list[dict[str, Any]], outs: list[dict[str, Any]]
) -> tuple[list[float], float]:
    log: list[dict[str, Any]] = []
    times = []
    gc.collect()  # both measured loops start from the same collector state
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter_ns()
        a = args[i % len(args)]
        o = outs[i % len(outs)]
        ev = {
            "run_id": "r",
            "kind": "tool_result",
            "ts_ms": int(time.time() * 1000),
            "step_id": i,
            "tool": "t",
            "args_sha": hashlib.sha256(
                json.dumps(a, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()[:24],
            "output_sha": hashlib.sha256(
                json.dumps(o, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()[:24],
            "duration_ms": 0,
            "status": "ok",
            "error": None,
        }
        log.append(ev)
        times.append(time.perf_counter_ns() - t0)
    return times, (time.process_time() - cpu0) / n


def recorder_calls(
    n: int, args: list[dict[str, Any]], outs: list[dict[str, Any]], db: str
) -> tuple[list[float], list[float], float, int]:
    rec = Recorder(db, max_queue=n + 10)

    def body(i: int, q: dict[str, Any]) -> dict[str, Any]:
        return outs[i % len(outs)]

    tool = rec.tool("bench.tool")(body)
    bare: list[float] = []
    wrapped: list[float] = []
    with rec.run("bench"):
        # warm up the writer thread and the caches
        for i in range(200):
            tool(i, args[i % len(args)])
        rec.flush()
        gc.collect()  # both measured loops start from the same collector state
        cpu0 = time.process_time()
        for i in range(n):
            a = args[i % len(args)]
            t0 = time.perf_counter_ns()
            body(i, a)
            t1 = time.perf_counter_ns()
            tool(i, a)
            t2 = time.perf_counter_ns()
            bare.append(t1 - t0)
            wrapped.append(t2 - t1)
        rec.flush(120)
        cpu = (time.process_time() - cpu0) / n
    dropped = rec.dropped
    rec.close()
    return bare, wrapped, cpu, dropped


class _NoGroups(Recorder):
    """The recorder without concurrent-group bookkeeping (the baseline of its cost)."""

    _track_groups = False


def group_bookkeeping(
    db_dir: str,
    args: list[dict[str, Any]],
    outs: list[dict[str, Any]],
    rounds: int = 300,
    batch: int = 50,
) -> tuple[float, float]:
    """(latency per call with groups, latency added by the group bookkeeping), in us.

    Rounds of `batch` calls alternate between the two recorders in a random order; each side's
    figure is its 10th percentile over the rounds (robust to load spikes on a shared machine).
    """
    import random

    recs = [
        Recorder(os.path.join(db_dir, "g.db"), max_queue=10**6),
        _NoGroups(os.path.join(db_dir, "n.db"), max_queue=10**6),
    ]
    tools = [r.tool("bench.tool")(lambda i, q: outs[i % len(outs)]) for r in recs]
    times: list[list[float]] = [[], []]
    order = [0, 1]
    rnd = random.Random(0)
    for k in range(rounds + 20):
        rnd.shuffle(order)
        for x in order:
            t = tools[x]
            with recs[x].run("bench"):
                t0 = time.perf_counter_ns()
                for i in range(batch):
                    t(i, args[i % len(args)])
                if k >= 20:  # the first rounds warm up
                    times[x].append((time.perf_counter_ns() - t0) / batch / 1000)
            if k % 25 == 0:
                recs[x].flush(60)
    for r in recs:
        r.close()
    with_groups, without = (sorted(v)[len(v) // 10] for v in times)
    return with_groups, with_groups - without


def memory_100k(db: str) -> float:
    """RSS growth (MB) of one 100,000-step run recorded through the default recorder."""
    rec = Recorder(db)
    tool = rec.tool("step")(lambda i: {"i": i, "ok": True})
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with rec.run("long"):
        for i in range(100_000):
            tool(i)
    rec.flush(120)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec.close()
    return after - before


#: Interleaved rounds of the logger and the recorder; each figure is the median over them, so a
#: neighbour's burst of CPU on a shared machine lands on one round, not on the figure.
ROUNDS = 3


def run() -> list[dict[str, Any]]:
    n = 5000
    args = [payload(i) for i in range(50)]
    outs = [payload(10_000 + i) for i in range(50)]
    ref_meds, ref_cpus, addeds, cpus, dropped = [], [], [], [], 0
    with tempfile.TemporaryDirectory() as d:
        for k in range(ROUNDS):
            ref_times, ref_cpu = reference_logger(n, args, outs)
            bare, wrapped, cpu, lost = recorder_calls(n, args, outs, os.path.join(d, f"b{k}.db"))
            ref_meds.append(statistics.median(ref_times) / 1000)
            ref_cpus.append(ref_cpu)
            addeds.append((statistics.median(wrapped) - statistics.median(bare)) / 1000)
            cpus.append(cpu)
            dropped += lost
        mem = memory_100k(os.path.join(d, "mem.db"))
        per_call, groups_added = group_bookkeeping(d, args, outs)
    ref_med, ref_cpu = statistics.median(ref_meds), statistics.median(ref_cpus)
    added, cpu = statistics.median(addeds), statistics.median(cpus)
    rows = [
        {
            "name": "reference: hand-rolled logger per call",
            "value": round(ref_med, 2),
            "unit": "us",
            "reference_name": "-",
            "reference_value": None,
            "ratio": 1.0,
            "target": "baseline",
            "ok": True,
        },
        {
            "name": "recorder: latency added on the agent's path (median)",
            "value": round(added, 2),
            "unit": "us",
            "reference_name": "hand-rolled logger",
            "reference_value": round(ref_med, 2),
            "ratio": round(added / ref_med, 3),
            "target": "<= 0.5x",
            "ok": added / ref_med <= 0.5,
        },
        {
            "name": "recorder: total CPU per call (redact+hash+write)",
            "value": round(cpu * 1e6, 2),
            "unit": "us",
            "reference_name": "hand-rolled logger CPU",
            "reference_value": round(ref_cpu * 1e6, 2),
            "ratio": round(cpu / ref_cpu, 3),
            "target": "<= 3x",
            "ok": cpu / ref_cpu <= 3,
        },
        {
            "name": "recorder: 100,000-step run RSS growth",
            "value": round(mem, 1),
            "unit": "MB",
            "reference_name": "-",
            "reference_value": None,
            "ratio": None,
            "target": "<= 50 MB",
            "ok": mem <= 50,
        },
        {
            "name": "recorder: concurrent-group bookkeeping added per call (A/B, p10)",
            "value": round(groups_added, 3),
            "unit": "us",
            "reference_name": "recorded call with groups",
            "reference_value": round(per_call, 2),
            "ratio": round(groups_added / per_call, 3),
            "target": "<= 0.1x",
            "ok": groups_added / per_call <= 0.1,
        },
        {
            "name": "recorder: records dropped during the benchmark",
            "value": dropped,
            "unit": "records",
            "reference_name": "-",
            "reference_value": None,
            "ratio": None,
            "target": "0",
            "ok": dropped == 0,
        },
    ]
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}x"
        print(
            f"{'ok ' if r['ok'] else 'BAD'} {r['name']:<55} "
            f"{r['value']:>10} {r['unit']:<8} {ratio:>8}  target {r['target']}"
        )


if __name__ == "__main__":
    print_rows(run())
