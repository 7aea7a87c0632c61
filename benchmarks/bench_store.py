"""Store ingest speed and size on disk, against raw sqlite3 and sqlite-utils measured in the same
run, and the PostgreSQL backend against the SQLite store (one process and 4 processes).

    python benchmarks/bench_store.py

PostgreSQL: ``REPLAY_BENCH_PG_URL`` names a server to use, else a throwaway one is started as the
tests do (tests/pg.py, Debian's postgresql). Its server settings are the throwaway one's (fsync off,
as a test server): the figure is the client's ingest path, not a tuned server's disk.

Workload: runs of 20 events (run_start, 18 steps of which some are model calls with usage and some
errors, stop), 28-char run ids, 24-hex shas, tool names like ``http.get``; 5,000 events per
transaction; WAL, synchronous=NORMAL; a fresh file per measurement; best of a few repetitions.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlite_utils  # noqa: E402

from replay.models import Event, Run, new_run_id  # noqa: E402
from replay.store import EVENT_COLUMNS, Store  # noqa: E402
from replay.store_base import make_event_row  # noqa: E402

N_EVENTS = 60_000
BATCH = 5_000
REPEATS = 5
RUN_LEN = 20
TOOLS = ("http.get", "email.send", "db.query", "search.web", "crm.lookup")
USAGE = '{"tokens_in":1204,"tokens_out":311,"cost_usd":0.00731,"tool_calls":0}'


def workload(n: int, seed: int = 7) -> tuple[list[tuple[Any, ...]], list[Run]]:
    """Event rows in EVENT_COLUMNS order and one run row per RUN_LEN events."""
    rnd = random.Random(seed)
    rows: list[tuple[Any, ...]] = []
    runs: list[Run] = []
    t0 = 1_780_000_000_000
    run_id = ""
    for i in range(n):
        ts, pos = t0 + i * 7, i % RUN_LEN
        if pos == 0:
            run_id = new_run_id(ts)
            runs.append(
                Run(
                    run_id=run_id,
                    agent="support-agent",
                    started_ms=ts,
                    ended_ms=ts + 140,
                    stop_reason="completed",
                    versions={"model": "m-2026-10", "prompt": "support-v3"},
                )
            )
            rows.append(make_event_row(run_id=run_id, kind="run_start", ts_ms=ts))
        elif pos == RUN_LEN - 1:
            rows.append(
                make_event_row(
                    run_id=run_id, kind="stop", ts_ms=ts, stop_reason="completed", usage=USAGE
                )
            )
        elif pos % 6 == 0:
            rows.append(
                make_event_row(
                    run_id=run_id,
                    kind="model_result",
                    ts_ms=ts,
                    step_id=pos,
                    tool="openai.chat",
                    args_sha=f"{rnd.getrandbits(96):024x}",
                    output_sha=f"{rnd.getrandbits(96):024x}",
                    duration_ms=rnd.randint(200, 4000),
                    status="ok",
                    usage=USAGE,
                )
            )
        else:
            err = rnd.random() < 0.05
            rows.append(
                make_event_row(
                    run_id=run_id,
                    kind="tool_result",
                    ts_ms=ts,
                    step_id=pos,
                    tool=rnd.choice(TOOLS),
                    args_sha=f"{rnd.getrandbits(96):024x}",
                    output_sha=f"{rnd.getrandbits(96):024x}",
                    duration_ms=rnd.randint(1, 3000),
                    status="error" if err else "ok",
                    error="TimeoutError" if err else None,
                )
            )
    return rows, runs


def _timed(fn: Callable[[], None]) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# A "maker" gets a fresh database path and returns the timed part. Variants run round-robin and the
# best time of each counts, so a burst of load from other processes does not favour one variant.
Maker = Callable[[Path], Callable[[], None]]


def _best_rates(n: int, makers: dict[str, tuple[Maker, int]]) -> dict[str, float]:
    best = {name: float("inf") for name in makers}
    for rep in range(REPEATS):
        for name, (make, repeats) in makers.items():
            if rep >= repeats:
                continue
            with tempfile.TemporaryDirectory() as d:
                best[name] = min(best[name], _timed(make(Path(d) / "bench.db")))
    return {name: n / t for name, t in best.items()}


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"CREATE TABLE events ({', '.join(EVENT_COLUMNS)}, expires_at INTEGER)")
    return conn


_NONE_KEY = (type(None), sqlite3.PrepareProtocol)


def raw_maker(rows: list[tuple[Any, ...]], *, none_adapter: bool) -> Maker:
    """Baseline: one-row INSERT executemany into an equivalent plain table, as a user writes it.

    ``none_adapter=False`` is stock sqlite3 (replay.store registers an adapter for None; it is
    taken out for the baseline), ``True`` shows what that adapter alone gains.
    """
    sql = f"INSERT INTO events VALUES ({', '.join('?' * len(EVENT_COLUMNS))}, ?3 + 2592000000)"

    def make(path: Path) -> Callable[[], None]:
        conn = _raw_connection(path)

        def go() -> None:
            saved = sqlite3.adapters.pop(_NONE_KEY, None)
            if none_adapter:
                sqlite3.adapters[_NONE_KEY] = {}.get
            try:
                for i in range(0, len(rows), BATCH):
                    conn.execute("BEGIN")
                    conn.executemany(sql, rows[i : i + BATCH])
                    conn.execute("COMMIT")
                conn.close()
            finally:
                sqlite3.adapters.pop(_NONE_KEY, None)
                if saved is not None:
                    sqlite3.adapters[_NONE_KEY] = saved

        return go

    return make


def insert_all_maker(rows: list[tuple[Any, ...]]) -> Maker:
    """sqlite-utils' insert_all of dicts into the same plain table."""
    dicts = [
        dict(zip(EVENT_COLUMNS, r, strict=True), expires_at=r[2] + 2_592_000_000) for r in rows
    ]

    def make(path: Path) -> Callable[[], None]:
        _raw_connection(path).close()
        db = sqlite_utils.Database(path, execute_plugins=False)

        def go() -> None:
            for i in range(0, len(dicts), BATCH):
                db["events"].insert_all(dicts[i : i + BATCH])  # type: ignore[union-attr]
            db.close()

        return go

    return make


