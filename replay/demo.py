"""`replay demo`: the duplicate-email incident, end to end, on the embedded SQLite store.

It records healthy runs and incident runs of the example support agent
(`replay.demo_agent`, shipped in the package, so the demo runs from any folder), answers
the five incident questions for the worst run from the store alone (`replay.timeline`), exports
that run as a cassette, replays it against the code that ran (it matches)
and against the fix (it diverges: fewer tool calls, one email, another stop reason), and prints
the commands to run next. Deterministic: a scripted policy stands in for the model, the upstream
is simulated in-process, and simulated time runs 50x faster than the clock.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from replay._cli_util import BadInput, db_option, fmt_ms, path_option, table
from replay.timeline import Timeline, load_timeline

if TYPE_CHECKING:
    from replay.models import Run
    from replay.store_api import StoreAPI as Store

__all__ = ["DEMO_AGENT", "demo", "load_example"]

#: How the demo's next commands name its agent (``--replay-agent``): an installed package's
#: function is never imported only because a recording names it, so the user names it.
DEMO_AGENT = "replay.demo_agent:handle"

HEALTHY_RUNS = 20
INCIDENT_RUNS = 5
# Ticket numbers: 0-19 for the healthy batch, 20-24 for the incident (seeded, so always the same).
_INCIDENT_FIRST_TICKET = 20
_WIDTH = 100


def load_example() -> Any:
    """The demo's support agent, shipped in the package: returns `replay.demo_agent.scenario`."""
    import replay.demo_agent.scenario as scenario

    return scenario


def _shell_path(p: Path) -> str:
    """`p` relative to the working directory when it is under it (what a user types)."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _avg(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _p95(xs: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def _progress(label: str, total: int) -> Any:
    click.echo(f"  {label} ", nl=False)

    def tick(n: int) -> None:
        click.echo(".", nl=False)
        if n == total:
            click.echo(f" {total}/{total}")

    return tick


def _export(store: Any, run_id: str, out_dir: Path) -> tuple[Path, str]:
    """Write the run's cassette; keep an existing file that differs and write alongside it."""
    from replay.cassette import cassette_from_store, write_cassette

    cas = cassette_from_store(store, run_id)
    path = out_dir / f"{run_id}.json"
    existed = path.exists()
    try:
        write_cassette(cas, path)
        note = "already there, identical" if existed else "new"
    except FileExistsError:
        n = 1
        while (out_dir / f"{run_id}.{n}.json").exists():
            n += 1
        path = write_cassette(cas, out_dir / f"{run_id}.{n}.json")
        note = f"{run_id}.json exists and differs: kept it, wrote alongside"
    store.pin(run_id, True)
    return path, note


@click.command()
@db_option
@path_option(
    "--cassettes",
    "cassettes_dir",
    help="Folder to export the incident cassette into.",
    default="cassettes",
    folder=True,
)
def demo(db: str, cassettes_dir: str) -> None:
    """Record the duplicate-email incident, then find, export, replay and fix the worst run.

    Records 20 healthy runs and 5 incident runs of the example support agent into the store
    (runs are added to an existing store), answers the five incident questions for the worst
    run from the store alone, exports it to the cassettes folder, replays it against the code
    that ran and against the fix, and prints the diff and the commands to run next.

    Example:

        replay demo --db /tmp/demo.db
    """
    t_start = time.perf_counter()
    db_path = Path(db)
    out_dir = Path(cassettes_dir)
    if not db_path.parent.is_dir():
        raise BadInput(f"--db {db}: the folder {db_path.parent} does not exist")
    scenario = load_example()
    healthy, incident = _record(scenario, db, out_dir)
    # ---- everything below reads the store, not the agent's memory ----------------------------
    from replay.store_api import open_store

    store = open_store(db_path)
    try:
        worst, timeline = _find_worst(store, healthy, incident)
        click.echo("")
        # Incident cassettes record the bad behaviour on purpose: they live in incidents/, which
        # the deploy gate (pytest --replay-all) leaves to their incident tests.
        cassette, note = _export(store, worst.run_id, out_dir / "incidents")
        click.echo(f"[4/6] exported {_shell_path(cassette)} ({note}; run pinned in the store)")
    finally:
        store.close()
    _replay_and_fix(scenario, cassette, timeline)
    click.echo("")
    db_flag = "" if db == "replay.db" else f" --db {db}"
    click.echo("next:")
    click.echo(f"  replay show {worst.run_id}{db_flag}")
    click.echo(f"  pytest --replay {_shell_path(cassette)} --replay-agent {DEMO_AGENT}")
    click.echo("      (replays it against the demo agent installed now, v2: it diverges as above;")
    click.echo("       with SUPPORT_AGENT_VERSION=v1, the code that ran, it matches.")
    click.echo(
        "       --replay-agent names the agent replay may call: a cassette never chooses the code)"
    )
    click.echo(
        f"  replay view {worst.run_id}{db_flag} --against replay --replay-agent {DEMO_AGENT}"
    )
    click.echo(f"done in {time.perf_counter() - t_start:.1f}s")


