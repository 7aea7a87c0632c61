"""The optional HTTP layer on a real local server: vcrpy records, redacts, stores, exports and replays."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from vcr.errors import CannotOverwriteExistingCassetteException

from replay import Recorder, replay_run
from replay.cassette import (
    cassette_from_replay,
    cassette_from_store,
    import_cassette,
    load_cassette,
    write_cassette,
)
from replay.errors import ReplayError, UnrecordedRequest
from replay.network import NetworkBlockedError
from replay.store import Store

TOKEN = "tok-7Hq2ZrawSECRETvalue991"
EMAIL = "ann.customer@example.com"
REAL_HTTP_CONNECTION = http.client.HTTPConnection


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.seen.append((self.path, self.headers.get("Authorization", ""), body))
        out = json.dumps(
            {"ticket": 42, "path": self.path, "echo": json.loads(body or "{}")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "session=raw-cookie-value")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


class _Server:
    def __init__(self) -> None:
        _Handler.seen = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
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


def _post(url: str, token: str, email: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps({"email": email, "note": "refund please"}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _make_agent(rec: Recorder, base: str, mode: dict[str, str], http: bool = True) -> Any:
    @rec.tool("kb.search")
    def kb_search(query: str) -> list[str]:
        return [f"article about {query}"]

    @rec.agent("support", http=http)
    def support(email: str, token: str) -> dict[str, Any]:
        kb_search("refunds")
        return _post(base + mode["path"], token, email)

    return support


@pytest.fixture
def recorded(tmp_path: Path, server: _Server) -> Iterator[dict[str, Any]]:
    db = tmp_path / "rec.db"
    rec = Recorder(db)
    mode = {"path": "/tickets"}
    agent = _make_agent(rec, server.url, mode)
    out = agent(EMAIL, TOKEN)
    run_id = rec.last_run_id
    rec.flush()
    try:
        yield {
            "db": db,
            "rec": rec,
            "agent": agent,
            "mode": mode,
            "run_id": run_id,
            "out": out,
            "server": server,
        }
    finally:
        rec.close()


def test_http_run_is_recorded_with_secrets_redacted(recorded: dict[str, Any]) -> None:
    """An http=True run stores its interactions as a $http snapshot, with the token, cookie and email redacted."""
    assert recorded["out"]["ticket"] == 42
    assert _Handler.seen == [
        ("/tickets", f"Bearer {TOKEN}", json.dumps({"email": EMAIL, "note": "refund please"}))
    ]
    recorded["rec"].close()
    with Store(recorded["db"]) as store:
        run = store.get_run(recorded["run_id"])
        assert run.http_sha is not None
        body, type_name, truncated = store.snapshot(run.http_sha)
    assert type_name == "$http" and not truncated
    [interaction] = json.loads(body)
    req, resp = interaction["request"], interaction["response"]
    assert req["method"] == "POST" and req["uri"].endswith("/tickets")
    assert req["headers"]["Authorization"] == "[REDACTED:secret]"
    assert resp["headers"]["Set-Cookie"] == "[REDACTED:secret]"
    assert "@redacted.invalid" in req["body"] and EMAIL not in req["body"]
    assert resp["status"]["code"] == 200 and '"ticket": 42' in resp["body"]["string"]
    raw = b"".join(p.read_bytes() for p in recorded["db"].parent.glob("rec.db*"))
    for secret in (TOKEN, EMAIL, "raw-cookie-value"):
        assert secret.encode() not in raw
    assert (
        http.client.HTTPConnection is REAL_HTTP_CONNECTION
    )  # vcrpy's patches are gone after the run


def test_cassette_carries_the_interactions_and_imports_them_back(
    recorded: dict[str, Any], tmp_path: Path
) -> None:
    """Export puts the interactions in Cassette.http; import stores them again under the same http_sha."""
    with Store(recorded["db"]) as store:
        cas = cassette_from_store(store, recorded["run_id"])
        sha = store.get_run(recorded["run_id"]).http_sha
    assert (
        len(cas.http) == 1
        and cas.http[0]["request"]["headers"]["Authorization"] == "[REDACTED:secret]"
    )
    path = write_cassette(cas, tmp_path / "cassettes" / "x.json")
    assert TOKEN not in path.read_text() and EMAIL not in path.read_text()
    with Store(tmp_path / "other.db") as other:
        assert import_cassette(other, path)
        assert other.get_run(recorded["run_id"]).http_sha == sha
        assert cassette_from_store(other, recorded["run_id"]).http == load_cassette(path).http


def test_replay_answers_http_from_the_recording(recorded: dict[str, Any]) -> None:
    """With the server stopped, the replayed agent's HTTP call is answered from the recording and the diff is empty."""
    recorded["server"].stop()
    result = replay_run(recorded["run_id"], agent=recorded["agent"], db=recorded["db"])
    assert result.exception is None, result.exception
    assert result.output["ticket"] == 42 and result.output["path"] == "/tickets"
    assert result.diff.is_empty, str(result.diff)
    assert (
        cassette_from_replay(result).http == result.recording.http
        and len(result.recording.http) == 1
    )
    assert http.client.HTTPConnection is REAL_HTTP_CONNECTION


