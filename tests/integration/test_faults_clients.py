"""Faults raise the clients' own errors: httpx, requests and openai tools recorded against a local
service.

The run is recorded once against the local service (then stopped); every fault replay is offline.
The agent keeps what each tool raised, so the tests read the exception a retry policy would read.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
import requests
from _local_http import LocalService

from replay import Recorder, replay_run
from replay.faults import ToolConnectionError, ToolHTTPError, ToolMalformedAnswer, ToolTimeout

SEEN: list[Any] = []


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, Any]:
    """A run calling an httpx tool (one 503 recorded), a requests tool, an openai tool and a plain
    tool."""
    db = tmp_path_factory.mktemp("faults") / "rec.db"
    rec = Recorder(db)
    with LocalService() as svc:
        url = svc.url

        @rec.tool("http.get")
        def http_get(u: str) -> Any:
            r = httpx.get(u)
            r.raise_for_status()
            return r.json()

        @rec.tool("req.get")
        def req_get(u: str) -> Any:
            r = requests.get(u, timeout=5)
            r.raise_for_status()
            return r.json()

        @rec.tool("llm")
        def llm(prompt: str) -> Any:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=5)
            return client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": prompt}]
            )

        @rec.tool("claude")
        def claude(prompt: str) -> Any:
            client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0, timeout=5)
            return client.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": prompt}]
            )

        @rec.tool("orders.lookup")
        def lookup(order_id: str) -> dict[str, Any]:
            return {"id": order_id, "status": "shipped", "eta": {"days": 2, "carrier": "DHL"}}

        @rec.agent("fault-matrix")
        def agent(base: str) -> str:
            calls = [
                (http_get, f"{base}/orders/A-1"),
                (http_get, f"{base}/status/503"),
                (req_get, f"{base}/orders/A-2"),
                (llm, "hello"),
                (lookup, "A-3"),
                (claude, "hello"),
            ]
            for fn, arg in calls:
                try:
                    SEEN.append(fn(arg))
                except Exception as exc:  # noqa: BLE001 - the test reads what each tool raised
                    SEEN.append(exc)
            return "ok"

        agent(url)
    rid = rec.last_run_id
    rec.close()
    SEEN.clear()
    return agent, rid, db


def _replay(recorded: Any, faults: Any, **kw: Any) -> tuple[Any, list[Any]]:
    agent, rid, db = recorded
    SEEN.clear()
    res = replay_run(rid, db=db, agent=agent, faults=faults, **kw)
    assert res.exception is None, res.exception
    return res, list(SEEN)


def test_without_faults_the_replay_matches(recorded: Any) -> None:
    """The recording replays as recorded: the faults below are the only change."""
    res, seen = _replay(recorded, None)
    assert res.diff.is_empty
    assert isinstance(seen[1], httpx.HTTPStatusError)


def test_httpx_429_with_retry_after_is_httpx_own_error(recorded: Any) -> None:
    """http.get recorded an httpx error, so a 429 fault is httpx.HTTPStatusError with a real
    Response and retry-after."""
    res, seen = _replay(recorded, "http.get=429:retry-after=2@first:1")
    exc = seen[0]
    assert type(exc) is httpx.HTTPStatusError
    assert isinstance(exc.response, httpx.Response)
    assert exc.response.status_code == 429
    assert exc.response.headers["retry-after"] == "2"
    assert exc.request.url == exc.response.request.url
    assert str(exc.request.url).endswith("/orders/A-1")
    assert isinstance(seen[1], httpx.HTTPStatusError) and seen[1].response.status_code == 503
    assert [s.status for s in res.calls("http.get")] == ["error", "error"]


@pytest.mark.parametrize(
    "fault, cls",
    [("timeout", httpx.ReadTimeout), ("connect", httpx.ConnectError), (500, httpx.HTTPStatusError)],
)
def test_httpx_fault_kinds(recorded: Any, fault: Any, cls: type) -> None:
    """Timeout, connection and 5xx faults on an httpx tool raise httpx's own classes
    (TimeoutException, ConnectError, ...)."""
    _res, seen = _replay(recorded, {"http.get": fault})
    assert type(seen[0]) is cls and type(seen[1]) is cls
    if fault == "timeout":
        assert isinstance(seen[0], httpx.TimeoutException)


def test_429_without_retry_after_has_no_header(recorded: Any) -> None:
    """A plain 429 carries no retry-after header, so code that reads it falls back to its own
    backoff."""
    _res, seen = _replay(recorded, "http.get=429@call:1")
    assert "retry-after" not in seen[0].response.headers


@pytest.mark.parametrize(
    "fault, cls",
    [
        ("503", requests.HTTPError),
        ("timeout", requests.exceptions.ReadTimeout),
        ("connect", requests.ConnectionError),
    ],
)
def test_requests_faults_with_client_named(recorded: Any, fault: str, cls: type) -> None:
    """client=requests makes a healthy requests tool fail as requests does (HTTPError with a
    Response)."""
    _res, seen = _replay(recorded, f"req.get={fault}:client=requests")
    assert type(seen[2]) is cls
    if fault == "503":
        assert seen[2].response.status_code == 503
        assert seen[2].response.json() == {"error": "503 Service Unavailable"}


def test_openai_rate_limit_is_built_as_the_sdk_builds_it(recorded: Any) -> None:
    """The llm tool returned an openai ChatCompletion, so 429 is openai.RateLimitError with status,
    body and retry-after."""
    _res, seen = _replay(recorded, "llm=429:retry-after=7")
    exc = seen[3]
    assert type(exc) is openai.RateLimitError
    assert exc.status_code == 429
    assert exc.response.headers["retry-after"] == "7"
    assert str(exc).startswith("Error code: 429 - ")
    assert isinstance(exc.body, dict) and "message" in exc.body


@pytest.mark.parametrize(
    "fault, cls",
    [
        ("503", openai.InternalServerError),
        ("timeout", openai.APITimeoutError),
        ("connect", openai.APIConnectionError),
    ],
)
def test_openai_other_faults(recorded: Any, fault: str, cls: type) -> None:
    """5xx, timeout and connection faults on an openai tool raise the SDK's classes."""
    _res, seen = _replay(recorded, f"llm={fault}")
    assert type(seen[3]) is cls