def write_rows_maker(rows: list[tuple[Any, ...]], runs: list[Run]) -> Maker:
    """Store.write_rows with tuples; each batch also upserts its 250 run rows."""
    per = BATCH // RUN_LEN

    def make(path: Path) -> Callable[[], None]:
        store = Store(path)

        def go() -> None:
            for b, i in enumerate(range(0, len(rows), BATCH)):
                store.write_rows(rows[i : i + BATCH], runs=runs[b * per : (b + 1) * per])
            store.close()

        return go

    return make


def write_batch_maker(rows: list[tuple[Any, ...]], runs: list[Run]) -> Maker:
    """Store.write_batch with pydantic Events built beforehand (building them is the writer's
    cost)."""
    events = [
        Event.model_validate(
            {**dict(zip(EVENT_COLUMNS, r, strict=True)), "usage": r[11] and json.loads(r[11])}
        )
        for r in rows
    ]
    per = BATCH // RUN_LEN

    def make(path: Path) -> Callable[[], None]:
        store = Store(path)

        def go() -> None:
            for b, i in enumerate(range(0, len(events), BATCH)):
                store.write_batch(events=events[i : i + BATCH], runs=runs[b * per : (b + 1) * per])
            store.close()

        return go

    return make


def bytes_per_event(rows: list[tuple[Any, ...]], runs: list[Run]) -> float:
    """File size after a checkpoint, divided by the events (run rows included, no snapshots)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "size.db"
        with Store(path) as store:
            per = BATCH // RUN_LEN
            for b, i in enumerate(range(0, len(rows), BATCH)):
                store.write_rows(rows[i : i + BATCH], runs=runs[b * per : (b + 1) * per])
            store.checkpoint()
            size = os.path.getsize(path)
        return size / len(rows)


# -- PostgreSQL --------------------------------------------------------------------------------


def _fresh(admin_url: str) -> str:
    from tests.pg import new_database

    return new_database(admin_url)


def _ingest(url: str, rows: list[tuple[Any, ...]], runs: list[Run], barrier: Any = None) -> float:
    """Write `rows` (with their runs) in BATCH-event transactions; returns the seconds it took."""
    start, end = _ingest_span(url, rows, runs, barrier)
    return end - start


def _ingest_span(
    url: str, rows: list[tuple[Any, ...]], runs: list[Run], barrier: Any
) -> tuple[float, float]:
    from replay.store_api import open_store

    per = BATCH // RUN_LEN
    with open_store(url) as store:
        if barrier is not None:
            barrier.wait()
        t = time.time()
        for b, i in enumerate(range(0, len(rows), BATCH)):
            store.write_rows(rows[i : i + BATCH], runs=runs[b * per : (b + 1) * per])
        return t, time.time()


def _child(url: str, rows: list[tuple[Any, ...]], runs: list[Run], barrier: Any, q: Any) -> None:
    q.put(_ingest_span(url, rows, runs, barrier))


def _parallel_rate(url: str, rows: list[tuple[Any, ...]], runs: list[Run], procs: int) -> float:
    """Events per second of wall time with `procs` processes each writing its share at once."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    per_proc = len(rows) // procs // BATCH * BATCH
    barrier, q = ctx.Barrier(procs), ctx.Queue()
    children = [
        ctx.Process(
            target=_child,
            args=(
                url,
                rows[k * per_proc : (k + 1) * per_proc],
                runs[k * per_proc // RUN_LEN : (k + 1) * per_proc // RUN_LEN],
                barrier,
                q,
            ),
        )
        for k in range(procs)
    ]
    for c in children:
        c.start()
    spans = [q.get(timeout=600) for _ in children]
    for c in children:
        c.join()
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return per_proc * procs / wall


def _pg_bytes_per_event(url: str, n: int) -> tuple[float, float]:
    """Table data per event after VACUUM: (events heap + primary key, that plus the run rows and
    their indexes)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM events")
        conn.execute("VACUUM runs")
        row = conn.execute(
            "SELECT pg_relation_size('events') + pg_indexes_size('events'), "
            "pg_relation_size('runs') + pg_indexes_size('runs')"
        ).fetchone()
    assert row is not None
    return int(row[0]) / n, (int(row[0]) + int(row[1])) / n


def pg_figures(
    rows: list[tuple[Any, ...]], runs: list[Run], sqlite_rate: float
) -> list[dict[str, Any]]:
    """PostgreSQL ingest (1 and 4 processes) against the SQLite store's, and its bytes per event."""
    from tests.pg import benchmark_server

    admin, server = benchmark_server()
    if admin is None:
        return [_row("PostgreSQL ingest", 0, "events/s", "no server", 1, "a server", False)]
    os.environ.setdefault("REPLAY_REDACTION_KEY", "bench-key")
    try:
        one = max(len(rows) / _ingest(_fresh(admin), rows, runs, None) for _ in range(2))
        four = max(_parallel_rate(_fresh(admin), rows, runs, 4) for _ in range(2))
        with tempfile.TemporaryDirectory() as d:
            sqlite_four = max(
                _parallel_rate(str(Path(d) / f"p{k}.db"), rows, runs, 4) for k in range(2)
            )
        url = _fresh(admin)
        _ingest(url, rows, runs, None)
        size = _pg_bytes_per_event(url, len(rows))
    finally:
        if server is not None:
            server.destroy()
    ref = "SQLite store, same run"
    return [
        _row("PostgreSQL write_rows, 1 process", one, "events/s", ref, sqlite_rate, "info", True),
        _row(
            "SQLite write_rows, 4 processes",
            sqlite_four,
            "events/s",
            ref,
            sqlite_rate,
            "info",
            True,
        ),
        _row(
            "PostgreSQL write_rows, 4 processes",
            four,
            "events/s",
            "SQLite, 4 processes",
            sqlite_four,
            "info",
            True,
        ),  # fmt: skip
        _row(
            "PostgreSQL bytes per event (events: heap + primary key)",
            size[0],
            "B/event",
            "limit",
            250,
            "<= 250",
            size[0] <= 250,
        ),  # fmt: skip
        _row(
            "PostgreSQL bytes per event (with run rows and their 6 indexes)",
            size[1],
            "B/event",
            "limit",
            250,
            "<= 250",
            size[1] <= 250,
        ),  # fmt: skip
    ]


def _row(
    name: str, value: float, unit: str, ref_name: str, ref_value: float, target: str, ok: bool
) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 1),
        "unit": unit,
        "reference_name": ref_name,
        "reference_value": round(ref_value, 1),
        "ratio": round(value / ref_value, 2) if ref_value else None,
        "target": target,
        "ok": ok,
    }


