"""The store on real SQLite files and a real PostgreSQL server: creation, schema versions, batched
writes, queries, bad input."""

from __future__ import annotations

import os
import random
import re
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from replay.errors import AmbiguousRunIdError, RunNotFoundError, SchemaVersionError, StoreError
from replay.migrations import SCHEMA_VERSION, STEPS
from replay.models import Event, Run, Usage, new_run_id
from replay.store import EVENT_COLUMNS, RUN_COLUMNS, Store
from replay.store_api import open_store
from replay.store_base import make_event_row

T0 = 1_780_000_000_000  # a fixed epoch-ms origin for runs in these tests
DAY = 86_400_000


def make_run(
    run_id: str | None = None, *, agent: str = "support-agent", started_ms: int = T0, **kw: object
) -> Run:
    return Run(run_id=run_id or new_run_id(started_ms), agent=agent, started_ms=started_ms, **kw)  # type: ignore[arg-type]


def run_events(run_id: str, steps: int = 3, ts: int = T0) -> list[Event]:
    """run_start, `steps` tool/model steps, stop."""
    evs = [Event(run_id=run_id, kind="run_start", ts_ms=ts)]
    for i in range(1, steps + 1):
        if i % 3 == 0:
            evs.append(
                Event(
                    run_id=run_id,
                    kind="model_result",
                    ts_ms=ts + i,
                    step_id=i,
                    tool="openai.chat",
                    args_sha=f"{i:024x}",
                    output_sha=f"{i + 100:024x}",
                    duration_ms=400,
                    status="ok",
                    usage=Usage(tokens_in=120, tokens_out=30, cost_usd=0.0012),
                )
            )
        else:
            evs.append(
                Event(
                    run_id=run_id,
                    kind="tool_result",
                    ts_ms=ts + i,
                    step_id=i,
                    tool="http.get",
                    args_sha=f"{i:024x}",
                    output_sha=f"{i + 100:024x}",
                    duration_ms=12,
                    status="error" if i == 2 else "ok",
                    error="TimeoutError" if i == 2 else None,
                )
            )
    evs.append(
        Event(
            run_id=run_id,
            kind="stop",
            ts_ms=ts + steps + 1,
            stop_reason="completed",
            usage=Usage(tokens_in=120, tokens_out=30, cost_usd=0.0012, tool_calls=steps),
        )
    )
    return evs


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "replay.db"


@pytest.fixture
def store(store_url: str):
    """A new store on each backend (SQLite file, PostgreSQL database): one suite, both run it."""
    with open_store(store_url) as s:
        yield s


# -- the file ------------------------------------------------------------------------------------


def test_new_store_and_its_wal_files_are_private(db_path: Path) -> None:
    """A new store file and its -wal/-shm companions are readable by their owner only (0600)."""
    old = os.umask(0o022)
    try:
        with Store(db_path) as s:
            rid = new_run_id()
            s.write_batch(runs=[make_run(rid)], events=run_events(rid))
            files = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
            assert all(f.exists() for f in files)
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    finally:
        os.umask(old)
    assert modes == {"replay.db": 0o600, "replay.db-wal": 0o600, "replay.db-shm": 0o600}


def test_store_uses_wal(db_path: Path) -> None:
    """The store runs in WAL mode, so readers (the CLI) never block the recorder."""
    Store(db_path).close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_secret_key_is_per_store_and_survives_reopening(tmp_path: Path) -> None:
    """Each store gets its own random 32-byte key, and reopening a store gives the same key back."""
    with Store(tmp_path / "a.db") as a, Store(tmp_path / "b.db") as b:
        key_a, key_b = a.secret_key, b.secret_key
    assert len(key_a) == 32 and key_a != key_b
    with Store(tmp_path / "a.db") as again:
        assert again.secret_key == key_a


def test_concurrent_opening_of_a_new_file_creates_it_once(db_path: Path) -> None:
    """Several workers opening the same new store at once all succeed and share one secret key."""
    barrier = threading.Barrier(4)
    keys: list[bytes] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            barrier.wait()
            with Store(db_path) as s:
                keys.append(s.secret_key)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(keys) == 4 and len(set(keys)) == 1


