"""The `replay` command line: thin shells over the library.

Exit codes: 0 ok, 1 a replay diverged / an alert fired / scan found something, 2 bad input.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
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
    table,
)
from replay.errors import CassetteDecodeError, CorruptRowWarning, ReplayError

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
                        "the input is nested too deeply to read (a cassette or store value thousands of "
                        "levels deep): it was not written by agent-replay; check the file"
                    ) from exc
                except sqlite3.DatabaseError as exc:
                    raise BadInput(
                        f"the store could not be read: {exc}; check --db / REPLAY_DB"
                    ) from exc
                except OSError as exc:
                    if exc.filename is None:  # not about a file the user named: a real failure
                        raise
                    raise BadInput(
                        f"{exc.filename}: {exc.strerror or exc}: check the path (does its folder exist?)"
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


def _since_ms(since: str | None) -> int | None:
    if since is None:
        return None
    from replay.stats import InvalidDurationError, parse_duration

    try:
        window = parse_duration(since, "--since")
    except InvalidDurationError as exc:
        raise BadInput(str(exc)) from exc
    except OverflowError:
        raise BadInput(
            f"--since {since[:40]!r} is too large: give a window like 7d or 52w"
        ) from None
    now = int(time.time() * 1000)
    if window > now:
        raise BadInput(
            f"--since {since[:40]!r} reaches back before 1970: give a window like 7d or 52w"
        )
    return now - window


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
            since_ms=_since_ms(since),
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
    rows = []
    for r in found:
        rows.append(
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
        )
    click.echo(
        table(
            [
                "run_id",
                "agent",
                "started (UTC)",
                "stop_reason",
                "tools",
                "latency",
                "tokens",
                "spend",
                "",
            ],
            rows,
            right={4, 5, 6, 7},
        )
    )


def _short(sha: str | None, full: bool) -> str:
    if not sha:
        return "-"
    return sha if full else sha[:12]


def _http_attempts(store: Any, http_sha: str | None) -> dict[int | None, int] | None:
    """HTTP requests per step id of an http=True run (None key: outside tool steps); None if unknown."""
    found = store.snapshot(http_sha) if http_sha else None
    if not found:
        return None
    try:
        interactions = json.loads(found[0])
    except (TypeError, ValueError):
        return None
    from replay.http import attempts_by_step

    return attempts_by_step(interactions) if isinstance(interactions, list) else None


def _none_last(item: tuple[int | None, int]) -> tuple[bool, int]:
    return (item[0] is None, item[0] or 0)


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
    """The timeline of one run: what it called, with what, what came back, which versions, why it stopped.

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
        run = _get_run(store, run_id)
        events = store.events(run.run_id)
        http = _http_attempts(store, run.http_sha)
    finally:
        store.close()
    if as_json:
        data: dict[str, Any] = {
            "run": run.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in events],
        }
        if http is not None:
            data["http_attempts"] = [
                {"step_id": k, "attempts": v} for k, v in sorted(http.items(), key=_none_last)
            ]
        echo_json(data)
        return
    steps = [e for e in events if e.kind in ("tool_result", "model_result")]
    versions = " ".join(f"{k}={v}" for k, v in sorted(run.versions.items())) or "(none recorded)"
    u = run.usage
    out = [
        f"run {run.run_id}  agent {run.agent}"
        + (f"  (replay of {run.replay_of})" if run.replay_of else ""),
        f"entrypoint  {run.entrypoint or '-'}",
        f"versions    {versions}",
        f"started     {fmt_ts(run.started_ms)} UTC  latency {fmt_ms(run.latency_ms)}",
        f"input       sha {_short(run.input_sha, full)}   output sha {_short(run.output_sha, full)}",
        f"usage       {u.tokens_in} tokens in, {u.tokens_out} out, ${u.cost_usd:.4f}, {run.tool_calls} tool calls",
        "",
    ]
    rows = []
    sizes: dict[int, int] = {}
    opened: set[int] = set()
    for e in steps:
        if e.concurrent_group is not None:
            sizes[e.concurrent_group] = sizes.get(e.concurrent_group, 0) + 1
    for e in steps:
        indent = "  " if e.parent_step_id is not None else ""
        # Parallel calls: a bracket over the steps of one concurrent group (compared as a set).
        group = e.concurrent_group if sizes.get(e.concurrent_group or 0, 0) > 1 else None
        if group is not None:
            indent += "│ " if group in opened else "┌ "
            opened.add(group)
        rows.append(
            [
                str(e.step_id),
                "model" if e.kind == "model_result" else "tool",
                indent + (e.tool or "-"),
                _short(e.args_sha, full),
                e.status or "-",
                e.error or "",
                str(e.duration_ms or 0),
                _short(e.output_sha, full),
            ]
        )
        if (
            http is not None
        ):  # HTTP requests made under this step (http=True runs): a retry storm shows here
            rows[-1].append(f"×{http[e.step_id]}" if http.get(e.step_id) else "")
    header = ["step", "kind", "tool", "args_sha", "status", "error", "ms", "output_sha"]
    if rows:
        out.append(table(header + (["http"] if http is not None else []), rows, right={0, 6}))
    else:
        out.append("(no tool or model calls)")
    if http is not None:
        outside = http.get(None, 0)
        total = sum(http.values())
        out.append(
            f"http        {total} request{'' if total == 1 else 's'} recorded"
            + (f", {outside} outside tool steps" if outside else "")
        )
    if sizes:
        n = sum(1 for v in sizes.values() if v > 1)
        out.append(
            f"concurrent  {n} group(s) of parallel calls (┌ │), each compared as a set by replay"
        )
    repeats: dict[tuple[str | None, str | None], list[int]] = {}
    for e in steps:
        repeats.setdefault((e.tool, e.args_sha), []).append(e.step_id or 0)
    dup = [(k, v) for k, v in repeats.items() if len(v) > 1]
    if dup:
        out.append("")
        for (tool, sha), ids in dup:
            out.append(
                f"repeated    {tool} with the same args {len(ids)}x (steps {', '.join(map(str, ids))})"
            )
    if run.stop_inferred:
        where = f"process {run.pid} on {run.host or 'an unknown host'}"
        out += ["", f"stop        killed (inferred: no stop event, and {where} is gone)"]
    else:
        out += ["", f"stop        {run.stop_reason or '(no stop event yet: still running)'}"]
    click.echo("\n".join(out))


