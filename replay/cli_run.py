"""`replay run`: replay recorded runs (ids, cassettes, or the last N) against the code checked
out now, as a gate.

A thin shell over `replay.batch` (the same `RunOptions`, usage gates, what-if replays and summary
line as the pytest plugin); `replay/cli.py` registers it with ``cli.add_command(run_cmd)``. Exit
codes: 0 every replay matches, 1 one diverged, 2 an error or bad input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import click

from replay._cli_util import (
    BadInput,
    db_option,
    json_option,
    open_store,
    path_option,
    render_diff,
)
from replay.batch import (
    DEFAULT_MAX_DELTA_PCT,
    RunOptions,
    UsageGate,
    check_faults,
    ensure_importable,
    replay_batch,
    replay_whatif,
    usage_gates,
)
from replay.diff import IgnoreRules
from replay.errors import ReplayError
from replay.replay_modes import parse_match_options
from replay.report import REPORT_SUFFIXES, Outcome, render_report, summary_line, write_report

__all__ = ["run_cmd"]


def _pct_option(flag: str, what: str) -> Any:
    return click.option(
        flag,
        type=click.FloatRange(min=0),
        default=DEFAULT_MAX_DELTA_PCT,
        show_default=True,
        metavar="PCT",
        help=f"A replay whose {what} grew by more than PCT percent diverges "
        "(a decrease never does).",
    )


def _choice_option(names: tuple[str, ...], choices: list[str], help: str) -> Any:
    """An option taking one of `choices`, the first the default."""
    return click.option(
        *names, type=click.Choice(choices), default=choices[0], show_default=True, help=help
    )


#: ``replay run``'s what-if options (`replay.faults`, `replay.flaky`): ``--fault`` and
#: ``--repeat`` are `RunOptions` fields; ``--flaky`` / ``--quarantine`` judge a repeat.
_WHATIF_OPTIONS = [
    click.option(
        "--fault",
        "faults",
        multiple=True,
        metavar="TOOL=FAULT",
        help="Replay under this fault (timeout, connect, 429, 503, malformed, drift, slow; e.g. "
        "http.get=429:retry-after=2@first:2); one replay per --fault, a,b for two at once. "
        "Exit 1 when the agent does not cope (raises or stops with error).",
    ),
    click.option(
        "--repeat",
        type=click.IntRange(min=1),
        default=1,
        help="Replay each run K times; exit 1 when the step sequences differ (flaky).",
    ),
    _choice_option(
        ("--flaky", "flaky_policy"),
        ["fail", "warn"],
        "With --repeat: what a flaky run does to the exit code.",
    ),
    path_option(
        "--quarantine",
        help="With --repeat: run ids or cassette names (one a line) whose flakiness only warns.",
    ),
]


#: The options of how each recording is replayed, in the order `--help` lists them.
_RUN_OPTIONS = [
    click.option(
        "--agent",
        "agent_opt",
        default=None,
        help="module:function to replay instead of the recorded entrypoint; "
        "with --last, a plain NAME filters by agent name.",
    ),
    click.option(
        "--replay-agent",
        "agents",
        multiple=True,
        metavar="MODULE[:FN]",
        help="A module whose @rec.agent functions replays may call (repeatable). A "
        "recording is data: its entrypoint is imported only when pyproject.toml's "
        "[tool.agent-replay] agents lists its module.",
    ),
    click.option(
        "--ignore", multiple=True, help="tool:NAME, field:NAME or output:PATH (repeatable)."
    ),
    path_option(
        "--record-to",
        help="Keep the replayed runs in this store (replay_of set) for `replay show`.",
    ),
    _choice_option(
        ("--clock",),
        ["recorded", "real"],
        "The agent's wall clock: the recorded run's time, or the real one.",
    ),
    click.option(
        "--match",
        "match",
        multiple=True,
        metavar="TOOL=sequence|TOOL=ignore:ARG[,ARG]",
        help="Answer TOOL's calls from the recording even when their args changed (repeatable).",
    ),
    click.option(
        "--live",
        multiple=True,
        metavar="GLOB",
        help="Run these tools/models for real (names or globs, repeatable); marked in the diff.",
    ),
    _pct_option("--max-token-delta-pct", "tokens"),
    _pct_option("--max-spend-delta-pct", "spend (cost_usd)"),
    *_WHATIF_OPTIONS,
]


def _run_options(f: Any) -> Any:
    """The options of how each recording is replayed: the fields of `replay.batch.RunOptions`.

    An option whose name is a `RunOptions` field reaches `replay_run` as it is (see
    `_batch_options`): a new replay mode adds its field there and its option in `_RUN_OPTIONS`.
    """
    for option in reversed(_RUN_OPTIONS):
        f = option(f)
    return f


@click.command("run")
@click.argument("sources", nargs=-1)
@db_option
@_run_options
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=None,
    help="Replay the N most recent recorded runs.",
)
@click.option(
    "--stop-reason", default=None, help="With --last: only runs that stopped for this reason."
)
@path_option(
    "--report", "report_path", help="Write a report: .json, .md or .xml (JUnit) by suffix."
)
@json_option
@click.option("--markdown", is_flag=True, help="Print Markdown (for a CI comment).")
def run_cmd(
    sources: tuple[str, ...],
    db: str,
    last: int | None,
    stop_reason: str | None,
    report_path: str | None,
    as_json: bool,
    markdown: bool,
    **run_opts: Any,
) -> None:
    """Replay recorded runs against the code checked out now. Exit 1 if one diverges, 2 on error.

    SOURCES are run ids (or unique prefixes) and cassette files. --last N replays the N most
    recent production runs: the mass replay before a deploy. A replay whose tokens or spend
    grew past --max-token-delta-pct / --max-spend-delta-pct diverges, as in the pytest plugin.

    Example:

        replay run --last 50 --agent support-agent --report replay-report.md
    """
    if as_json and markdown:
        raise BadInput("--json and --markdown exclude each other: pick one")
    if report_path and Path(report_path).suffix.lower() not in REPORT_SUFFIXES:
        raise BadInput(f"--report {report_path}: use a .json, .md or .xml file")
    if not sources and last is None:
        raise BadInput("name runs or cassettes to replay, or use --last N (replay run --last 20)")
    if stop_reason and last is None:
        raise BadInput("--stop-reason filters --last: add --last N")
    options, gates, agent_name = _batch_options(db, run_opts, last)
    targets = list(sources) + _recent(db, last, agent_name, stop_reason)
    judging = _whatif_judging(run_opts) if options.whatif else {}
    show_progress = len(targets) > 1 and not as_json
    with (
        click.progressbar(length=len(targets), label="replaying", file=sys.stderr, show_pos=True)
        if show_progress
        else contextlib.nullcontext()
    ) as bar:
        on_done = (lambda _: bar.update(1)) if bar else None
        if options.whatif:
            outcomes = replay_whatif(targets, options, **judging, on_done=on_done)
        else:
            outcomes = replay_batch(targets, options, gates, on_done=on_done)
    if report_path:
        write_report(outcomes, report_path)
    _print_outcomes(outcomes, as_json, markdown, options.record_to, diff=not options.whatif)
    if len(outcomes) == 1 and outcomes[0].status == "error":
        click.echo(f"Error: {outcomes[0].error}", err=True)
    if any(o.status == "error" for o in outcomes):
        sys.exit(2)
    sys.exit(1 if any(o.status == "diverged" for o in outcomes) else 0)


def _batch_options(
    db: str, run_opts: dict[str, Any], last: int | None
) -> tuple[RunOptions, list[UsageGate], str | None]:
    """`replay run`'s replay options and gates from its flags; the agent name --last filters by."""
    record_to = run_opts["record_to"]
    if record_to and os.path.abspath(record_to) == os.path.abspath(db):
        raise BadInput(
            f"--record-to {record_to} is the store being replayed: "
            "name another file (e.g. replays.db)"
        )
    try:
        rules = IgnoreRules.parse(list(run_opts["ignore"]))
        match = parse_match_options(run_opts.pop("match", ()))
        check_faults(run_opts["faults"])
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    agent_opt = run_opts["agent_opt"]
    entry = agent_opt if agent_opt and ":" in agent_opt else None
    agent_name = agent_opt if agent_opt and ":" not in agent_opt else None
    if agent_name and last is None:
        raise BadInput(
            f"--agent {agent_name!r} is not module:function; a plain agent name filters --last N"
        )
    # Agent modules the project names are imported from the folder `replay` runs in.
    ensure_importable(os.getcwd(), first=True)
    fields = {f.name for f in dataclasses.fields(RunOptions)} - {"agent", "db", "ignore", "project"}
    as_given: dict[str, Any] = {
        k: list(v) if isinstance(v, tuple) else v for k, v in run_opts.items() if k in fields
    }
    options = RunOptions(
        **as_given, agent=entry, db=db, ignore=rules, match=match, project=os.getcwd()
    )
    gates = usage_gates(run_opts["max_token_delta_pct"], run_opts["max_spend_delta_pct"])
    return options, gates, agent_name


