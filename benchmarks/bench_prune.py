"""`replay prune` at 100,000 expired runs: total time, longest write-lock hold, and what a writer
waits.

    python benchmarks/bench_prune.py [N_RUNS]

Workload: N_RUNS (default 100,000) expired runs of 4 events (run_start, two tool steps, stop) and
one output snapshot each, plus 100 pinned runs that must survive. The same file is pruned twice:
- baseline: the previous prune (one transaction, each table scanned, no expiry index), run on a
  copy with the expiry indexes dropped;
- batched: `Store.prune` (transactions of `PRUNE_BATCH` rows found through the expiry indexes).
During each prune another connection writes a 20-event batch every 20 ms, as a recording process
would, and the longest wait for its write is reported: it must stay well under the writer's busy
timeout (5 s).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay.models import Run, new_run_id  # noqa: E402
from replay.store import PRUNE_BATCH, Store  # noqa: E402
from replay.store_base import make_event_row  # noqa: E402

DAY = 86_400_000
OLD_PRUNE = (
    "DELETE FROM runs WHERE NOT pinned AND expires_at <= :now AND NOT EXISTS (SELECT 1 FROM events "
    "e "
    "WHERE e.run_id = runs.run_id AND (e.expires_at IS NULL OR e.expires_at > :now))",
    "DELETE FROM events WHERE expires_at <= :now AND run_id NOT IN (SELECT run_id FROM runs WHERE "
    "pinned)",
    "DELETE FROM snapshots WHERE expires_at <= :now AND sha NOT IN ("
    "SELECT output_sha FROM events WHERE run_id IN (SELECT run_id FROM runs WHERE pinned) AND "
    "output_sha IS NOT NULL "
    "UNION SELECT args_sha FROM events WHERE run_id IN (SELECT run_id FROM runs WHERE pinned) AND "
    "args_sha IS NOT NULL "
    "UNION SELECT input_sha FROM runs WHERE pinned AND input_sha IS NOT NULL "
    "UNION SELECT output_sha FROM runs WHERE pinned AND output_sha IS NOT NULL "
    "UNION SELECT http_sha FROM runs WHERE pinned AND http_sha IS NOT NULL)",
)


def build(path: Path, n_runs: int) -> int:
    """A store whose runs all ended 40 days ago (events, snapshots and runs expired); returns
    now_ms.
    """
    now = int(time.time() * 1000)
    t0 = now - 40 * DAY
    store = Store(path)
    # Snapshots expire 14 days after they are written: write them "40 days ago" by moving expiry.
    for start in range(0, n_runs, 5_000):
        runs: list[Run] = []
        rows: list[tuple[Any, ...]] = []
        snaps = []
        for i in range(start, min(start + 5_000, n_runs)):
            ts = t0 + i
            rid = new_run_id(ts)
            out = f"{i:024x}"
            runs.append(
                Run(
                    run_id=rid,
                    agent="bench",
                    started_ms=ts,
                    ended_ms=ts + 3,
                    stop_reason="completed",
                    output_sha=out,
                    pinned=i % 1000 == 0,
                )
            )
            rows.append(make_event_row(run_id=rid, kind="run_start", ts_ms=ts))
            for step in (1, 2):
                rows.append(
                    make_event_row(
                        run_id=rid,
                        kind="tool_result",
                        ts_ms=ts + step,
                        step_id=step,
                        tool="http.get",
                        args_sha=f"{i:020x}{step:04x}",
                        output_sha=out,
                        duration_ms=1,
                        status="ok",
                    )
                )
            rows.append(
                make_event_row(
                    run_id=rid, kind="stop", ts_ms=ts + 3, output_sha=out, stop_reason="completed"
                )
            )
            snaps.append((out, b'{"status":200}', None, False))
        store.write_rows(rows, runs=runs, snapshots=snaps)
    with store._writing("aging snapshots") as conn:  # noqa: SLF001 - a benchmark fixture
        conn.execute("UPDATE snapshots SET expires_at = ?", (t0 + 14 * DAY,))
        conn.execute(
            "UPDATE events SET expires_at = NULL WHERE run_id IN (SELECT run_id FROM runs WHERE "
            "pinned)"
        )
    store.checkpoint()
    store.close()
    return now


class Writer(threading.Thread):
    """Writes a small batch every 20 ms through its own connection; records the longest wait."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.store = Store(path)
        self.stop = threading.Event()
        self.longest = 0.0
        self.failed = 0
        self.writes = 0

    def run(self) -> None:
        while not self.stop.is_set():
            ts = int(time.time() * 1000)
            rid = new_run_id(ts)
            rows = [
                make_event_row(
                    run_id=rid,
                    kind="tool_result",
                    ts_ms=ts,
                    step_id=s,
                    tool="t",
                    args_sha="a" * 24,
                    output_sha="b" * 24,
                    duration_ms=1,
                    status="ok",
                )
                for s in range(1, 21)
            ]
            t0 = time.perf_counter()
            try:
                self.store.write_rows(rows)
            except Exception:  # noqa: BLE001 - counted: a write that met the busy timeout
                self.failed += 1
            self.longest = max(self.longest, time.perf_counter() - t0)
            self.writes += 1
            time.sleep(0.02)
        self.store.close()


