"""The HTTP layer through real clients (requests, httpx sync and async, urllib3, aiohttp) on local
servers.

Each test starts its own HTTP server on 127.0.0.1, records an ``http=True`` run against it, stops
the server and replays: the answers come from the recording, in recorded order, matched by the
rule the run was recorded with; a request with no recorded answer raises `UnrecordedRequest`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import httpx
import pytest
import requests
import urllib3
from click.testing import CliRunner

from replay import Recorder, replay_run
from replay.cassette import cassette_from_store, write_cassette
from replay.cli import cli
from replay.errors import InvalidHttpMatchError, UnrecordedRequest
from replay.http import HttpOptions
from replay.store import Store

REAL_HTTP_CONNECTION = http.client.HTTPConnection


class _Handler(BaseHTTPRequestHandler):
    hits: ClassVar[Counter[str]] = Counter()

    def _answer(self, status: int, data: dict[str, Any]) -> None:
        out = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        n = self.hits[self.path]
        if (
            self.path.startswith("/flaky") and n <= 2
        ):  # busy twice, then fine: a retry policy's target
            self._answer(503, {"error": "busy", "attempt": n})
            return
        self._answer(200, {"path": self.path, "attempt": n, "kind": self.headers.get("X-Kind")})

    def do_POST(self) -> None:
        self.hits[self.path] += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(200, {"echo": json.loads(body or b"{}"), "attempt": self.hits[self.path]})

    def log_message(self, *args: Any) -> None:
        pass


class _Server:
    def __init__(self) -> None:
        _Handler.hits = Counter()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    try:
        yield srv
    finally:
        srv.stop()


# ---- one GET and one POST per client ---------------------------------------------------------


def _requests(
    method: str, url: str, payload: Any = None, headers: dict[str, str] | None = None
) -> Any:
    r = requests.request(method, url, json=payload, headers=headers, timeout=5)
    return r.status_code, r.json()


def _httpx(
    method: str, url: str, payload: Any = None, headers: dict[str, str] | None = None
) -> Any:
    with httpx.Client(timeout=5) as client:
        r = client.request(method, url, json=payload, headers=headers)
        return r.status_code, r.json()


def _urllib3(
    method: str, url: str, payload: Any = None, headers: dict[str, str] | None = None
) -> Any:
    pool = urllib3.PoolManager()
    r = pool.request(method, url, json=payload, headers=headers, timeout=5, retries=False)
    return r.status, json.loads(r.data)


async def _httpx_async(
    method: str, url: str, payload: Any = None, headers: dict[str, str] | None = None
) -> Any:
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.request(method, url, json=payload, headers=headers)
        return r.status_code, r.json()


async def _aiohttp(
    method: str, url: str, payload: Any = None, headers: dict[str, str] | None = None
) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, json=payload, headers=headers) as r:
            return r.status, await r.json(content_type=None)


SYNC_CLIENTS: dict[str, Callable[..., Any]] = {
    "requests": _requests,
    "httpx": _httpx,
    "urllib3": _urllib3,
}
ASYNC_CLIENTS: dict[str, Callable[..., Any]] = {"httpx-async": _httpx_async, "aiohttp": _aiohttp}


def _shop_agent(
    rec: Recorder, call: Callable[..., Any], base: str, is_async: bool, **http: Any
) -> Any:
    """An agent that looks an item up (a tool), then GETs it and POSTs an order over HTTP."""

    @rec.tool("kb.search")
    def kb(q: str) -> list[str]:
        return [f"about {q}"]

    if is_async:

        @rec.agent("shop", **http)
        async def shop_async(sku: str) -> dict[str, Any]:
            kb(sku)
            s1, item = await call("GET", f"{base}/items/{sku}")
            s2, order = await call("POST", f"{base}/orders", {"sku": sku, "qty": 2})
            return {"item": item, "order": order, "status": [s1, s2]}

        return shop_async

    @rec.agent("shop", **http)
    def shop(sku: str) -> dict[str, Any]:
        kb(sku)
        s1, item = call("GET", f"{base}/items/{sku}")
        s2, order = call("POST", f"{base}/orders", {"sku": sku, "qty": 2})
        return {"item": item, "order": order, "status": [s1, s2]}

    return shop


def _run(agent: Any, *args: Any) -> Any:
    out = agent(*args)
    return asyncio.run(out) if asyncio.iscoroutine(out) else out


@pytest.mark.parametrize("client", [*SYNC_CLIENTS, *ASYNC_CLIENTS])
def test_each_client_replays_from_the_recording_with_the_server_stopped(
    client: str, tmp_path: Path, server: _Server
) -> None:
    """requests, httpx (sync and async), urllib3 and aiohttp: recorded once, replayed offline with
    an empty diff.
    """
    is_async = client in ASYNC_CLIENTS
    call = ASYNC_CLIENTS[client] if is_async else SYNC_CLIENTS[client]
    rec = Recorder(tmp_path / "rec.db")
    agent = _shop_agent(rec, call, server.url, is_async, http=True)
    out = _run(agent, "sku-1")
    assert out["status"] == [200, 200] and out["order"]["echo"] == {"sku": "sku-1", "qty": 2}
    rec.close()
    with Store(
        tmp_path / "rec.db"
    ) as store:  # asyncio.run's context does not hand last_run_id back
        [run] = store.runs(limit=5)
        run_id = run.run_id
    server.stop()
    assert http.client.HTTPConnection is REAL_HTTP_CONNECTION
    result = replay_run(run_id, agent=agent, db=tmp_path / "rec.db")
    assert result.exception is None, result.exception
    assert result.output == out and result.unrecorded_http == []
    assert result.diff.is_empty, str(result.diff)
    with Store(tmp_path / "rec.db") as store:
        interactions = cassette_from_store(store, run_id).http
    assert [(i["request"]["method"], i["step_id"], i["match_on"]) for i in interactions] == [
        ("GET", None, ["method", "uri"]),
        ("POST", None, ["method", "uri"]),
    ]
    assert http.client.HTTPConnection is REAL_HTTP_CONNECTION


@pytest.mark.parametrize("client", [*SYNC_CLIENTS, *ASYNC_CLIENTS])
def test_each_client_raises_unrecorded_request_for_a_new_url(
    client: str, tmp_path: Path, server: _Server
) -> None:
    """Through every client, a request the recording cannot answer raises UnrecordedRequest, not
    vcrpy's error.
    """
    is_async = client in ASYNC_CLIENTS
    call = ASYNC_CLIENTS[client] if is_async else SYNC_CLIENTS[client]
    rec = Recorder(tmp_path / "rec.db")
    agent = _shop_agent(rec, call, server.url, is_async, http=True)
    _run(agent, "sku-1")
    rec.close()
    with Store(tmp_path / "rec.db") as store:
        [run] = store.runs(limit=5)
    server.stop()
    assert replay_run(run.run_id, agent=agent, db=tmp_path / "rec.db").exception is None
    other_rec = Recorder(tmp_path / "other.db")
    other = _shop_agent(
        other_rec, call, server.url + "/v2", is_async, http=True
    )  # the new code: another path
    result = replay_run(run.run_id, agent=other, db=tmp_path / "rec.db")
    other_rec.close()
    exc = result.exception
    assert type(exc) is UnrecordedRequest, repr(exc)
    assert exc.method == "GET" and exc.url.endswith("/v2/items/sku-1") and exc.failed == ["uri"]
    assert (
        exc.nearest is not None
        and exc.nearest.startswith("GET ")
        and exc.nearest.endswith("/items/sku-1")
    )


# ---- retries in order and attempts per step ---------------------------------------------------


def _retrying_get(call: Callable[..., Any], url: str, tries: int) -> dict[str, Any]:
    """GET `url` up to `tries` times while it answers 503; every status seen, in order."""
    seen = []
    for _ in range(tries):
        status, data = call("GET", url)
        seen.append([status, data.get("attempt")])
        if status != 503:
            break
    return {"seen": seen}


def _flaky_agent(rec: Recorder, base: str, tries: int) -> Any:
    @rec.tool("inventory.get")
    def inventory_get(sku: str) -> dict[str, Any]:
        return _retrying_get(_requests, f"{base}/flaky/{sku}", tries)

    @rec.agent("flaky", http=True)
    def flaky(sku: str) -> dict[str, Any]:
        first = inventory_get(sku)
        # The agent's own retry loop, outside any tool step (an SDK call made by the agent).
        again = _retrying_get(_requests, f"{base}/flaky/{sku}-direct", tries)
        return {"tool": first, "direct": again}

    return flaky


def test_identical_retried_requests_are_answered_in_recorded_order(
    tmp_path: Path, server: _Server
) -> None:
    """A request retried three times (503, 503, 200) gets the three recorded answers in turn, each
    used once.
    """
    rec = Recorder(tmp_path / "rec.db")
    agent = _flaky_agent(rec, server.url, tries=5)
    out = agent("a")
    assert out["direct"]["seen"] == [[503, 1], [503, 2], [200, 3]]
    run_id = rec.last_run_id
    rec.close()
    server.stop()
    result = replay_run(run_id, agent=agent, db=tmp_path / "rec.db")
    assert result.exception is None and result.diff.is_empty, str(result.diff)
    assert result.output == out  # the same statuses and attempt numbers, in the same order

    # Each recorded answer is used once: a fourth identical request has no answer left.
    def four_times(sku: str) -> Any:
        return [_requests("GET", f"{server.url}/flaky/{sku}-direct") for _ in range(4)]

    result = replay_run(run_id, agent=four_times, db=tmp_path / "rec.db")
    assert isinstance(result.exception, UnrecordedRequest)
    assert result.exception.reason == "already_played" and "3 time(s)" in str(result.exception)


def test_show_counts_http_attempts_under_each_tool_step(tmp_path: Path, server: _Server) -> None:
    """`replay show` gives the HTTP attempts made under each tool step and outside any step."""
    rec = Recorder(tmp_path / "rec.db")
    agent = _flaky_agent(rec, server.url, tries=5)
    agent("a")
    run_id = rec.last_run_id
    rec.close()
    res = CliRunner().invoke(cli, ["show", run_id, "--db", str(tmp_path / "rec.db")])
    assert res.exit_code == 0, res.output
    header = next(line for line in res.output.splitlines() if line.startswith("step"))
    assert header.split()[-1] == "http"
    row = next(line for line in res.output.splitlines() if "inventory.get" in line)
    assert row.split()[-1] == "×3"
    assert "http        6 requests recorded, 3 outside tool steps" in res.output
    data = json.loads(
        CliRunner().invoke(cli, ["show", run_id, "--db", str(tmp_path / "rec.db"), "--json"]).output
    )
    assert data["http_attempts"] == [
        {"step_id": 1, "attempts": 3},
        {"step_id": None, "attempts": 3},
    ]


def test_diff_reports_a_step_whose_http_attempts_changed(tmp_path: Path, server: _Server) -> None:
    """Two runs with the same steps, one in a retry storm (3 attempts) and one not: `replay diff`
    says "3 → 1".
    """
    rec = Recorder(tmp_path / "rec.db")

    @rec.tool("inventory.get")
    def inventory_get(sku: str) -> dict[str, Any]:
        out = _retrying_get(_requests, f"{server.url}/flaky/{sku}", 5)
        return {"ok": out["seen"][-1][0] == 200}

    @rec.agent("stock", http=True)
    def stock(sku: str) -> Any:
        return inventory_get(sku)

    runs = []
    for _ in range(2):  # the server is busy for the first run's first two attempts only
        assert stock("x") == {"ok": True}
        runs.append(rec.last_run_id)
    rec.close()
    res = CliRunner().invoke(cli, ["diff", runs[0], runs[1], "--db", str(tmp_path / "rec.db")])
    assert res.exit_code == 1, res.output
    assert "http: step 1  inventory.get  3 → 1 HTTP attempts" in res.output
    assert res.output.startswith(f"replay diverged from recording {runs[0]}: HTTP attempts")


def test_replay_with_a_stub_reports_changed_attempts_under_the_step(
    tmp_path: Path, server: _Server
) -> None:
    """A stubbed tool that now retries once: the replay diff names the step and "3 → 1 HTTP
    attempts".
    """
    rec = Recorder(tmp_path / "rec.db")
    agent = _flaky_agent(rec, server.url, tries=5)
    agent("a")
    run_id = rec.last_run_id
    rec.close()
    server.stop()

    def fixed(sku: str) -> dict[str, Any]:  # the new tool code: no retry storm
        return _retrying_get(_requests, f"{server.url}/flaky/{sku}", 1)

    result = replay_run(run_id, agent=agent, db=tmp_path / "rec.db", stubs={"inventory.get": fixed})
    assert result.exception is None
    assert [(h.step, h.tool, h.before, h.after) for h in result.diff.http_attempts] == [
        (1, "inventory.get", 3, 1)
    ]
    assert "http: step 1  inventory.get  3 → 1 HTTP attempts" in str(result.diff)
    assert not result.diff.is_empty
    assert result.diff.to_json()["http_attempts"][0]["after"] == 1


def test_an_unrecorded_request_the_agent_catches_still_shows_in_the_result_and_diff(
    tmp_path: Path, server: _Server
) -> None:
    """An agent that swallows the UnrecordedRequest still gets a non-empty diff naming the
    unrecorded request.
    """
    rec = Recorder(tmp_path / "rec.db")
    where = {"path": "/items/1"}

    @rec.agent("careless", http=True)
    def careless(n: int) -> str:
        try:
            _requests("GET", server.url + where["path"])
        except Exception:  # noqa: BLE001 - the agent's own catch-all, as many retry helpers have
            pass
        return "done"

    careless(1)
    run_id = rec.last_run_id
    rec.close()
    server.stop()
    where["path"] = "/items/2"
    result = replay_run(run_id, agent=careless, db=tmp_path / "rec.db")
    assert (
        result.exception is None and result.output == "done" and result.stop_reason == "completed"
    )
    [missing] = result.unrecorded_http
    assert (
        missing.url.endswith("/items/2")
        and missing.nearest is not None
        and missing.nearest.endswith("/items/1")
    )
    assert not result.diff.is_empty
    assert "http: outside tool steps  1 → 1 HTTP attempts (1 unrecorded)" in str(result.diff)
    assert result.diff.headline().endswith("an HTTP request had no recorded answer")


# ---- matching rules ---------------------------------------------------------------------------


def _order_agent(
    rec: Recorder, base: str, payload: dict[str, Any], headers: dict[str, str], **http: Any
) -> Any:
    @rec.agent("order", **http)
    def order(sku: str) -> Any:
        return _httpx("POST", f"{base}/orders", {"sku": sku, **payload}, headers)

    return order


def test_default_matching_ignores_the_body_and_body_matching_does_not(
    tmp_path: Path, server: _Server
) -> None:
    """Method + URL (the default) replays a changed body; http_match with "body" raises
    UnrecordedRequest on it.
    """
    payload: dict[str, Any] = {"qty": 1}
    rec = Recorder(tmp_path / "rec.db")
    loose = _order_agent(rec, server.url, payload, {}, http=True)
    strict = _order_agent(rec, server.url, payload, {}, http_match=("method", "uri", "body"))
    loose("s")
    loose_id = rec.last_run_id
    strict("s")
    strict_id = rec.last_run_id
    rec.close()
    server.stop()
    assert replay_run(strict_id, agent=strict, db=tmp_path / "rec.db").diff.is_empty
    payload["qty"] = 2  # the agent now orders two
    assert replay_run(loose_id, agent=loose, db=tmp_path / "rec.db").exception is None
    result = replay_run(strict_id, agent=strict, db=tmp_path / "rec.db")
    exc = result.exception
    assert (
        isinstance(exc, UnrecordedRequest)
        and exc.failed == ["body"]
        and exc.passed == ["method", "uri"]
    )
    assert "differs in body" in str(exc) and "matching on method, uri, body" in str(exc)


def test_a_chosen_header_is_matched(tmp_path: Path, server: _Server) -> None:
    """http=HttpOptions(match_on=(..., "header:X-Kind")) tells requests apart by that header
    only."""
    headers = {"X-Kind": "refund", "X-Trace": "t-1"}
    rec = Recorder(tmp_path / "rec.db")
    agent = _order_agent(
        rec, server.url, {}, headers, http=HttpOptions(("method", "uri", "header:X-Kind"))
    )
    agent("s")
    run_id = rec.last_run_id
    rec.close()
    server.stop()
    headers["X-Trace"] = "t-2"  # not matched on: still replays
    assert replay_run(run_id, agent=agent, db=tmp_path / "rec.db").diff.is_empty
    headers["X-Kind"] = "escalate"
    exc = replay_run(run_id, agent=agent, db=tmp_path / "rec.db").exception
    assert isinstance(exc, UnrecordedRequest) and exc.failed == ["header:x-kind"]


def test_a_bad_matching_rule_is_refused_at_decoration(tmp_path: Path) -> None:
    """An http_match rule naming no request field fails when the agent is decorated, listing the
    valid ones.
    """
    rec = Recorder(tmp_path / "rec.db")
    with pytest.raises(InvalidHttpMatchError, match=r"'url'.*method, uri, .*header:NAME"):
        rec.agent("x", http_match=("method", "url"))
    with pytest.raises(InvalidHttpMatchError):
        rec.run("x", http_match=("header:",))
    rec.close()


# ---- another machine: no shared redaction key -------------------------------------------------


class _Remap(httpx.BaseTransport):
    """An httpx transport that sends every request to the local server: a stand-in for a 10.x
    host."""

    def __init__(self, port: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.port = port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host="127.0.0.1", port=self.port)
        return self.inner.handle_request(request)


def _internal_agent(rec: Recorder, base: str, port: int) -> Any:
    @rec.agent("internal", http=True)
    def internal(sku: str) -> Any:
        with httpx.Client(transport=_Remap(port), timeout=5) as client:
            r = client.get(f"{base}/items/{sku}")
            return r.json()

    return internal


@pytest.mark.parametrize("host", ["127.0.0.1", "10.20.30.40"])
@pytest.mark.parametrize("replay_key", ["another-key", None])
def test_a_cassette_replays_on_another_machine_without_the_recording_key(
    host: str,
    replay_key: str | None,
    tmp_path: Path,
    server: _Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recorded with one redaction key, a cassette of a loopback or private-address service replays
    with another or none.
    """
    monkeypatch.setenv("REPLAY_REDACTION_KEY", "production-key")
    rec = Recorder(tmp_path / "rec.db")
    agent = _internal_agent(rec, f"http://{host}:{server.port}", server.port)
    out = agent("sku-9")
    rec.flush()
    with Store(tmp_path / "rec.db") as store:
        path = write_cassette(cassette_from_store(store, rec.last_run_id), tmp_path / "c.json")  # type: ignore[arg-type]
    rec.close()
    server.stop()
    if replay_key is None:
        monkeypatch.delenv("REPLAY_REDACTION_KEY")
    else:
        monkeypatch.setenv("REPLAY_REDACTION_KEY", replay_key)
    result = replay_run(str(path), agent=agent)
    assert result.exception is None, result.exception
    assert result.output == out and result.diff.is_empty, str(result.diff)