def test_file_that_is_not_sqlite_is_refused_with_the_path_and_the_fix(db_path: Path) -> None:
    """A file that is not SQLite gives a StoreError naming the path and what to do; the file is
    untouched."""
    db_path.write_text("these are my notes, not a database\n" * 200)
    before = db_path.read_bytes()
    with pytest.raises(StoreError) as info:
        Store(db_path)
    msg = str(info.value)
    assert str(db_path) in msg
    assert "not an SQLite database" in msg and "REPLAY_DB" in msg
    assert info.value.path == str(db_path)
    assert db_path.read_bytes() == before


def test_sqlite_file_of_another_application_is_refused(db_path: Path) -> None:
    """An SQLite file without a replay schema (someone else's database) is refused, not written
    into."""
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"not an agent-replay store \(it has tables customers\)"):
        Store(db_path)
    conn = sqlite3.connect(db_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert tables == {"customers"}


def test_missing_folder_is_reported_with_the_folder(tmp_path: Path) -> None:
    """A store path in a folder that does not exist names the folder in the error."""
    with pytest.raises(StoreError, match=r"the folder .*nope does not exist"):
        Store(tmp_path / "nope" / "replay.db")


def test_a_folder_is_not_a_store(tmp_path: Path) -> None:
    """Passing a folder as the store path explains that a file path is expected."""
    with pytest.raises(StoreError, match="is a folder, not a database file"):
        Store(tmp_path)


# -- schema versions -----------------------------------------------------------------------------


def test_newer_schema_is_refused_and_the_file_is_not_changed(db_path: Path) -> None:
    """A file written by a newer agent-replay is refused with the upgrade message and left
    byte-identical."""
    with Store(db_path) as s:
        s.write_batch(runs=[make_run()])
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = db_path.read_bytes()

    with pytest.raises(SchemaVersionError) as info:
        Store(db_path)

    assert str(info.value) == (
        f"replay.db has schema {SCHEMA_VERSION + 1}; this agent-replay reads up to "
        f"{SCHEMA_VERSION}: "
        "upgrade it (pip install -U agent-replay)"
    )
    assert db_path.read_bytes() == before


# The version-1 layout exactly as the first release wrote it (raw SQL, no sqlite-utils bookkeeping).
V1_SQL = """
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY NOT NULL, agent TEXT NOT NULL, entrypoint TEXT, input TEXT, output TEXT,
    input_sha TEXT, output_sha TEXT, versions TEXT NOT NULL DEFAULT '{}',
    labels TEXT NOT NULL DEFAULT '{}',
    started_ms INTEGER NOT NULL, ended_ms INTEGER, stop_reason TEXT, usage TEXT,
    tool_calls INTEGER NOT NULL DEFAULT 0, pinned INTEGER NOT NULL DEFAULT 0, expires_at INTEGER,
    replay_of TEXT, call_style TEXT NOT NULL DEFAULT 'bound', host TEXT NOT NULL DEFAULT '');
CREATE TABLE events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    step_id INTEGER,
    tool TEXT, args_sha TEXT, output_sha TEXT, duration_ms INTEGER, status TEXT, error TEXT,
    stop_reason TEXT, usage TEXT, parent_step_id INTEGER, PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE snapshots (sha TEXT PRIMARY KEY NOT NULL, body BLOB NOT NULL, type_name TEXT,
    truncated INTEGER NOT NULL DEFAULT 0);
INSERT INTO meta VALUES ('schema_version', 1);
INSERT INTO runs (run_id, agent, input, versions, started_ms, ended_ms, stop_reason, usage,
        tool_calls, host)
    VALUES ('r_01old0000000000000000000000', 'support-agent', '{"ticket":42}', '{"model":"m-1"}',
            1780000000000, 1780000000900, 'completed',
            '{"tokens_in":5,"tokens_out":2,"cost_usd":0.1,"tool_calls":1}',
            1, 'web-1');
INSERT INTO events (run_id, seq, kind, ts_ms) VALUES
    ('r_01old0000000000000000000000', -4611686018427387904, 'run_start', 1780000000000);
INSERT INTO events (run_id, seq, kind, ts_ms, step_id, tool, args_sha, output_sha, duration_ms,
        status)
    VALUES ('r_01old0000000000000000000000', 1, 'tool_result', 1780000000500, 1, 'http.get',
            'aaaaaaaaaaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbbbbbbbbbb', 12, 'ok');
INSERT INTO events (run_id, seq, kind, ts_ms, stop_reason) VALUES
    ('r_01old0000000000000000000000', 4611686018427387904, 'stop', 1780000000900, 'completed');
INSERT INTO snapshots VALUES ('bbbbbbbbbbbbbbbbbbbbbbbb', X'7B226F6B223A747275657D', 'dict', 0);
"""


def test_version_1_file_is_migrated_and_keeps_its_data(db_path: Path) -> None:
    """A store written at schema 1 opens: it is migrated to the current schema and every record is
    kept."""
    conn = sqlite3.connect(db_path)
    conn.executescript(V1_SQL)
    conn.close()

    with Store(db_path, event_days=30) as s:
        run = s.get_run("r_01old0000000000000000000000")
        events = s.events(run.run_id)
        snap = s.snapshot("bbbbbbbbbbbbbbbbbbbbbbbb")
        key = s.secret_key
        version = s.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        expires = [r[0] for r in s.db.execute("SELECT expires_at FROM events ORDER BY seq")]
        indexes = {
            r[0]
            for r in s.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs'"
            )
        }
        applied = [r[0] for r in s.db.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]

    assert version == SCHEMA_VERSION
    assert applied == list(STEPS)
    assert (run.agent, run.input, run.versions, run.host) == (
        "support-agent",
        {"ticket": 42},
        {"model": "m-1"},
        "web-1",
    )
    assert run.usage == Usage(tokens_in=5, tokens_out=2, cost_usd=0.1, tool_calls=1)
    assert [e.kind for e in events] == ["run_start", "tool_result", "stop"]
    assert events[1].output_sha == "bbbbbbbbbbbbbbbbbbbbbbbb"
    assert events[1].concurrent_group is None  # schema 4 adds the column empty
    assert snap == (b'{"ok":true}', "dict", False)
    assert expires == [1780000000000 + 30 * DAY, 1780000000500 + 30 * DAY, 1780000000900 + 30 * DAY]
    assert {"runs_started", "runs_agent", "runs_stop_reason"} <= indexes
    assert len(key) == 32
    with Store(db_path) as again:  # migrated once: reopening applies nothing and keeps the key
        assert again.secret_key == key
        assert again.count_runs() == 1


