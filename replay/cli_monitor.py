"""The monitoring commands `replay stats`, `replay alerts` and `replay metrics`.

Thin shells over `replay.stats`, `replay.alerts`, `replay.metrics` and `replay.dashboard`;
`replay/cli.py` registers them with ``cli.add_command(...)``. Exit codes: 0 ok, 1 an alert fired
(`alerts`) or a command failed, 2 bad input (an unparsable duration, an unknown agent, no store).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from replay._cli_util import (
    BadInput,
    db_option,
    duration_ms,
    echo_json,
    json_option,
    open_store,
    path_option,
)
from replay.alerts import REGISTRY as ALERT_RULES
from replay.stats import UnknownAgentError, format_duration

__all__ = ["alerts", "metrics", "stats"]


def _share(text: str, option: str) -> float:
    """A share as ``0.05`` or ``5%``."""
    s = text.strip()
    try:
        v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise BadInput(f"cannot parse {option} {text!r}: give a share like 0.05 or 5%") from None
    if not 0 <= v <= 1:
        raise BadInput(f"{option} {text!r} is not a share between 0 and 1 (0.05 or 5%)")
    return v


def _now_ms() -> int:
    return int(time.time() * 1000)


F = TypeVar("F", bound=Callable[..., Any])

agent_option = click.option("--agent", default=None, help="Only the runs of this agent.")


def _ratio_option(flag: str, help: str) -> Callable[[F], F]:
    """An alert threshold given as a multiple of the baseline (default 2x)."""
    return click.option(flag, type=float, default=2.0, show_default=True, help=help)


def _count_option(flag: str, minimum: int, default: int, help: str) -> Callable[[F], F]:
    """An option given as a whole number of at least `minimum`; its default shown."""
    return click.option(
        flag, type=click.IntRange(min=minimum), default=default, show_default=True, help=help
    )


def _text_option(flag: str, default: str, help: str) -> Callable[[F], F]:
    """An option given as text (a share such as ``0.02`` or ``2%``, a duration, an address),
    parsed by the command; its default shown.
    """
    return click.option(flag, default=default, show_default=True, help=help)


# ---------------------------------------------------------------------------------------------
# replay stats


@click.command()
@db_option
@click.option(
    "--since", default="7d", show_default=True, help="Window: runs started this long ago, or 'all'."
)
@agent_option
@click.option(
    "--by", type=click.Choice(["hour", "day"]), default=None, help="Also one row per hour or day."
)
@json_option
@path_option(
    "--html",
    "html_path",
    help="Write an HTML dashboard (three drift charts), linking to run pages written next to it.",
)
@path_option("--plot", "plot_path", help="Write the charts as PNG (needs matplotlib).")
def stats(
    db: str,
    since: str,
    agent: str | None,
    by: str | None,
    as_json: bool,
    html_path: str | None,
    plot_path: str | None,
) -> None:
    """Tool calls/run, latency p95, tokens/request, spend/run, tool errors and stop reasons.

    Percentiles interpolate linearly between ranks (numpy's default). Tool-call errors are
    bucketed 429 / 5xx / timeout / other by error class name (see replay.stats.classify_error).

    Example:

        replay stats --since 24h --agent support-agent --by hour --html drift.html
    """
    from replay.stats import stats_for_store

    if plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        from replay.dashboard import PlotDependencyError

        raise BadInput(str(PlotDependencyError()))
    since_ms, label = _window(since)
    chart_by = by or (
        "hour" if since_ms is not None and _now_ms() - since_ms <= 2 * 86_400_000 else "day"
    )
    store = open_store(db)
    try:
        report = stats_for_store(
            store,
            since_ms=since_ms,
            until_ms=_now_ms() + 1,
            agent=agent,
            by=chart_by if (by or html_path or plot_path) else None,  # type: ignore[arg-type]
            window_label=label,
        )
    except UnknownAgentError as exc:
        raise BadInput(str(exc)) from exc
    written: list[str] = []
    if report.stats.runs and (html_path or plot_path):
        who = f"agent {agent!r}" if agent else "all agents"
        subtitle = f"{report.stats.runs} runs {label}, {who}; store {db}"
        written = _write_charts(
            report, db, (html_path, plot_path), chart_by, subtitle, since_ms, agent
        )
    if as_json:
        d = report.to_dict()
        if not by:
            d.pop("buckets", None)
        d["written"] = written
        echo_json(d)
    elif report.message:
        click.echo(report.message)
        if html_path or plot_path:
            click.echo("no dashboard written: there is nothing to chart", err=True)
    else:
        _print_stats(report, label, agent, by, written)


def _print_stats(
    report: Any, label: str, agent: str | None, by: str | None, written: list[str]
) -> None:
    """`replay stats` as text: the overall figures, the per-hour/day table, the files written."""
    from replay.stats import format_stats, format_stats_table

    who = f" for agent {agent!r}" if agent else ""
    click.echo(f"{report.stats.runs} runs {label}{who}\n")
    click.echo(format_stats(report.stats))
    if by:
        click.echo("")
        click.echo(format_stats_table(report.buckets, by))  # type: ignore[arg-type]
    for path in written:
        click.echo(f"\nwrote {path}")


def _window(since: str) -> tuple[int | None, str]:
    """`--since` as (start in epoch ms, or None for 'all'; the words that name the window)."""
    if since.strip().lower() == "all":
        return None, "in the store"
    window = duration_ms(since, "--since", all_ok=True)
    return _now_ms() - window, f"in the last {format_duration(window)}"


def _write_charts(
    report: Any,
    db: str,
    paths: tuple[str | None, str | None],
    by: str,
    subtitle: str,
    since_ms: int | None,
    agent: str | None,
) -> list[str]:
    """Write the HTML dashboard (with its run pages) and the PNG charts; the paths written."""
    from replay import dashboard

    html_path, plot_path = paths
    written = []
    if html_path:
        links = _write_run_pages(db, html_path, since_ms, agent)
        dashboard.write_html(
            html_path, report.buckets, by=by, subtitle=subtitle, overall=report.stats, runs=links
        )
        written.append(html_path)
    if plot_path:
        dashboard.write_png(plot_path, report.buckets, by=by)
        written.append(plot_path)
    return written


def _write_run_pages(
    db: str, html_path: str, since_ms: int | None, agent: str | None, n: int = 10
) -> list[Any]:
    """Write the run pages the dashboard links to (the runs with the most tool calls, the slowest).

    They go to ``<dashboard stem>-runs/RUN_ID.html`` next to the dashboard; returns its `RunLink`
    rows.
    """
    from replay.dashboard import RunLink
    from replay.replayer import load_recording
    from replay.runpage import render_run_page, write_run_page

    store = open_store(db)
    try:
        runs = store.runs(agent=agent, since_ms=since_ms, until_ms=_now_ms() + 1)
    finally:
        store.close()
    if not runs:
        return []
    picked: dict[str, Any] = {}
    for r in (
        sorted(runs, key=lambda r: (-r.tool_calls, -r.started_ms))[:n]
        + sorted(runs, key=lambda r: -_latency(r))[:n]
    ):
        picked.setdefault(r.run_id, r)
    folder = _run_pages_folder(html_path)
    links = []
    for r in sorted(picked.values(), key=lambda r: (-r.tool_calls, -_latency(r))):
        rec = load_recording(r.run_id, db=db)
        write_run_page(
            folder / f"{r.run_id}.html",
            render_run_page(rec.run, rec.events, rec.snapshots, generated_ms=_now_ms()),
        )
        links.append(
            RunLink(
                r.run_id,
                r.agent,
                r.started_ms,
                r.tool_calls,
                None if r.ended_ms is None else _latency(r),
                r.stop_reason,
                f"{folder.name}/{r.run_id}.html",
            )
        )
    return links


def _latency(r: Any) -> int:
    """A run's wall time in ms (-1 while it has not ended)."""
    return (r.ended_ms - r.started_ms) if r.ended_ms is not None else -1


def _run_pages_folder(html_path: str) -> Path:
    """``<dashboard stem>-runs/`` next to the dashboard, made 0700 (never through a symlink)."""
    html = Path(html_path)
    folder = html.parent / f"{html.stem}-runs"
    if not html.parent.is_dir():
        raise BadInput(
            f"--html {html_path}: No such file or directory: its folder {html.parent} does not "
            "exist; create it or write the dashboard elsewhere"
        )
    if folder.is_symlink():
        raise BadInput(
            f"--html {html_path}: {folder} is a symbolic link; remove it (run pages are never "
            "written through a symlink)"
        )
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------
# replay alerts


@click.command()
@db_option
@_text_option("--window", "10m", "The current window: the most recent span.")
@_text_option("--baseline", "7d", "The baseline: the span just before the window.")
@agent_option
@json_option
@_count_option("--min-runs", 1, 20, "Runs each window needs before any rule is judged.")
@_ratio_option("--tool-calls-ratio", "tool_calls_p95 fires at this many times the baseline p95.")
@_ratio_option("--spend-ratio", "spend_per_run fires at this many times the baseline average.")
@_ratio_option("--latency-ratio", "latency_p95 fires at this many times the baseline p95.")
@_text_option(
    "--loop-increase",
    "0.02",
    "loop_detected fires above the baseline share plus this (0.02 or 2%).",
)
@_ratio_option("--timeout-ratio", "tool_timeout fires at this many times the baseline share ...")
@_text_option("--timeout-increase", "0.02", "... and at least this much above it (0.02 or 2%).")
@_text_option(
    "--retry-baseline-max",
    "0.05",
    "retries: 429/5xx share of tool calls counts as rare below this ...",
)
@_text_option("--retry-current-min", "0.25", "... and as constant at or above this.")
@_count_option("--worst", 0, 5, "Run ids listed per firing rule.")
@click.option(
    "--disable",
    "disabled",
    multiple=True,
    type=click.Choice(list(ALERT_RULES)),
    help="Do not judge this rule (repeatable).",
)
def alerts(
    db: str,
    window: str,
    baseline: str,
    agent: str | None,
    as_json: bool,
    min_runs: int,
    tool_calls_ratio: float,
    spend_ratio: float,
    latency_ratio: float,
    loop_increase: str,
    timeout_ratio: float,
    timeout_increase: str,
    retry_baseline_max: str,
    retry_current_min: str,
    worst: int,
    disabled: tuple[str, ...],
) -> None:
    """Drift alerts: the last --window against the --baseline before it. Exits 1 when a rule fires.

    Rules: tool calls/run p95 at 2x baseline, spend/run at 2x, latency p95 at 2x, loop_detected
    above baseline, tool_timeout spiking, 429/5xx retries turning from rare to constant. Each
    firing rule prints one line with the current value, the baseline and the runs to look at.

    Example:

        replay alerts --window 10m --baseline 7d --agent support-agent
    """
    from replay.alerts import alerts_for_store

    window_ms = duration_ms(window, "--window")
    baseline_ms = duration_ms(baseline, "--baseline")
    ratios = {
        "--tool-calls-ratio": tool_calls_ratio,
        "--spend-ratio": spend_ratio,
        "--latency-ratio": latency_ratio,
        "--timeout-ratio": timeout_ratio,
    }
    shares = {
        "--loop-increase": loop_increase,
        "--timeout-increase": timeout_increase,
        "--retry-baseline-max": retry_baseline_max,
        "--retry-current-min": retry_current_min,
    }
    rules = _alert_rules(min_runs, ratios, shares, worst, set(disabled))
    store = open_store(db)
    try:
        report = alerts_for_store(
            store, window_ms=window_ms, baseline_ms=baseline_ms, agent=agent, rules=rules
        )
    except UnknownAgentError as exc:
        raise BadInput(str(exc)) from exc
    _print_alerts(report, as_json)
    if report.fired:
        sys.exit(1)


def _alert_rules(
    min_runs: int, ratios: dict[str, float], shares: dict[str, str], worst: int, off: set[str]
) -> Any:
    """The `AlertRules` the options ask for (a disabled rule's threshold is None)."""
    from replay.alerts import AlertRules

    for name, v in ratios.items():
        if not v > 0:
            raise BadInput(f"{name} must be > 0 (e.g. 2 for 2x the baseline), got {v}")

    def share(option: str, rule: str) -> float | None:
        return None if rule in off else _share(shares[option], option)

    return AlertRules(
        min_runs=min_runs,
        tool_calls_p95_ratio=None if "tool_calls_p95" in off else ratios["--tool-calls-ratio"],
        spend_ratio=None if "spend_per_run" in off else ratios["--spend-ratio"],
        latency_p95_ratio=None if "latency_p95" in off else ratios["--latency-ratio"],
        loop_detected_min_increase=share("--loop-increase", "loop_detected"),
        tool_timeout_ratio=None if "tool_timeout" in off else ratios["--timeout-ratio"],
        tool_timeout_min_increase=_share(shares["--timeout-increase"], "--timeout-increase"),
        retry_baseline_max=share("--retry-baseline-max", "retries"),
        retry_current_min=_share(shares["--retry-current-min"], "--retry-current-min"),
        worst_runs=worst,
        disabled=frozenset(off),
    )


def _print_alerts(report: Any, as_json: bool) -> None:
    """`replay alerts` output: JSON, or the summary, one line per firing rule and the tally."""
    from replay.alerts import format_result

    fired = report.fired
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(report.summary())
    if not report.judged:
        click.echo(report.results[0].message if report.results else "no rules enabled")
        return
    for r in fired:
        click.echo(format_result(r))
    ok = [r.rule for r in report.results if not r.fired]
    click.echo(
        f"{len(fired)} of {len(report.results)} rules fired"
        + (f"; ok: {', '.join(ok)}" if ok else "")
    )


# ---------------------------------------------------------------------------------------------
# replay metrics


@click.command()
@db_option
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9464,
    show_default=True,
    help="Port to serve /metrics on (0: any free port).",
)
@_text_option(
    "--host",
    "127.0.0.1",
    "Address to bind; 0.0.0.0 exposes it to the network.",
)
@_text_option(
    "--since",
    "all",
    "Start the counters from the runs started this long ago (90s, 10m, 24h, 7d) instead of "
    "every run in the store; with a window, a restart looks like a counter reset to Prometheus.",
)
@_text_option(
    "--interval",
    "15s",
    "How often to count new runs from the store.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Print the metrics once (Prometheus text format, or JSON with --json) and exit.",
)
@json_option
def metrics(
    db: str, port: int, host: str, since: str, interval: str, once: bool, as_json: bool
) -> None:
    """Serve Prometheus metrics of the runs in the store on http://HOST:PORT/metrics.

    agent_tool_calls, agent_run_latency_seconds and agent_run_latency_ms histograms,
    agent_stop_total{stop_reason}, agent_tokens_total{direction}, agent_spend_usd_total and
    agent_tool_errors_total{error_bucket}, all labelled by agent. The counters start from the
    store's totals, so a restart does not make rate() spike. With --json the start-up line is JSON
    ({"url", "host", "port", "db"}); with --once --json the metrics are printed as JSON.

    Example:

        replay metrics --port 9464 --since 24h
    """
    from replay.metrics import MetricsDependencyError, PrometheusExporter, serve_store

    since_ms = (
        None
        if since.strip().lower() == "all"
        else _now_ms() - duration_ms(since, "--since", all_ok=True)
    )
    interval_s = duration_ms(interval, "--interval") / 1000
    store = open_store(db)
    try:
        if once:
            exporter = PrometheusExporter()
            exporter.observe_store(store, since_ms)
            if as_json:
                echo_json({"db": db, "since": since, "metrics": exporter.to_json()})
            else:
                click.echo(exporter.exposition().decode("utf-8"), nl=False)
            return
        try:
            serve_store(
                store,
                port=port,
                host=host,
                since_ms=since_ms,
                interval_s=interval_s,
                stop=threading.Event(),
                on_ready=_announce(db, interval, as_json),
            )
        except OSError as exc:
            raise BadInput(
                f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port"
            ) from exc
        except KeyboardInterrupt:
            click.echo("stopped")
    except MetricsDependencyError as exc:
        raise click.ClickException(str(exc)) from exc


def _announce(db: str, interval: str, as_json: bool) -> Callable[[Any], None]:
    """What `replay metrics` prints once its server listens: the URL (JSON with --json)."""

    def ready(server: Any) -> None:
        bound_host, bound_port = server.server_address[:2]
        url = f"http://{bound_host}:{bound_port}/metrics"
        if as_json:
            click.echo(json.dumps({"url": url, "host": bound_host, "port": bound_port, "db": db}))
        else:
            click.echo(
                f"serving {url} from {db}, counting new runs every {interval}; Ctrl-C to stop"
            )
        sys.stdout.flush()

    return ready
