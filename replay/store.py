"""The SQLite store: runs, events and content-addressed snapshots, with retention.

One file, WAL, created with mode 0600. sqlite-utils builds and migrates the schema (see
`replay.migrations`) and serves the queries; the hot insert is a raw multi-row ``executemany`` on
the sqlite3 connection, because sqlite-utils' ``insert_all`` is about 4x slower.

Every sqlite3 failure leaves a public method as a `StoreError` naming the file, what failed and the
fix, so the background writer can count what it dropped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from sqlite_utils import Database

from replay.errors import StoreError
from replay.migrations import SCHEMA_VERSION, START_SEQ, STOP_SEQ, migrate, read_schema_version
from replay.models import Run
from replay.store_base import (
    DAY_MS,
    EVENT_COLUMNS,
    PRUNE_BATCH,
    RUN_COLUMNS,
    RUN_UPSERT_COMMON,
    RUN_WRITE_COLUMNS,
    TOTALS_CLEAR,
    EventRows,
    PruneResult,
    PruneTimer,
    SnapshotRow,
    StoreBase,
    prune_plan,
    run_rows_with_totals,
    untotalled_ids,
)
from replay.store_base import now_ms as current_ms

__all__ = [
    "EVENT_COLUMNS",
    "PRUNE_BATCH",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "PruneResult",
    "SnapshotRow",
    "Store",
]

_NCOL = len(EVENT_COLUMNS)
_ROWS_PER_STATEMENT = 32  # multi-row VALUES: ~1.4x fewer per-row costs than one row per statement

# sqlite3 binds None by failing an adapter lookup (~0.6 us per NULL on CPython 3.11) and an event
# row has several NULLs. A registered identity adapter takes the fast path; behaviour is unchanged.
if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
    sqlite3.register_adapter(type(None), {}.get)  # type: ignore[arg-type]  # {}.get(x) is None: a C-speed adapter


def _hint(err: sqlite3.Error, store: Store) -> str:
    msg = str(err).lower()
    if "not a database" in msg or "malformed" in msg:
        return (
            "the file is not an SQLite database or is damaged: point --db / REPLAY_DB at a replay "
            "store, or move the file away to start a new one"
        )
    if "locked" in msg or "busy" in msg:
        return (
            f"another process held the database longer than the busy timeout ({store.timeout_s:g} "
            f"s): "
            "retry, or pass a longer Recorder(timeout_s=...) / Store(timeout_s=...)"
        )
    if "readonly" in msg or "read-only" in msg:
        return "make the file, its -wal/-shm files and its folder writable, or choose another --db"
    if "full" in msg:
        return "free disk space, or delete old records with `replay prune`"
    if "unable to open" in msg:
        return "check that the folder exists and is writable, or choose another --db"
    if "i/o" in msg:
        return "the disk failed a read or write: check the filesystem, then retry"
    if "events.seq" in msg:
        return (
            "every tool_result and model_result event needs a step_id (run_start and stop may "
            "have none)"
        )
    if "closed" in msg:
        return "open a new Store"
    return "see the SQLite error above"


class Store(StoreBase):
    """A replay store in one SQLite file.

    Args:
        path: the database file; created with mode 0600 when missing. ``":memory:"`` for a
            throwaway store.
        snapshot_days: snapshots expire this many days after they were last written.
        event_days: events expire this many days after their ``ts_ms``; a run row expires with them.
        timeout_s: how long to wait for another process's write lock before failing.

    Raises:
        SchemaVersionError: the file was written by a newer agent-replay (nothing in it is changed).
        StoreError: the file is not SQLite, is another application's database, is locked, or
            cannot be created.
    """

    path: pathlib.Path
    #: the pseudonym key in use: ``$REPLAY_REDACTION_KEY``, else the key file (never in the file)
    secret_key: bytes
    #: where `secret_key` came from: ``"env"``, ``"file"`` (``<path>.key``) or ``"memory"``
    key_source: str
    #: `replay.keys.fingerprint` of `secret_key`
    key_fingerprint: str
    #: the fingerprint the store was first written with (``meta.key_fingerprint``)
    stored_fingerprint: str | None
    db: Database
    dialect = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        snapshot_days: float = 14,
        event_days: float = 30,
        timeout_s: float = 5.0,
    ) -> None:
        for name, days in (("snapshot_days", snapshot_days), ("event_days", event_days)):
            if days < 0:
                raise ValueError(f"{name}={days!r}: retention must be 0 days or more")
        self.path = pathlib.Path(path)
        self.snapshot_days, self.event_days, self.timeout_s = snapshot_days, event_days, timeout_s
        self._event_ms = int(event_days * DAY_MS)
        self._snapshot_ms = int(snapshot_days * DAY_MS)
        self._lock = threading.RLock()
        memory = str(path) == ":memory:"
        created = False if memory else self._create_private_file()
        try:
            conn = sqlite3.connect(
                ":memory:" if memory else str(self.path),
                timeout=timeout_s,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
                check_same_thread=False,  # the writer thread and the caller share the store
            )
        except sqlite3.Error as e:
            raise StoreError(
                f"cannot open {self.path}: {e}; {_hint(e, self)}", path=str(self.path)
            ) from e
        self._conn = conn
        try:
            self.db = Database(conn, execute_plugins=False)
            self.secret_key = self._open(memory)
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(
                f"cannot open {self.path}: {e}; {_hint(e, self)}", path=str(self.path)
            ) from e
        except BaseException:
            conn.close()
            raise
        if created:
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.chmod(f"{self.path}{suffix}", 0o600)
        self._insert_sql = self._build_insert_sql()

    # -- opening ---------------------------------------------------------------------------------

    def _create_private_file(self) -> bool:
        """Create the store at the path atomically, 0600; True if this call created it.

        The new store (schema, meta, key fingerprint) is built in a temporary file in the same
        folder, then hard-linked into place: a crash never leaves a half-made store (an empty file
        the next open refuses) at the path, and of two first opens the loser opens the winner's
        store. A symlink (dangling or not) at the path is refused, never followed, and so is an
        existing file that is not an SQLite database (SQLite would silently turn an empty file
        into one).
        """
        self._refuse_link(" (it could point anywhere); ")
        if self.path.is_dir():
            raise StoreError(
                f"{self.path} is a folder, not a database file: pass a file path such as "
                f"{self.path / 'replay.db'}",
                path=str(self.path),
            )
        if os.path.lexists(self.path):
            self._check_existing()
            return False
        _remove_stale_builds(self.path)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.new")
        _private_file(tmp, self.path)
        try:
            self._build_schema(tmp)
            try:
                os.link(tmp, self.path)  # never replaces: link(2) fails on any existing name
            except FileExistsError:
                self._check_existing()  # another process won the race: open its store
                return False
            except OSError as e:
                raise StoreError(
                    f"cannot create {self.path}: {e.strerror}; make the folder writable (and "
                    "on a file system with hard links) or choose another --db / REPLAY_DB",
                    path=str(self.path),
                ) from e
            return True
        finally:
            for leftover in (tmp, pathlib.Path(f"{tmp}-journal")):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _build_schema(self, tmp: pathlib.Path) -> None:
        """Write a new store's schema and key fingerprint into the (private, empty) file `tmp`."""
        conn = sqlite3.connect(str(tmp), timeout=self.timeout_s, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            migrate(
                Database(conn, execute_plugins=False),
                self.path,
                event_ms=self._event_ms,
                snapshot_ms=self._snapshot_ms,
            )
            self._resolve_key(False)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('key_fingerprint', ?)",
                (self.key_fingerprint,),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(
                f"cannot create {self.path}: {e}; make the folder writable or choose another "
                "--db / REPLAY_DB",
                path=str(self.path),
            ) from e
        finally:
            conn.close()

    def _refuse_link(self, why: str) -> None:
        """Refuse a symbolic link at the path (`why` joins the two halves of the message)."""
        if self.path.is_symlink():
            raise StoreError(
                f"{self.path} is a symbolic link: agent-replay does not open a store through a "
                f"link{why}pass the real file's path with --db / REPLAY_DB",
                path=str(self.path),
            )

    def _check_existing(self) -> None:
        """Refuse an existing path that is a link or a file without the SQLite header."""
        self._refuse_link("; ")
        deadline = time.monotonic() + 0.5
        while True:
            try:
                with open(self.path, "rb") as fh:
                    head = fh.read(16)
            except OSError:
                return  # unreadable: sqlite3 reports it with its own hint
            if head == b"SQLite format 3\x00":
                return
            # Another process may have just created it and not yet written the header.
            if head or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        what = "an empty file" if not head else "not an SQLite database"
        raise StoreError(
            f"{self.path} is {what}: agent-replay does not turn another file into a store; "
            "point --db / REPLAY_DB at a replay store, or move the file away to start a new one",
            path=str(self.path),
        )

    def _open(self, memory: bool) -> bytes:
        """Migrate if needed; return the pseudonym key (see `replay.keys`), never kept in the
        file."""
        conn = self._conn
        # Read the version before anything writes: a newer file is refused untouched.
        version = read_schema_version(conn, self.path)
        if not memory:
            self.db.enable_wal()
        conn.execute("PRAGMA synchronous = NORMAL")
        if version == SCHEMA_VERSION:
            key = self._resolve_key(memory)
            self.stored_fingerprint = self._read_fingerprint()
            return key
        conn.execute("BEGIN IMMEDIATE")  # serialises processes creating or migrating the same file
        try:
            migrate(self.db, self.path, event_ms=self._event_ms, snapshot_ms=self._snapshot_ms)
            key = self._resolve_key(memory)
            self.stored_fingerprint = self._read_fingerprint()
            if self.stored_fingerprint is None:
                self.stored_fingerprint = self.key_fingerprint
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('key_fingerprint', ?)",
                    (self.key_fingerprint,),
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if 0 < version < 4 and not memory:
            # The old key's bytes may linger in WAL frames: fold them into the (zeroed) main file.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return key

    def _resolve_key(self, memory: bool) -> bytes:
        """``$REPLAY_REDACTION_KEY``, else the key file beside the store (created 0600 when
        missing)."""
        from replay.keys import env_key, fingerprint, key_file_path, load_or_create_key_file

        try:
            key = env_key()
        except ValueError as e:
            raise StoreError(str(e), path=str(self.path)) from None
        if key is not None:
            self.key_source = "env"
        elif memory:
            key, self.key_source = secrets.token_bytes(32), "memory"
        else:
            key, self.key_source = load_or_create_key_file(key_file_path(self.path)), "file"
        self.key_fingerprint = fingerprint(key)
        return key

    def _read_fingerprint(self) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchone()
        return None if row is None else str(row[0])

    def _build_insert_sql(self) -> tuple[str, str]:
        def values(j: int) -> str:
            p = [f"?{j * _NCOL + i + 1}" for i in range(_NCOL)]
            run_id, kind, ts, step = p[0], p[1], p[2], p[3]
            seq = (
                f"CASE {kind} WHEN 'run_start' THEN {START_SEQ} WHEN 'stop' THEN {STOP_SEQ} ELSE "
                f"{step} END"
            )
            return f"({run_id}, {seq}, {', '.join(p[1:])}, {ts} + {self._event_ms})"

        head = (
            "INSERT OR REPLACE INTO events (run_id, seq, "
            + ", ".join(EVENT_COLUMNS[1:])
            + ", expires_at) VALUES "
        )
        many = head + ", ".join(values(j) for j in range(_ROWS_PER_STATEMENT))
        return head + values(0), many

    # -- plumbing --------------------------------------------------------------------------------

    def _error(self, action: str, err: sqlite3.Error) -> StoreError:
        return StoreError(
            f"{action} failed on {self.path}: {err}; {_hint(err, self)}", path=str(self.path)
        )

    @property
    def display_name(self) -> str:
        """The file's name, for messages."""
        return self.path.name

    @property
    def location(self) -> str:
        """The file's path, for messages."""
        return str(self.path)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only SQL statement with ``?`` placeholders (portable to PostgreSQL).

        The connection refuses writes while it runs (``PRAGMA query_only``).

        Raises:
            StoreError: the statement failed or tried to write.
        """
        with self._reading("running a query") as conn:
            conn.execute("PRAGMA query_only = ON")
            try:
                return [tuple(r) for r in conn.execute(sql, tuple(params)).fetchall()]
            finally:
                conn.execute("PRAGMA query_only = OFF")

    @contextlib.contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise self._error(action, e) from e

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back whole on any error."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise self._error(action, e) from e

    # -- writing ---------------------------------------------------------------------------------

    def write_rows(
        self, events: EventRows, *, runs: Sequence[Run] = (), snapshots: Sequence[SnapshotRow] = ()
    ) -> None:
        if not (events or runs or snapshots):
            return
        if events and set(map(len, events)) != {_NCOL}:
            i, bad = next((i, r) for i, r in enumerate(events) if len(r) != _NCOL)
            raise ValueError(
                f"event row {i} has {len(bad)} values, expected {_NCOL} in the order of "
                f"EVENT_COLUMNS ({', '.join(EVENT_COLUMNS)}): {bad!r}"
            )
        expires = current_ms() + self._snapshot_ms
        snap_rows = [
            (
                sha,
                body.encode() if isinstance(body, str) else body,
                type_name,
                int(bool(trunc)),
                expires,
            )
            for sha, body, type_name, trunc in snapshots
        ]
        one, many = self._insert_sql
        m = _ROWS_PER_STATEMENT
        full = len(events) - len(events) % m
        with self._writing("writing a batch") as conn:
            if full:
                chain = itertools.chain.from_iterable
                conn.executemany(many, (tuple(chain(events[i : i + m])) for i in range(0, full, m)))
            if full < len(events):
                conn.executemany(one, events[full:])
            # After the events: each run row carries the totals of all the events stored now.
            if runs:
                conn.executemany(_UPSERT_RUN, run_rows_with_totals(conn, runs, self._event_ms))
            if events:
                _clear_totals(conn, untotalled_ids(events, runs))
            if snap_rows:
                conn.executemany(_UPSERT_SNAPSHOT, snap_rows)

    def _touch(self, now: int, run_ids: Sequence[str]) -> None:
        with self._writing("updating run heartbeats") as conn:
            conn.executemany(
                "UPDATE runs SET last_seen_ms = max(coalesce(last_seen_ms, 0), ?) WHERE run_id = "
                "? AND stop_reason IS NULL",
                [(now, r) for r in run_ids],
            )

    # -- retention -------------------------------------------------------------------------------

    @property
    def _prune_plan(self) -> tuple[tuple[str, str, str], ...]:
        return _PRUNE

    def _retention_writing(
        self, action: str
    ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._writing(action)

    def _prune_events(self, p: dict[str, int], pause_s: float, timer: PruneTimer) -> int:
        """Expired events, a page of keys at a time, deleted by key (re-checked) under the lock.

        No expiry index on events (it would cost ~50 bytes and ~15% ingest per event): a page of
        expired keys is found in primary-key order without the write lock (WAL readers do not
        block writers), then exactly those are deleted, re-checked, under it.
        """
        last: tuple[Any, Any] = ("", START_SEQ - 1)
        total = 0
        while True:
            with self._reading("finding expired events") as conn:
                keys = conn.execute(_EVENTS_PAGE, {**p, "r": last[0], "s": last[1]}).fetchall()
            if not keys:
                return total
            last = keys[-1]
            with timer.batch(), self._writing("pruning") as conn:
                total += _delete_events(conn, keys, p["now"])
                _clear_totals(conn, sorted({k[0] for k in keys}))  # their figures changed
            if len(keys) < p["n"]:
                return total
            if pause_s > 0:
                time.sleep(pause_s)

    # -- lifecycle -------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it (e.g. before copying the file)."""
        with self._reading("checkpointing") as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the connection; the last connection to close also folds the WAL into the file."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __repr__(self) -> str:
        return f"<Store {str(self.path)!r} schema {SCHEMA_VERSION}>"


# -- SQL and row conversion ----------------------------------------------------------------------


_UPSERT_RUN = (
    f"INSERT INTO runs ({', '.join(RUN_WRITE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(RUN_WRITE_COLUMNS))}) "
    "ON CONFLICT (run_id) DO UPDATE SET "
    + RUN_UPSERT_COMMON
    # A heartbeat may have moved last_seen_ms past what a late (spooled) write of the run carries.
    + ", last_seen_ms = CASE WHEN runs.last_seen_ms IS NULL THEN excluded.last_seen_ms"
    + " WHEN excluded.last_seen_ms IS NULL THEN runs.last_seen_ms"
    + " ELSE max(runs.last_seen_ms, excluded.last_seen_ms) END"
    # Pinning is the user's decision (`replay pin`): the recorder's later write must not undo it.
    + ", pinned = max(runs.pinned, excluded.pinned)"
    + ", expires_at = CASE WHEN runs.pinned OR excluded.pinned THEN NULL"
    + " ELSE excluded.expires_at END"
)

_UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (sha, body, type_name, truncated, expires_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (sha) DO UPDATE SET expires_at = max(snapshots.expires_at, excluded.expires_at)"
)

_PINNED = "SELECT run_id FROM runs WHERE pinned"
# `expires_at <= :now` leads every condition so SQLite searches the expiry index.
_PRUNE = prune_plan("pinned", "NOT pinned", "rowid", "rowid")
# Events are paged by primary key (keyset pagination: each page starts where the last ended, so
# one prune reads the table once) and deleted one key at a time with the condition re-checked.
_EVENTS_PAGE = (
    f"SELECT run_id, seq FROM events WHERE (run_id, seq) > (:r, :s) AND {_PRUNE[1][2]} "
    "ORDER BY run_id, seq LIMIT :n"
)
# The keys travel as one JSON array: a VALUES list or an OR chain makes SQLite scan the table,
# and one statement per key costs ~4x more. json_each is built into SQLite since 3.38 (and into
# CPython's own builds long before); without it, the per-key statement is used.
_EVENTS_DELETE = (
    "DELETE FROM events WHERE (run_id, seq) IN "
    "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1)) "
    f"AND expires_at <= ?2 AND run_id NOT IN ({_PINNED})"
)
_EVENT_DELETE_ONE = (
    f"DELETE FROM events WHERE run_id = ?1 AND seq = ?2 AND expires_at <= ?3 AND run_id NOT IN "
    f"({_PINNED})"
)


#: A temporary store older than this was left by a process that died while building it.
STALE_BUILD_S = 3600.0


def _remove_stale_builds(store: pathlib.Path) -> None:
    """Delete the temporary files of builds of `store` that a killed process left behind (regular
    files older than `STALE_BUILD_S`; a build in progress is seconds old)."""
    import glob

    cutoff = time.time() - STALE_BUILD_S
    pattern = f".{glob.escape(store.name)}.*.new"
    for tmp in store.parent.glob(pattern):
        for leftover in (tmp, pathlib.Path(f"{tmp}-journal")):
            with contextlib.suppress(OSError):
                st = leftover.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    leftover.unlink()


def _private_file(tmp: pathlib.Path, store: pathlib.Path) -> None:
    """Create `tmp` empty and 0600, exclusively and never through a symlink."""
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
    except FileNotFoundError:
        raise StoreError(
            f"cannot create {store}: the folder {store.parent} does not exist; "
            "create it first or choose another --db / REPLAY_DB",
            path=str(store),
        ) from None
    except OSError as e:
        raise StoreError(
            f"cannot create {store}: {e.strerror}; make the folder writable or choose "
            "another --db / REPLAY_DB",
            path=str(store),
        ) from e
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # a restrictive umask could have left it 0400
    finally:
        os.close(fd)


def _clear_totals(conn: sqlite3.Connection, run_ids: Sequence[str]) -> None:
    """Empty the step totals of these runs (`TOTALS_CLEAR`)."""
    for i in range(0, len(run_ids), 500):
        chunk = run_ids[i : i + 500]
        conn.execute(TOTALS_CLEAR.format(marks=", ".join("?" * len(chunk))), chunk)


def _delete_events(conn: sqlite3.Connection, keys: list[tuple[Any, Any]], now: int) -> int:
    """Delete these (run_id, seq) events if each is still expired and not pinned; returns how
    many."""
    try:
        return int(
            conn.execute(
                _EVENTS_DELETE, (orjson.dumps([list(k) for k in keys]).decode(), now)
            ).rowcount
        )
    except sqlite3.OperationalError as exc:
        if "json_each" not in str(exc) and "json_extract" not in str(exc):
            raise
    before = conn.total_changes
    conn.executemany(_EVENT_DELETE_ONE, [(r, q, now) for r, q in keys])
    return conn.total_changes - before
