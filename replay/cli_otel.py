"""The OpenTelemetry commands: `replay otel-export` and `replay import --format otlp`.

Thin shells over `replay.otel` (export, needs the ``otel`` extra) and `replay.otlp_import`
(import, standard library only); `replay/cli.py` registers them.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

import click

from replay._cli_util import BadInput, db_option, open_store, path_option, since_ms
from replay.errors import CassetteDecodeError, ReplayError

if TYPE_CHECKING:
    from replay.store_api import StoreAPI as Store

__all__ = ["import_otlp_files", "otel_export"]


def _where(url: str | None) -> str:
    """The collector to name in output: scheme://host[:port] only (no credentials, path or
    query)."""
    if not url:
        return "the endpoint of $OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318)"
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def import_otlp_files(files: tuple[str, ...], db: str) -> None:
    """`replay import --format otlp FILE...`: read every file first, then write (a bad file changes
    nothing)."""
    from replay.otlp_import import load_otlp

    for f in files:
        try:
            load_otlp(f)
        except CassetteDecodeError as exc:
            raise BadInput(str(exc)) from exc
    from replay.otlp_import import import_otlp

    store = open_store(db, create=True)
    added = skipped = 0
    try:
        for f in files:
            try:
                result = import_otlp(store, f)
            except CassetteDecodeError as exc:
                raise BadInput(str(exc)) from exc
            added += len(result.added)
            skipped += len(result.skipped)
            for rid in result.added:
                click.echo(f"imported {rid} from {f}")
    finally:
        store.close()
    click.echo(f"imported {added} run(s) into {db}; {skipped} already there")


def _headers(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for i, item in enumerate(items, 1):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadInput(
                f"--header number {i} is not NAME=VALUE (e.g. --header 'Authorization=Basic ...')"
            )
        out[name.strip()] = value.strip()
    return out


def _exporter(
    endpoint: str | None, hdrs: dict[str, str], timeout: float, content: bool, to_file: bool
) -> tuple[Any, Any]:
    """The exporter (and, for --file, the in-memory span exporter it writes into)."""
    from replay.otel import OtelDependencyError, OtelExporter

    memory = None
    try:
        if to_file:
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            memory = InMemorySpanExporter()
        exporter = OtelExporter(
            endpoint,
            headers=hdrs or None,
            timeout=timeout,
            batch=False,
            metrics=False,
            include_content=content,
            warn=False,
            span_exporter=memory,
        )
    except (OtelDependencyError, ImportError) as exc:
        raise BadInput(str(OtelDependencyError())) from exc
    return exporter, memory


def _find_runs(store: Store, run_ids: tuple[str, ...]) -> list[str]:
    """The full ids of the runs named (unique prefixes work), or exit 2 naming the one missing."""
    ids = []
    for r in run_ids:
        try:
            ids.append(store.find_run(r).run_id)
        except ReplayError as exc:
            raise BadInput(str(exc)) from exc
    return ids


@click.command("otel-export")
@click.argument("run_ids", nargs=-1)
@db_option
@click.option(
    "--since", default=None, help="Every finished run started this long ago (90s, 10m, 24h, 7d)."
)
@click.option("--agent", default=None, help="With --since: only the runs of this agent.")
@click.option(
    "--endpoint",
    default=None,
    envvar="REPLAY_OTLP_ENDPOINT",
    help="OTLP/HTTP base URL (http://localhost:4318) or its /v1/traces URL; "
    "default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / $OTEL_EXPORTER_OTLP_ENDPOINT.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="A request header (repeatable); $OTEL_EXPORTER_OTLP_HEADERS also applies.",
)
@click.option(
    "--content",
    is_flag=True,
    help="Also send the stored, redacted inputs, outputs and tool results.",
)
@click.option(
    "--timeout", default=10.0, show_default=True, help="Seconds per request, retries included."
)
@path_option(
    "--file",
    "out_file",
    help="Write the spans as an OTLP JSON file (0600) instead of sending them.",
)
def otel_export(
    run_ids: tuple[str, ...],
    db: str,
    since: str | None,
    agent: str | None,
    endpoint: str | None,
    headers: tuple[str, ...],
    content: bool,
    timeout: float,
    out_file: str | None,
) -> None:
    """Send stored runs to an OpenTelemetry collector as GenAI spans (OTLP/HTTP).

    Each run is an invoke_agent span with its tool and model steps as execute_tool and chat
    children; only what the store holds (redacted) is sent, hashes only unless --content. Span
    ids come from the run id, so sending a run again does not make a second trace. Exit 1 when
    some spans were not accepted. Needs: pip install 'agent-replay[otel]'.

    Example:

        replay otel-export --since 1h --endpoint http://localhost:4318
        replay otel-export RUN_ID --content --file trace.json   # OTLP JSON, for import elsewhere
    """
    if bool(run_ids) == bool(since):
        raise BadInput("name the runs: give RUN_ID... or --since DURATION (one of the two)")
    if agent and not since:
        raise BadInput("--agent filters --since: give --since DURATION too")
    if out_file and (endpoint or headers):
        raise BadInput(
            "--file writes the spans to a file instead of sending them: drop --endpoint/--header"
        )
    exporter, memory = _exporter(endpoint, _headers(headers), timeout, content, bool(out_file))
    store = open_store(db)
    try:
        ids = _find_runs(store, run_ids) if run_ids else None
        n = exporter.export_store(store, run_ids=ids, since_ms=since_ms(since), agent=agent)
    finally:
        store.close()
        exporter.shutdown()
    if memory is not None and out_file:
        from replay.cassette import atomic_write
        from replay.otel import otlp_json

        try:
            atomic_write(
                out_file, json.dumps(otlp_json(memory.get_finished_spans()), indent=1) + "\n"
            )
        except OSError as exc:
            raise BadInput(f"cannot write {out_file}: {exc.strerror}") from exc
        click.echo(f"wrote {n} run(s) ({exporter.sent} spans) to {out_file}")
        return
    where = _where(endpoint)
    if exporter.failed:
        click.echo(
            f"sent {n} run(s) to {where}: {exporter.failed} of {exporter.sent} span(s) were not "
            "accepted (is the collector up? run the same command again: span ids are stable)",
            err=True,
        )
        raise SystemExit(1)
    click.echo(f"sent {n} run(s) ({exporter.sent} spans) to {where}")