# -- writing -------------------------------------------------------------------------------------


def test_batch_round_trips_runs_events_and_snapshots(store: Store) -> None:
    """What write_batch stores comes back equal from get_run, events and snapshot."""
    rid = new_run_id(T0)
    run = make_run(
        rid,
        input={"ticket": {"id": 7, "body": "héllo"}},
        output="done",
        input_sha="c" * 24,
        versions={"model": "m-2026-10", "prompt": "support-v3"},
        labels={"tenant": "acme"},
        ended_ms=T0 + 900,
        stop_reason="completed",
        usage=Usage(tokens_in=9, tokens_out=3, cost_usd=0.25),
        tool_calls=3,
        entrypoint="examples.support:handle",
    )
    events = run_events(rid, steps=3)
    store.write_batch(runs=[run], events=events, snapshots=[("d" * 24, b'{"x":1}', "dict", True)])

    got = store.get_run(rid)
    assert got == run.model_copy(update={"expires_at": T0 + 900 + 30 * DAY})
    assert store.events(rid) == events
    assert store.snapshot("d" * 24) == (b'{"x":1}', "dict", True)


def test_events_come_back_in_run_order_whatever_the_write_order(store: Store) -> None:
    """events() returns run_start, the steps by step_id, then stop, even when written shuffled over
    batches."""
    rid = new_run_id(T0)
    events = run_events(rid, steps=12)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    store.write_batch(events=shuffled[:7])
    store.write_batch(events=shuffled[7:])
    assert store.events(rid) == events


def test_nested_steps_keep_their_parent(store: Store) -> None:
    """A step recorded inside another tool keeps its parent_step_id."""
    rid = new_run_id(T0)
    inner = Event(
        run_id=rid,
        kind="tool_result",
        ts_ms=T0 + 2,
        step_id=2,
        tool="db.query",
        status="ok",
        parent_step_id=1,
    )
    store.write_batch(events=[inner])
    assert store.events(rid)[0].parent_step_id == 1


def test_run_start_and_stop_carrying_a_step_id_replace_no_step(store: Store) -> None:
    """A run_start or stop event that carries a step_id is stored beside that step, not over it."""
    rid = new_run_id(T0)
    step = Event(
        run_id=rid, kind="tool_result", ts_ms=T0 + 1, step_id=1, tool="http.get", status="ok"
    )
    start = Event(run_id=rid, kind="run_start", ts_ms=T0, step_id=1)
    stop = Event(run_id=rid, kind="stop", ts_ms=T0 + 2, step_id=1, stop_reason="completed")
    store.write_batch(events=[stop, step, start])
    assert store.events(rid) == [start, step, stop]