def run() -> list[dict[str, Any]]:
    """Measure and return one dict per figure (name, value, unit, reference, ratio, target, ok)."""
    rows, runs = workload(N_EVENTS)
    rates = _best_rates(
        len(rows),
        {
            "raw": (raw_maker(rows, none_adapter=False), REPEATS),
            "raw_adapted": (raw_maker(rows, none_adapter=True), REPEATS),
            "write_rows": (write_rows_maker(rows, runs), REPEATS),
            "write_batch": (write_batch_maker(rows, runs), REPEATS),
            "insert_all": (insert_all_maker(rows), 2),
        },
    )
    size = bytes_per_event(rows, runs)
    raw, ref = rates["raw"], "raw sqlite3 executemany"
    fast, batch = rates["write_rows"], rates["write_batch"]
    return [
        _row(
            "store.write_rows (tuples)", fast, "events/s", ref, raw, ">= 200000/s", fast >= 200_000
        ),
        # The recorder writes through write_rows; write_batch (pydantic Events) is the convenience
        # API.
        _row(
            "store.write_batch (Event objects; not the recorder's path)",
            batch,
            "events/s",
            ref,
            raw,
            "info",
            True,
        ),
        _row(
            "raw executemany + None adapter",
            rates["raw_adapted"],
            "events/s",
            ref,
            raw,
            "info",
            True,
        ),
        _row(
            "sqlite-utils insert_all",
            rates["insert_all"],
            "events/s",
            ref,
            raw,
            "info (~4x slower)",
            True,
        ),
        _row("bytes per event on disk", size, "B/event", "limit", 250, "<= 250", size <= 250),
        *pg_figures(rows, runs, fast),
    ]


def main() -> None:
    results = run()
    cols = ("name", "value", "unit", "reference_name", "reference_value", "ratio", "target", "ok")
    table = [cols] + [tuple("" if r[c] is None else str(r[c]) for c in cols) for r in results]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    for k, line in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(
        f"\n{N_EVENTS} events, {BATCH} per transaction, best of {REPEATS} round-robin; python "
        f"{sys.version.split()[0]}, "
        f"sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cpus"
    )


if __name__ == "__main__":
    main()
