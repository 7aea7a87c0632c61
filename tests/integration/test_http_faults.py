"""Faults on the HTTP layer's recorded responses, met by real clients (requests, httpx, urllib3,
the openai SDK) replaying offline.

Each test records an ``http=True`` run against a local service on 127.0.0.1, stops the service,
and replays with the tool that makes the requests running live (``live=``), so the tool's own
retry policy meets the fault: a status is a real response of that status, a timeout or a refused
connection is the transport's own exception, and the recorded responses answer the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest
import requests
import urllib3
from _local_http import LocalService
from click.testing import CliRunner

from replay import Recorder, replay_run
from replay.cli import cli
from replay.faults import FaultSpecError

ORDERS = ["A-1", "A-2"]


def _requests_get(url: str) -> tuple[int, dict[str, str], Any]:
    r = requests.get(url, timeout=5)
    return r.status_code, dict(r.headers), r


def _httpx_get(url: str) -> tuple[int, dict[str, str], Any]:
    with httpx.Client(timeout=5) as client:
        r = client.get(url)
        return r.status_code, dict(r.headers), r


def _urllib3_get(url: str) -> tuple[int, dict[str, str], Any]:
    r = urllib3.PoolManager().request("GET", url, timeout=5, retries=False)
    return r.status, dict(r.headers), r


CLIENTS: dict[str, Callable[[str], tuple[int, dict[str, str], Any]]] = {
    "requests": _requests_get,
    "httpx": _httpx_get,
    "urllib3": _urllib3_get,
}


class Shop:
    """An agent whose tool GETs orders with a retry policy: three tries on 429/5xx."""

    def __init__(self, rec: Recorder, url: str, client: str) -> None:
        self.get = CLIENTS[client]
        self.attempts: list[tuple[str, int]] = []  # (order, status) of each try
        self.retry_after: list[str | None] = []

        @rec.tool("orders.get")
        def orders_get(order_id: str) -> dict[str, Any]:
            for _ in range(3):
                status, headers, response = self.get(f"{url}/orders/{order_id}")
                self.attempts.append((order_id, status))
                self.retry_after.append(headers.get("retry-after") or headers.get("Retry-After"))
                if status not in (429, 500, 502, 503):
                    break
            if client == "urllib3":
                return dict(response.json())
            response.raise_for_status()
            return dict(response.json())

        @rec.agent("shop", http=True)
        def shop(orders: list[str]) -> list[dict[str, Any]]:
            return [orders_get(o) for o in orders]

        self.agent = shop


@pytest.fixture
def service() -> Iterator[LocalService]:
    with LocalService() as svc:
        yield svc


def _recorded(tmp_path: Path, service: LocalService, client: str) -> tuple[Shop, str, Path]:
    db = tmp_path / f"{client}.db"
    rec = Recorder(db)
    shop = Shop(rec, service.url, client)
    shop.agent(ORDERS)
    run_id = rec.last_run_id
    assert run_id is not None
    rec.close()
    service.stop()  # every answer below comes from the recording or a fault
    shop.attempts.clear()
    shop.retry_after.clear()
    return shop, run_id, db


@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_transient_503_is_retried_by_the_tool_and_the_run_replays_identical(
    tmp_path: Path, service: LocalService, client: str
) -> None:
    """``503@first:2`` answers the first two requests with a real 503; the tool's retry loop gets
    the recorded answer on its third try, so the output and the steps match the recording and the
    diff shows only the step's HTTP attempts going from 1 to 3."""
    shop, run_id, db = _recorded(tmp_path, service, client)
    spec = "http:localhost/orders/*=503@first:2"
    result = replay_run(run_id, agent=shop.agent, db=db, live={"orders.get"}, faults=spec)
    assert result.exception is None, result.exception
    assert shop.attempts == [("A-1", 503), ("A-1", 503), ("A-1", 200), ("A-2", 200)]
    assert [o["order_id"] for o in result.output] == ORDERS
    assert result.diff.changes == [] and result.diff.stop_reason_changed is False
    assert [(a.step, a.before, a.after) for a in result.diff.http_attempts] == [(1, 1, 3)]
    assert result.marks.get(1) == f"live; fault: {spec}"