def test_later_run_write_replaces_the_fields(store: Store) -> None:
    """The run row written at stop replaces the one written at start."""
    rid = new_run_id(T0)
    store.write_batch(runs=[make_run(rid)])
    final = make_run(
        rid, ended_ms=T0 + 500, stop_reason="loop_detected", tool_calls=9, output={"ok": False}
    )
    store.write_batch(runs=[final])
    got = store.get_run(rid)
    assert (got.ended_ms, got.stop_reason, got.tool_calls, got.output) == (
        T0 + 500,
        "loop_detected",
        9,
        {"ok": False},
    )
    assert store.count_runs() == 1


def test_rewriting_the_same_events_does_not_duplicate_them(store: Store) -> None:
    """Writing a batch twice (a retry, a re-import) leaves one copy of each event."""
    rid = new_run_id(T0)
    events = run_events(rid, steps=4)
    store.write_batch(events=events)
    store.write_batch(events=events)
    assert store.events(rid) == events


def test_write_rows_fast_path_stores_the_same_events(store: Store) -> None:
    """Tuples in EVENT_COLUMNS order (usage as JSON text) store exactly what the Event objects
    would."""
    rid = new_run_id(T0)
    events = run_events(rid, steps=70)  # more than one multi-row statement plus a remainder
    rows = [
        tuple(
            e.usage.model_dump_json() if c == "usage" and e.usage else getattr(e, c)
            for c in EVENT_COLUMNS
        )
        for e in events
    ]
    store.write_rows(rows)
    assert store.events(rid) == events


def test_write_rows_rejects_a_row_of_the_wrong_length(store: Store) -> None:
    """A row with a missing value is refused before anything is written, naming the row and the
    column order."""
    rid = new_run_id(T0)
    good = (rid, "run_start", T0, None, None, None, None, None, None, None, None, None, None, None)
    bad = (rid, "tool_result", T0, 1, "http.get")
    with pytest.raises(
        ValueError, match=r"event row 1 has 5 values, expected 14 .*run_id, kind, ts_ms"
    ):
        store.write_rows([good, bad])
    assert store.events(rid) == []


def test_a_failing_batch_writes_nothing(store: Store) -> None:
    """A batch with one invalid event (a step without step_id) fails whole: no run, no event, no
    snapshot."""
    rid = new_run_id(T0)
    bad = (
        rid,
        "tool_result",
        T0 + 1,
        None,
        "http.get",
        None,
        None,
        None,
        "ok",
        None,
        None,
        None,
        None,
        None,
    )
    ok = (rid, "run_start", T0, None, None, None, None, None, None, None, None, None, None, None)
    with pytest.raises(StoreError, match="needs a step_id") as info:
        store.write_rows(
            [ok, bad], runs=[make_run(rid)], snapshots=[("e" * 24, b"{}", None, False)]
        )
    assert str(store.path) in str(info.value)
    assert store.count_runs() == 0
    assert store.events(rid) == []
    assert store.snapshot("e" * 24) is None


def test_snapshots_are_stored_once_per_sha(store: Store) -> None:
    """The same snapshot written by many events is one row; the first body is kept."""
    rid = new_run_id(T0)
    snap = ("f" * 24, b'{"answer":42}', "dict", False)
    store.write_batch(events=run_events(rid), snapshots=[snap, snap])
    store.write_batch(snapshots=[("f" * 24, b"other", "str", True)])
    assert store.query("SELECT count(*) FROM snapshots") == [(1,)]
    assert store.snapshot("f" * 24) == (b'{"answer":42}', "dict", False)
    assert store.snapshot("0" * 24) is None


def test_locked_database_raises_a_store_error_and_keeps_what_was_written(db_path: Path) -> None:
    """While another process holds the write lock past the busy timeout, a write fails with
    StoreError; earlier data stays."""
    with Store(db_path, timeout_s=0.05) as s:
        first = new_run_id(T0)
        s.write_batch(runs=[make_run(first)])
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError) as info:
                s.write_batch(runs=[make_run()])
        finally:
            other.execute("ROLLBACK")
            other.close()
        msg = str(info.value)
        assert str(db_path) in msg and "locked" in msg and "timeout_s" in msg
        assert [r.run_id for r in s.runs()] == [first]
        s.write_batch(
            runs=[make_run(started_ms=T0 + 1)]
        )  # the store works again once the lock is gone
        assert s.count_runs() == 2


