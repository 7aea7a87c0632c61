"""``--replay-update-force``: bless even the replays ``--replay-update`` refuses (a crash, an
unanswerable call).

``--replay-update`` refuses to freeze into a cassette a replay that raised where the recording did
not, stopped with ``error`` or ``killed`` where the recording did not, or hit a call or an HTTP
request the recording has no answer for; the failure says why and names this flag.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import AGENT_TEMPLATE

from replay.cassette import load_cassette

LOOKUP = 'customer = lookup(ticket["customer_id"])'


def _write(project: Any, source: str) -> None:
    """Write the agent module as `source` (what `AgentProject.write_agent` does for the
    template)."""
    project.pytester.makepyfile(**{project.module: source})
    sys.modules.pop(project.module, None)
    for stale in project.path.glob(f"__pycache__/{project.module}.*.pyc"):
        stale.unlink()
    importlib.invalidate_caches()


def _crashing_source(first_line: str) -> str:
    """The template agent (one lookup, one email) with `first_line` before its first tool call."""
    body = textwrap.indent(
        "rec.usage(tokens_in=100, tokens_out=50, cost_usd=0.01)\n"
        'send(customer["id"], "your refund is on its way")',
        "    ",
    )
    return AGENT_TEMPLATE.format(body=body).replace(LOOKUP, f"{first_line}\n    {LOOKUP}")


CRASH = 'raise RuntimeError("the config file is missing")'


def test_help_lists_the_flag(pytester: pytest.Pytester) -> None:
    """`pytest --help` shows --replay-update-force and what it blesses."""
    pytester.runpytest("--help").stdout.fnmatch_lines(
        ["  --replay-update-force*", "*Bless like --replay-update, also the replays it*"]
    )


def test_update_refuses_an_agent_that_now_crashes_before_any_tool_call(project: Any) -> None:
    """--replay-update leaves the cassette as it was, says the agent raised, and names
    --replay-update-force."""
    _, cassette = project.cassette()
    before = cassette.read_bytes()
    _write(project, _crashing_source(CRASH))
    result = project.pytester.runpytest("--replay-all", "--replay-update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "not blessed: the agent raised RuntimeError where the recording did not (it stopped "
            "completed), "
            "and a cassette must hold behaviour worth keeping, not a crash: *; "
            "--replay-update-force blesses it anyway",
            "*= 1 run replayed: 0 matched, 1 diverged, 0 blessed =*",
            "1 diverging run(s) could not be blessed: see the failures above",
            "1 diverging run(s) must not be blessed as they are:",
            "fix the agent; to bless anyway: pytest --replay-all * --replay-update-force",
        ]
    )
    assert cassette.read_bytes() == before


def test_force_blesses_the_crash_and_says_so(project: Any) -> None:
    """--replay-update-force rewrites the cassette with the crashed trace and reports it as
    forced."""
    run_id, cassette = project.cassette()
    _write(project, _crashing_source(CRASH))
    result = project.pytester.runpytest("--replay-all", "--replay-update-force")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"blessed {run_id}: rewrote cassettes/{run_id}.json (forced: the agent raised "
            "RuntimeError where "
            "the recording did not (it stopped completed))",
        ]
    )
    blessed = load_cassette(cassette)
    assert blessed.run.stop_reason == "error" and blessed.steps == []
    project.pytester.runpytest("--replay-all").assert_outcomes(passed=1)


def test_without_update_the_summary_does_not_suggest_blessing_a_crash(project: Any) -> None:
    """After a crash the summary names the reason and --replay-update-force, not a plain
    --replay-update."""
    _, cassette = project.cassette()
    _write(project, _crashing_source(CRASH))
    result = project.pytester.runpytest("--replay-all")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "bless the new behaviour with" not in out
    result.stdout.fnmatch_lines(
        [
            "1 diverging run(s) must not be blessed as they are:",
            "  r_*: the agent raised RuntimeError where the recording did not (it stopped "
            "completed)",
            "fix the agent; to bless anyway: pytest --replay-all * --replay-update-force",
        ]
    )


def test_a_legit_change_is_still_blessed_by_plain_update(project: Any) -> None:
    """A fix that changes the steps (two emails -> one) is blessed by --replay-update as before, not
    forced."""
    run_id, cassette = project.cassette(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    project.pytester.runpytest("--replay-all").stdout.fnmatch_lines(
        ["bless the new behaviour with: pytest --replay-all * --replay-update"]
    )
    result = project.pytester.runpytest("--replay-all", "--replay-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"blessed {run_id}: rewrote cassettes/{run_id}.json"])
    assert "forced" not in result.stdout.str()
    assert [e.tool for e in load_cassette(cassette).steps] == ["crm.lookup", "email.send"]


def test_a_run_that_now_stops_with_error_is_refused(project: Any) -> None:
    """An agent that now ends its run with stop reason error (without raising) is not blessed by
    --replay-update."""
    _, cassette = project.cassette()
    before = cassette.read_bytes()
    _write(project, _crashing_source('replay.stop("error")'))
    result = project.pytester.runpytest("--replay-all", "--replay-update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["not blessed: the replay stopped with error where the recording stopped completed, *"]
    )
    assert cassette.read_bytes() == before


def test_the_ini_option_makes_update_force_but_does_not_bless_alone(project: Any) -> None:
    """ini replay_update_force = true: --replay-update blesses the crash; without --replay-update
    nothing changes."""
    _, cassette = project.cassette()
    before = cassette.read_bytes()
    _write(project, _crashing_source(CRASH))
    project.pytester.makeini("[pytest]\nreplay_update_force = true\n")
    project.pytester.runpytest("--replay-all").assert_outcomes(failed=1)
    assert cassette.read_bytes() == before
    project.pytester.runpytest("--replay-all", "--replay-update").assert_outcomes(passed=1)
    assert load_cassette(cassette).run.stop_reason == "error"


def test_force_without_replays_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """--replay-update-force alone has nothing to bless and stops before any work."""
    result = pytester.runpytest("--replay-update-force")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --replay-update-force blesses the runs replayed by --replay or --replay-all*"]
    )


# ---- an HTTP request the recording has no answer for ---------------------------------------------

HTTP_AGENT = """
import json
import urllib.request