def _whatif_judging(run_opts: dict[str, Any]) -> dict[str, Any]:
    """How a what-if replay is judged: the --flaky policy and the --quarantine list."""
    from replay.flaky import load_quarantine

    path = run_opts["quarantine"]
    try:
        listed = load_quarantine(path) if path else None
    except ReplayError as exc:
        raise BadInput(str(exc)) from exc
    return {"policy": run_opts["flaky_policy"], "quarantine": listed}


def _recent(db: str, last: int | None, agent: str | None, stop_reason: str | None) -> list[str]:
    """The run ids of the `last` most recent runs (of `agent`, stopped for `stop_reason`)."""
    if last is None:
        return []
    store = open_store(db)
    try:
        if agent and agent not in store.agents():
            raise BadInput(
                f"no agent {agent!r} in {db}; agents: {', '.join(store.agents()) or '(none)'}"
            )
        recent = store.runs(agent=agent, stop_reason=stop_reason, limit=last)
    finally:
        store.close()
    if not recent:
        raise BadInput(f"no recorded runs match in {db}")
    return [r.run_id for r in recent]


def _print_outcomes(
    outcomes: list[Outcome],
    as_json: bool,
    markdown: bool,
    record_to: str | None,
    *,
    diff: bool = True,
) -> None:
    """The outcomes as JSON, Markdown or lines; one replay's diff in full unless `diff` is False
    (a what-if replay prints its verdict line)."""
    if as_json:
        click.echo(render_report(outcomes, "json"))
    elif diff and len(outcomes) == 1 and outcomes[0].diff is not None:
        only = outcomes[0]
        if only.status == "diverged" and only.diff is not None and only.diff.is_empty:
            # Only a usage gate broke: the diff alone would read "matches".
            click.echo(
                f"replay of {only.run_id} broke a usage gate (same steps, stop reason and output)"
            )
        render_diff(only.diff, False, markdown)
        if only.note:
            click.echo(f"usage gate: {only.note}")
    elif markdown:
        click.echo(render_report(outcomes, "markdown"))
    else:
        for o in outcomes:
            click.echo(o.summary())
        if record_to:
            click.echo(f"replayed runs kept in {record_to}: replay runs --replays --db {record_to}")
        click.echo(summary_line(outcomes))