def test_a_closed_store_raises_store_error(db_path: Path) -> None:
    """Using a closed store raises StoreError (the writer counts it as a drop), not a bare sqlite3
    error."""
    s = Store(db_path)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.write_batch(runs=[make_run()])


def test_every_model_field_has_a_column() -> None:
    """Each Run field has a runs column and EVENT_COLUMNS is the Event fields in order (else: add a
    migration)."""
    assert set(RUN_COLUMNS) == set(Run.model_fields)
    assert EVENT_COLUMNS == tuple(Event.model_fields)


def test_an_event_takes_at_most_250_bytes_on_disk(db_path: Path) -> None:
    """Realistic events (28-char run ids, 24-hex shas, runs of 20) cost at most 250 bytes each on
    disk."""
    rnd = random.Random(5)
    n = 6000
    with Store(db_path) as s:
        for b in range(0, n, 20 * 50):
            runs, rows = [], []
            for r in range(50):
                ts = T0 + (b + r) * 1000
                rid = new_run_id(ts)
                runs.append(make_run(rid, started_ms=ts, ended_ms=ts + 90, stop_reason="completed"))
                rows.append(make_event_row(run_id=rid, kind="run_start", ts_ms=ts))
                for step in range(1, 19):
                    rows.append(
                        make_event_row(
                            run_id=rid,
                            kind="tool_result",
                            ts_ms=ts + step,
                            step_id=step,
                            tool=rnd.choice(["http.get", "email.send"]),
                            args_sha=f"{rnd.getrandbits(96):024x}",
                            output_sha=f"{rnd.getrandbits(96):024x}",
                            duration_ms=rnd.randint(1, 900),
                            status="ok",
                        )
                    )
                rows.append(
                    make_event_row(
                        run_id=rid,
                        kind="stop",
                        ts_ms=ts + 20,
                        stop_reason="completed",
                        usage='{"tokens_in":100,"tokens_out":20,"cost_usd":0.01,"tool_calls":18}',
                    )
                )
            s.write_rows(rows, runs=runs)
        s.checkpoint()
        assert s.db.execute("SELECT count(*) FROM events").fetchone()[0] == n
        size = db_path.stat().st_size
    assert size / n <= 250


# -- reading -------------------------------------------------------------------------------------


def test_unknown_run_names_the_store_and_its_run_count(store: Store) -> None:
    """get_run of an unknown id says which store was searched and how many runs it holds."""
    store.write_batch(runs=[make_run(), make_run(started_ms=T0 + 1)])
    with pytest.raises(RunNotFoundError) as info:
        store.get_run("r_x")
    assert str(info.value) == (
        f"no run 'r_x' in {store.display_name} (2 runs; list them with `replay runs`)"
    )


def test_find_run_by_unique_prefix(store: Store) -> None:
    """find_run accepts a unique prefix, with or without r_; '_' in ids is not a wildcard."""
    ids = [
        "r_01aaa000000000000000000001",
        "r_01aaa000000000000000000002",
        "r_01abc000000000000000000000",
        "rx01abc00000000000000000000",
    ]
    store.write_batch(runs=[make_run(i, started_ms=T0 + n) for n, i in enumerate(ids)])
    assert store.find_run("r_01ab").run_id == ids[2]
    assert store.find_run("01ab").run_id == ids[2]
    assert store.find_run(ids[0]).run_id == ids[0]
    with pytest.raises(AmbiguousRunIdError) as info:
        store.find_run("r_01aaa")
    assert (
        ids[0] in str(info.value)
        and ids[1] in str(info.value)
        and "more characters" in str(info.value)
    )
    with pytest.raises(RunNotFoundError, match=f"no run 'r_02' in {re.escape(store.display_name)}"):
        store.find_run("r_02")


