"""What every `replay` command shares: the store option, --json, errors that exit 2."""

from __future__ import annotations

import datetime as _dt
import json
import os
from typing import TYPE_CHECKING, Any

import click

from replay.errors import ReplayError

if TYPE_CHECKING:
    from replay.store import Store


class BadInput(click.ClickException):
    """A usage error that is not about the command line's shape: exits 2, like click's own."""

    exit_code = 2


db_option = click.option(
    "--db",
    envvar="REPLAY_DB",
    default="replay.db",
    show_default="$REPLAY_DB, else ./replay.db",
    help="The store: a SQLite file or a postgresql:// URL.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def open_store(db: str, *, create: bool = False) -> Store:
    """Open the store at `db`, or exit 2 with the fix when there is none or it is unreadable."""
    if not create and "://" not in db and not os.path.lexists(db):
        raise BadInput(
            f"no store at {db}: record runs first (Recorder({db!r})), or pass --db PATH / set REPLAY_DB"
        )
    from replay.store_api import open_store as open_any_store
    from replay.store_api import store_label

    try:
        return open_any_store(db)
    except ReplayError as exc:
        raise BadInput(f"cannot open the store {store_label(db)}: {exc}") from exc


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def fmt_ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ms(ms: int | float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s" if ms >= 1000 else f"{int(ms)}ms"


def table(headers: list[str], rows: list[list[str]], *, right: set[int] | None = None) -> str:
    """A plain aligned text table."""
    right = right or set()
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])
