"""The SQLite schema of a store and the ordered steps that build and upgrade it.

Each step is a `sqlite_utils.Migrations` function; step N also writes ``schema_version = N`` to the
``meta`` table in the same transaction, so ``meta.schema_version`` and sqlite-utils'
``_sqlite_migrations`` record always agree. A file's version is the number of steps applied to it.

Add a step at the end, never edit an old one: files written by earlier releases run exactly the
earlier steps, and `tests/integration/test_store.py` opens a file built at version 1.
"""

from __future__ import annotations

import datetime as _dt
import pathlib
import sqlite3
import time
from collections.abc import Callable, Sequence

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from replay.errors import SchemaVersionError, StoreError

__all__ = [
    "MIGRATION_SET",
    "PG_STEPS",
    "PG_VIEWS",
    "SCHEMA_VERSION",
    "STEPS",
    "VIEWS",
    "migrate",
    "read_schema_version",
]

MIGRATION_SET = "agent-replay"

# events.seq orders a run's events: run_start first, steps by step_id, stop last. It comes from the
# kind before the step_id, so a stop event that carries a step_id cannot overwrite that step.
START_SEQ = -(1 << 62)
STOP_SEQ = 1 << 62

# The columns of a run both dialects declare alike, in this order (the step-1 DDL of each).
_RUN_TEXTS = """entrypoint TEXT,
        input TEXT,
        output TEXT,
        input_sha TEXT,
        output_sha TEXT,
        versions TEXT NOT NULL DEFAULT '{}',
        labels TEXT NOT NULL DEFAULT '{}'"""

