"""The one Store interface, and `open_store`, which picks its backend from a path or a URL.

The CLI, the pytest plugin, the recorder's writer, replay, stats, alerts and metrics use a store
only through `StoreAPI` (`replay.store_base.StoreBase`). Two backends extend it:

- `replay.store.Store`: SQLite, one file (a path, ``sqlite:///path``, or ``:memory:``);
- `replay.pg_store.PgStore`: PostgreSQL (``postgresql://…`` or ``postgres://…``), for many
  workers on many hosts; needs the ``postgres`` extra (psycopg 3).

Both have the same tables and columns (`replay.migrations`), so ``query`` takes one SQL text with
``?`` placeholders on either (``dialect`` names the backend for the few functions that differ,
such as JSON access).
"""

from __future__ import annotations

import os
from typing import Any

from replay.store_base import StoreBase

__all__ = [
    "StoreAPI",
    "is_server_url",
    "json_number_sql",
    "open_store",
    "server_spool_dir",
    "store_label",
]

_PG_SCHEMES = ("postgresql://", "postgres://")


#: What every part of agent-replay may call on a store (see docs/ARCHITECTURE.md): the abstract
#: `StoreBase`, which both backends extend. Its methods are declared once, there.
StoreAPI = StoreBase


def json_number_sql(dialect: str, column: str, key: str) -> str:
    """A SQL expression for the number under `key` of the JSON text in `column`, for `query`.

    SQLite: ``json_extract(column, '$.key')``; PostgreSQL: ``(column::jsonb ->> 'key')::numeric``
    (its aggregates come back as int or float, as SQLite's do). `column` and `key` are trusted
    identifiers of the schema (``usage``, ``tokens_in``), never user input.

    Raises:
        ValueError: an unknown dialect, or a name that is not a plain identifier.
    """
    for name in (column.replace(".", "_"), key):
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not a plain SQL identifier")
    if dialect == "sqlite":
        return f"json_extract({column}, '$.{key}')"
    if dialect == "postgresql":
        return f"({column}::jsonb ->> '{key}')::numeric"
    raise ValueError(f"unknown store dialect {dialect!r}: 'sqlite' or 'postgresql'")


def is_server_url(db: object) -> bool:
    """Whether `db` names a PostgreSQL store (``postgresql://`` or ``postgres://``)."""
    return isinstance(db, str) and db.lower().startswith(_PG_SCHEMES)


def server_spool_dir(url: str) -> str:
    """Where a recorder spools the batches a server store refused (down, restarting, unreachable).

    ``$REPLAY_SPOOL_DIR`` when set, else a folder of this user for this store in the temporary
    folder: a server has no folder beside it as a SQLite file has. The writer creates it 0700 and
    refuses a symlink there.
    """
    import hashlib
    import tempfile

    given = os.environ.get("REPLAY_SPOOL_DIR")
    if given:
        return given
    digest = hashlib.sha256(store_label(url).encode()).hexdigest()[:16]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"agent-replay-{uid}-{digest}.spool")


def store_label(db: str | os.PathLike[str]) -> str:
    """`db` as messages may show it: a path as given, a URL without its password."""
    if is_server_url(db):
        from replay.pg_store import redact_url

        return redact_url(str(db))
    return os.fspath(db)


def open_store(
    db: str | os.PathLike[str],
    *,
    snapshot_days: float = 14,
    event_days: float = 30,
    timeout_s: float = 5.0,
    key_file: str | os.PathLike[str] | None = None,
) -> StoreAPI:
    """Open the store `db` names: a PostgreSQL URL, ``sqlite:///path``, a path, or ``:memory:``.

    `key_file` applies to PostgreSQL only (a SQLite store keeps its key file beside itself).

    Raises:
        StoreError: the store cannot be opened (the message names it, never a password).
        SchemaVersionError: it was written by a newer agent-replay.
    """
    opts: dict[str, Any] = {
        "snapshot_days": snapshot_days,
        "event_days": event_days,
        "timeout_s": timeout_s,
    }
    if is_server_url(db):
        from replay.pg_store import PgStore

        return PgStore(str(db), key_file=key_file, **opts)
    from replay.store import Store

    path = os.fspath(db)
    if path.startswith("sqlite:///"):  # sqlite:///rel.db, sqlite:////abs/path.db
        path = path[len("sqlite:///") :]
    return Store(path, **opts)
