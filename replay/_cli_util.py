"""What every `replay` command shares: the store option, --json, errors that exit 2."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from replay._text import fmt_ms, fmt_ts, table
from replay.errors import ReplayError

if TYPE_CHECKING:
    from replay.store_api import StoreAPI as Store

__all__ = [
    "BadInput",
    "db_option",
    "duration_ms",
    "echo_json",
    "fmt_ms",
    "fmt_ts",
    "json_option",
    "open_store",
    "path_option",
    "render_diff",
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
    help="The store: a SQLite file or a postgresql:// URL.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


_F = TypeVar("_F", bound=Callable[..., Any])


def path_option(
    *names: str, help: str, default: str | None = None, folder: bool = False
) -> Callable[[_F], _F]:
    """An option naming a file (`folder`: a folder), None unless a `default` is given (shown)."""
    kind = click.Path(file_okay=False) if folder else click.Path(dir_okay=False)
    if default is None:
        return click.option(*names, default=None, type=kind, help=help)
    return click.option(*names, default=default, show_default=True, type=kind, help=help)


def open_store(db: str, *, create: bool = False) -> Store:
    """Open the store at `db`, or exit 2 with the fix when there is none or it is unreadable."""
    if not create and "://" not in db and not os.path.lexists(db):
        raise BadInput(
            f"no store at {db}: record runs first (Recorder({db!r})), "
            "or pass --db PATH / set REPLAY_DB"
        )
    from replay.store_api import open_store as open_any_store
    from replay.store_api import store_label

    try:
        return open_any_store(db)
    except ReplayError as exc:
        raise BadInput(f"cannot open the store {store_label(db)}: {exc}") from exc


def duration_ms(text: str, option: str, *, all_ok: bool = False) -> int:
    """A window (``90s``, ``10m``, ``24h``, ``7d``) in milliseconds; exit 2 naming `option`.

    `all_ok`: the option also takes ``all`` (said in the error for a window before 1970).
    """
    from replay.stats import InvalidDurationError, parse_duration

    try:
        ms = parse_duration(text, option)
    except InvalidDurationError as exc:
        raise BadInput(str(exc)) from exc
    except OverflowError:
        raise BadInput(
            f"{option} {text[:40]!r} is too large: give a window like 7d or 52w"
        ) from None
    if ms > int(time.time() * 1000):  # before 1970: no run can be there, SQLite cannot bind it
        raise BadInput(
            f"{option} {text[:40]!r} reaches back before 1970: give a window like 7d or 52w"
            + (", or 'all'" if all_ok else "")
        )
    return ms


def since_ms(since: str | None, flag: str = "--since") -> int | None:
    """The epoch milliseconds `since` (``90s``, ``24h``, ``7d``) ago; None when not given."""
    if since is None:
        return None
    return int(time.time() * 1000) - duration_ms(since, flag)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def render_diff(diff: Any, as_json: bool, markdown: bool) -> None:
    """Print a `RunDiff`: JSON, Markdown, or the text report (coloured on a terminal)."""
    if as_json:
        echo_json(diff.to_json())
    elif markdown:
        click.echo(diff.to_markdown())
    else:
        click.echo(diff.to_text(color=None))
