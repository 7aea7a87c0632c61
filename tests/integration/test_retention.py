"""Retention: expiry metadata, prune, pinned runs. Times are explicit (now_ms); nothing sleeps."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from replay.errors import RunNotFoundError
from replay.models import Event, Run, new_run_id
from replay.store import PruneResult, Store
from replay.store_api import open_store
from tests.pg import execute

DAY = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def record(
    store: Store, ts: int, *, snaps: tuple[str, ...] = (), steps: int = 2, **run_kw: object
) -> str:
    """One run started at `ts`: run row, run_start, `steps` tool steps (output_sha from `snaps`),
    stop."""
    rid = new_run_id(ts)
    outs = list(snaps) + [None] * steps
    events = [Event(run_id=rid, kind="run_start", ts_ms=ts)]
    events += [
        Event(
            run_id=rid,
            kind="tool_result",
            ts_ms=ts + i,
            step_id=i,
            tool="http.get",
            args_sha=f"{i:024x}",
            output_sha=outs[i - 1],
            status="ok",
            duration_ms=5,
        )
        for i in range(1, steps + 1)
    ]
    events.append(Event(run_id=rid, kind="stop", ts_ms=ts + steps + 1, stop_reason="completed"))
    run = Run(
        run_id=rid,
        agent="support-agent",
        started_ms=ts,
        ended_ms=ts + steps + 1,
        stop_reason="completed",
        **run_kw,
    )  # type: ignore[arg-type]
    store.write_batch(
        runs=[run], events=events, snapshots=[(s, b'{"v":1}', "dict", False) for s in snaps]
    )
    return rid


def sha(c: str) -> str:
    return c * 24


@pytest.fixture
def store(store_url: str):
    """A new store on each backend (SQLite file, PostgreSQL database)."""
    with open_store(store_url) as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path):
    """A SQLite store, for what only SQLite has (its query planner's output, json_each)."""
    with Store(tmp_path / "replay.db") as s:
        yield s


def test_rows_carry_their_expiry(store_url: str) -> None:
    """Events expire event_days after ts_ms, a run with its last event, snapshots snapshot_days
    after writing."""
    with open_store(store_url, event_days=3, snapshot_days=1) as s:
        before = now_ms()
        rid = record(s, 1_000_000, snaps=(sha("a"),))
        after = now_ms()
        ev = [
            r[0]
            for r in s.query("SELECT expires_at FROM events WHERE run_id = ? ORDER BY seq", [rid])
        ]
        snap = s.query("SELECT expires_at FROM snapshots")[0][0]
        assert ev == [1_000_000 + 3 * DAY + i for i in range(4)]
        assert s.get_run(rid).expires_at == 1_000_003 + 3 * DAY
        assert before + DAY <= snap <= after + DAY


def test_prune_deletes_expired_events_and_their_runs(store: Store) -> None:
    """prune removes events past 30 days and the runs left without events; younger runs stay
    whole."""
    now = now_ms()
    old = record(store, now - 31 * DAY)
    young = record(store, now - 29 * DAY)

    result = store.prune(now_ms=now)

    assert result == PruneResult(runs=1, events=4, snapshots=0)
    with pytest.raises(RunNotFoundError):
        store.get_run(old)
    assert store.events(old) == []
    assert len(store.events(young)) == 4 and store.get_run(young).run_id == young


def test_a_run_with_unexpired_events_is_kept(store: Store) -> None:
    """A long run keeps its row while any of its events is still within retention."""
    now = now_ms()
    rid = record(store, now - 40 * DAY)
    late = Event(
        run_id=rid, kind="tool_result", ts_ms=now - DAY, step_id=9, tool="http.get", status="ok"
    )
    store.write_batch(events=[late])

    result = store.prune(now_ms=now)

    assert result.runs == 0 and result.events == 4
    assert store.get_run(rid).run_id == rid
    assert store.events(rid) == [late]


def test_snapshots_expire_before_events(store: Store) -> None:
    """After 14 days the snapshot bodies go while the events (hashes) stay until day 30."""
    rid = record(store, now_ms(), snaps=(sha("a"),))

    result = store.prune(now_ms=now_ms() + 15 * DAY)

    assert result == PruneResult(runs=0, events=0, snapshots=1)
    assert store.snapshot(sha("a")) is None
    assert store.events(rid)[1].output_sha == sha("a")


def test_rewriting_a_snapshot_extends_its_expiry(store_url: str) -> None:
    """A snapshot written again (a newer run got the same output) lives as long as the later write
    says."""
    path = store_url
    with open_store(path, snapshot_days=1) as s:
        record(s, now_ms(), snaps=(sha("a"),))
    with open_store(path, snapshot_days=14) as s:
        record(s, now_ms(), snaps=(sha("a"),))
        assert s.prune(now_ms=now_ms() + 2 * DAY).snapshots == 0
        assert s.snapshot(sha("a")) is not None
    with open_store(path, snapshot_days=1) as s:  # a shorter lifetime never shortens what is stored
        record(s, now_ms(), snaps=(sha("a"),))
        assert s.prune(now_ms=now_ms() + 2 * DAY).snapshots == 0


def test_pinned_runs_never_expire(store: Store) -> None:
    """A pinned run keeps its row, its events and the snapshots they reference, however old."""
    now = now_ms()
    rid = record(store, now - 400 * DAY, snaps=(sha("a"), sha("b")), input_sha=sha("c"))
    store.write_batch(snapshots=[(sha("c"), b'{"ticket":1}', "dict", False)])
    other = record(store, now - 400 * DAY, snaps=(sha("d"),))

    pinned = store.pin(rid)
    result = store.prune(now_ms=now + 400 * DAY)

    assert pinned.pinned and pinned.expires_at is None
    assert result == PruneResult(runs=1, events=4, snapshots=1)
    assert store.get_run(rid).pinned
    assert len(store.events(rid)) == 4
    assert all(store.snapshot(sha(c)) is not None for c in "abc")
    assert store.snapshot(sha("d")) is None
    with pytest.raises(RunNotFoundError):
        store.get_run(other)


def test_a_snapshot_shared_with_a_pinned_run_is_kept(store: Store) -> None:
    """A snapshot referenced by both a pinned and an expired run survives the expired run's
    pruning."""
    now = now_ms()
    keep = record(store, now - 100 * DAY, snaps=(sha("a"),))
    record(store, now - 100 * DAY, snaps=(sha("a"),))
    store.pin(keep)
    result = store.prune(now_ms=now + 30 * DAY)
    assert (result.runs, result.snapshots) == (1, 0)
    assert store.snapshot(sha("a")) is not None


def test_pin_survives_the_recorders_later_run_write(store: Store) -> None:
    """A run pinned while it runs stays pinned when the recorder writes its row again at stop."""
    now = now_ms()
    rid = record(store, now - 100 * DAY)
    store.pin(rid)
    store.write_batch(
        runs=[
            Run(run_id=rid, agent="support-agent", started_ms=now - 100 * DAY, stop_reason="killed")
        ]
    )
    assert store.prune(now_ms=now) == PruneResult(0, 0, 0)
    run = store.get_run(rid)
    assert run.pinned and run.stop_reason == "killed" and run.expires_at is None


def test_unpinned_runs_expire_again(store: Store) -> None:
    """Unpinning gives a run its normal lifetime back, counted from its own times."""
    now = now_ms()
    rid = record(store, now - 100 * DAY)
    store.pin(rid)
    unpinned = store.pin(rid, False)
    assert not unpinned.pinned and unpinned.expires_at == now - 100 * DAY + 3 + 30 * DAY
    assert store.prune(now_ms=now) == PruneResult(runs=1, events=4, snapshots=0)


def test_pin_of_an_unknown_run_raises(store: Store) -> None:
    """Pinning an id that is not in the store raises RunNotFoundError."""
    with pytest.raises(
        RunNotFoundError, match=f"no run 'r_nope' in {re.escape(store.display_name)}"
    ):
        store.pin("r_nope")


def test_dry_run_counts_what_prune_deletes_and_deletes_nothing(store: Store) -> None:
    """prune(dry_run=True) reports the same counts as the real prune and leaves every row."""
    now = now_ms()
    ids = {
        days: record(store, now - days * DAY, snaps=(sha(str(days % 10)),))
        for days in (45, 31, 20, 3)
    }
    pinned = record(store, now - 60 * DAY)
    store.pin(pinned)
    at = now + 15 * DAY

    dry = store.prune(now_ms=at, dry_run=True)
    assert store.count_runs() == 5
    real = store.prune(now_ms=at)

    assert dry == PruneResult(runs=3, events=12, snapshots=4, dry_run=True)
    assert (real.runs, real.events, real.snapshots, real.dry_run) == (3, 12, 4, False)
    assert {r.run_id for r in store.runs()} == {pinned, ids[3]}
    assert store.prune(now_ms=at) == PruneResult(0, 0, 0)


def test_prune_deletes_in_bounded_batches_and_keeps_pinned_runs(store: Store) -> None:
    """With batch_size=7, 30 expired runs go in several short transactions and a pinned run keeps
    everything."""
    t = 1_000_000
    for i in range(30):
        record(store, t + i, snaps=(f"s{i:023x}",))
    kept = record(store, t + 100, snaps=(sha("p"),), pinned=True)
    now = t + 40 * DAY
    execute(store, "UPDATE snapshots SET expires_at = ?", [t + 14 * DAY])
    result = store.prune(now_ms=now, batch_size=7, pause_s=0)
    assert (result.runs, result.events, result.snapshots) == (30, 120, 30)
    assert result.batches == 5 + 18 + 5  # ceil(n / 7) batches, one more when n divides evenly
    assert store.runs() and [r.run_id for r in store.runs()] == [kept]
    assert len(store.events(kept)) == 4 and store.snapshot(sha("p")) is not None
    assert store.prune(now_ms=now, batch_size=7) == PruneResult(0, 0, 0)


@pytest.mark.parametrize("table", ["runs", "snapshots"])
def test_prune_finds_expired_rows_through_the_expiry_index(sqlite_store: Store, table: str) -> None:
    """Each prune batch of runs and snapshots searches the expires_at index (EXPLAIN QUERY PLAN),
    never scans the table."""
    from replay.store import _PRUNE

    ((key, cond),) = [(k, c) for t, k, c in _PRUNE if t == table]
    sql = f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {cond} LIMIT :n)"
    plan = [
        row[3] for row in sqlite_store.db.execute("EXPLAIN QUERY PLAN " + sql, {"now": 1, "n": 10})
    ]
    assert any(
        f"SEARCH {table} USING" in p and f"INDEX {table}_expires (expires_at<?)" in p for p in plan
    ), plan
    assert not any(p.startswith(f"SCAN {table}") for p in plan), plan