@pytest.mark.parametrize(
    ("client", "error"),
    [("requests", requests.exceptions.HTTPError), ("httpx", httpx.HTTPStatusError)],
)
def test_a_lasting_503_raises_the_clients_own_status_error(
    tmp_path: Path, service: LocalService, client: str, error: type[BaseException]
) -> None:
    """Every request answering 503: the tool gives up after three tries and
    ``raise_for_status`` raises the client's own class, carrying the 503 response."""
    shop, run_id, db = _recorded(tmp_path, service, client)
    result = replay_run(
        run_id, agent=shop.agent, db=db, live={"orders.get"}, faults="http:localhost=503"
    )
    assert type(result.exception) is error
    assert result.exception.response.status_code == 503  # type: ignore[attr-defined]
    assert shop.attempts == [("A-1", 503)] * 3
    assert not result.diff.is_empty  # the tool step now fails: the diff shows it, marked
    first = result.diff.changes[0]
    assert first.replayed is not None and first.replayed.step_id == 1
    assert first.note.endswith("live; fault: http:localhost=503"), first.note


def test_retry_after_reaches_the_client_as_a_header(tmp_path: Path, service: LocalService) -> None:
    """``429:retry-after=2`` is a 429 response with a ``retry-after: 2`` header."""
    shop, run_id, db = _recorded(tmp_path, service, "httpx")
    replay_run(
        run_id,
        agent=shop.agent,
        db=db,
        live={"orders.get"},
        faults="http:localhost:*=429:retry-after=2@call:1",
    )
    assert shop.attempts[:2] == [("A-1", 429), ("A-1", 200)]
    assert shop.retry_after[:2] == ["2", None]


@pytest.mark.parametrize(
    ("client", "kind", "error"),
    [
        ("requests", "timeout", requests.exceptions.ReadTimeout),
        ("requests", "connect", requests.exceptions.ConnectionError),
        ("httpx", "timeout", httpx.ReadTimeout),
        ("httpx", "connect", httpx.ConnectError),
        ("urllib3", "timeout", urllib3.exceptions.ReadTimeoutError),
        ("urllib3", "connect", urllib3.exceptions.ProtocolError),
    ],
)
def test_timeouts_and_refused_connections_raise_the_transports_own_errors(
    tmp_path: Path, service: LocalService, client: str, kind: str, error: type[BaseException]
) -> None:
    """A timeout or connect fault raises what the client raises for that failure (the tool does not
    catch it, so the agent ends with it)."""
    shop, run_id, db = _recorded(tmp_path, service, client)
    result = replay_run(
        run_id, agent=shop.agent, db=db, live={"orders.get"}, faults=f"http:localhost={kind}"
    )
    assert isinstance(result.exception, error), repr(result.exception)
    assert shop.attempts == []  # the first request raised: no status was seen


def test_malformed_and_drift_change_the_recorded_body(
    tmp_path: Path, service: LocalService
) -> None:
    """``malformed`` cuts the recorded body (the client's JSON decoding fails); ``drift`` drops a
    field from it (the tool returns the order without its status)."""
    shop, run_id, db = _recorded(tmp_path, service, "requests")
    result = replay_run(
        run_id, agent=shop.agent, db=db, live={"orders.get"}, faults="http:localhost=malformed"
    )
    assert isinstance(result.exception, requests.exceptions.JSONDecodeError)
    result = replay_run(
        run_id,
        agent=shop.agent,
        db=db,
        live={"orders.get"},
        faults="http:localhost/orders/A-2=drift:field=status",
    )
    assert result.exception is None
    assert "status" in result.output[0] and "status" not in result.output[1]


def test_the_openai_sdk_retries_a_429_and_raises_its_own_error_when_it_lasts(
    tmp_path: Path, service: LocalService
) -> None:
    """A live model step through the openai SDK (``max_retries=2``): a 429 on the first request
    is retried by the SDK after its ``retry-after`` and the run replays identical; a lasting 429
    ends in the SDK's own ``RateLimitError``, after its three attempts."""
    db = tmp_path / "sdk.db"
    rec = Recorder(db)
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="test-key", max_retries=2)

    @rec.model("openai.chat")
    def chat(messages: list[dict[str, str]]) -> Any:
        return client.chat.completions.create(model="local", messages=messages)

    @rec.agent("sdk", http=True)
    def sdk(ticket: str) -> str:
        answer = chat([{"role": "user", "content": ticket}])
        return str(answer.choices[0].message.content or answer.choices[0].finish_reason)

    recorded = sdk("hello there")
    run_id = rec.last_run_id
    rec.close()
    service.stop()
    target = "http:localhost/v1/chat/completions"
    live = {"openai.chat"}
    once = replay_run(
        run_id, agent=sdk, db=db, live=live, faults=f"{target}=429:retry-after=0.01@first:1"
    )
    assert once.exception is None and once.output == recorded
    assert once.diff.changes == [], once.diff.to_text()
    assert [(a.before, a.after) for a in once.diff.http_attempts] == [(1, 2)]  # the SDK's retry
    lasting = replay_run(
        run_id, agent=sdk, db=db, live=live, faults=f"{target}=429:retry-after=0.01"
    )
    assert type(lasting.exception) is openai.RateLimitError
    assert lasting.exception.status_code == 429


