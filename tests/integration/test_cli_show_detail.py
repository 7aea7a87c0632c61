"""`replay show --outputs` and `replay show --step N` through the CLI entry point, on a real
store."""

from __future__ import annotations

import importlib
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replay.cli import cli

AGENT = """
import os
from replay import Recorder
rec = Recorder(os.environ["AGENT_DB"], store_args=os.environ.get("STORE_ARGS", "hash"))

@rec.tool("crm.lookup")
def lookup(address: str) -> dict:
    return {
        "customer": address,
        "note": "line one\\n\\x1b[31mred\\x1b[0m",
        "orders": list(range(60)),
    }

@rec.tool("http.get")
def http_get(path: str) -> dict:
    raise RuntimeError("upstream said no for " + path)

@rec.tool("outer")
def outer(x: int) -> int:
    return inner(x) + 1

@rec.tool("inner")
def inner(x: int) -> int:
    return x * 2

@rec.agent("detail-agent")
def handle(email: str) -> str:
    lookup(email)
    try:
        http_get("/orders/7")
    except RuntimeError:
        pass
    outer(3)
    return "done"
"""


@pytest.fixture(params=["hash", "redacted"])
def recorded(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """One run of an agent whose outputs hold an email, control characters and an error; args kept
    or hashed."""
    name = f"detail_agent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    db = tmp_path / "replay.db"
    monkeypatch.setenv("AGENT_DB", str(db))
    monkeypatch.setenv("STORE_ARGS", request.param)
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(name)
    mod.handle("ann.lee@example.com")
    mod.rec.flush()
    yield str(db), mod.rec.last_run_id, request.param
    mod.rec.close()
    sys.modules.pop(name, None)


def invoke(*args: str, columns: int = 80) -> Any:
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(cli, list(args), catch_exceptions=False)


def test_outputs_lists_each_steps_redacted_output_on_one_line(recorded: Any) -> None:
    """--outputs prints one line per step with its redacted output, cut to the terminal width,
    control characters escaped."""
    db, run_id, _ = recorded
    res = invoke("show", run_id[:14], "--db", db, "--outputs", columns=90)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith(f"run {run_id}  agent detail-agent  (4 steps")
    body = lines[1:]
    assert [ln.split()[:3] for ln in body] == [
        ["1", "crm.lookup", "ok"],
        ["2", "http.get", "error"],
        ["3", "outer", "ok"],
        ["4", "inner", "ok"],
    ]
    assert all(len(ln) <= 90 for ln in body)
    assert body[0].endswith("…")  # 60 orders do not fit
    assert "ann.lee@example.com" not in res.output  # the store keeps the redacted output only
    assert (
        '"customer":' in body[0] and '"note":"line one\\n' in body[0] and "\x1b" not in res.output
    )
    assert "RuntimeError: upstream said no for /orders/7" in body[1]
    assert body[2].endswith(" 7") and body[3].startswith("   4    inner")  # nested step indented
    wide = invoke("show", run_id, "--db", db, "--outputs", columns=400)
    assert "57,58,59]" in wide.output


def test_outputs_json(recorded: Any) -> None:
    """--outputs --json gives every step with its redacted output value and whether it was
    stored."""
    db, run_id, _ = recorded
    data = json.loads(invoke("show", run_id, "--db", db, "--outputs", "--json").output)
    steps = data["steps"]
    assert data["run_id"] == run_id and [s["tool"] for s in steps] == [
        "crm.lookup",
        "http.get",
        "outer",
        "inner",
    ]
    assert steps[0]["output"]["orders"] == list(range(60))
    assert steps[0]["output"]["customer"] != "ann.lee@example.com"
    assert steps[1]["output"]["message"] == "upstream said no for /orders/7"
    assert steps[3]["parent_step_id"] == 3 and steps[2]["output"] == 7


def test_step_shows_one_step_in_full(recorded: Any) -> None:
    """--step N shows the step's args when stored, its output or error and message, and the steps
    inside it."""
    db, run_id, store_args = recorded
    res = invoke("show", run_id, "--db", db, "--step", "1")
    assert res.exit_code == 0, res.output
    assert f"run {run_id}  step 1" in res.output and '"orders": [' in res.output
    if store_args == "redacted":
        assert "args (redacted):" in res.output and '"address": "u' in res.output
    else:
        assert "only the hash is stored: record with store_args='redacted'" in res.output
    assert "ann.lee@example.com" not in res.output and "\x1b" not in res.output
    err = invoke("show", run_id, "--db", db, "--step", "2").output
    assert "error       RuntimeError" in err and "message     upstream said no for /orders/7" in err
    assert (
        "calls       steps 4 ran inside it"
        in invoke("show", run_id, "--db", db, "--step", "3").output
    )
    data = json.loads(invoke("show", run_id, "--db", db, "--step", "2", "--json").output)["step"]
    assert (data["status"], data["error"], data["message"]) == (
        "error",
        "RuntimeError",
        "upstream said no for /orders/7",
    )
    assert (
        ("args" in data) == (store_args == "redacted")
        and data["http"] == []
        and data["children"] == []
    )


def test_step_and_outputs_bad_input(recorded: Any) -> None:
    """An unknown step, or --step with --outputs, exits 2 saying what exists; a missing store says
    how to make one."""
    db, run_id, _ = recorded
    res = CliRunner().invoke(cli, ["show", run_id, "--db", db, "--step", "9"])
    assert res.exit_code == 2 and "--step 9" in res.output and "has steps 1 to 4" in res.output
    res = CliRunner().invoke(cli, ["show", run_id, "--db", db, "--step", "1", "--outputs"])
    assert res.exit_code == 2 and "exclude each other" in res.output
    res = CliRunner().invoke(cli, ["show", run_id, "--db", "nope.db", "--outputs"])
    assert res.exit_code == 2 and "no store at nope.db" in res.output


def test_step_lists_the_http_requests_made_under_it(tmp_path: Path) -> None:
    """--step N (and the run page) of an http=True run list each request the step made, its
    attempts, the status, redacted."""
    import threading
    import urllib.error
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from replay import Recorder

    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            calls.append(self.path)
            code = 503 if len(calls) == 1 else 200
            body = b'{"ok": true}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    db = tmp_path / "http.db"
    rec = Recorder(db)

    @rec.tool("orders.get")
    def get_order(oid: str) -> int:
        for _ in range(2):  # one retry after a 503
            try:
                with urllib.request.urlopen(
                    f"{base}/orders/{oid}?email=ann.lee@example.com", timeout=5
                ) as r:
                    return r.status
            except urllib.error.HTTPError:
                continue
        return 0

    @rec.tool("kb.search")
    def kb_search(q: str) -> list:
        return [q]

    @rec.agent("http-detail", http=True)
    def handle(oid: str) -> int:
        kb_search("x")
        return get_order(oid)

    try:
        assert handle("A-1") == 200
        run_id = rec.last_run_id
        rec.flush()
    finally:
        rec.close()
        httpd.shutdown()
        httpd.server_close()
    res = invoke("show", run_id, "--db", str(db), "--step", "2")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    at = lines.index("http        2 request(s) made under this step (redacted):")
    assert re.fullmatch(
        r"  attempt 1/2  GET http://\S+/orders/A-1\?email=u\w+(?:@|%40)redacted\.invalid -> 503",
        lines[at + 1],
    )
    assert lines[at + 2].startswith("  attempt 2/2  GET") and lines[at + 2].endswith("-> 200")
    assert "ann.lee@example.com" not in res.output
    assert (
        "http        none under this step (2 in the run)"
        in invoke("show", run_id, "--db", str(db), "--step", "1").output
    )
    data = json.loads(invoke("show", run_id, "--db", str(db), "--step", "2", "--json").output)[
        "step"
    ]
    assert data["http_attempts"] == 2 and [
        i["response"]["status"]["code"] for i in data["http"]
    ] == [503, 200]
    # The run page lists them under the step too.
    page = tmp_path / "page.html"
    assert invoke("view", run_id, "--db", str(db), "-o", str(page)).exit_code == 0
    text = page.read_text()
    assert (
        text.count("attempt 1/2  GET http://") == 1
        and "-&gt; 503" in text
        and "ann.lee@example.com" not in text
    )