def test_with_the_same_key_a_changed_pseudonymised_value_is_not_answered(
    tmp_path: Path, server: _Server
) -> None:
    """Replayed from its own store (same key), a request differing in a redacted value is
    unrecorded, not loosely matched.
    """
    rec = Recorder(tmp_path / "rec.db")
    who = {"email": "ann@example.com"}

    @rec.agent("mailer", http=True, http_match=("method", "uri", "body"))
    def mailer(n: int) -> Any:
        return _requests("POST", f"{server.url}/orders", {"to": who["email"], "n": n})

    mailer(1)
    run_id = rec.last_run_id
    rec.close()
    server.stop()
    assert replay_run(run_id, agent=mailer, db=tmp_path / "rec.db").diff.is_empty
    who["email"] = "bob@example.com"
    exc = replay_run(run_id, agent=mailer, db=tmp_path / "rec.db").exception
    assert isinstance(exc, UnrecordedRequest) and exc.failed == ["body"]
    assert "ann@" not in str(exc) and "bob@" not in str(exc)


# Needs the redaction change of the trust work (loopback and private addresses kept as they are,
# public ones pseudonymised as valid documentation-range IPs): until it lands, the URL the agent
# receives back as input is "http://[ipv4:…]:port", which no client can parse. strict: this test
# starts failing (XPASS) the moment that change is merged, so the marker is removed then.
@pytest.mark.parametrize("host", ["127.0.0.1", "10.20.30.40"])
def test_a_service_url_in_the_input_replays_without_the_recording_key(
    host: str, tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent given a loopback or private-address service URL as input replays from a cassette
    with no shared key.
    """
    rec = Recorder(tmp_path / "rec.db")

    @rec.agent("internal", http=True)
    def internal(base: str, sku: str) -> Any:
        with httpx.Client(transport=_Remap(server.port), timeout=5) as client:
            return client.get(f"{base}/items/{sku}").json()

    out = internal(f"http://{host}:{server.port}", "sku-9")
    rec.flush()
    with Store(tmp_path / "rec.db") as store:
        path = write_cassette(cassette_from_store(store, rec.last_run_id), tmp_path / "c.json")  # type: ignore[arg-type]
    rec.close()
    server.stop()
    monkeypatch.delenv("REPLAY_REDACTION_KEY", raising=False)
    result = replay_run(str(path), agent=internal)
    assert result.exception is None, result.exception
    assert result.output == out and result.diff.is_empty, str(result.diff)


def test_a_cassette_from_before_step_ids_replays_without_attempt_counts(
    tmp_path: Path, server: _Server
) -> None:
    """HTTP interactions without step_id / match_on (an older cassette) replay on method + URL,
    with no attempt lines.
    """
    rec = Recorder(tmp_path / "rec.db")
    agent = _flaky_agent(rec, server.url, tries=5)
    out = agent("a")
    rec.flush()
    with Store(tmp_path / "rec.db") as store:
        cas = cassette_from_store(store, rec.last_run_id)  # type: ignore[arg-type]
    rec.close()
    server.stop()
    for it in cas.http:
        del it["step_id"], it["match_on"]
    path = write_cassette(cas, tmp_path / "old.json")
    result = replay_run(str(path), agent=agent)
    assert result.exception is None and result.output == out
    assert result.diff.is_empty and result.diff.http_attempts == [], str(result.diff)
