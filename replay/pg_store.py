"""The PostgreSQL store: one server that every worker on every host writes to and everyone reads.

The same tables and columns as the SQLite store (`replay.migrations.PG_STEPS`, the same
``schema_version``), read by the same queries (`replay.store_base.StoreBase`). What differs:

- Ingest: a batch is copied (``COPY``) into session-private staging tables and merged with one
  ``INSERT ... SELECT ... ON CONFLICT`` per table, in key order, in one transaction. Events are
  keyed by (run_id, seq), so a batch written twice (a retry after a lost connection, a spool
  ingested again) leaves one copy of each event; a deadlock between hosts merging the same
  snapshots is retried.
- Events' shas are BYTEA (schema 10, `sha_bytes`): converted when written, and back to text by
  the connection's row factory when a column named ``args_sha``/``output_sha`` is read, so the
  shared queries and `query` callers see the text the SQLite store holds.
- A run row carries its step totals (`replay.queries.TOTAL_COLUMNS`), read back from the events
  in the batch's transaction, as on SQLite (`replay.store_base.run_rows_with_totals`).
- The connection is re-opened on the next call after the server went away (restart, network): the
  background writer spools what failed meanwhile and writes it here when the server is back.
- The pseudonym key never lives in the store and there is no folder beside a server: it comes from
  ``$REPLAY_REDACTION_KEY`` or a key file the team names (`replay.keys.server_store_key`).
- Retention deletes in short transactions through the expiry indexes (runs, snapshots) and by
  primary-key pages (events), so recording goes on while `prune` runs.

Every psycopg failure leaves a public method as a `StoreError` naming the server (never its
password), what failed and the fix.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from replay.errors import SchemaVersionError, StoreError
from replay.keys import fingerprint, server_store_key
from replay.migrations import PG_STEPS, SCHEMA_VERSION, START_SEQ, STEPS, STOP_SEQ
from replay.models import Run
from replay.store_base import (
    DAY_MS,
    EVENT_COLUMNS,
    RUN_UPSERT_COMMON,
    RUN_WRITE_COLUMNS,
    TOTALS_CLEAR,
    EventRows,
    PruneTimer,
    SnapshotRow,
    StoreBase,
    now_ms,
    prune_plan,
    rare_columns,
    run_rows_with_totals,
    untotalled_ids,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["PgStore", "qmark_to_pyformat", "redact_url", "sha_bytes", "sha_text"]

_NCOL = len(EVENT_COLUMNS)
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# pg_advisory_xact_lock key serialising processes that create or migrate the same database.
_MIGRATION_LOCK = 0x6167_656E_7472_7031  # "agentrp1"
_EVENT_TABLE_COLUMNS = ("run_id", "seq", *EVENT_COLUMNS[1:], "expires_at")
_SNAPSHOT_COLUMNS = ("sha", "body", "type_name", "truncated", "expires_at")
_DEADLOCK_RETRIES = 3


def redact_url(url: str) -> str:
    """`url` without its password (in the netloc or as a ``password=`` parameter), for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            if ":" in user:
                user = user.split(":", 1)[0] + ":***"
            netloc = f"{user}@{host}"
        query = urllib.parse.urlencode(
            [
                (k, "***" if k.lower() in ("password", "sslpassword") else v)
                for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            ]
        )
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "postgresql://(unparsable URL)"


@functools.lru_cache(maxsize=512)
def qmark_to_pyformat(sql: str) -> str:
    """SQL with ``?`` placeholders (SQLite's) as psycopg's ``%s`` ones.

    A ``?`` inside a quoted string or identifier stays; every ``%`` is doubled (psycopg reads it as
    the start of a placeholder). ``?`` followed by a digit (SQLite's ``?1``) is refused: portable
    SQL uses plain ``?`` in the order of its parameters.

    Raises:
        ValueError: numbered ``?N`` placeholders.
    """
    out: list[str] = []
    quote = ""
    for i, ch in enumerate(sql):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            if sql[i + 1 : i + 2].isdigit():
                raise ValueError(
                    "numbered placeholders (?1, ?2) are SQLite's own: use plain ? in the order of "
                    "the parameters so the query runs on PostgreSQL too"
                )
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