def _record(scenario: Any, db: str, out_dir: Path) -> tuple[Any, Any]:
    """Steps 1 and 2: record the healthy batch and the incident batch into `db`."""
    from replay.demo_agent.config import rec
    from replay.demo_agent.upstream import FakeClock

    scale = FakeClock().scale
    pace = (
        f"simulated time runs {1 / scale:.0f}x fast" if scale > 0 else "simulated time, no sleeping"
    )
    click.echo("agent-replay demo: a support agent, a flaky upstream, a customer emailed twice")
    click.echo(f"store {db}   cassettes {out_dir}/   (deterministic; {pace})")
    click.echo("")
    previous_db = rec.db
    rec.reopen(db)
    try:
        tickets = [scenario.ticket(i) for i in range(HEALTHY_RUNS)]
        click.echo(f"[1/6] recording {HEALTHY_RUNS} healthy runs (deploy v1, upstream healthy)")
        healthy = scenario.record_batch(
            tickets, flaky=False, version="v1", on_run=_progress("support-agent", HEALTHY_RUNS)
        )
        tickets = [scenario.ticket(_INCIDENT_FIRST_TICKET + i) for i in range(INCIDENT_RUNS)]
        click.echo(
            f"[2/6] the upstream turns flaky (429/503); "
            f"recording {INCIDENT_RUNS} incident runs (still v1)"
        )
        incident = scenario.record_batch(
            tickets, flaky=True, version="v1", on_run=_progress("support-agent", INCIDENT_RUNS)
        )
        if not rec.flush(30.0) or rec.dropped:
            raise click.ClickException(
                f"the recorder could not write {rec.dropped} record(s) to {db}"
            )
    finally:
        rec.reopen(previous_db)
    return healthy, incident


def _find_worst(store: Store, healthy: Any, incident: Any) -> tuple[Run, Timeline]:
    """Step 3: what the dashboard, the customers and the upstream saw; the worst run's timeline."""
    h_runs = [store.get_run(r) for r in healthy.run_ids]
    i_runs = [store.get_run(r) for r in incident.run_ids]
    click.echo("")
    click.echo(
        f"      what the dashboard saw ({store.count_runs()} runs in the store, "
        f"{len(h_runs) + len(i_runs)} new):"
    )
    rows = []
    for label, runs in (("healthy", h_runs), ("incident", i_runs)):
        stops = Counter(r.stop_reason for r in runs)
        rows.append(
            [
                label,
                str(len(runs)),
                f"{_avg([r.tool_calls for r in runs]):.1f}",
                fmt_ms(_p95([r.latency_ms or 0 for r in runs])),
                f"${_avg([r.usage.cost_usd for r in runs]):.4f}",
                ", ".join(f"{k} {n}" for k, n in stops.most_common()),
            ]
        )
    text = table(
        ["batch", "runs", "tool calls/run", "latency p95", "spend/run", "stop reasons"],
        rows,
        right={1, 2, 3, 4},
    )
    for line in text.splitlines():
        click.echo("      " + line)
    click.echo("      every run 'completed': the success rate hides the incident.")
    click.echo(
        "      what the customers saw (the fake outbox): "
        f"{incident.duplicates} of {INCIDENT_RUNS} "
        f"emailed twice; healthy batch: {healthy.duplicates} of {HEALTHY_RUNS}."
    )
    click.echo(
        "      what the upstream saw: "
        f"{healthy.upstream_requests / HEALTHY_RUNS:.1f} requests/run healthy, "
        f"{incident.upstream_requests / INCIDENT_RUNS:.1f} incident (retries included)."
    )
    worst = max(i_runs, key=lambda r: (r.tool_calls, -(r.started_ms or 0)))
    timeline, _ = load_timeline(store, worst.run_id)
    click.echo("")
    click.echo(f"[3/6] the worst run, {worst.run_id}, from the recording alone (replay show):")
    click.echo("")
    click.echo(timeline.render())
    click.echo("")
    click.echo("      the five answers, from the store alone:")
    for question, answer in timeline.five_answers():
        _wrapped(question, answer, width=21)
    return worst, timeline


def _replay_and_fix(scenario: Any, cassette: Path, timeline: Timeline) -> None:
    """Steps 5 and 6: replay the cassette against the code that ran (v1), then the fix (v2)."""
    from replay.demo_agent.config import VERSIONS, use_version
    from replay.replayer import replay_run

    click.echo("")
    click.echo("[5/6] replaying it against the code that ran (v1): tools answer from the cassette")
    with use_version("v1"):
        again = replay_run(str(cassette))
    click.echo(f"      {again.diff.headline()}")
    click.echo("")
    v1, v2 = VERSIONS["v1"], VERSIONS["v2"]
    click.echo(
        f"[6/6] replaying it against the fix (v2: prompt {v2['prompt']}, tools {v2['tools']}):"
    )
    click.echo(
        "      v2 sends a holding email the recording has no answer for; a fake outbox answers"
    )
    click.echo("      email.send (stubs=), running v2's own email.send code against it")
    outbox, stubs = scenario.fake_outbox()
    with use_version("v2"):
        fixed = replay_run(str(cassette), stubs=stubs)
    click.echo("")
    for line in fixed.diff.to_text(width=_WIDTH - 6, color=None).splitlines():
        click.echo("      " + line if line else "")
    click.echo("")
    worst = timeline.run
    before_emails = sum(1 for e in timeline.tool_steps if e.tool == "email.send")
    delivered = sum(outbox.delivered.values())
    _wrapped(
        "in short:",
        f"tool calls {worst.tool_calls} -> {fixed.replayed.tool_calls}; "
        f"email.send {before_emails} calls -> "
        f"{len(fixed.calls('email.send'))} (the fake outbox delivered {delivered} email); "
        f"stop reason {worst.stop_reason} -> {fixed.stop_reason}",
    )
    changed = [f"{k} {v1[k]} -> {v2[k]}" for k in sorted(v2) if v1.get(k) != v2[k]]
    _wrapped("versions:", ", ".join(changed))


def _wrapped(label: str, text: str, indent: int = 6, width: int = 0) -> None:
    """Echo `label` and `text`, wrapped to the demo's width with a hanging indent."""
    width = max(width, len(label) + 1)
    for line in textwrap.wrap(text, _WIDTH - indent - width) or [""]:
        click.echo(" " * indent + label.ljust(width) + line)
        label = ""


if __name__ == "__main__":  # pragma: no cover
    demo()
