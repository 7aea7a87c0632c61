"""Nothing planted survives: secrets and PII put into a run never reach the disk or the log lines.

Generated secrets and PII are planted in the agent's input, tool args, tool outputs, exception
messages and the outputs of nested tools; the runs are recorded; then the raw bytes of the SQLite
file, its -wal and the `replay.events` log lines are searched for every planted value.

The second test plants 528 seeded values of every kind in `tests/planted.py` into every channel a
run writes (agent and tool names, labels, versions, input, args, return values, exception messages
and args, a warning, HTTP URLs, headers, JSON and form bodies and what the server sends back), then
searches the store, its -wal, the cassettes, every log line of the ``replay`` loggers, the warnings
and the output of ``replay runs --json`` / ``replay show [--json]``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay import Recorder
from replay.cassette import cassette_from_store, dump_cassette
from replay.store import Store
from tests.strategies import json_with_planted, planted_values


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _record(db: Path, payloads: list[Any], store_args: str) -> None:
    rec = Recorder(db, store_args=store_args)

    @rec.tool("crm.lookup")
    def lookup(query: Any) -> Any:
        return payloads[1]

    @rec.tool("inner.fetch")
    def inner(x: Any) -> Any:
        return payloads[4]

    @rec.tool("outer.process")
    def outer(x: Any) -> Any:
        return {"nested": inner(x)}

    @rec.tool("email.send")
    def send(body: Any) -> None:
        raise RuntimeError(f"gateway refused: {payloads[3]}")

    @rec.agent("support-agent")
    def handle(ticket: Any) -> Any:
        lookup(payloads[2])
        outer(payloads[2])
        try:
            send(payloads[0])
        except RuntimeError:
            pass
        return payloads[1]

    handle(payloads[0])
    rec.flush()
    rec._writer.close()  # leave the -wal as it is (no checkpoint through our reads)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(json_with_planted(min_plants=3, max_plants=6), min_size=5, max_size=5),
    st.lists(planted_values(keyed=False), min_size=3, max_size=6),
    st.sampled_from(["hash", "redacted"]),
)
def test_no_planted_value_reaches_the_store_or_the_logs(
    plants: list[tuple[Any, list[str]]], in_message: list[Any], store_args: str
) -> None:
    """Across input, args, outputs, error messages and nested tools, no planted value is in the
    file, -wal or logs.
    """
    payloads = [value for value, _ in plants]
    payloads[3] = "upstream said: " + " ; ".join(
        p.text for p in in_message
    )  # inside an exception message
    planted = [s for i, (_, secrets) in enumerate(plants) if i != 3 for s in secrets]
    planted += [p.secret for p in in_message]
    handler = _Lines()
    logger = logging.getLogger("replay.events")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as d:
            db = Path(d) / "replay.db"
            _record(db, payloads, store_args)
            blobs = {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}
            with Store(db) as s:
                (run,) = s.runs()
                cassette = dump_cassette(cassette_from_store(s, run.run_id)).encode()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert "replay.db" in blobs
    assert len(handler.lines) >= 6  # run_start, 5 steps (one nested), stop
    blobs["replay.events log"] = "\n".join(handler.lines).encode()
    blobs["cassette"] = cassette
    for secret in planted:
        needle = secret.encode("utf-8")
        for name, blob in blobs.items():
            assert needle not in blob, f"planted value {secret!r} survived in {name}"


# --- every channel, 500+ seeded values ----------------------------------------------------------

import json as _json  # noqa: E402
import random as _random  # noqa: E402
import threading as _threading  # noqa: E402
import urllib.request as _urlreq  # noqa: E402
import warnings as _warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from urllib.parse import parse_qs as _parse_qs  # noqa: E402
from urllib.parse import quote as _quote  # noqa: E402
from urllib.parse import quote_plus as _quote_plus  # noqa: E402
from urllib.parse import urlencode as _urlencode  # noqa: E402
from urllib.parse import urlsplit as _urlsplit  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from replay.cli import cli  # noqa: E402
from tests.planted import Planted, plants  # noqa: E402

RUNS = 4
PER_RUN = 132  # 528 planted values in all


class _Echo(BaseHTTPRequestHandler):
    """Answers with everything it was sent, plus a token of its own: what a real API leaks back."""

    token = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        query = _parse_qs(_urlsplit(self.path).query)  # echoed decoded, as JSON, like an API would
        out = _json.dumps(
            {
                "query": query,
                "headers": dict(self.headers),
                "body": body,
                "access_token": self.token,
                "refresh_token": self.token[::-1],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", f"session={self.token}")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    t = _threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def _as_value(p: Planted) -> Any:
    return {p.key: p.text} if p.key else p.text


def _texts(ps: list[Planted]) -> list[Planted]:
    return [p for p in ps if isinstance(p.text, str) and p.key is None]


class _Channels:
    """Planted values dealt to every channel of one run."""

    def __init__(self, ps: list[Planted]) -> None:
        texts = _texts(ps)
        others = [p for p in ps if p not in texts]
        self.agent = texts.pop()
        self.tool = texts.pop()
        self.labels = [texts.pop() for _ in range(3)] + [p for p in others if p.key][:2]
        self.versions = [texts.pop() for _ in range(2)]
        self.message = [texts.pop() for _ in range(3)]
        self.exc_args = [texts.pop() for _ in range(2)]
        self.url = [texts.pop() for _ in range(2)]
        self.headers = [texts.pop() for _ in range(3)]
        self.json_body = [texts.pop() for _ in range(3)]
        self.form_body = [texts.pop() for _ in range(2)]
        used = {id(p) for p in self.labels}
        rest = texts + [p for p in others if id(p) not in used]
        third = len(rest) // 3
        self.input, self.args, self.output = (
            rest[:third],
            rest[third : 2 * third],
            rest[2 * third :],
        )


def _answering(output: list[Planted]) -> Callable[[Any], list[Any]]:
    """A tool body that answers any query with `output` (bound now, not to the loop variable)."""
    return lambda q: [_as_value(p) for p in output]


def _label_dict(ps: list[Planted]) -> dict[str, str]:
    return {(p.key or f"l{i}"): p.text for i, p in enumerate(ps)}


def _record_every_channel(db: Path, runs: list[_Channels], url: str, token: str) -> list[str]:
    rec = Recorder(db, store_args="redacted")
    ids = []
    for ch in runs:
        lookup = rec.tool(f"crm.lookup {ch.tool.text}")(_answering(ch.output))

        @rec.tool("billing.charge")
        def charge(x: Any, _ch: _Channels = ch) -> Any:
            raise ValueError(f"charge failed: {' ; '.join(p.text for p in _ch.message)}")

        @rec.tool("ledger.write")
        def ledger(x: Any, _ch: _Channels = ch) -> Any:
            raise KeyError(
                "lookup failed", {"detail": _ch.exc_args[0].text, "password": _ch.exc_args[1].text}
            )

        @rec.tool("odd.value")
        def odd(x: Any, _ch: _Channels = ch) -> Any:
            # Not JSON: a placeholder, and a warning whose text names the path, a planted key in it.
            return {_ch.tool.text: {_ch.agent.text: object()}}

        def http_calls(_ch: _Channels = ch) -> None:
            q = "&".join(f"note{i}={_quote(p.text, safe='')}" for i, p in enumerate(_ch.url))
            headers = {
                "X-Session": _ch.headers[0].text,
                "X-Api-Key": _ch.headers[1].text,
                "Cookie": f"sid={_ch.headers[2].text}",
                "Content-Type": "application/json",
            }
            body = {
                "password": _ch.json_body[0].text,
                "access_token": _ch.json_body[1].text,
                "note": _ch.json_body[2].text,
            }
            req = _urlreq.Request(
                f"{url}/echo?api_key={token}&{q}",
                data=_json.dumps(body).encode(),
                headers=headers,
                method="POST",
            )
            _urlreq.urlopen(req, timeout=10).read()
            form = _urlencode({"password": _ch.form_body[0].text, "note": _ch.form_body[1].text})
            req = _urlreq.Request(
                f"{url}/form",
                data=form.encode(),
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            _urlreq.urlopen(req, timeout=10).read()

        with rec.run(
            f"agent {ch.agent.text}",
            input=[_as_value(p) for p in ch.input],
            labels=_label_dict(ch.labels),
            versions=_label_dict(ch.versions),
            http=True,
        ) as run:
            lookup([_as_value(p) for p in ch.args])
            for fn in (charge, ledger):
                try:
                    fn(1)
                except (ValueError, KeyError):
                    pass
            odd(1)
            http_calls()
            run.set_output({"done": [_as_value(p) for p in ch.output[:5]]})
        ids.append(run.run_id)
    rec.flush()
    rec._writer.close()  # leave the -wal as it is
    return ids


def test_no_planted_value_reaches_any_channel(tmp_path: Path, echo_server: str) -> None:
    """528 seeded secrets and PII across names, labels, versions, inputs, args, outputs, errors,
    HTTP: none is in the store, its -wal, a cassette, a log line, a warning or `replay runs/show
    --json`."""
    rng = _random.Random(20261129)
    planted = plants(rng, RUNS * PER_RUN)
    runs = [_Channels(planted[i * PER_RUN : (i + 1) * PER_RUN]) for i in range(RUNS)]
    _Echo.token = "srv" + "".join(
        rng.choice("abcdefghijkmnopqrstuvwxyz23456789") for _ in range(20)
    )
    api_key = "qk" + "".join(rng.choice("abcdefghijkmnopqrstuvwxyz23456789") for _ in range(20))
    db = tmp_path / "replay.db"

    handler = _Lines()
    loggers = [logging.getLogger("replay.events"), logging.getLogger("replay")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            ids = _record_every_channel(db, runs, echo_server, api_key)
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(lvl)

    blobs = {
        p.name: p.read_bytes()
        for p in tmp_path.iterdir()
        if p.is_file() and not p.name.endswith(".key")
    }
    assert "replay.db-wal" in blobs or "replay.db" in blobs
    with Store(db) as s:
        assert len(s.runs()) == RUNS
        blobs["cassettes"] = "".join(
            dump_cassette(cassette_from_store(s, rid)) for rid in ids
        ).encode()
        stored = s.db.execute(
            "SELECT count(*) FROM snapshots WHERE type_name = '$http'"
        ).fetchone()[0]
    assert stored == RUNS  # the HTTP channel was recorded, not skipped
    assert len(handler.lines) >= RUNS * 6
    assert any("odd.value" in str(w.message) for w in caught)
    blobs["log lines"] = "\n".join(handler.lines).encode()
    blobs["warnings"] = "\n".join(str(w.message) for w in caught).encode()
    runner = CliRunner()
    outs = [runner.invoke(cli, ["runs", "--json", "--db", str(db)])]
    outs += [runner.invoke(cli, ["show", rid, "--json", "--db", str(db)]) for rid in ids]
    outs += [runner.invoke(cli, ["show", rid, "--db", str(db)]) for rid in ids]
    for out in outs:
        assert out.exit_code == 0, out.output
    blobs["replay runs/show output"] = "\n".join(o.output for o in outs).encode()

    needles = {n for p in planted for n in p.needles} | {_Echo.token, _Echo.token[::-1], api_key}
    # URL- and form-encoded spellings too (a value sent in a query string or a form body).
    needles |= {f(n, safe="") for n in needles for f in (_quote, _quote_plus)}
    assert len(planted) >= 500 and len(needles) >= 500
    survived = sorted(
        (
            name,
            next(
                (
                    p.kind
                    for p in planted
                    if n in p.needles
                    or n in {_quote(x, safe="") for x in p.needles}
                    or n in {_quote_plus(x, safe="") for x in p.needles}
                ),
                "server",
            ),
        )
        for n in needles
        for name, blob in blobs.items()
        if n.encode() in blob
    )
    assert survived == [], (
        f"{len(survived)} planted values survived (channel, kind): {survived[:20]}"
    )