def _plain(value: Any) -> Any:
    """PostgreSQL's numeric results (sum, avg) as the int or float SQLite returns."""
    if isinstance(value, decimal.Decimal):
        if value == value.to_integral_value() and value.as_tuple().exponent == 0:
            return int(value)
        return float(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _hint(err: BaseException) -> str:
    msg = str(err).lower()
    if "password authentication" in msg or "no password supplied" in msg:
        return "check the user and password in the URL (or PGPASSWORD / ~/.pgpass)"
    if "does not exist" in msg and "database" in msg:
        return "create the database first (createdb NAME), or point the URL at an existing one"
    if "permission denied" in msg:
        return "grant the user CREATE on the database (or run the first open as its owner)"
    if "connection" in msg or "server" in msg or "timeout" in msg or "terminat" in msg:
        return (
            "the server is unreachable or went away: start it or check the host and port in the "
            "URL; a recorder spools what it could not write and writes it when the server is back"
        )
    if "deadlock" in msg:
        return "another process wrote the same rows at the same moment: retry"
    if 'null value in column "seq"' in msg or "step_id" in msg:
        return (
            "every tool_result and model_result event needs a step_id (run_start and stop may "
            "have none)"
        )
    if "closed" in msg:
        return "open a new store"
    return "see the PostgreSQL error above"


def named_to_pyformat(sql: str) -> str:
    """The store's own SQL with SQLite's ``:name`` placeholders as psycopg's ``%(name)s`` ones.

    Every ``%`` is doubled; ``::type`` casts stay. Only for the stores' own statements: quoted
    text is not skipped.
    """
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


class _QmarkConnection:
    """A psycopg connection that takes SQLite's ``?`` (a sequence) or ``:name`` (a dict) marks."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = (), /) -> Any:
        if isinstance(params, dict):
            return self._conn.execute(named_to_pyformat(sql), params)
        return self._conn.execute(qmark_to_pyformat(sql), tuple(params))


class PgStore(StoreBase):
    """A replay store in a PostgreSQL database, for many recording processes on many hosts.

    Args:
        url: ``postgresql://user:password@host:port/dbname`` (libpq's URL form; its parameters,
            such as ``sslmode``, pass through). The database must exist; the tables are created on
            first open (the user needs CREATE on it then).
        snapshot_days, event_days: retention, as for the SQLite store.
        timeout_s: how long to wait for the server to accept a connection.
        key_file: the pseudonym key's file when ``$REPLAY_REDACTION_KEY`` is not set (default
            ``$REPLAY_REDACTION_KEY_FILE``); see `replay.keys.server_store_key`.

    Raises:
        SchemaVersionError: the database was written by a newer agent-replay (left untouched).
        StoreError: psycopg is not installed, the server is unreachable, the login fails, the
            database holds other tables named like ours, or no key is configured.
    """

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        snapshot_days: float = 14,
        event_days: float = 30,
        timeout_s: float = 5.0,
        key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        for name, days in (("snapshot_days", snapshot_days), ("event_days", event_days)):
            if days < 0:
                raise ValueError(f"{name}={days!r}: retention must be 0 days or more")
        self.url = url
        self._safe_url = redact_url(url)
        self.snapshot_days, self.event_days, self.timeout_s = snapshot_days, event_days, timeout_s
        self._event_ms = int(event_days * DAY_MS)
        self._snapshot_ms = int(snapshot_days * DAY_MS)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._key_file = key_file
        self._key: tuple[bytes, str] | None = None
        self.stored_fingerprint: str | None = None
        with self._lock:
            self._connection()

    # -- the key ---------------------------------------------------------------------------------

    @property
    def secret_key(self) -> bytes:
        """The pseudonym key (`replay.keys.server_store_key`), resolved when first needed: reading
        runs needs none, so `replay runs` works on a host that does not hold the key.

        Raises:
            StoreError: no key is configured.
        """
        if self._key is None:
            self._key = server_store_key(self._safe_url, self._key_file)
        return self._key[0]

    @property
    def key_source(self) -> str:
        """``"env"`` or ``"file"``."""
        self.secret_key  # noqa: B018 - resolves the key
        assert self._key is not None
        return self._key[1]

    @property
    def key_fingerprint(self) -> str:
        """`replay.keys.fingerprint` of `secret_key`."""
        return fingerprint(self.secret_key)

    def _record_fingerprint(self, conn: psycopg.Connection[Any]) -> None:
        """Keep the first writer's key fingerprint in meta (the store never holds the key)."""
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('key_fingerprint', %s) "
            "ON CONFLICT (key) DO NOTHING",
            (self.key_fingerprint,),
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchone()
        self.stored_fingerprint = None if row is None else str(row[0])

    # -- naming ----------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The URL without its password (what messages and `Recording.source` show)."""
        return self._safe_url

    @property
    def display_name(self) -> str:
        """The URL without its password, for messages."""
        return self._safe_url

    @property
    def location(self) -> str:
        """The URL without its password, for messages."""
        return self._safe_url

    def __repr__(self) -> str:
        return f"<PgStore {self._safe_url!r} schema {SCHEMA_VERSION}>"

    def __enter__(self) -> PgStore:
        return self

    # -- connecting ------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection; a new one (checked and migrated) after the last one broke."""
        if self._closed:
            raise StoreError(
                f"{self._safe_url}: this store was closed: open a new one", path=self._safe_url
            )
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._conn = None
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "a postgresql:// store needs psycopg 3: pip install 'agent-replay[postgres]'",
                path=self._safe_url,
            ) from None
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, round(self.timeout_s)),
                row_factory=_sha_text_rows,
            )
        except psycopg.Error as e:
            raise StoreError(
                f"unable to open {self._safe_url}: {_first_line(e)}; {_hint(e)}",
                path=self._safe_url,
            ) from None
        try:
            self._migrate(conn)
            self._stage(conn)
        except psycopg.Error as e:
            conn.close()
            raise self._error("opening the store", e) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        """Bring the schema to `SCHEMA_VERSION` (one transaction, one process at a time)."""
        version = self._version(conn)
        if version < SCHEMA_VERSION:
            # A session lock taken before the transaction: the transaction's start then reads
            # the catalog as the process that migrated before us left it (a lock taken inside it
            # would leave this connection's cached view of the catalog from before).
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                self._apply_steps(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        row = conn.execute("SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchone()
        self.stored_fingerprint = None if row is None else str(row[0])

    def _apply_steps(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            version = self._version(conn)  # another process may have migrated meanwhile
            for n, name in enumerate(STEPS[version:], version + 1):
                steps = PG_STEPS.get(name)
                if steps is None:
                    raise StoreError(
                        f"schema step {name} has no PostgreSQL form in replay.migrations."
                        "PG_STEPS: this agent-replay cannot migrate a PostgreSQL store",
                        path=self._safe_url,
                    )
                for stmt in steps:
                    conn.execute(stmt)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(n),),
                )

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            "SELECT to_regclass('meta') IS NOT NULL, to_regclass('runs') IS NOT NULL"
        ).fetchone()
        assert row is not None
        if not row[0]:
            if row[1]:
                raise StoreError(
                    f"{self._safe_url} has a runs table but no agent-replay meta table: it is "
                    "another application's database; point the URL at a database of its own",
                    path=self._safe_url,
                )
            return 0
        got = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            found = 0 if got is None else int(got[0])
        except (TypeError, ValueError):
            raise StoreError(
                f"{self._safe_url} has an unreadable schema_version in its meta table: restore "
                "the database from a backup or use a new one",
                path=self._safe_url,
            ) from None
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(self._safe_url, found, SCHEMA_VERSION)
        return found

    @staticmethod
    def _stage(conn: psycopg.Connection[Any]) -> None:
        """Session-private staging tables that COPY fills and each batch's commit empties."""
        for table in ("runs", "events", "snapshots"):
            conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} "
                f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )

    # -- plumbing --------------------------------------------------------------------------------

    def _error(self, action: str, err: BaseException) -> StoreError:
        return StoreError(
            f"{action} failed on {self._safe_url}: {_first_line(err)}; {_hint(err)}",
            path=self._safe_url,
        )

    @contextlib.contextmanager
    def _session(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """The connection under the lock; a driver error leaves as `StoreError`, and a connection
        that broke is dropped so that the next call opens a new one."""
        import psycopg

        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except (psycopg.Error, UnicodeEncodeError) as e:
                if conn.broken or conn.closed:
                    self._conn = None
                    with contextlib.suppress(Exception):
                        conn.close()
                raise self._error(action, e) from e

    _OUTPUT_SNAPSHOT = "s.sha = replay_sha_text(e.output_sha)"
    _REPLAY_RARE = rare_columns("json_build_array({})::text")

    @contextlib.contextmanager
    def _reading(self, action: str) -> Iterator[_QmarkConnection]:
        with self._session(action) as conn:
            yield _QmarkConnection(conn)

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """One write transaction; rolled back whole on any error."""
        with self._session(action) as conn, conn.transaction():
            yield conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only SQL statement with ``?`` placeholders (the SQLite store's form).

        It runs in a READ ONLY transaction; numeric aggregates come back as int or float, as
        SQLite returns them. Random page reads are costed as on SSD storage (1.1 against the
        default 4): a run's events lie together in key order, so a window of a quarter of the runs
        reads its events through the primary key (measured 0.27 s against 0.41 s by scanning all
        2M events at 100,000 runs) while a window of all runs still scans.

        Raises:
            StoreError: the statement failed or tried to write.
            ValueError: the SQL uses numbered placeholders (``?1``).
        """
        text = qmark_to_pyformat(sql)
        with self._writing("running a query") as conn:
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SET LOCAL random_page_cost = 1.1")
            rows = conn.execute(text, tuple(params)).fetchall()
        return [tuple(_plain(v) for v in r) for r in rows]

    # -- writing ---------------------------------------------------------------------------------

    def write_rows(
        self, events: EventRows, *, runs: Sequence[Run] = (), snapshots: Sequence[SnapshotRow] = ()
    ) -> None:
        if not (events or runs or snapshots):
            return
        try:
            ev_rows = self._event_rows(events)
        except UnicodeEncodeError as e:  # a lone surrogate in a sha (the server would refuse it)
            raise self._error("writing a batch", e) from None
        expires = now_ms() + self._snapshot_ms
        snap_rows = sorted(
            {
                sha: (
                    sha,
                    body.encode() if isinstance(body, str) else bytes(body),
                    type_name,
                    int(bool(trunc)),
                    expires,
                )
                for sha, body, type_name, trunc in snapshots
            }.items()
        )
        cleared = untotalled_ids(events, runs)
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                with self._writing("writing a batch") as conn:
                    if self.stored_fingerprint is None:
                        self._record_fingerprint(conn)
                    # Events first: each run row then carries the totals of all its events.
                    _merge_rows(conn, "events", _EVENT_TABLE_COLUMNS, ev_rows, _UPSERT_EVENT)
                    if runs:
                        rows = run_rows_with_totals(conn, runs, self._event_ms, "%s")
                        rows = [r for _, r in sorted({r[0]: r for r in rows}.items())]
                        _merge_rows(conn, "runs", RUN_WRITE_COLUMNS, rows, _UPSERT_RUN)
                    if cleared:
                        conn.execute(_TOTALS_CLEAR, (cleared,))
                    snaps = [r for _, r in snap_rows]
                    _merge_rows(conn, "snapshots", _SNAPSHOT_COLUMNS, snaps, _UPSERT_SNAPSHOT)
                return
            except StoreError as e:
                if attempt + 1 == _DEADLOCK_RETRIES or "deadlock" not in str(e).lower():
                    raise
                time.sleep(0.01 * (attempt + 1))

    def _event_rows(self, events: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Event rows with their seq and expiry, one per (run_id, seq) (the last wins), in key
        order."""
        if events and set(map(len, events)) != {_NCOL}:
            i, bad = next((i, r) for i, r in enumerate(events) if len(r) != _NCOL)
            raise ValueError(
                f"event row {i} has {len(bad)} values, expected {_NCOL} in the order of "
                f"EVENT_COLUMNS ({', '.join(EVENT_COLUMNS)}): {bad!r}"
            )
        keyed: dict[tuple[str, int], tuple[Any, ...]] = {}
        for r in events:
            kind = r[1]
            seq = START_SEQ if kind == "run_start" else STOP_SEQ if kind == "stop" else r[3]
            if seq is None:
                raise StoreError(
                    f"writing a batch failed on {self._safe_url}: a {kind} event has no step_id; "
                    f"{_hint(ValueError('step_id'))}",
                    path=self._safe_url,
                )
            keyed[(r[0], int(seq))] = (
                r[0],
                int(seq),
                *r[1:5],
                sha_bytes(r[5]),
                sha_bytes(r[6]),
                *r[7:],
                r[2] + self._event_ms,
            )
        return [keyed[k] for k in sorted(keyed)]

    def _touch(self, now: int, run_ids: Sequence[str]) -> None:
        with self._writing("updating run heartbeats") as conn:
            conn.execute(
                "UPDATE runs SET last_seen_ms = GREATEST(coalesce(last_seen_ms, 0), %s) "
                "WHERE run_id = ANY(%s) AND stop_reason IS NULL",
                (now, sorted(run_ids)),
            )

    # -- retention (`pin` and `prune` are StoreBase's) ---------------------------------------------

    @property
    def _prune_plan(self) -> tuple[tuple[str, str, str], ...]:
        return _PRUNE_PLAN

    @contextlib.contextmanager
    def _retention_writing(self, action: str) -> Iterator[_QmarkConnection]:
        with self._writing(action) as conn:
            yield _QmarkConnection(conn)

    def _prune_events(self, p: dict[str, int], pause_s: float, timer: PruneTimer) -> int:
        """Expired events, found a page at a time in key order and deleted by key, re-checked."""
        last: tuple[str, int] = ("", START_SEQ - 1)
        total = 0
        while True:
            with self._session("finding expired events") as conn:
                keys = conn.execute(_EVENTS_PAGE, {**p, "r": last[0], "s": last[1]}).fetchall()
            if not keys:
                return total
            last = (keys[-1][0], keys[-1][1])
            ids = [k[0] for k in keys]
            with timer.batch(), self._writing("pruning") as conn:
                total += conn.execute(
                    _EVENTS_DELETE, {"now": p["now"], "ids": ids, "seqs": [k[1] for k in keys]}
                ).rowcount
                conn.execute(_TOTALS_CLEAR, (sorted(set(ids)),))  # their figures changed
            if len(keys) < p["n"]:
                return total
            if pause_s > 0:
                time.sleep(pause_s)

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the store cannot be used after this."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


def sha_bytes(sha: str | None) -> bytes | None:
    """An events sha as the BYTEA the table stores (schema 10): a lowercase hex sha as its bytes,
    any other text (and a hex sha whose bytes begin with 0xFF) as 0xFF then its UTF-8. The SQL
    function ``replay_sha_bytes`` is the same conversion (`replay.migrations`)."""
    if sha is None:
        return None
    try:
        raw = bytes.fromhex(sha)
    except ValueError:
        return b"\xff" + sha.encode()
    if raw and raw[0] != 0xFF and raw.hex() == sha:
        return raw
    return b"\xff" + sha.encode()


def sha_text(stored: bytes) -> str:
    """The sha text `sha_bytes` stored (SQL: ``replay_sha_text``)."""
    if stored[:1] == b"\xff":
        return stored[1:].decode()
    return stored.hex()


_SHA_COLUMNS = frozenset(("args_sha", "output_sha"))


def _sha_text_rows(cursor: Any) -> Any:
    """psycopg row factory: tuples, with the events sha columns (BYTEA) as text again, so every
    reader (the shared queries, `query`) sees the hex text the SQLite store holds."""
    desc = cursor.description
    at = [i for i, col in enumerate(desc or ()) if col.name in _SHA_COLUMNS]
    if not at:
        return tuple

    def row(values: Sequence[Any]) -> tuple[Any, ...]:
        out = list(values)
        for i in at:
            v = out[i]
            if isinstance(v, (bytes, memoryview)):
                out[i] = sha_text(bytes(v))
        return tuple(out)

    return row


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _merge_rows(
    conn: psycopg.Connection[Any],
    table: str,
    cols: Sequence[str],
    rows: Sequence[Sequence[Any]],
    merge: str,
) -> None:
    """Copy `rows` into the table's staging table and merge them in (`merge`)."""
    if rows:
        _copy(conn, f"stage_{table}", cols, rows)
        conn.execute(merge)


def _copy(
    conn: psycopg.Connection[Any], table: str, cols: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def _merge(table: str, cols: Sequence[str], key: str, updates: str) -> str:
    names = ", ".join(cols)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names} FROM stage_{table} ORDER BY {key} "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


_UPSERT_RUN = _merge(
    "runs",
    RUN_WRITE_COLUMNS,
    "run_id",
    RUN_UPSERT_COMMON
    # A heartbeat may have moved last_seen_ms past what a late (spooled) write of the run carries
    # (GREATEST ignores NULLs). Pinning is the user's decision: a later write must not undo it.
    + ", last_seen_ms = GREATEST(runs.last_seen_ms, excluded.last_seen_ms)"
    + ", pinned = GREATEST(runs.pinned, excluded.pinned)"
    + ", expires_at = CASE WHEN runs.pinned <> 0 OR excluded.pinned <> 0 THEN NULL"
    + " ELSE excluded.expires_at END",
)
_UPSERT_EVENT = _merge(
    "events",
    _EVENT_TABLE_COLUMNS,
    "run_id, seq",
    ", ".join(f"{c} = excluded.{c}" for c in _EVENT_TABLE_COLUMNS[2:]),
)
_UPSERT_SNAPSHOT = _merge(
    "snapshots",
    _SNAPSHOT_COLUMNS,
    "sha",
    "expires_at = GREATEST(snapshots.expires_at, excluded.expires_at)",
)

_TOTALS_CLEAR = TOTALS_CLEAR.format(marks="SELECT unnest(%s::text[])")
_PINNED = "SELECT run_id FROM runs WHERE pinned <> 0"
_PRUNE_PLAN = prune_plan("pinned <> 0", "pinned = 0", "run_id", "sha", "replay_sha_text({})")
# The same conditions with psycopg's placeholders, for statements given to the driver directly.
_PRUNE = tuple((table, key, named_to_pyformat(cond)) for table, key, cond in _PRUNE_PLAN)
_EVENTS_PAGE = named_to_pyformat(
    f"SELECT run_id, seq FROM events WHERE (run_id, seq) > (:r, :s) AND {_PRUNE_PLAN[1][2]} "
    "ORDER BY run_id, seq LIMIT :n"
)
_EVENTS_DELETE = (
    "DELETE FROM events WHERE (run_id, seq) IN "
    "(SELECT * FROM unnest(%(ids)s::text[], %(seqs)s::bigint[])) "
    f"AND expires_at <= %(now)s AND run_id NOT IN ({_PINNED})"
)
