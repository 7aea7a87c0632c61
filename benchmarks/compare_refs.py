"""The issue-12 benchmark figures of this tree against an older commit, measured in one run.

Run: ``python benchmarks/compare_refs.py [--ref 058298d] [--rounds 5]``. The ref (default
058298d, the commit before the architecture work) is checked out into a temporary git worktree;
the same measurements (this file's own code, using only the public API both trees have) run in
subprocesses with ``PYTHONPATH`` pointing at each tree, the two trees alternating round by round
(old, new, new, old, ...) so that the load of a shared machine hits both alike. Printed: each
figure's median per tree over the rounds and the ratio new/old (< 1: this tree is faster), plus
the per-round ratios, so the spread is visible. Acceptance (issue 12): within 10% (ratio <= 1.10).

Figures:
- hot path: the median time the recorder adds to one tool call on the agent's thread (1 KB args
  and output, 20,000 calls);
- total CPU: process CPU time per recorded call (all threads: freeze, redact, hash, write);
- replay + diff 10k: `replay_run` of a recorded 10,000-step run (median of 3);
- diff 10k: `diff_traces` of two 10,000-step traces, 1% of the steps changed (median of 11);
- cassette load: `load_cassette` of that 10,000-step run's cassette (median of 3).

``--worker NAME`` is the subprocess side (prints one JSON object); not for direct use.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("hot_path_us", "total_cpu_us", "replay_diff_10k_s", "diff_10k_ms", "cassette_load_s")
WORKERS = {"recorder": FIGURES[:2], "replay": (FIGURES[2], FIGURES[4]), "diff": (FIGURES[3],)}
WORDS = "order refund shipping invoice customer account delivery status tracking review".split()


# ---- the measurements (run in a subprocess, against the tree on PYTHONPATH) -------------------


def _payload(seed: int, size: int = 1024) -> dict[str, Any]:
    """About `size` bytes of typical tool JSON (the shape bench_recorder.py uses)."""
    out: dict[str, Any] = {
        "request_id": f"req-{seed:08d}",
        "url": f"https://api.internal.invalid/v2/orders/{seed}?expand=items",
        "limit": 20,
        "offset": seed % 100,
        "items": [{"sku": f"SKU-{seed + i:06d}", "qty": i + 1} for i in range(6)],
    }
    text, i = "", 0
    while len(json.dumps(out)) + len(text) < size - 20:
        text += WORDS[(seed * 7 + i * 3) % len(WORDS)] + " "
        i += 1
    out["note"] = text.strip()
    return out


def _recorder(d: str, n: int = 20_000) -> dict[str, float]:
    from replay import Recorder

    args = [_payload(i) for i in range(64)]
    outs = [_payload(1000 + i) for i in range(64)]
    rec = Recorder(os.path.join(d, "bench.db"), max_queue=n + 10)

    def body(i: int, q: dict[str, Any]) -> dict[str, Any]:
        return outs[i % len(outs)]

    tool = rec.tool("bench.tool")(body)
    added: list[int] = []
    with rec.run("bench"):
        for i in range(200):  # warm up the writer thread and the caches
            tool(i, args[i % len(args)])
        rec.flush()
        cpu0 = time.process_time()
        for i in range(n):
            a = args[i % len(args)]
            t0 = time.perf_counter_ns()
            body(i, a)
            t1 = time.perf_counter_ns()
            tool(i, a)
            t2 = time.perf_counter_ns()
            added.append((t2 - t1) - (t1 - t0))
        rec.flush(120)
        cpu = (time.process_time() - cpu0) / n
    rec.close()
    return {"hot_path_us": statistics.median(added) / 1000, "total_cpu_us": cpu * 1e6}


def _replay(d: str, n: int = 10_000) -> dict[str, float]:
    from replay import Recorder, replay_run
    from replay.cassette import cassette_from_store, load_cassette, write_cassette
    from replay.store import Store

    rec = Recorder(os.path.join(d, "r.db"))

    @rec.tool("lookup")
    def lookup(i: int) -> dict[str, Any]:
        return {"i": i, "status": "ok", "note": "customer order shipped"}

    @rec.agent("bench-agent")
    def agent(n_steps: int) -> int:
        return sum(lookup(i)["i"] for i in range(n_steps))

    agent(n)
    rec.flush(120)
    rid = rec.last_run_id
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = replay_run(rid, agent=agent, db=rec.db)
        times.append(time.perf_counter() - t0)
        assert res.diff.is_empty, res.diff.to_text()
    with Store(rec.db) as s:
        path = write_cassette(cassette_from_store(s, rid), Path(d) / "c.json")
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        load_cassette(path)
        loads.append(time.perf_counter() - t0)
    rec.close()
    return {
        "replay_diff_10k_s": statistics.median(times),
        "cassette_load_s": statistics.median(loads),
    }


def _diff(n: int = 10_000) -> dict[str, float]:
    from replay.diff import Trace, diff_traces
    from replay.models import Event, Run, Usage

    def sha(v: Any) -> str:
        return hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:24]

    tools = ["http.get", "crm.lookup", "openai.chat", "email.send", "kb.search", "crm.update"]

    def event(rid: str, i: int, tool: str, arg: int) -> Event:
        return Event.model_construct(
            run_id=rid,
            kind="model_result" if tool == "openai.chat" else "tool_result",
            ts_ms=1_700_000_000_000 + i,
            step_id=i + 1,
            tool=tool,
            args_sha=sha({"a": arg}),
            output_sha=sha({"o": arg}),
            duration_ms=3,
            status="ok",
            error=None,
            usage=None,
            stop_reason=None,
            parent_step_id=None,
        )

    def run(rid: str, steps: int) -> Run:
        usage = Usage(tokens_in=5000, tokens_out=900, cost_usd=0.02)
        return Run(run_id=rid, agent="bench", started_ms=0, stop_reason="completed",
                   tool_calls=steps, usage=usage, output={"reply": "done"})  # fmt: skip

    rnd = random.Random(7)
    spec = [(rnd.choice(tools), rnd.randrange(i) if i > 10 and rnd.random() < 0.1 else i)
            for i in range(n)]  # fmt: skip
    other = list(spec)
    for k, p in enumerate(sorted(rnd.sample(range(1, n - 1), n // 100), reverse=True)):
        if k % 3 == 0:
            other.insert(p, (rnd.choice(tools), 10**6 + k))
        elif k % 3 == 1:
            del other[p]
        else:
            other[p] = (other[p][0], 2 * 10**6 + k)
    a = [event("r_rec", i, t, x) for i, (t, x) in enumerate(spec)]
    b = [event("r_rep", i, t, x) for i, (t, x) in enumerate(other)]
    ta = Trace(run("r_rec", n), a, {e.output_sha: {"o": 1} for e in a})
    tb = Trace(run("r_rep", len(b)), b, {e.output_sha: {"o": 1} for e in b})
    assert diff_traces(ta, tb).changes
    times = []
    for _ in range(11):
        t0 = time.perf_counter()
        diff_traces(ta, tb)
        times.append(time.perf_counter() - t0)
    return {"diff_10k_ms": statistics.median(times) * 1000}


def worker(name: str, tree: str) -> None:
    import replay

    where = Path(replay.__file__).resolve()
    if not where.is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"replay imported from {where}, not from the tree {tree}")
    with tempfile.TemporaryDirectory() as d:
        if name == "recorder":
            out = _recorder(d)
        elif name == "replay":
            out = _replay(d)
        else:
            out = _diff()
    print(json.dumps(out))


# ---- the driver ------------------------------------------------------------------------------


def _measure(tree: Path, name: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("REPLAY_DB", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--tree", str(tree)]
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name} against {tree} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def compare(ref: str, rounds: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="compare-refs-"))
    old_tree = tmp / "old"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(old_tree), ref],
        check=True,
    )
    try:
        results: dict[str, dict[str, list[float]]] = {
            "new": {f: [] for f in FIGURES},
            "old": {f: [] for f in FIGURES},
        }
        trees = {"new": ROOT, "old": old_tree}
        for r in range(rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for name in WORKERS:
                for side in order:
                    for fig, v in _measure(trees[side], name).items():
                        results[side][fig].append(v)
            print(f"round {r + 1}/{rounds} done", file=sys.stderr)
        _print(ref, rounds, results)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False
        )
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _print(ref: str, rounds: int, results: dict[str, dict[str, list[float]]]) -> None:
    print(f"this tree (new) against {ref} (old), {rounds} interleaved rounds, medians")
    print(f"{'figure':<20} {'new':>10} {'old':>10} {'new/old':>8}  per-round new/old")
    for fig in FIGURES:
        new, old = results["new"][fig], results["old"][fig]
        ratio = statistics.median(new) / statistics.median(old)
        rounds_txt = " ".join(f"{a / b:.2f}" for a, b in zip(new, old, strict=True))
        print(
            f"{fig:<20} {statistics.median(new):>10.3f} {statistics.median(old):>10.3f} "
            f"{ratio:>8.3f}  {rounds_txt}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="058298d", help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over them)")
    ap.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.worker:
        worker(ns.worker, ns.tree)
        return 0
    return compare(ns.ref, ns.rounds)


if __name__ == "__main__":
    sys.exit(main())