def test_runs_lists_newest_first_with_filters(store: Store) -> None:
    """runs() is newest first and filters by agent, stop reason, [since, until) and limit; replays
    only on request."""
    a1 = make_run(agent="support", started_ms=T0, stop_reason="completed")
    a2 = make_run(agent="support", started_ms=T0 + 10, stop_reason="loop_detected")
    b1 = make_run(agent="billing", started_ms=T0 + 20, stop_reason="completed")
    rep = make_run(
        agent="support", started_ms=T0 + 30, stop_reason="completed", replay_of=a1.run_id
    )
    store.write_batch(runs=[a1, a2, b1, rep])

    def ids(runs: list[Run]) -> list[str]:
        return [r.run_id for r in runs]

    assert ids(store.runs()) == [b1.run_id, a2.run_id, a1.run_id]
    assert ids(store.runs(include_replays=True)) == [rep.run_id, b1.run_id, a2.run_id, a1.run_id]
    assert ids(store.runs(agent="support")) == [a2.run_id, a1.run_id]
    assert ids(store.runs(stop_reason="completed")) == [b1.run_id, a1.run_id]
    assert ids(store.runs(since_ms=T0 + 10, until_ms=T0 + 20)) == [a2.run_id]
    assert ids(store.runs(limit=1)) == [b1.run_id]
    assert store.agents() == ["billing", "support"]
    assert store.count_runs() == 4


def test_step_events_returns_steps_of_runs_in_the_window(store: Store) -> None:
    """step_events() gives the tool and model steps of the runs started in [since, until), per
    agent, without replays."""
    early, inside, other_agent, late = (new_run_id(T0 + d) for d in (0, 100, 150, 200))
    replay = new_run_id(T0 + 120)
    store.write_batch(
        runs=[
            make_run(early, started_ms=T0),
            make_run(inside, started_ms=T0 + 100),
            make_run(other_agent, agent="billing", started_ms=T0 + 150),
            make_run(late, started_ms=T0 + 200),
            make_run(replay, started_ms=T0 + 120, replay_of=inside),
        ],
        events=[
            e
            for rid in (early, inside, other_agent, late, replay)
            for e in run_events(rid, steps=3)
        ],
    )
    got = store.step_events(since_ms=T0 + 100, until_ms=T0 + 200)
    assert [(e.run_id, e.step_id) for e in got] == [
        (inside, 1),
        (inside, 2),
        (inside, 3),
        (other_agent, 1),
        (other_agent, 2),
        (other_agent, 3),
    ]
    assert {e.kind for e in got} == {"tool_result", "model_result"}
    assert [e.error for e in got if e.status == "error"] == ["TimeoutError", "TimeoutError"]
    assert {e.run_id for e in store.step_events(agent="billing")} == {other_agent}


# ---- readable in Datasette / sqlite-utils: declared foreign key, views with ISO times ------------


def test_store_declares_the_events_foreign_key_and_iso_views(db_path: Path) -> None:
    """A new store declares events.run_id -> runs.run_id and its runs_view/events_view show ISO
    8601 UTC times."""
    import sqlite_utils

    with Store(db_path) as s:
        s.write_batch(
            runs=[
                Run(
                    run_id="r_01view000000000000000000000",
                    agent="a",
                    started_ms=1780000000000,
                    ended_ms=1780000000900,
                    stop_reason="completed",
                    tool_calls=1,
                    usage=Usage(tokens_in=5, tokens_out=2, cost_usd=0.1, tool_calls=1),
                )
            ],
            events=[
                Event(
                    run_id="r_01view000000000000000000000",
                    kind="tool_result",
                    ts_ms=1780000000500,
                    step_id=1,
                    tool="http.get",
                    status="ok",
                    duration_ms=12,
                )
            ],
            snapshots=[],
        )
    db = sqlite_utils.Database(db_path)
    fks = db["events"].foreign_keys
    assert [(fk.column, fk.other_table, fk.other_column) for fk in fks] == [
        ("run_id", "runs", "run_id")
    ]
    assert {"runs_view", "events_view"} <= set(db.view_names())
    run = next(db["runs_view"].rows)
    assert (run["started"], run["ended"], run["latency_ms"]) == (
        "2026-05-28T20:26:40.000Z",
        "2026-05-28T20:26:40.900Z",
        900,
    )
    assert (run["tokens_in"], run["tokens_out"], run["cost_usd"]) == (5, 2, 0.1)
    step = next(db.query("SELECT * FROM events_view WHERE kind = 'tool_result'"))
    assert (step["ts"], step["tool"], step["duration_ms"]) == (
        "2026-05-28T20:26:40.500Z",
        "http.get",
        12,
    )
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.close()