def old_prune(path: Path, now: int) -> tuple[float, float, list[int]]:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    for idx in ("runs_expires", "events_expires", "snapshots_expires", "runs_pinned"):
        conn.execute(f"DROP INDEX IF EXISTS {idx}")
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    counts = [conn.execute(sql, {"now": now}).rowcount for sql in OLD_PRUNE]
    conn.execute("COMMIT")
    total = time.perf_counter() - t0
    conn.close()
    return total, total, counts


def new_prune(path: Path, now: int) -> tuple[float, float, list[int]]:
    store = Store(path)
    t0 = time.perf_counter()
    res = store.prune(now_ms=now)
    total = time.perf_counter() - t0
    store.close()
    return total, res.longest_lock_ms / 1000, [res.runs, res.events, res.snapshots]


def measure(path: Path, now: int, fn: Any) -> dict[str, Any]:
    w = Writer(path)
    w.start()
    time.sleep(0.1)
    total, hold, counts = fn(path, now)
    time.sleep(0.1)
    w.stop.set()
    w.join()
    return {
        "total_s": total,
        "longest_lock_s": hold,
        "counts": counts,
        "writer_longest_wait_s": w.longest,
        "writer_failed": w.failed,
        "writer_writes": w.writes,
    }


BASE, NEW = "baseline (one transaction, no index)", "batched prune"


def measure_both(n: int, verbose: bool = False) -> dict[str, dict[str, Any]]:
    """Build one store of `n` expired runs and prune a copy each way, with a writer beside it."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-prune-"))
    try:
        src = tmp / "src.db"
        t0 = time.perf_counter()
        now = build(src, n)
        if verbose:
            print(
                f"built {n} runs in {time.perf_counter() - t0:.1f} s "
                f"({os.path.getsize(src) / 1e6:.0f} MB)"
            )
        results = {}
        for name, fn in ((BASE, old_prune), (NEW, new_prune)):
            copy = tmp / f"{name[:5]}.db"
            shutil.copy(src, copy)
            results[name] = measure(copy, now, fn)
        assert results[BASE]["counts"] == results[NEW]["counts"], (
            "both prunes must delete the same rows"
        )
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run() -> list[dict[str, Any]]:
    """The rows of benchmarks/REPORT.md (see benchmarks/run.py)."""
    r = measure_both(100_000)
    base, new = r[BASE], r[NEW]

    def row(
        name: str, value: float, unit: str, ref: float, target: str, ok: bool
    ) -> dict[str, Any]:
        return {
            "name": name,
            "value": round(value, 1),
            "unit": unit,
            "reference_name": BASE,
            "reference_value": round(ref, 1),
            "ratio": round(value / ref, 3) if ref else None,
            "target": target,
            "ok": ok,
        }

    return [
        row(
            "prune 100,000 runs: longest write-lock hold",
            new["longest_lock_s"] * 1000,
            "ms",
            base["longest_lock_s"] * 1000,
            "well under the 5 s busy timeout (< 500 ms)",
            new["longest_lock_s"] < 0.5,
        ),
        row(
            "prune 100,000 runs: longest wait of a concurrent writer",
            new["writer_longest_wait_s"] * 1000,
            "ms",
            base["writer_longest_wait_s"] * 1000,
            "< 1000 ms, no write failed",
            new["writer_longest_wait_s"] < 1.0 and new["writer_failed"] == 0,
        ),
        row("prune 100,000 runs: total time", new["total_s"], "s", base["total_s"], "info", True),
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    results = measure_both(n, verbose=True)
    print(
        f"\n{'':40}{'total':>10}{'longest lock':>15}{'writer max wait':>18}{'writer fails':>14}  "
        f"deleted runs/events/snapshots"
    )
    for name, r in results.items():
        print(
            f"{name:40}{r['total_s']:>9.2f}s{r['longest_lock_s'] * 1000:>13.1f}ms"
            f"{r['writer_longest_wait_s'] * 1000:>16.1f}ms{r['writer_failed']:>14}  {r['counts']}"
        )
    base, new = results[BASE], results[NEW]
    print(
        f"\nbatch size {PRUNE_BATCH}; longest lock ratio batched/baseline "
        f"{new['longest_lock_s'] / base['longest_lock_s']:.3f}; total time ratio "
        f"{new['total_s'] / base['total_s']:.2f}; python {sys.version.split()[0]}, sqlite "
        f"{sqlite3.sqlite_version}"
    )


if __name__ == "__main__":
    main()
