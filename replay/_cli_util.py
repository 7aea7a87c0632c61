"""What every `replay` command shares: the store option, --json, errors that exit 2."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import click

from replay._text import fmt_ms, fmt_ts, table
from replay.errors import ReplayError

if TYPE_CHECKING:
    from replay.store import Store

__all__ = [
    "BadInput",
    "db_option",
    "echo_json",
    "fmt_ms",
    "fmt_ts",
    "json_option",
    "open_store",
    "since_ms",
    "table",
]


class BadInput(click.ClickException):
    """A usage error that is not about the command line's shape: exits 2, like click's own."""

    exit_code = 2


def _default_db() -> str:
    # The library's one rule for the default store ($REPLAY_DB, else ./replay.db); the recorder
    # is imported only when a command runs without --db, not for `replay --help`.
    from replay.recorder import default_db

    return default_db()


db_option = click.option(
    "--db",
    default=_default_db,
    show_default="$REPLAY_DB, else ./replay.db",
    help="The store: a SQLite file.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def open_store(db: str, *, create: bool = False) -> Store:
    """Open the store at `db`, or exit 2 with the fix when there is none or it is unreadable."""
    if not create and "://" not in db and not os.path.lexists(db):
        raise BadInput(
            f"no store at {db}: record runs first (Recorder({db!r})), "
            "or pass --db PATH / set REPLAY_DB"
        )
    from replay.store import Store

    try:
        return Store(db)
    except ReplayError as exc:
        raise BadInput(f"cannot open the store {db}: {exc}") from exc


def since_ms(since: str | None, flag: str = "--since") -> int | None:
    """The epoch milliseconds `since` (``90s``, ``24h``, ``7d``) ago; exit 2 on a bad window."""
    if since is None:
        return None
    from replay.stats import InvalidDurationError, parse_duration

    try:
        window = parse_duration(since, flag)
    except InvalidDurationError as exc:
        raise BadInput(str(exc)) from exc
    except OverflowError:
        raise BadInput(
            f"{flag} {since[:40]!r} is too large: give a window like 7d or 52w"
        ) from None
    now = int(time.time() * 1000)
    if window > now:
        raise BadInput(
            f"{flag} {since[:40]!r} reaches back before 1970: give a window like 7d or 52w"
        )
    return now - window


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))
