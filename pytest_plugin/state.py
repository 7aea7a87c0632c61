"""The plugin's session state and the names `plugin.py` and `_engine.py` share.

Standard library and pytest only: imported whenever the plugin is, replay or not.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ReplayFailed",
    "Source",
    "State",
    "StoreRef",
    "display",
    "is_cassette",
    "is_server_url",
    "store_exists",
    "store_ref",
    "store_text",
]

#: A store: a SQLite file (a resolved path), or a ``postgresql://`` URL kept as given (a Path
#: would collapse its ``//``).
StoreRef = Path | str

_SERVER_SCHEMES = ("postgresql://", "postgres://")


class ReplayFailed(Exception):
    """A replay that diverged (or could not be blessed); its text is the item's failure report."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One ``--replay`` / ``--replay-all`` source: a run id in a store, or a cassette file."""

    given: str
    cassette: Path | None  # resolved, for a cassette
    db: StoreRef | None  # resolved path or server URL, for a run id


@dataclasses.dataclass
class State:
    """The plugin's state for one pytest session, kept in ``config.stash``."""

    sources: list[Source]
    update: bool
    report: Path | None
    max_token_delta_pct: float
    max_spend_delta_pct: float
    ignore: list[str]
    agents: list[str]  # --replay-agent, then ini replay_agents
    match: list[str]  # --replay-match TOOL=RULE
    live: list[str]  # --replay-live GLOB
    cassettes_dir: Path
    flag_db: StoreRef | None  # --replay-db
    default_db: StoreRef  # REPLAY_DB, else ini replay_db, else replay.db
    active: bool  # a --replay* option asked for replays or a report
    outcomes: dict[str, Any] = dataclasses.field(default_factory=dict)  # nodeid -> Outcome
    report_error: str | None = None
    #: --replay-update-force (or ini replay_update_force with --replay-update)
    update_force: bool = False


def is_cassette(source: str) -> bool:
    """A ``--replay`` / marker source names a cassette file (else it is a run id)."""
    return source.endswith(".json") or "/" in source or os.sep in source or Path(source).is_file()


def display(config: pytest.Config, path: StoreRef) -> str:
    """`path` relative to the rootdir when inside it (node ids, messages), else absolute.

    A server URL is shown without its password.
    """
    if isinstance(path, str):
        return store_text(path)
    try:
        return path.relative_to(config.rootpath).as_posix()
    except ValueError:
        return str(path)


def is_server_url(value: object) -> bool:
    """Whether a store value names a PostgreSQL server (kept as a string, never a path)."""
    return isinstance(value, str) and value.lower().startswith(_SERVER_SCHEMES)


def store_text(db: StoreRef) -> str:
    """A store as messages and node ids show it: a URL without its password, a path as is."""
    if not isinstance(db, str):
        return str(db)
    scheme, sep, rest = db.partition("://")
    netloc, slash, tail = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    tail, _, query = tail.partition("?")  # a query string may carry password=...
    return f"{scheme}{sep}{netloc}{slash}{tail}{'?...' if query else ''}"


def store_exists(db: StoreRef) -> bool:
    """Whether a store can be read without creating it (a server is asked when opened)."""
    return is_server_url(db) or Path(db).exists()


def store_ref(value: str, resolve: Callable[[str], Path] = Path) -> StoreRef:
    """A store value as a store: a server URL kept as given (a Path would collapse its ``//``),
    else the path `resolve` makes of it."""
    return value if is_server_url(value) else resolve(value)