def test_prune_pages_events_by_primary_key_and_deletes_by_key(sqlite_store: Store) -> None:
    """Events (no expiry index, to keep ingest cheap) are paged by a primary-key range and deleted
    by key, never scanned."""
    from replay.store import _EVENTS_DELETE, _EVENTS_PAGE

    page = [
        r[3]
        for r in sqlite_store.db.execute(
            "EXPLAIN QUERY PLAN " + _EVENTS_PAGE, {"now": 1, "n": 10, "r": "", "s": 0}
        )
    ]
    assert "SEARCH events USING PRIMARY KEY ((run_id,seq)>(?,?))" in page, page
    delete = [
        r[3] for r in sqlite_store.db.execute("EXPLAIN QUERY PLAN " + _EVENTS_DELETE, ("[]", 1))
    ]
    assert any(p.startswith("SEARCH events USING PRIMARY KEY") for p in delete), delete
    assert not any(p.startswith("SCAN events") for p in page + delete)


def test_prune_deletes_events_by_key_without_json_each(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where SQLite lacks json_each, events are deleted one key at a time, with the same result."""
    import replay.store

    monkeypatch.setattr(replay.store, "_EVENTS_DELETE", "SELECT * FROM json_each_missing(?1, ?2)")
    t = 1_000_000
    for i in range(5):
        record(sqlite_store, t + i)
    assert sqlite_store.prune(now_ms=t + 40 * DAY, batch_size=3, pause_s=0) == PruneResult(
        runs=5, events=20, snapshots=0
    )


def test_prune_rejects_a_batch_size_below_one(store: Store) -> None:
    """batch_size=0 is refused before anything is deleted, naming the parameter."""
    with pytest.raises(ValueError, match="batch_size=0"):
        store.prune(batch_size=0)


@pytest.mark.parametrize("table", ["runs", "snapshots"])
def test_postgresql_prune_can_find_expired_rows_through_the_expiry_index(
    pg_url: str, table: str
) -> None:
    """On PostgreSQL each prune batch of runs and snapshots can search the expires_at index."""
    import psycopg

    from replay.pg_store import _PRUNE

    ((key, cond),) = [(k, c) for t, k, c in _PRUNE if t == table]
    open_store(pg_url).close()
    sql = f"SELECT {key} FROM {table} WHERE {cond} LIMIT %(n)s"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # an empty table: ask whether an index serves
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, {"now": 1, "n": 10}))
    assert f"{table}_expires" in plan, plan


def test_postgresql_prune_pages_events_by_primary_key(pg_url: str) -> None:
    """On PostgreSQL expired events are paged and deleted through the (run_id, seq) primary key."""
    import psycopg

    from replay.pg_store import _EVENTS_DELETE, _EVENTS_PAGE

    open_store(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        page = "\n".join(
            r[0]
            for r in conn.execute("EXPLAIN " + _EVENTS_PAGE, {"now": 1, "n": 10, "r": "", "s": 0})
        )
        delete = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN " + _EVENTS_DELETE, {"now": 1, "ids": ["r_1"], "seqs": [1]}
            )
        )
    assert "events_pkey" in page and "events_pkey" in delete, (page, delete)