def test_replay_of_a_new_url_raises_unrecorded_request_naming_the_nearest(
    recorded: dict[str, Any],
) -> None:
    """A request the recording has no answer for raises UnrecordedRequest naming it and the nearest recorded one."""
    recorded["server"].stop()
    recorded["mode"]["path"] = "/tickets/escalate"
    result = replay_run(recorded["run_id"], agent=recorded["agent"], db=recorded["db"])
    exc = result.exception
    assert isinstance(exc, UnrecordedRequest) and isinstance(exc, ReplayError)
    assert not isinstance(exc, CannotOverwriteExistingCassetteException)
    message = str(exc)
    assert (
        message.startswith("unrecorded HTTP request POST http://")
        and "/tickets/escalate" in message
    )
    assert "nearest recorded request: POST http://" in message and "/tickets (" in message
    assert "differs in uri" in message and "matched method" in message
    assert "record_mode" not in message and exc.failed == ["uri"]
    assert result.unrecorded_http == [exc] and result.stop_reason == "error"
    assert not result.diff.is_empty


def test_cassette_replay_with_a_shared_key_matches_redacted_urls(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cassette replayed from a file answers HTTP too when REPLAY_REDACTION_KEY keeps pseudonyms (the IP in the URL) equal."""
    monkeypatch.setenv("REPLAY_REDACTION_KEY", "shared-ci-secret")
    rec = Recorder(tmp_path / "rec.db")
    agent = _make_agent(rec, server.url, {"path": "/tickets"})
    agent(EMAIL, TOKEN)
    rec.flush()
    with Store(tmp_path / "rec.db") as store:
        path = write_cassette(cassette_from_store(store, rec.last_run_id), tmp_path / "c.json")
    rec.close()
    server.stop()
    result = replay_run(str(path), agent=agent)
    assert result.exception is None and result.diff.is_empty, str(result.diff)


def test_concurrent_http_runs_keep_their_own_interactions(tmp_path: Path, server: _Server) -> None:
    """Two http=True runs open at once in two threads each store only their own request."""
    rec = Recorder(tmp_path / "rec.db")
    both_in = threading.Barrier(2, timeout=5)
    a_done = threading.Event()

    @rec.agent("worker", http=True)
    def worker(path: str) -> dict[str, Any]:
        both_in.wait()  # both runs (and their captures) are active before either makes its call
        # The calls themselves take turns: vcrpy un-patches the clients process-wide while it sends
        # a real request (vcr.patch.force_reset), so a request another thread starts in that window
        # would go out unrecorded (documented in replay/http.py).
        if path == "/b":
            a_done.wait(5)
        out = _post(server.url + path, TOKEN, EMAIL)
        if path == "/a":
            a_done.set()
        both_in.wait()  # neither run ends before both calls are made
        return out

    ids: dict[str, str] = {}

    def go(path: str) -> None:
        worker(path)
        ids[path] = rec.last_run_id  # type: ignore[assignment]

    threads = [threading.Thread(target=go, args=(p,)) for p in ("/a", "/b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    rec.flush()
    with Store(tmp_path / "rec.db") as store:
        for path, run_id in ids.items():
            http_list = cassette_from_store(store, run_id).http
            assert [i["request"]["uri"].rsplit("/", 1)[1] for i in http_list] == [path[1:]]
    rec.close()
    assert http.client.HTTPConnection is REAL_HTTP_CONNECTION


def test_agent_without_http_is_unchanged(tmp_path: Path, server: _Server) -> None:
    """Without http=True nothing is captured and a replay still refuses the connection (sockets blocked)."""
    rec = Recorder(tmp_path / "rec.db")
    agent = _make_agent(rec, server.url, {"path": "/tickets"}, http=False)
    assert http.client.HTTPConnection is REAL_HTTP_CONNECTION
    agent(EMAIL, TOKEN)
    rec.flush()
    with Store(tmp_path / "rec.db") as store:
        run = store.get_run(rec.last_run_id)  # type: ignore[arg-type]
        assert run.http_sha is None and cassette_from_store(store, run.run_id).http == []
    rec.close()
    server.stop()
    result = replay_run(run.run_id, agent=agent, db=tmp_path / "rec.db")
    assert isinstance(result.exception, urllib.error.URLError)
    assert isinstance(result.exception.reason, NetworkBlockedError)


def test_live_tool_runs_its_own_code_with_http_answered_from_the_recording(
    tmp_path: Path, server: _Server
) -> None:
    """A live tool's body runs in the replay while its HTTP request is answered from the recording."""
    rec = Recorder(tmp_path / "live.db")
    bodies: list[str] = []

    @rec.tool("tickets.post")
    def post_ticket(email: str, token: str) -> dict[str, Any]:
        bodies.append("tickets.post")
        return _post(server.url + "/tickets", token, email)

    @rec.agent("support", http=True)
    def support(email: str, token: str) -> dict[str, Any]:
        return post_ticket(email, token)

    recorded_out = support(EMAIL, TOKEN)
    run_id = rec.last_run_id
    rec.flush()
    server.stop()  # nothing real can answer now
    bodies.clear()
    res = replay_run(run_id, agent=support, db=rec.db, live={"tickets.post"})
    assert bodies == ["tickets.post"]  # the tool's own code ran
    assert res.exception is None and res.output["ticket"] == recorded_out["ticket"] == 42
    assert res.marks == {1: "live"} and not res.unrecorded_http
    rec.close()