def _stop_text(run: Any) -> str:
    if run.stop_inferred:
        return "killed (inferred)"
    return str(run.stop_reason or "(running)")


def _refuse_expired(store: Any, run: Any, action: str, allow: bool) -> None:
    """Exit 2 naming the steps whose outputs were pruned, unless --allow-expired (then warn)."""
    from replay.errors import ExpiredSnapshotsError

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
    from replay.processors import heavy_detector, heavy_settings, scan_json_file, scan_sqlite

    available = heavy_detector() is not None
    if deep and not available:
        raise BadInput(
            "--deep needs detect-secrets: pip install 'agent-replay[scan]' (or drop --deep)"
        )
    heavy = available if deep is None else deep

    targets = list(paths) or [p for p in (db, "cassettes") if os.path.exists(p)]
    if not targets:
        raise BadInput(
            "nothing to scan: name a store or cassette files (replay scan cassettes/ replay.db)"
        )
    files: list[Path] = []
    for t in targets:
        p = Path(t)
        if not p.exists():
            raise BadInput(f"{t}: no such file or folder")
        files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    hits = []
    unreadable: list[str] = []
    with heavy_settings() if heavy else contextlib.nullcontext():
        for f in files:
            try:
                with open(f, "rb") as fh:
                    is_sqlite = fh.read(16) == b"SQLite format 3\x00"
                hits.extend(
                    scan_sqlite(f, heavy=heavy) if is_sqlite else scan_json_file(f, heavy=heavy)
                )
            except (OSError, ReplayError, ValueError, RecursionError, sqlite3.Error) as exc:
                # "Could not read" is not "secrets found": name the file, go on, exit 2 at the end.
                why = (
                    exc.strerror
                    if isinstance(exc, OSError) and exc.strerror
                    else type(exc).__name__
                )
                if isinstance(exc, ReplayError):
                    why = str(exc)
                unreadable.append(f"{f}: could not read ({why})")
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
@click.option(
    "-o",
    "--out",
    "out_dir",
    default="cassettes",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder to write <run_id>.json into.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing cassette that differs.")
@click.option(
    "--test",
    "test_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Also write a ready incident test into this folder.",
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
    help="cassette: agent-replay cassettes; otlp: OTLP JSON traces (OpenInference, OpenLLMetry, OTel GenAI).",
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


def _render(diff: Any, as_json: bool, markdown: bool) -> None:
    if as_json:
        echo_json(diff.to_json())
    elif markdown:
        click.echo(diff.to_markdown())
    else:
        click.echo(diff.to_text(color=None))


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
    from replay.diff import IgnoreRules, diff_traces
    from replay.replayer import load_recording

    if as_json and markdown:
        raise BadInput("--json and --markdown exclude each other: pick one")
    try:
        ra, rb = load_recording(a, db=db), load_recording(b, db=db)
        rules = IgnoreRules.parse(list(ignore))
    except (ReplayError, ValueError) as exc:
        raise BadInput(str(exc)) from exc
    d = diff_traces(ra.trace(), rb.trace(), ignore=rules)
    _render(d, as_json, markdown)
    sys.exit(0 if d.is_empty else 1)


@cli.command("run")
@click.argument("sources", nargs=-1)
@db_option
@click.option(
    "--agent",
    "agent_opt",
    default=None,
    help="module:function to replay instead of the recorded entrypoint; "
    "with --last, a plain NAME filters by agent name.",
)
@click.option(
    "--replay-agent",
    "agent_refs",
    multiple=True,
    metavar="MODULE[:FN]",
    help="A module whose @rec.agent functions replays may call (repeatable). A recording is "
    "data: its entrypoint is imported only when pyproject.toml's [tool.agent-replay] "
    "agents lists its module.",
)
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=None,
    help="Replay the N most recent recorded runs.",
)
@click.option(
    "--stop-reason", default=None, help="With --last: only runs that stopped for this reason."
)
@click.option("--ignore", multiple=True, help="tool:NAME, field:NAME or output:PATH (repeatable).")
@click.option(
    "--report",
    "report_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write a report: .json, .md or .xml (JUnit) by suffix.",
)
@click.option(
    "--record-to",
    default=None,
    type=click.Path(dir_okay=False),
    help="Keep the replayed runs in this store (replay_of set) for `replay show`.",
)
@click.option(
    "--clock",
    type=click.Choice(["recorded", "real"]),
    default="recorded",
    show_default=True,
    help="The agent's wall clock: the recorded run's time, or the real one.",
)
# ---- what-if options (replay.faults, replay.flaky) ----
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="TOOL=FAULT",
    help="Replay under this fault (timeout, connect, 429, 503, malformed, drift, slow; e.g. "
    "http.get=429:retry-after=2@first:2); one replay per --fault, a,b for two at once. "
    "Exit 1 when the agent does not cope (raises or stops with error).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    help="Replay each run K times; exit 1 when the step sequences differ (flaky).",
)
@click.option(
    "--flaky",
    "flaky_policy",
    type=click.Choice(["fail", "warn"]),
    default="fail",
    show_default=True,
    help="With --repeat: what a flaky run does to the exit code.",
)
@click.option(
    "--quarantine",
    default=None,
    type=click.Path(dir_okay=False),
    help="With --repeat: run ids or cassette names (one a line) whose flakiness only warns.",
)
# ---- end of the what-if options ----
@json_option
@click.option("--markdown", is_flag=True, help="Print Markdown (for a CI comment).")
def run_cmd(
    sources: tuple[str, ...],
    db: str,
    agent_opt: str | None,
    agent_refs: tuple[str, ...],
    last: int | None,
    stop_reason: str | None,
    ignore: tuple[str, ...],
    report_path: str | None,
    record_to: str | None,
    clock: str,
    faults: tuple[str, ...],
    repeat: int,
    flaky_policy: str,
    quarantine: str | None,
    as_json: bool,
    markdown: bool,
) -> None:
    """Replay recorded runs against the code checked out now. Exit 1 if one diverges, 2 on error.

    SOURCES are run ids (or unique prefixes) and cassette files. --last N replays the N most
    recent production runs: the mass replay before a deploy.

    Example:

        replay run --last 50 --agent support-agent --report replay-report.md
    """
    from replay.diff import IgnoreRules
    from replay.replayer import replay_run
    from replay.report import REPORT_SUFFIXES, Outcome, render_report, write_report

    if as_json and markdown:
        raise BadInput("--json and --markdown exclude each other: pick one")
    if report_path and Path(report_path).suffix.lower() not in REPORT_SUFFIXES:
        raise BadInput(f"--report {report_path}: use a .json, .md or .xml file")
    if not sources and last is None:
        raise BadInput("name runs or cassettes to replay, or use --last N (replay run --last 20)")
    if stop_reason and last is None:
        raise BadInput("--stop-reason filters --last: add --last N")
    if record_to and os.path.abspath(record_to) == os.path.abspath(db):
        raise BadInput(
            f"--record-to {record_to} is the store being replayed: name another file (e.g. replays.db)"
        )
    try:
        rules = IgnoreRules.parse(list(ignore))
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    # Agent modules the project names are imported from the folder `replay` runs in, as
    # `python -m` would (a console script does not put it on sys.path).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    entry = agent_opt if agent_opt and ":" in agent_opt else None
    agent_name = agent_opt if agent_opt and ":" not in agent_opt else None
    if agent_name and last is None:
        raise BadInput(
            f"--agent {agent_name!r} is not module:function; a plain agent name filters --last N"
        )
    targets = list(sources)
    if last is not None:
        store = open_store(db)
        try:
            if agent_name and agent_name not in store.agents():
                raise BadInput(
                    f"no agent {agent_name!r} in {db}; agents: {', '.join(store.agents()) or '(none)'}"
                )
            recent = store.runs(agent=agent_name, stop_reason=stop_reason, limit=last)
        finally:
            store.close()
        if not recent:
            raise BadInput(f"no recorded runs match in {db}")
        targets += [r.run_id for r in recent]
    outcomes: list[Outcome] = []
    whatif = _whatif(faults, repeat, flaky_policy, quarantine)
    show_progress = len(targets) > 1 and not as_json
    with (
        click.progressbar(targets, label="replaying", file=sys.stderr, show_pos=True)
        if show_progress
        else _nullbar(targets) as bar
    ):
        for src in bar:
            if whatif:  # what-if: replay.faults, replay.flaky
                outcomes += whatif(
                    src,
                    agent=entry,
                    db=db,
                    ignore=rules,
                    record_to=record_to,
                    clock=clock,
                    agents=list(agent_refs),
                    project=os.getcwd(),
                )
                continue
            t0 = time.perf_counter()
            try:
                res = replay_run(
                    src,
                    agent=entry,
                    db=db,
                    ignore=rules,
                    record_to=record_to,
                    clock=clock,
                    agents=list(agent_refs),
                    project=os.getcwd(),
                )
                o = Outcome(
                    src,
                    res.recorded.run_id,
                    "matched" if res.diff.is_empty else "diverged",
                    res.diff,
                )
            except (ReplayError, ValueError, ImportError) as exc:
                o = Outcome(src, None, "error", error=str(exc))
            o.seconds = time.perf_counter() - t0
            outcomes.append(o)
    if report_path:
        write_report(outcomes, report_path)
    if as_json:
        click.echo(render_report(outcomes, "json"))
    elif len(outcomes) == 1 and outcomes[0].diff is not None and whatif is None:
        _render(outcomes[0].diff, False, markdown)
    elif markdown:
        click.echo(render_report(outcomes, "markdown"))
    else:
        for o in outcomes:
            click.echo(o.summary())
        if record_to:
            click.echo(f"replayed runs kept in {record_to}: replay runs --replays --db {record_to}")
        n = len(outcomes)
        click.echo(
            f"{n} run(s) replayed: {sum(o.status == 'matched' for o in outcomes)} matched, "
            f"{sum(o.status == 'diverged' for o in outcomes)} diverged, "
            f"{sum(o.status == 'error' for o in outcomes)} errors"
        )
    if len(outcomes) == 1 and outcomes[0].status == "error":
        click.echo(f"Error: {outcomes[0].error}", err=True)
    if any(o.status == "error" for o in outcomes):
        sys.exit(2)
    sys.exit(1 if any(o.status == "diverged" for o in outcomes) else 0)


