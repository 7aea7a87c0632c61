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
  and output, 20,000 calls; `bench_recorder.recorder_calls`);
- total CPU: process CPU time per recorded call (all threads: freeze, redact, hash, write);
- replay + diff 10k: `replay_run` of a recorded 10,000-step run (median of 3);
- diff 10k: `diff_traces` of two 10,000-step traces, 1% of the steps changed
  (`bench_diff.make_pair`, median of 11);
- cassette load: `load_cassette` of that 10,000-step run's cassette (median of 3).

``--worker NAME`` is the subprocess side (prints one JSON object); not for direct use.
"""

from __future__ import annotations

import argparse
import json
import os
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


# ---- the measurements (run in a subprocess, against the tree on PYTHONPATH) -------------------


def _median_s(fn: Any, repeat: int) -> float:
    """The median wall time of `repeat` calls of `fn`, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _recorder(d: str, n: int = 20_000) -> dict[str, float]:
    from bench_recorder import payload, recorder_calls

    args = [payload(i) for i in range(50)]
    outs = [payload(10_000 + i) for i in range(50)]
    bare, wrapped, cpu, _ = recorder_calls(n, args, outs, os.path.join(d, "bench.db"))
    added = statistics.median(wrapped) - statistics.median(bare)
    return {"hot_path_us": added / 1000, "total_cpu_us": cpu * 1e6}


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

    def replay() -> None:
        res = replay_run(rid, agent=agent, db=rec.db)
        assert res.diff.is_empty, res.diff.to_text()

    replay_s = _median_s(replay, 3)
    with Store(rec.db) as s:
        path = write_cassette(cassette_from_store(s, rid), Path(d) / "c.json")
    load_s = _median_s(lambda: load_cassette(path), 3)
    rec.close()
    return {"replay_diff_10k_s": replay_s, "cassette_load_s": load_s}


def _diff() -> dict[str, float]:
    from bench_diff import make_pair

    from replay.diff import diff_traces

    rec, rep, _ = make_pair()
    diff_traces(rec, rep)  # warm-up (imports, caches)
    return {"diff_10k_ms": _median_s(lambda: diff_traces(rec, rep), 11) * 1000}


def worker(name: str, tree: str) -> None:
    # `replay` first, from PYTHONPATH: the benchmark modules imported next (this tree's, the
    # same code for both trees) put their own tree on sys.path, but find `replay` imported.
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
