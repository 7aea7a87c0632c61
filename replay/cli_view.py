"""`replay view`: the run page (see `replay.runpage`), written to a file or served on 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from replay._cli_util import BadInput, db_option, path_option
from replay.batch import ensure_importable
from replay.errors import ReplayError
from replay.models import Event, Run

__all__ = ["build_page", "view"]


def build_page(
    source: str, db: str, against: str | None = None, agent_refs: tuple[str, ...] = ()
) -> tuple[str, str]:
    """(run id, HTML) of the run page of `source` (a run id, a unique prefix or a cassette).

    `against` is another run id or cassette, or ``"replay"`` to replay the run now.

    Raises:
        BadInput: the run or the other run cannot be loaded, or the replay cannot start.
    """
    from replay.diff import diff_traces
    from replay.replayer import load_recording, replay_run
    from replay.runpage import render_run_page

    try:
        rec = load_recording(source, db=db)
    except (ReplayError, ValueError) as exc:
        raise BadInput(str(exc)) from exc
    other: tuple[Run, Sequence[Event], Mapping[str, Any], str] | None = None
    diff = None
    if against == "replay":
        # Agent modules the project names are imported from the working folder, as `replay run`
        # does.
        ensure_importable(os.getcwd(), first=True)
        try:
            res = replay_run(rec, db=db, agents=list(agent_refs), project=os.getcwd())
        except (ReplayError, ValueError, ImportError) as exc:
            raise BadInput(f"--against replay: {exc}") from exc
        other = (
            res.replayed,
            res.replayed_events or res.steps,
            res.replayed_snapshots,
            "replay (now)",
        )
        diff = res.diff
    elif against is not None:
        try:
            orec = load_recording(against, db=db)
        except (ReplayError, ValueError) as exc:
            raise BadInput(f"--against {against}: {exc}") from exc
        other = (orec.run, orec.events, orec.snapshots, f"run {orec.run.run_id}")
        diff = diff_traces(rec.trace(), orec.trace())
    elif agent_refs:
        raise BadInput("--replay-agent names the agent for --against replay: add --against replay")
    html = render_run_page(
        rec.run,
        rec.events,
        rec.snapshots,
        other=other,
        diff=diff,
        generated_ms=int(time.time() * 1000),
        http=rec.http,
    )
    return rec.run.run_id, html


def _serve(html: str, port: int) -> None:
    body = html.encode("utf-8")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?", 1)[0] not in ("/", "/index.html"):
                self.send_error(404, "the run page is at /")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            return

    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        raise BadInput(
            f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror}): pick another port"
        ) from exc
    click.echo(
        f"serving the run page on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)"
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command()
@click.argument("run_id")
@db_option
@click.option(
    "--against",
    default=None,
    metavar="OTHER_OR_REPLAY",
    help="Diff side by side with another run id or cassette, or `replay` to replay the run now.",
)
@click.option(
    "--replay-agent",
    "agent_refs",
    multiple=True,
    metavar="MODULE[:FN]",
    help="With --against replay: a module whose @rec.agent functions the replay may call "
    "(repeatable).",
)
@path_option(
    "-o",
    "--output",
    "output",
    help="The HTML file to write (default: RUN_ID.html in the working folder).",
)
@click.option(
    "--serve", is_flag=True, help="Serve the page on 127.0.0.1 instead of writing a file."
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="With --serve: the port (0 picks a free one).",
)
def view(
    run_id: str,
    db: str,
    against: str | None,
    agent_refs: tuple[str, ...],
    output: str | None,
    serve: bool,
    port: int,
) -> None:
    """Write the run page: a self-contained HTML file, the step waterfall and each step's output.

    RUN_ID may be a unique prefix or a cassette file. The page shows the versions, usage and stop
    reason, one bar per step (click it for its redacted output) and, with --against, the diff side
    by side coloured by change kind. It has no script and loads nothing from the network.

    Example:

        replay view r_01jd2k8... --against replay -o run.html
    """
    if serve and output:
        raise BadInput("--serve and -o exclude each other: serve the page or write it")
    rid, html = build_page(run_id, db, against, agent_refs)
    if serve:
        _serve(html, port)
        return
    path = Path(output) if output else Path(f"{rid}.html")
    if not path.parent.is_dir():
        raise BadInput(f"-o {output}: the folder {path.parent} does not exist")
    from replay.runpage import write_run_page

    try:
        write_run_page(path, html)
    except OSError as exc:
        raise BadInput(f"-o {path}: cannot write ({exc.strerror})") from exc
    click.echo(f"wrote {path} (open it in a browser)")