def _whatif(faults: tuple[str, ...], repeat: int, policy: str, quarantine: str | None) -> Any:
    """The replays of one source under ``--fault`` / ``--repeat`` (None: neither given)."""
    if not faults and repeat == 1:
        return None
    from replay.faults import expand, fault_outcome, parse_faults
    from replay.flaky import load_quarantine, repeat_outcome

    try:
        specs = expand(list(faults))
        for spec in specs:
            parse_faults(spec)
        listed = load_quarantine(quarantine) if quarantine else None
    except ReplayError as exc:
        raise BadInput(str(exc)) from exc

    def run(src: str, **kw: Any) -> list[Any]:
        if repeat > 1:
            return [
                repeat_outcome(src, repeat, policy=policy, quarantine=listed, faults=f, **kw)
                for f in (specs or [""])
            ]
        return [fault_outcome(src, f, **kw) for f in specs]

    return run


class _nullbar:
    def __init__(self, items: list[str]) -> None:
        self.items = items

    def __enter__(self) -> list[str]:
        return self.items

    def __exit__(self, *exc: Any) -> None:
        return None


def _register() -> None:
    from replay.cli_monitor import alerts, metrics, stats
    from replay.cli_otel import otel_export
    from replay.cli_view import view
    from replay.demo import demo

    for cmd in (stats, alerts, metrics, demo, view, otel_export):
        cli.add_command(cmd)
    from replay.cli_review import review_cmd  # what-if: replay.review

    cli.add_command(review_cmd)


_register()

if __name__ == "__main__":  # pragma: no cover
    cli()
