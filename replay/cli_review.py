"""``replay review``: walk the pending cassette changes ``pytest --replay-review`` wrote
(`replay.review`)."""

from __future__ import annotations

import json
import sys

import click

from replay.review import PendingChange, pending_changes, review

__all__ = ["review_cmd"]

_KEYS = {"a": "accept", "s": "skip", "r": "reject", "q": "quit"}


def _ask(change: PendingChange) -> str:
    click.echo(change.summary())
    if change.diff is not None:
        click.echo(change.diff.to_text(color=None))
    key = click.prompt(
        "accept, skip, reject or quit? [a/s/r/q]",
        type=click.Choice(list(_KEYS)),
        show_choices=False,
        default="s",
    )
    return _KEYS[key]


def _is_terminal() -> bool:
    """Whether someone can answer a prompt (stdin is a terminal); never prompt otherwise."""
    return sys.stdin.isatty()


@click.command("review")
@click.argument("folder", default="cassettes", type=click.Path(file_okay=False))
@click.option("--accept-all", is_flag=True, help="Accept every pending change (no prompt).")
@click.option("--reject-all", is_flag=True, help="Delete every pending change (no prompt).")
@click.option(
    "--json", "as_json", is_flag=True, help="List the pending changes as JSON; change nothing."
)
def review_cmd(folder: str, accept_all: bool, reject_all: bool, as_json: bool) -> None:
    """Accept or skip, one cassette at a time, the new traces `pytest --replay-review` left pending.

    Each pending change (<cassette>.pending beside the cassette) shows what it changes: steps
    added and removed, stop reason, usage. Without a terminal (CI) it lists them and exits 1
    unless --accept-all, --reject-all or --json says what to do; it never waits for input.

    Example:

        pytest --replay-all --replay-review && replay review
    """
    if accept_all and reject_all:
        raise click.UsageError("--accept-all and --reject-all exclude each other: pick one")
    changes = pending_changes(folder)
    if as_json:
        click.echo(json.dumps([c.to_json() for c in changes], indent=2, sort_keys=True))
        return
    if not changes:
        click.echo(f"no pending changes under {folder}")
        return
    if accept_all or reject_all:
        choice = "accept" if accept_all else "reject"
        done = review(changes, lambda _c: choice)
    elif not _is_terminal():
        for c in changes:
            click.echo(c.summary())
        click.echo(
            f"{len(changes)} pending change(s) and no terminal to ask: run `replay review` in a "
            "terminal, or pass --accept-all / --reject-all",
            err=True,
        )
        sys.exit(1)
    else:
        done = review(changes, _ask)
    for c in done["accept"]:
        click.echo(f"accepted {c.cassette}")
    for c in done["reject"]:
        click.echo(f"rejected {c.pending}")
    click.echo(
        f"{len(done['accept'])} accepted, {len(done['skip'])} skipped, "
        f"{len(done['reject'])} rejected"
    )
