"""The `replay` command line: thin shells over the library.

Exit codes: 0 ok, 1 a replay diverged / an alert fired / scan found something, 2 bad input.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from replay._cli_util import (
    BadInput,
    db_option,
    echo_json,
    fmt_ms,
    fmt_ts,
    json_option,
    open_store,
    path_option,
    render_diff,
    since_ms,
    table,
)
from replay.cli_monitor import alerts, metrics, stats
from replay.cli_otel import otel_export
from replay.cli_review import review_cmd
from replay.cli_run import run_cmd
from replay.cli_view import view
from replay.demo import demo
from replay.diff import IgnoreRules
from replay.errors import (
    CassetteDecodeError,
    CorruptRowWarning,
    ExpiredSnapshotsError,
    ReplayError,
)
from replay.models import Run
from replay.timeline import load_timeline

__all__ = ["cli"]


class _Group(click.Group):
    """Every verb answers bad input with exit 2 and a message naming the file, row or field.

    Named errors (`ReplayError`: a store, row or cassette that cannot be read) and input nested
    deeper than Python can walk become ``Error: ...`` and exit 2 instead of a traceback; rows a
    listing skipped are reported once each as ``Warning: ...`` on stderr.
    """

    def invoke(self, ctx: click.Context) -> Any:
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", CorruptRowWarning)
                try:
                    return super().invoke(ctx)
                except ReplayError as exc:
                    raise BadInput(str(exc)) from exc
                except RecursionError as exc:
                    raise BadInput(
                        "the input is nested too deeply to read (a cassette or store value "
                        "thousands of levels deep): it was not written by agent-replay; "
                        "check the file"
                    ) from exc
                except sqlite3.DatabaseError as exc:
                    raise BadInput(
                        f"the store could not be read: {exc}; check --db / REPLAY_DB"
                    ) from exc
                except OSError as exc:
                    if exc.filename is None:  # not about a file the user named: a real failure
                        raise
                    raise BadInput(
                        f"{exc.filename}: {exc.strerror or exc}: "
                        "check the path (does its folder exist?)"
                    ) from exc
        finally:
            # Shown once the recording context is gone: re-shown inside it, each warning would be
            # recorded again into the list being read, for ever (memory grew without bound).
            seen = set()
            for w in caught:
                if issubclass(w.category, CorruptRowWarning):
                    if str(w.message) not in seen:
                        seen.add(str(w.message))
                        click.echo(f"Warning: {w.message}", err=True)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agent-replay", prog_name="replay")
def cli() -> None:
    """Record, replay and diff the runs of tool-calling AI agents.

    Example:

        replay demo && replay runs && replay show RUN_ID
    """


def _get_run(store: Any, run_id: str) -> Any:
    try:
        return store.find_run(run_id)
    except (ReplayError, ValueError) as exc:  # not found, ambiguous, empty, unreadable row
        raise BadInput(str(exc)) from exc


# ---- runs / show ----------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--agent", default=None, help="Only runs of this agent.")
@click.option("--stop-reason", default=None, help="Only runs that stopped for this reason.")
@click.option("--since", default=None, help="Only runs started this long ago (90s, 10m, 24h, 7d).")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many runs, newest first.",
)
@click.option("--replays", is_flag=True, help="Include replayed runs (replay_of set).")
@json_option
def runs(
    db: str,
    agent: str | None,
    stop_reason: str | None,
    since: str | None,
    limit: int,
    replays: bool,
    as_json: bool,
) -> None:
    """List recorded runs, newest first.

    Example:

        replay runs --agent support-agent --stop-reason loop_detected --since 24h
    """
    store = open_store(db)
    try:
        found = store.runs(
            agent=agent,
            stop_reason=stop_reason,
            since_ms=since_ms(since),
            limit=limit,
            include_replays=replays,
        )
        total = store.count_runs()
    finally:
        store.close()
    if as_json:
        echo_json(
            [
                {
                    **r.model_dump(mode="json", exclude={"input", "output"}),
                    "stop_inferred": r.stop_inferred,
                }
                for r in found
            ]
        )
        return
    if not found:
        click.echo(f"no runs match in {db} ({total} runs in all)")
        return
    click.echo(_runs_table(found))


_RUNS_HEADER = ["run_id", "agent", "started (UTC)", "stop_reason", "tools", "latency", "tokens"]


def _runs_table(found: list[Run]) -> str:
    """The `replay runs` table: one row per run, newest first."""
    rows = [
        [
            r.run_id,
            r.agent,
            fmt_ts(r.started_ms),
            _stop_text(r),
            str(r.tool_calls),
            fmt_ms(r.latency_ms),
            str(r.usage.tokens_in + r.usage.tokens_out),
            f"${r.usage.cost_usd:.4f}",
            "pinned" if r.pinned else "",
        ]
        for r in found
    ]
    return table([*_RUNS_HEADER, "spend", ""], rows, right={4, 5, 6, 7})


@cli.command()
@click.argument("run_id")
@db_option
@click.option("--full", is_flag=True, help="Show whole 24-hex hashes.")
@json_option
@click.option(
    "--outputs",
    is_flag=True,
    help="Each step's redacted output on one line, cut to the terminal width.",
)
@click.option(
    "--step",
    "step",
    type=int,
    default=None,
    metavar="N",
    help="One step in full: args (when stored), output, error and message, HTTP interactions.",
)
def show(
    run_id: str, db: str, full: bool, as_json: bool, outputs: bool = False, step: int | None = None
) -> None:
    """The timeline of one run: what it called, with what, what came back, versions, why it stopped.

    RUN_ID may be a unique prefix. --outputs lists what each step returned (redacted); --step N
    shows one step in full; both take --json.

    Example:

        replay show r_01jd2k8... --step 3
    """
    if outputs or step is not None:
        from replay.cli_show import show_detail

        open_store(db).close()  # no store: the usual error
        show_detail(run_id, db, outputs=outputs, step=step, as_json=as_json)
        return
    store = open_store(db)
    try:
        try:
            timeline, events = load_timeline(store, run_id)
        except (ReplayError, ValueError) as exc:  # not found, ambiguous, unreadable row
            raise BadInput(str(exc)) from exc
    finally:
        store.close()
    if as_json:
        echo_json(timeline.to_json(events))
    else:
        click.echo(timeline.render(full=full))


def _stop_text(run: Run) -> str:
    if run.stop_inferred:
        return "killed (inferred)"
    return str(run.stop_reason or "(running)")


def _refuse_expired(store: Any, run: Any, action: str, allow: bool) -> None:
    """Exit 2 naming the steps whose outputs were pruned, unless --allow-expired (then warn)."""
    steps = store.expired_steps(run)
    if not steps:
        return
    err = ExpiredSnapshotsError(
        run.run_id,
        steps,
        action=action,
        fix=f"Pass --allow-expired to {action} it without those outputs",
    )
    if not allow:
        raise BadInput(str(err))
    ids = ", ".join(str(sid) for sid, _, _ in steps[:20]) + (", …" if len(steps) > 20 else "")
    click.echo(
        f"Warning: run {run.run_id}: the outputs of step(s) {ids} expired and were pruned; "
        f"{action} goes ahead without them (--allow-expired), so replaying it will be refused",
        err=True,
    )


# ---- retention ------------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@json_option
def prune(db: str, dry_run: bool, as_json: bool) -> None:
    """Delete expired runs, events and snapshots (pinned runs never expire).

    Deletes in short transactions of at most 2,000 rows, so recording processes are not kept
    waiting for the write lock.

    Example:

        replay prune --dry-run
    """
    store = open_store(db)
    try:
        res = store.prune(dry_run=dry_run)
    finally:
        store.close()
    data = {
        "runs": res.runs,
        "events": res.events,
        "snapshots": res.snapshots,
        "dry_run": dry_run,
        "batches": res.batches,
        "longest_lock_ms": res.longest_lock_ms,
    }
    if as_json:
        echo_json(data)
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {res.runs} runs, {res.events} events, {res.snapshots} snapshots from {db}")


@cli.command()
@click.argument("run_id")
@db_option
@click.option("--unpin", is_flag=True, help="Let the run expire again.")
@click.option(
    "--allow-expired",
    is_flag=True,
    help="Pin even when some steps' outputs already expired (the run cannot be replayed).",
)
def pin(run_id: str, db: str, unpin: bool, allow_expired: bool) -> None:
    """Keep a run (an incident) forever: prune never deletes it.

    Example:

        replay pin r_01jd2k8...
    """
    store = open_store(db)
    try:
        run = _get_run(store, run_id)
        if not unpin:
            _refuse_expired(store, run, "pin", allow_expired)
        store.pin(run.run_id, not unpin)
    finally:
        store.close()
    click.echo(f"{'unpinned' if unpin else 'pinned'} {run.run_id}")


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@db_option
@json_option
@click.option(
    "--deep/--no-deep",
    default=None,
    help="Also run detect-secrets' provider plugins (slower; pip install 'agent-replay[scan]'). "
    "Default: on when detect-secrets is installed.",
)
def scan(paths: tuple[str, ...], db: str, as_json: bool, deep: bool | None) -> None:
    """Look for anything the redaction rules would catch in stores and cassettes.

    PATHS are SQLite stores, JSON cassettes or folders of cassettes (default: the store and
    ./cassettes). Exit 1 with the place of each hit; the value itself is never printed. Exit 2
    when a file could not be read (named on stderr): the scan is then incomplete.
    With detect-secrets installed (the ``scan`` extra), its provider plugins check every string
    too; their hits show as ``detect-secrets:<type>``.

    Example:

        replay scan cassettes/ replay.db
    """
    from replay.scan import ScanInputError, heavy_detector, scan_paths

    available = heavy_detector() is not None
    if deep and not available:
        raise BadInput(
            "--deep needs detect-secrets: pip install 'agent-replay[scan]' (or drop --deep)"
        )
    targets = list(paths) or [p for p in (db, "cassettes") if os.path.exists(p)]
    try:
        result = scan_paths(targets, heavy=available if deep is None else deep)
    except ScanInputError as exc:
        raise BadInput(str(exc)) from None
    files, hits, unreadable = result.files, result.hits, result.unreadable
    if as_json:
        echo_json([{"file": str(h.file), "location": h.location, "rule": h.rule} for h in hits])
    else:
        for h in hits:
            click.echo(f"{h.file}: {h.location}: {h.rule}")
        click.echo(
            f"scanned {len(files) - len(unreadable)} file(s): {len(hits)} hit(s)", err=bool(hits)
        )
    for line in unreadable:
        click.echo(f"Error: {line}", err=True)
    if unreadable:
        sys.exit(2)
    if hits:
        sys.exit(1)


# ---- cassettes ------------------------------------------------------------------------------


@cli.command()
@click.argument("run_id")
@db_option
@path_option(
    "-o",
    "--out",
    "out_dir",
    help="Folder to write <run_id>.json into.",
    default="cassettes",
    folder=True,
)
@click.option("--force", is_flag=True, help="Overwrite an existing cassette that differs.")
@path_option(
    "--test", "test_dir", help="Also write a ready incident test into this folder.", folder=True
)
@click.option(
    "--allow-expired",
    is_flag=True,
    help="Export (and pin) even when some steps' outputs expired: the cassette lacks them.",
)
def export(
    run_id: str, db: str, out_dir: str, force: bool, test_dir: str | None, allow_expired: bool
) -> None:
    """Write a run as a self-contained, redacted cassette (and pin it in the store).

    Example:

        replay export r_01jd2k8... --test tests/incidents
    """
    from replay.cassette import cassette_from_store, check_run_id, write_cassette

    store = open_store(db)
    try:
        run = _get_run(store, run_id)
        try:  # the id names the file: a malformed one (../../x) could write outside --out
            check_run_id(run.run_id, f"{db}: run")
        except CassetteDecodeError as exc:
            raise BadInput(f"{exc}; this run cannot be exported") from exc
        _refuse_expired(store, run, "export", allow_expired)
        cas = cassette_from_store(store, run.run_id)
        path = Path(out_dir) / f"{run.run_id}.json"
        try:
            write_cassette(cas, path, force=force)
        except FileExistsError as exc:
            raise BadInput(str(exc)) from exc
        store.pin(run.run_id, True)
    finally:
        store.close()
    click.echo(f"wrote {path} (run pinned in {db})")
    if test_dir is not None:
        from replay.incident import write_incident_test

        try:
            test_path = write_incident_test(cas, path, test_dir, force=force)
        except (FileExistsError, CassetteDecodeError) as exc:
            raise BadInput(str(exc)) from exc
        click.echo(f"wrote {test_path}: run it with pytest {test_path}")


@cli.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@db_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["cassette", "otlp"]),
    default="cassette",
    show_default=True,
    help="cassette: agent-replay cassettes; "
    "otlp: OTLP JSON traces (OpenInference, OpenLLMetry, OTel GenAI).",
)
def import_(files: tuple[str, ...], db: str, fmt: str) -> None:
    """Load cassettes (or OTLP JSON traces) into a store (importing one twice adds nothing).

    Each file is checked first: a run id that is not well-formed, an event of another run or a
    snapshot whose body does not hash to its sha is refused, and nothing is written. A run already
    in the store is never overwritten. With --format otlp, each agent span of a trace becomes a
    run and its tool and LLM spans its steps, redacted and hashed as the recorder does.

    Example:

        replay import cassettes/*.json --db incidents.db
        replay import --format otlp traces.json
    """
    if fmt == "otlp":
        from replay.cli_otel import import_otlp_files

        import_otlp_files(files, db)
        return
    from replay.cassette import import_cassette, load_cassette

    cassettes = []
    for f in files:  # validate all first: a bad file changes nothing in the store
        try:
            cassettes.append(load_cassette(f))
        except CassetteDecodeError as exc:
            raise BadInput(str(exc)) from exc
    store = open_store(db, create=True)
    added = 0
    try:
        for cas in cassettes:
            added += import_cassette(store, cas)
    finally:
        store.close()
    click.echo(f"imported {added} run(s) into {db}; {len(cassettes) - added} already there")


# ---- diff / run -----------------------------------------------------------------------------


@cli.command()
@click.argument("a")
@click.argument("b")
@db_option
@click.option("--ignore", multiple=True, help="tool:NAME, field:NAME or output:PATH (repeatable).")
@json_option
@click.option("--markdown", is_flag=True, help="Print Markdown (for a CI comment).")
def diff(a: str, b: str, db: str, ignore: tuple[str, ...], as_json: bool, markdown: bool) -> None:
    """Diff two recorded runs or cassettes (A is the reference). Exit 1 when they differ.

    Example:

        replay diff r_01jd2k8... cassettes/r_01jd2m1....json
    """
    from replay.diff import diff_traces
    from replay.replayer import load_recording

    if as_json and markdown:
        raise BadInput("--json and --markdown exclude each other: pick one")
    try:
        ra, rb = load_recording(a, db=db), load_recording(b, db=db)
        rules = IgnoreRules.parse(list(ignore))
    except (ReplayError, ValueError) as exc:
        raise BadInput(str(exc)) from exc
    d = diff_traces(ra.trace(), rb.trace(), ignore=rules)
    render_diff(d, as_json, markdown)
    sys.exit(0 if d.is_empty else 1)


for _command in (run_cmd, stats, alerts, metrics, demo, view, otel_export, review_cmd):
    cli.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    cli()