from replay import Recorder

rec = Recorder("replay.db")
BASE = {base!r}


@rec.agent("status-agent", http=True)
def handle(ticket: dict) -> dict:
    with urllib.request.urlopen(BASE + {path!r}, timeout=5) as resp:
        return json.loads(resp.read())
"""


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        out = json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_an_unrecorded_http_request_is_refused_and_forced(project: Any, local_url: str) -> None:
    """A replay whose HTTP request has no recorded answer is not blessed by --replay-update; force
    blesses it."""
    _write(project, HTTP_AGENT.format(base=local_url, path="/status"))
    mod = importlib.import_module(project.module)
    try:
        mod.handle({"customer_id": "c-1"})
        run_id = mod.rec.last_run_id
        assert mod.rec.flush()
    finally:
        mod.rec.close()
        sys.modules.pop(project.module, None)
    cassette = project.export(run_id)
    before = cassette.read_bytes()
    _write(project, HTTP_AGENT.format(base=local_url, path="/status/v2"))
    result = project.pytester.runpytest("--replay-all", "--replay-update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "not blessed: the replay made 1 HTTP request(s) the recording has no answer for "
            "(first: GET http://*/status/v2), *--replay-update-force blesses it anyway",
        ]
    )
    assert cassette.read_bytes() == before
    project.pytester.runpytest("--replay-all", "--replay-update-force").assert_outcomes(passed=1)
    assert load_cassette(cassette).run.stop_reason == "error"


def test_cassette_path_is_unchanged_by_a_refused_bless(project: Any) -> None:
    """A refused bless of a run from the store writes no cassette into the cassettes folder."""
    run_id = project.record()
    _write(project, _crashing_source(CRASH))
    project.pytester.runpytest("--replay", run_id, "--replay-update").assert_outcomes(failed=1)
    assert not (Path(project.path) / "cassettes" / f"{run_id}.json").exists()
