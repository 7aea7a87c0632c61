"""What not losing records costs, and what a hard kill still loses (issue 11).

Run: ``python benchmarks/bench_no_loss.py`` (about a minute on 2 cores). Figures:

- run-end cost: median latency of a one-tool run in the main process, and in a worker process
  (``sync_run_end``: the run waits until its stop is written, so ``os._exit`` loses nothing);
- the SIGKILL loss window: a fast agent killed at 20 random points; how long before the kill the
  lost runs (ended, not stored) had ended, the largest over all trials;
- 8 processes x 1,500 runs x 12 events into one store: events lost;
- memory: RSS growth while recording 150 outputs of 2 MB (the queue is bounded by bytes).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay import Recorder  # noqa: E402
from replay.store import Store  # noqa: E402

ROOT = str(Path(__file__).resolve().parent.parent)


def _median_run_ns(rec: Recorder, n: int) -> float:
    """Median ns of one run (start, one tool call, stop) recorded by `rec`, after a warm-up."""
    tool = rec.tool("t")(lambda i: {"i": i})

    @rec.agent("a")
    def handle(i: int) -> int:
        tool(i)
        return i

    for i in range(200):
        handle(i)
    rec.flush()
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        handle(i)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times)


def run_end_cost(d: str, n: int = 2000) -> tuple[float, float]:
    """Median µs of one run (start, one tool call, stop): main-process mode, worker mode."""
    out = []
    for sync in (False, True):
        rec = Recorder(os.path.join(d, f"end-{sync}.db"), sync_run_end=sync, sigterm_timeout_s=None)
        median_ns = _median_run_ns(rec, n)
        rec.close()
        out.append(median_ns / 1000)
    return out[0], out[1]


FAST_AGENT = """
import os, sys, time
sys.path.insert(0, {root!r})
from replay import Recorder
rec = Recorder(sys.argv[1])
@rec.tool("t")
def t(i):
    return {{"i": i, "pad": "x" * 200}}
@rec.agent("fast")
def handle(i):
    for k in range(3):
        t(k)
    return i
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
i = 0
while True:
    handle(i)
    os.write(fd, f"{{rec.last_run_id}} {{time.time_ns()}}\\n".encode())
    i += 1
    if i == 20:
        print("go", flush=True)
"""


def kill_window(d: str, trials: int = 20) -> tuple[int, int, float, int]:
    """(runs ended, runs lost, largest age in ms of a lost run at the kill, open runs not
    inferred).
    """
    script = Path(d, "fast.py")
    script.write_text(FAST_AGENT.format(root=ROOT))
    rng = random.Random(7)
    ended_all = lost_all = unmarked = 0
    worst = 0.0
    for k in range(trials):
        db, log = os.path.join(d, f"kill{k}.db"), os.path.join(d, f"kill{k}.log")
        p = subprocess.Popen([sys.executable, str(script), db, log], stdout=subprocess.PIPE)
        assert p.stdout is not None
        p.stdout.readline()
        time.sleep(rng.uniform(0.1, 1.0))
        t_kill = time.time_ns()
        p.send_signal(signal.SIGKILL)
        p.wait()
        ended = {}
        for line in Path(log).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                ended[parts[0]] = int(parts[1])
        with Store(db) as s:
            assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            runs = {r.run_id: r for r in s.runs()}
        lost = [r for r in ended if r not in runs or runs[r].stop_reason != "completed"]
        worst = max([worst] + [(t_kill - ended[r]) / 1e6 for r in lost])
        unmarked += sum(1 for r in runs.values() if r.stop_reason is None)
        ended_all += len(ended)
        lost_all += len(lost)
    return ended_all, lost_all, worst, unmarked


MANY = """
import os, sys
sys.path.insert(0, {root!r})
from replay import Recorder
db, procs, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
children = []
for w in range(procs):
    pid = os.fork()
    if pid == 0:
        rec = Recorder(db)
        @rec.tool("t")
        def t(i):
            return {{"i": i}}
        @rec.agent("many")
        def h(i):
            for k in range(10):
                t(k)
            return i
        for i in range(runs):
            h(i)
        rec.close()
        os._exit(0 if rec.dropped == 0 else 1)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children]