_V1 = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY NOT NULL,
        value
    )""",
    f"""CREATE TABLE runs (
        run_id TEXT PRIMARY KEY NOT NULL,
        agent TEXT NOT NULL,
        {_RUN_TEXTS},
        started_ms INTEGER NOT NULL,
        ended_ms INTEGER,
        stop_reason TEXT,
        usage TEXT,
        tool_calls INTEGER NOT NULL DEFAULT 0,
        pinned INTEGER NOT NULL DEFAULT 0,
        expires_at INTEGER,
        replay_of TEXT,
        call_style TEXT NOT NULL DEFAULT 'bound',
        host TEXT NOT NULL DEFAULT ''
    )""",
    # Keyed by (run_id, seq) WITHOUT ROWID: reading a run is one range scan and no second index
    # repeats the 28-char run id per event (150 vs 181 bytes per event measured).
    """CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        step_id INTEGER,
        tool TEXT,
        args_sha TEXT,
        output_sha TEXT,
        duration_ms INTEGER,
        status TEXT,
        error TEXT,
        stop_reason TEXT,
        usage TEXT,
        parent_step_id INTEGER,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE snapshots (
        sha TEXT PRIMARY KEY NOT NULL,
        body BLOB NOT NULL,
        type_name TEXT,
        truncated INTEGER NOT NULL DEFAULT 0
    )""",
)

STEPS: tuple[str, ...] = (
    "0001_initial",
    "0002_retention_and_indexes",
    "0003_run_http_sha",
    "0004_run_liveness",
    "0005_event_concurrent_group",
    "0006_expiry_indexes",
    "0007_key_out_of_store",
    "0008_foreign_keys_and_views",
    "0009_run_step_totals",
    "0010_pg_compact_storage",
)
# Named once: renumbering the step (when steps are merged) changes only its entry in STEPS.
_FK_STEP = next(s for s in STEPS if s.endswith("_foreign_keys_and_views"))
_TOTALS_STEP = next(s for s in STEPS if s.endswith("_run_step_totals"))
_PG_EVENTS_STEP = next(s for s in STEPS if s.endswith("_pg_compact_storage"))

#: Read-only views with ISO 8601 UTC times (for Datasette, sqlite-utils, the sqlite3 shell).
VIEWS: dict[str, str] = {
    "runs_view": """CREATE VIEW runs_view AS SELECT
        run_id, agent,
        strftime('%Y-%m-%dT%H:%M:%fZ', started_ms / 1000.0, 'unixepoch') AS started,
        strftime('%Y-%m-%dT%H:%M:%fZ', ended_ms / 1000.0, 'unixepoch') AS ended,
        ended_ms - started_ms AS latency_ms,
        stop_reason, tool_calls,
        CASE WHEN json_valid(usage) THEN json_extract(usage, '$.tokens_in') END AS tokens_in,
        CASE WHEN json_valid(usage) THEN json_extract(usage, '$.tokens_out') END AS tokens_out,
        CASE WHEN json_valid(usage) THEN json_extract(usage, '$.cost_usd') END AS cost_usd,
        versions, labels, entrypoint, replay_of, pinned,
        strftime('%Y-%m-%dT%H:%M:%fZ', expires_at / 1000.0, 'unixepoch') AS expires,
        host, pid, last_seen_ms, key_fingerprint, http_sha, input_sha, output_sha, started_ms,
        ended_ms
    FROM runs""",
    "events_view": """CREATE VIEW events_view AS SELECT
        run_id, seq, kind,
        strftime('%Y-%m-%dT%H:%M:%fZ', ts_ms / 1000.0, 'unixepoch') AS ts,
        step_id, parent_step_id, concurrent_group, tool, status, error, duration_ms, stop_reason,
        args_sha, output_sha, usage,
        strftime('%Y-%m-%dT%H:%M:%fZ', expires_at / 1000.0, 'unixepoch') AS expires,
        ts_ms
    FROM events""",
}

#: The newest schema this agent-replay reads and writes.
SCHEMA_VERSION = len(STEPS)

# -- PostgreSQL ------------------------------------------------------------------------------------
# The same steps in PostgreSQL's dialect, keyed by the names in STEPS (a test checks that every step
# has its PostgreSQL form). `replay.pg_store` applies them one transaction per step under an
# advisory lock and sets meta.schema_version as the SQLite steps do. Integer columns are BIGINT
# (epoch milliseconds pass 2**31) except step numbers; run ids compare bytewise (COLLATE "C") so
# prefix ranges and key order match SQLite's. The first step creates the tables with every column
# of the current schema, ordered so that fixed-width values pack without padding (this saves ~20
# bytes per event); the later steps add what they add with IF NOT EXISTS, so they are no-ops
# there and stay correct for any store created before them.
_PG_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT)",
    # The four kinds of models.EventKind: 4 bytes a row instead of up to 13 (reads back as text).
    # Declared in alphabetical order, so ORDER BY kind sorts as SQLite's text column does.
    "CREATE TYPE event_kind AS ENUM ('model_result', 'run_start', 'stop', 'tool_result')",
    f"""CREATE TABLE runs (
        run_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        started_ms BIGINT NOT NULL,
        ended_ms BIGINT,
        tool_calls BIGINT NOT NULL DEFAULT 0,
        pinned INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        expires_at BIGINT,
        last_seen_ms BIGINT,
        agent TEXT COLLATE "C" NOT NULL,
        {_RUN_TEXTS},
        stop_reason TEXT,
        usage TEXT,
        replay_of TEXT,
        call_style TEXT NOT NULL DEFAULT 'bound',
        host TEXT NOT NULL DEFAULT '',
        http_sha TEXT,
        key_fingerprint TEXT
    )""",
    """CREATE TABLE events (
        seq BIGINT NOT NULL,
        ts_ms BIGINT NOT NULL,
        expires_at BIGINT,
        duration_ms BIGINT,
        step_id INTEGER,
        parent_step_id INTEGER,
        concurrent_group INTEGER,
        run_id TEXT COLLATE "C" NOT NULL,
        kind event_kind NOT NULL,
        tool TEXT,
        args_sha TEXT,
        output_sha TEXT,
        status TEXT,
        error TEXT,
        stop_reason TEXT,
        usage TEXT,
        -- keys arrive in about increasing order (run ids sort by time): full leaf pages
        PRIMARY KEY (run_id, seq) WITH (fillfactor = 100)
    )""",
    """CREATE TABLE snapshots (
        sha TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        truncated INTEGER NOT NULL DEFAULT 0,
        expires_at BIGINT,
        type_name TEXT,
        body BYTEA NOT NULL
    )""",
)

#: Read-only views with ISO 8601 UTC times, as `VIEWS` on SQLite.
PG_VIEWS: dict[str, str] = {
    "runs_view": """CREATE VIEW runs_view AS SELECT
        run_id, agent,
        to_char(to_timestamp(started_ms / 1000.0) AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS started,
        to_char(to_timestamp(ended_ms / 1000.0) AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS ended,
        ended_ms - started_ms AS latency_ms,
        stop_reason, tool_calls,
        (usage::jsonb ->> 'tokens_in')::bigint AS tokens_in,
        (usage::jsonb ->> 'tokens_out')::bigint AS tokens_out,
        (usage::jsonb ->> 'cost_usd')::double precision AS cost_usd,
        versions, labels, entrypoint, replay_of, pinned,
        to_char(to_timestamp(expires_at / 1000.0) AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS expires,
        host, pid, last_seen_ms, key_fingerprint, http_sha, input_sha, output_sha, started_ms,
        ended_ms
    FROM runs""",
    "events_view": """CREATE VIEW events_view AS SELECT
        run_id, seq, kind,
        to_char(to_timestamp(ts_ms / 1000.0) AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS ts,
        step_id, parent_step_id, concurrent_group, tool, status, error, duration_ms, stop_reason,
        args_sha, output_sha, usage,
        to_char(to_timestamp(expires_at / 1000.0) AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS expires,
        ts_ms
    FROM events""",
}

PG_STEPS: dict[str, tuple[str, ...]] = {
    "0001_initial": _PG_V1,
    "0002_retention_and_indexes": (
        "ALTER TABLE events ADD COLUMN IF NOT EXISTS expires_at BIGINT",
        "ALTER TABLE snapshots ADD COLUMN IF NOT EXISTS expires_at BIGINT",
        "CREATE INDEX IF NOT EXISTS runs_started ON runs (started_ms)",
        "CREATE INDEX IF NOT EXISTS runs_agent ON runs (agent, started_ms)",
        "CREATE INDEX IF NOT EXISTS runs_stop_reason ON runs (stop_reason, started_ms)",
    ),
    "0003_run_http_sha": ("ALTER TABLE runs ADD COLUMN IF NOT EXISTS http_sha TEXT",),
    "0004_run_liveness": (
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid INTEGER",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS last_seen_ms BIGINT",
    ),
    "0005_event_concurrent_group": (
        "ALTER TABLE events ADD COLUMN IF NOT EXISTS concurrent_group INTEGER",
    ),
    "0006_expiry_indexes": (
        "CREATE INDEX IF NOT EXISTS runs_expires ON runs (expires_at)",
        "CREATE INDEX IF NOT EXISTS snapshots_expires ON snapshots (expires_at)",
        "CREATE INDEX IF NOT EXISTS runs_pinned ON runs (run_id) WHERE pinned <> 0",
    ),
    # No key ever lived in a PostgreSQL store: only the column is added.
    "0007_key_out_of_store": ("ALTER TABLE runs ADD COLUMN IF NOT EXISTS key_fingerprint TEXT",),
    # No foreign key on PostgreSQL: it would be enforced (one index probe per event, and a spooled
    # batch's events could not precede their run); the views are the same as on SQLite.
    "0008_foreign_keys_and_views": tuple(
        f"CREATE OR REPLACE VIEW {stmt.removeprefix('CREATE VIEW ')}" for stmt in PG_VIEWS.values()
    ),
}

# A run's step figures on its row (`replay.queries.TOTAL_COLUMNS`): stats and alerts read one row
# per run instead of every event. Rows written before this step keep NULL totals: their figures
# come from their events, as before (nothing to backfill, and no long rewrite of a big store).
_RUN_STEP_TOTALS = (
    "ALTER TABLE runs ADD COLUMN tool_steps INTEGER",
    "ALTER TABLE runs ADD COLUMN step_errors TEXT",
    "ALTER TABLE runs ADD COLUMN model_tokens TEXT",
)
PG_STEPS[_TOTALS_STEP] = tuple(
    stmt.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS") for stmt in _RUN_STEP_TOTALS
)

# PostgreSQL only (SQLite: nothing to do). The events table is rebuilt with
# - args_sha and output_sha as BYTEA: a hex sha is stored as its bytes (12 for the recorder's
#   24-character sha), any other text as 0xFF then its UTF-8 (a hex sha whose bytes begin
#   with 0xFF is stored that way too, so the two never meet); `replay.pg_store` converts at its
#   write and read boundary, so every caller still sees text, and `events_view` shows text;
# - step_id, parent_step_id and concurrent_group as BIGINT (the model allows any 63-bit count),
#   placed with the other 8-byte columns and the 4-byte kind before the variable-width ones, so
#   the wider ids cost no alignment padding;
# and the runs indexes that grow at their right end fill their pages.
_PG_SHA_TEXT = """CREATE OR REPLACE FUNCTION replay_sha_text(b bytea) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN get_byte(b, 0) = 255 THEN convert_from(substring(b FROM 2), 'UTF8')
                ELSE encode(b, 'hex') END $$"""
_PG_SHA_BYTES = """CREATE OR REPLACE FUNCTION replay_sha_bytes(t text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN t ~ '^([0-9a-f]{2})+$' AND left(t, 2) <> 'ff' THEN decode(t, 'hex')
                ELSE '\\xff'::bytea || convert_to(t, 'UTF8') END $$"""
_PG_EVENTS_VIEW = PG_VIEWS["events_view"].replace(
    "args_sha, output_sha, usage,",
    "replay_sha_text(args_sha) AS args_sha, replay_sha_text(output_sha) AS output_sha, usage,",
)
assert _PG_EVENTS_VIEW != PG_VIEWS["events_view"]
_PG_EVENT_COPY = (
    "seq, ts_ms, expires_at, duration_ms, step_id, parent_step_id, concurrent_group, kind, "
    "run_id, tool, {args}, {output}, status, error, stop_reason, usage"
)
PG_STEPS[_PG_EVENTS_STEP] = (
    _PG_SHA_TEXT,
    _PG_SHA_BYTES,
    "DROP VIEW IF EXISTS events_view",
    """CREATE TABLE events_compact (
        seq BIGINT NOT NULL,
        ts_ms BIGINT NOT NULL,
        expires_at BIGINT,
        duration_ms BIGINT,
        step_id BIGINT,
        parent_step_id BIGINT,
        concurrent_group BIGINT,
        kind event_kind NOT NULL,
        run_id TEXT COLLATE "C" NOT NULL,
        tool TEXT,
        args_sha BYTEA,
        output_sha BYTEA,
        status TEXT,
        error TEXT,
        stop_reason TEXT,
        usage TEXT
    )""",
    "INSERT INTO events_compact ("
    + _PG_EVENT_COPY.format(args="args_sha", output="output_sha")
    + ") SELECT "
    + _PG_EVENT_COPY.format(
        args="replay_sha_bytes(args_sha)", output="replay_sha_bytes(output_sha)"
    )
    + " FROM events ORDER BY run_id, seq",
    "DROP TABLE events",
    "ALTER TABLE events_compact RENAME TO events",
    "ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (run_id, seq) "
    "WITH (fillfactor = 100)",
    _PG_EVENTS_VIEW,
    # Run ids and start times grow with time: full pages when the rightmost page splits (pages
    # already written keep their fill until a REINDEX).
    *(
        f"ALTER INDEX {name} SET (fillfactor = 100)"
        for name in ("runs_pkey", "runs_started", "runs_agent", "runs_stop_reason", "runs_expires")
    ),
)


def _set_version(db: Database, version: int) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [version],
    )


def _move_key_out(db: Database, path: pathlib.Path) -> None:
    """Move a ``meta.secret_key`` (schema 1-3) into the key file beside the store, then erase it.

    The key file is written first: if that fails the transaction rolls back and the key stays.
    The row is deleted with ``secure_delete`` on, so its bytes are zeroed in the page, not just
    unlinked.
    """
    from replay.keys import fingerprint, key_file_path, load_or_create_key_file, write_key_file

    row = db.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()
    if row is None:
        return
    key = row[0]
    if isinstance(key, bytes) and len(key) >= 16 and str(path) != ":memory:":
        target = key_file_path(path)
        if not write_key_file(target, key) and load_or_create_key_file(target) != key:
            # A key file made by a newer agent-replay already sits there: keep both, never lose one.
            write_key_file(target.with_name(f"{target.name}.{fingerprint(key)}"), key)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('key_fingerprint', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [fingerprint(key)],
        )
    db.execute("PRAGMA secure_delete = ON")
    try:
        db.execute("DELETE FROM meta WHERE key = 'secret_key'")
    finally:
        db.execute("PRAGMA secure_delete = OFF")


# The steps that only run statements (SQLite), by name; the others need the store's settings or
# read what earlier steps left.
_STATEMENT_STEPS: dict[str, tuple[str, ...]] = {
    STEPS[0]: _V1,
    # The optional HTTP layer (replay/http.py): the snapshot of a run's HTTP interactions.
    STEPS[2]: ("ALTER TABLE runs ADD COLUMN http_sha TEXT",),
    # Which process records a run and when its writer last saw it open: a run with no stop
    # whose process is gone reads as `killed` (inferred), see replay/liveness.py.
    STEPS[3]: (
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
        "ALTER TABLE runs ADD COLUMN last_seen_ms INTEGER",
    ),
    # Parallel tool calls: the group of sibling steps in flight together (see replay/diff.py).
    STEPS[4]: ("ALTER TABLE events ADD COLUMN concurrent_group INTEGER",),
    # `prune` deletes in short batches found through these indexes instead of scanning the
    # three tables under one long write lock (1.8 s at 100,000 runs). The partial index on
    # pinned runs keeps "is this snapshot referenced by a pinned run?" cheap in every batch.
    # Events get none: it cost ~50 bytes and ~15% ingest per event; prune pages them by key.
    STEPS[5]: (
        "CREATE INDEX IF NOT EXISTS runs_expires ON runs (expires_at)",
        "CREATE INDEX IF NOT EXISTS snapshots_expires ON snapshots (expires_at)",
        "CREATE INDEX IF NOT EXISTS runs_pinned ON runs (run_id) WHERE pinned",
    ),
}


def _retention_and_indexes(db: Database, event_ms: int, snapshot_ms: int) -> None:
    now_ms = int(time.time() * 1000)
    db.execute("ALTER TABLE events ADD COLUMN expires_at INTEGER")
    db.execute("ALTER TABLE snapshots ADD COLUMN expires_at INTEGER")
    # Rows written before retention existed get the same lifetimes as new ones.
    db.execute(
        "UPDATE events SET expires_at = ts_ms + ? "
        "WHERE run_id NOT IN (SELECT run_id FROM runs WHERE pinned)",
        [event_ms],
    )
    db.execute("UPDATE snapshots SET expires_at = ?", [now_ms + snapshot_ms])
    db.execute(
        "UPDATE runs SET expires_at = coalesce(ended_ms, started_ms) + ? "
        "WHERE expires_at IS NULL AND NOT pinned",
        [event_ms],
    )
    db.execute("CREATE INDEX runs_started ON runs (started_ms)")
    db.execute("CREATE INDEX runs_agent ON runs (agent, started_ms)")
    db.execute("CREATE INDEX runs_stop_reason ON runs (stop_reason, started_ms)")


def _key_out_of_store(db: Database, path: pathlib.Path) -> None:
    # The pseudonym key leaves the store (replay/keys.py); each run names its key's fingerprint.
    db.execute("ALTER TABLE runs ADD COLUMN key_fingerprint TEXT")
    _move_key_out(db, path)


def _foreign_keys_and_views(db: Database) -> None:
    # Declared for readers (Datasette links events to their run; sqlite-utils and the shell list
    # it); not enforced, as no connection turns PRAGMA foreign_keys on. SQLite cannot add a
    # constraint to a table, so events is rebuilt from its own CREATE statement (whatever
    # columns earlier steps added) and its indexes and triggers are made again.
    conn = db.conn
    sql = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone()[0]
    extras = [
        r[0]
        for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'events' AND type IN ('index', "
            "'trigger') "
            "AND sql IS NOT NULL"
        )
    ]
    if "REFERENCES runs" not in sql:
        close = sql.rindex(")")
        create = (
            sql[:close].rstrip()
            + ",\n        FOREIGN KEY (run_id) REFERENCES runs (run_id)\n    "
            + sql[close:]
        )
        create = create.replace("CREATE TABLE events", "CREATE TABLE events_with_fk", 1)
        cols = ", ".join(f'"{r[1]}"' for r in conn.execute("PRAGMA table_info(events)"))
        db.execute(create)
        db.execute(f"INSERT INTO events_with_fk ({cols}) SELECT {cols} FROM events")
        db.execute("DROP TABLE events")
        db.execute("ALTER TABLE events_with_fk RENAME TO events")
        for stmt in extras:
            db.execute(stmt)
    for name, stmt in VIEWS.items():
        db.execute(f"DROP VIEW IF EXISTS {name}")
        db.execute(stmt)


def _run_step_totals(db: Database) -> None:
    for stmt in _RUN_STEP_TOTALS:
        db.execute(stmt)


def _pg_compact_storage(db: Database) -> None:
    """Nothing on SQLite: its integers are 64-bit and its shas stay text (see PG_STEPS)."""


def _step(
    version: int, body: Callable[[Database], None] | Sequence[str]
) -> Callable[[Database], None]:
    """A migration step: `body` (a function, or statements to run), then the schema version."""

    def step(db: Database) -> None:
        if callable(body):
            body(db)
        else:
            for stmt in body:
                db.execute(stmt)
        _set_version(db, version)

    return step


def _build(event_ms: int, snapshot_ms: int, path: pathlib.Path) -> Migrations:
    """The SQLite steps of `STEPS`, in order; step N leaves schema version N."""
    bodies: dict[str, Callable[[Database], None] | Sequence[str]] = {
        **_STATEMENT_STEPS,
        STEPS[1]: lambda db: _retention_and_indexes(db, event_ms, snapshot_ms),
        STEPS[6]: lambda db: _key_out_of_store(db, path),
        _FK_STEP: _foreign_keys_and_views,
        _TOTALS_STEP: _run_step_totals,
        _PG_EVENTS_STEP: _pg_compact_storage,
    }
    migrations = Migrations(MIGRATION_SET)
    for version, name in enumerate(STEPS, start=1):
        migrations(name=name)(_step(version, bodies[name]))
    return migrations


_OURS = {"meta", "runs", "events", "snapshots", Migrations.migrations_table}  # views are not tables


def read_schema_version(conn: sqlite3.Connection, path: pathlib.Path) -> int:
    """The schema version of the open file: 0 for an empty file.

    Raises:
        SchemaVersionError: the file was written by a newer agent-replay.
        StoreError: an SQLite file that is not an agent-replay store, or a broken meta table.
        sqlite3.DatabaseError: the file is not SQLite at all (the caller names the path).
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        foreign = sorted(t for t in tables - _OURS if not t.startswith("sqlite_"))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
            raise StoreError(
                f"{path} is an SQLite database but not an agent-replay store (it has tables "
                f"{shown}): "
                "point --db / REPLAY_DB at a new file or at an existing replay.db",
                path=str(path),
            )
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return 0
    try:
        found = int(row[0])
    except (TypeError, ValueError):
        raise StoreError(
            f"{path} has an unreadable schema_version {row[0]!r} in its meta table: "
            "restore the file from a backup or start a new store",
            path=str(path),
        ) from None
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(path.name, found, SCHEMA_VERSION)
    return found


def migrate(db: Database, path: pathlib.Path, *, event_ms: int, snapshot_ms: int) -> int:
    """Apply the pending steps. The caller holds a write transaction (BEGIN IMMEDIATE).

    Returns the version before migrating. Steps run in savepoints inside the caller's transaction,
    so concurrent processes opening a new store do not both create it, and a failing step leaves
    nothing.
    """
    assert db.conn.in_transaction, "migrate() needs the caller's BEGIN IMMEDIATE"
    found = read_schema_version(db.conn, path)
    migrations = _build(event_ms, snapshot_ms, path)
    # A file built without sqlite-utils' bookkeeping (by hand, or by a tool that copied the schema)
    # is at the version its meta table says: record those steps as applied so they do not run again.
    applied = {m.name for m in migrations.applied(db)}
    missing = [name for name in STEPS[:found] if name not in applied]
    if missing:
        migrations.ensure_migrations_table(db)
        stamp = str(_dt.datetime.now(_dt.timezone.utc))
        for name in missing:
            db[Migrations.migrations_table].insert(  # type: ignore[union-attr]
                {"migration_set": MIGRATION_SET, "name": name, "applied_at": stamp}
            )
    migrations.apply(db)
    return found