def test_bad_http_targets_are_refused_before_the_agent_runs(
    tmp_path: Path, service: LocalService
) -> None:
    """A target no recorded request matches names the recorded hosts; a run recorded without the
    HTTP layer, and ``slow`` without a duration, are refused too; the agent never runs."""
    shop, run_id, db = _recorded(tmp_path, service, "requests")
    with pytest.raises(
        FaultSpecError, match=r"no recorded HTTP request .* \(its hosts: localhost:\d+\)"
    ):
        replay_run(run_id, agent=shop.agent, db=db, faults="http:api.example.test=503")
    with pytest.raises(FaultSpecError, match="slow:2s"):
        replay_run(run_id, agent=shop.agent, db=db, faults="http:localhost=slow")
    plain = Recorder(tmp_path / "plain.db")

    @plain.agent("plain")
    def no_http() -> int:
        return 1

    no_http()
    plain.close()
    with pytest.raises(FaultSpecError, match="no HTTP requests to fault"):
        replay_run(plain.last_run_id, agent=no_http, db=tmp_path / "plain.db", faults="http:*=503")
    assert shop.attempts == []


SHOP_MODULE = """
import os

import requests

from replay import Recorder

rec = Recorder(os.environ["SHOP_DB"])


@rec.tool("orders.get")
def orders_get(order_id):
    for _ in range(3):
        r = requests.get(os.environ["SHOP_URL"] + "/orders/" + order_id, timeout=5)
        if r.status_code not in (429, 503):
            break
    r.raise_for_status()
    return r.json()


@rec.agent("shop", http=True)
def shop(order_id):
    return orders_get(order_id)["status"]
"""


def test_replay_run_takes_http_faults_on_the_command_line(
    tmp_path: Path, service: LocalService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``replay run --live orders.get --fault http:localhost=503@first:2`` copes (the tool's
    retries get the recorded answer); ``--fault http:localhost=503`` does not, exit 1, naming the
    client's own error."""
    (tmp_path / "pyproject.toml").write_text('[tool.agent-replay]\nagents = ["shopagent"]\n')
    (tmp_path / "shopagent.py").write_text(SHOP_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SHOP_DB", str(tmp_path / "shop.db"))
    monkeypatch.setenv("SHOP_URL", service.url)
    import shopagent  # type: ignore[import-not-found]

    shopagent.shop("A-7")
    run_id = shopagent.rec.last_run_id
    shopagent.rec.close()
    service.stop()
    base = ["run", run_id, "--db", str(tmp_path / "shop.db"), "--live", "orders.get"]
    res = CliRunner().invoke(cli, [*base, "--fault", "http:localhost=503@first:2"])
    assert res.exit_code == 0, res.output
    assert f"{run_id} [http:localhost=503@first:2]  coped" in res.output
    res = CliRunner().invoke(cli, [*base, "--fault", "http:localhost=503"])
    assert res.exit_code == 1, res.output
    assert "did not cope: the agent raised HTTPError under the fault" in res.output
    res = CliRunner().invoke(cli, [*base, "--fault", "http:nowhere.test=503"])
    assert res.exit_code == 2 and "its hosts: localhost:" in res.output, res.output


@pytest.mark.parametrize(
    ("kind", "error"),
    [("timeout", aiohttp.ServerTimeoutError), ("connect", aiohttp.ClientConnectionError)],
)
def test_aiohttp_meets_its_own_timeout_and_connection_errors(
    tmp_path: Path, service: LocalService, kind: str, error: type[BaseException]
) -> None:
    """Under aiohttp (an async client), a timeout or connect fault raises aiohttp's own class,
    as the README's table says; without the fault the same run replays as recorded."""
    rec = Recorder(tmp_path / "aio.db")
    url = service.url

    @rec.tool("orders.get")
    async def orders_get(order_id: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/orders/{order_id}") as r:
                return dict(await r.json())

    @rec.agent("aio", http=True)
    async def aio(order_id: str) -> str:
        return str((await orders_get(order_id))["status"])

    async def record() -> tuple[str, str | None]:
        return await aio("A-3"), rec.last_run_id

    recorded, run_id = asyncio.run(record())
    rec.close()
    service.stop()
    clean = replay_run(run_id, agent=aio, db=rec.db, live={"orders.get"})
    assert clean.exception is None and clean.output == recorded
    faulted = replay_run(
        run_id, agent=aio, db=rec.db, live={"orders.get"}, faults=f"http:localhost={kind}"
    )
    assert isinstance(faulted.exception, error), repr(faulted.exception)
    assert "injected fault" in str(faulted.exception)