def test_an_old_store_gets_the_foreign_key_and_views_with_its_rows_and_indexes(
    db_path: Path,
) -> None:
    """Migrating a version-1 store rebuilds events with the foreign key, keeping every row, and
    adds the views."""
    import sqlite_utils

    conn = sqlite3.connect(db_path)
    conn.executescript(V1_SQL)
    conn.close()
    with Store(db_path) as s:
        events = s.events("r_01old0000000000000000000000")
    assert [e.kind for e in events] == ["run_start", "tool_result", "stop"]
    db = sqlite_utils.Database(db_path)
    assert [(fk.column, fk.other_table) for fk in db["events"].foreign_keys] == [("run_id", "runs")]
    assert "WITHOUT ROWID" in db["events"].schema and db["events"].pks == ["run_id", "seq"]
    assert "expires_at" in db["events"].columns_dict
    assert [r["ts"] for r in db.query("SELECT ts FROM events_view ORDER BY seq")] == [
        "2026-05-28T20:26:40.000Z",
        "2026-05-28T20:26:40.500Z",
        "2026-05-28T20:26:40.900Z",
    ]
    db.close()


def test_query_runs_one_portable_statement_on_either_backend(store: Store) -> None:
    """query() takes ? placeholders and a JSON number expression on both backends, and its
    aggregates come back as int and float alike."""
    from replay.store_api import json_number_sql

    rids = [new_run_id(T0 + i) for i in range(3)]
    for i, rid in enumerate(rids):
        store.write_batch(
            runs=[make_run(rid, started_ms=T0 + i, stop_reason="completed")],
            events=run_events(rid, steps=3, ts=T0 + i),
        )
    tokens = json_number_sql(store.dialect, "usage", "tokens_in")
    rows = store.query(
        f"SELECT kind, count(*), sum({tokens}), avg(duration_ms) FROM events "
        "WHERE kind IN (?, ?) GROUP BY kind ORDER BY kind",
        ["model_result", "tool_result"],
    )
    assert rows == [("model_result", 3, 360, 400.0), ("tool_result", 6, None, 12.0)]
    assert all(type(v) is int for v in (rows[0][1], rows[0][2]))


def test_query_refuses_to_write(store: Store) -> None:
    """query() is read-only: a statement that would change the store fails and changes nothing."""
    store.write_batch(runs=[make_run()])
    with pytest.raises(StoreError):
        store.query("DELETE FROM runs")
    assert store.count_runs() == 1


_KILL_DURING_CREATION = """
import os, signal, sys
import replay.store as store

real = store.migrate

def migrate_then_die(*args, **kwargs):
    if sys.argv[2] == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

store.migrate = migrate_then_die
store.Store(sys.argv[1])
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_while_creating_a_store_leaves_no_half_made_file(tmp_path: Path, when: str) -> None:
    """A process killed while it creates a store (before or after the schema is written) leaves
    nothing at the path, so the next open creates a working store instead of refusing an empty
    file."""
    import subprocess
    import sys

    db = tmp_path / "replay.db"
    env = {**os.environ, "REPLAY_REDACTION_KEY": "k" * 64}
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", _KILL_DURING_CREATION, str(db), when],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == -9, proc.stderr.decode()
        assert not db.exists()
    with Store(db) as store:
        run = make_run()
        store.write_batch(runs=[run], events=run_events(run.run_id))
        assert store.get_run(run.run_id).run_id == run.run_id
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_store_is_built_beside_the_path_and_linked_without_replacing(db_path: Path) -> None:
    """A new store appears at the path complete (schema and meta) in one step, and no temporary
    file is left beside it."""
    with Store(db_path) as store:
        rows = store.query(
            "SELECT value FROM meta WHERE key IN ('schema_version', 'key_fingerprint')"
        )
        assert sorted(str(v) for (v,) in rows) == sorted(
            [str(SCHEMA_VERSION), store.key_fingerprint]
        )
    leftovers = [p.name for p in db_path.parent.iterdir() if p.name.endswith(".new")]
    assert leftovers == []


def test_a_build_left_by_a_killed_process_is_removed_when_it_is_old(db_path: Path) -> None:
    """Creating a store deletes temporary builds of it that are over an hour old (a killed
    process's) and leaves a recent one (a build in progress) alone."""
    old = db_path.with_name(f".{db_path.name}.0123456789ab.new")
    recent = db_path.with_name(f".{db_path.name}.ba9876543210.new")
    for p in (old, recent):
        p.write_bytes(b"")
    two_hours_ago = os.stat(old).st_mtime - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    Store(db_path).close()
    assert not old.exists() and recent.exists()