@pytest.mark.parametrize(
    "fault, cls",
    [
        ("timeout", ToolTimeout),
        ("connect", ToolConnectionError),
        ("503:retry-after=3", ToolHTTPError),
        ("malformed", ToolMalformedAnswer),
    ],
)
def test_plain_tool_gets_generic_faults_builtin_code_can_catch(
    recorded: Any, fault: str, cls: type
) -> None:
    """A plain tool gets ToolFault errors that are TimeoutError, ConnectionError or JSONDecodeError
    where it matters."""
    _res, seen = _replay(recorded, f"orders.lookup={fault}")
    exc = seen[4]
    assert type(exc) is cls
    assert exc.tool == "orders.lookup" and exc.fault == f"orders.lookup={fault}"
    if fault == "timeout":
        assert isinstance(exc, TimeoutError)
    if fault == "connect":
        assert isinstance(exc, ConnectionError)
    if fault == "malformed":
        assert isinstance(exc, json.JSONDecodeError)
    if cls is ToolHTTPError:
        assert (exc.status_code, exc.retry_after, exc.headers["retry-after"]) == (503, 3.0, "3")


@pytest.mark.parametrize(
    "fault, cls",
    [
        ("529", anthropic.OverloadedError),
        ("503", anthropic.ServiceUnavailableError),
        ("429:retry-after=5", anthropic.RateLimitError),
        ("timeout", anthropic.APITimeoutError),
    ],
)
def test_anthropic_faults_pick_the_sdks_class_for_the_status(
    recorded: Any, fault: str, cls: type
) -> None:
    """The claude tool returned an anthropic Message: 529 is OverloadedError, 503 its own class."""
    _res, seen = _replay(recorded, f"claude={fault}")
    assert type(seen[5]) is cls
    if fault.startswith("429"):
        assert seen[5].response.headers["retry-after"] == "5"


def test_schema_drift_removes_the_named_field(recorded: Any) -> None:
    """drift:field=eta.carrier answers the recorded value without that nested field."""
    res, seen = _replay(recorded, "orders.lookup=drift:field=eta.carrier")
    assert seen[4] == {"id": "A-3", "status": "shipped", "eta": {"days": 2}}
    assert not res.diff.is_empty  # the output changed, and the diff says so


def test_slow_answer_moves_the_replay_clock_not_the_test(recorded: Any) -> None:
    """slow:30s answers as recorded but 30 s later on the replay's recorded clock, without waiting
    30 s."""
    agent, rid, db = recorded
    t0 = time.monotonic()
    res, seen = _replay(recorded, "orders.lookup=slow:30s")
    assert time.monotonic() - t0 < 10
    assert seen[4]["status"] == "shipped"
    assert res.diff.is_empty


def test_slow_answer_on_the_real_clock_waits(recorded: Any) -> None:
    """With clock='real', slow:300ms really waits at least that long."""
    t0 = time.monotonic()
    _res, seen = _replay(recorded, "orders.lookup=slow:300ms", clock="real")
    assert time.monotonic() - t0 >= 0.3
    assert seen[4]["id"] == "A-3"


def test_client_class_never_imported(recorded: Any) -> None:
    """client=MODULE:CLASS of a module nobody imported is refused before the agent runs; nothing is
    imported."""
    import sys

    agent, rid, db = recorded
    with pytest.raises(ValueError, match=r"client=nonexistent_mod_x:Err is not a class"):
        replay_run(rid, db=db, agent=agent, faults="orders.lookup=503:client=nonexistent_mod_x:Err")
    assert "nonexistent_mod_x" not in sys.modules