print(sum(1 for c in codes if c))
"""


def many_writers(d: str, procs: int = 8, runs: int = 1500) -> tuple[int, int, float]:
    """(events expected, events stored, seconds)."""
    script = Path(d, "many.py")
    script.write_text(MANY.format(root=ROOT))
    db = os.path.join(d, "many.db")
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(script), db, str(procs), str(runs)], check=True, timeout=900
    )
    secs = time.perf_counter() - t0
    with Store(db) as s:
        stored = int(s.db.execute("SELECT count(*) FROM events").fetchone()[0])
    return procs * runs * 12, stored, secs


BIG = """
import os, resource, sys
sys.path.insert(0, {root!r})
from replay import Recorder
rec = Recorder(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
@rec.tool("big")
def big(i):
    return str(i) * 0 + os.urandom(1 << 20).hex()  # 2 MB of text, each one different
with rec.run("a"):
    for i in range(150):
        big(i)
rec.close()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def big_outputs(d: str) -> float:
    script = Path(d, "big.py")
    script.write_text(textwrap.dedent(BIG.format(root=ROOT)))
    out = subprocess.run(
        [sys.executable, str(script), os.path.join(d, "big.db")],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return float(out.stdout.strip())


def run(full: bool = True) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as d:
        main_us, worker_us = run_end_cost(d)
        ended, lost, worst, unmarked = kill_window(d)
        expected, stored, secs = many_writers(d, 8, 1500 if full else 200)
        mem = big_outputs(d)
    none = {"reference_name": "-", "reference_value": None, "ratio": None}
    return [
        {
            "name": "run (start, 1 tool, stop), main process (median)",
            "value": round(main_us, 1),
            "unit": "us",
            **none,
            "target": "-",
            "ok": True,
        },
        {
            "name": "same run in a worker process (waits for its write)",
            "value": round(worker_us, 1),
            "unit": "us",
            "reference_name": "main process",
            "reference_value": round(main_us, 1),
            "ratio": round(worker_us / main_us, 2),
            "target": "-",
            "ok": True,
        },
        {
            "name": f"SIGKILL x20: runs lost of {ended} ended",
            "value": lost,
            "unit": "runs",
            **none,
            "target": "ended in the window",
            "ok": True,
        },
        {
            "name": "SIGKILL: oldest lost run ended before the kill",
            "value": round(worst, 1),
            "unit": "ms",
            **none,
            "target": "<= 500 ms (1 interval + 1 write, loaded)",
            "ok": worst <= 500,
        },
        {
            "name": "SIGKILL: runs left without a stop (not inferred)",
            "value": unmarked,
            "unit": "runs",
            **none,
            "target": "0",
            "ok": unmarked == 0,
        },
        {
            "name": f"8 processes: events stored of {expected}",
            "value": stored,
            "unit": "events",
            **none,
            "target": "all",
            "ok": stored == expected,
        },
        {
            "name": "8 processes: wall time",
            "value": round(secs, 1),
            "unit": "s",
            **none,
            "target": "-",
            "ok": True,
        },
        {
            "name": "150 outputs of 2 MB: RSS growth",
            "value": round(mem, 1),
            "unit": "MB",
            **none,
            "target": "<= 64 MB queue + working set",
            "ok": mem <= 200,
        },
    ]


def print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        print(
            f"{'ok ' if r['ok'] else 'BAD'} {r['name']:<55} {r['value']:>10} {r['unit']:<7} "
            f"{ratio:>7}  target {r['target']}"
        )


if __name__ == "__main__":
    print_rows(run(full="--quick" not in sys.argv))
