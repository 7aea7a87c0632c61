"""Recorded errors come back from a replay as the client's own class, with what retry code reads.

Real clients (httpx, requests, urllib, openai, anthropic) call a local service on 127.0.0.1; each
tool's error is recorded into a real SQLite file, the service is stopped, and the run is replayed.
After replay, ``type(e)`` and the attributes a retry policy reads equal the original's.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
import requests
from _local_http import LocalService, closed_port

from replay import RecordedToolError, Recorder, replay_run


class QuotaError(Exception):
    """A user error whose __init__ takes other arguments than its message."""

    def __init__(self, account: str, limit: int) -> None:
        super().__init__(f"quota of {limit} reached")
        self.account = account
        self.limit = limit


def _cases(url: str, dead: str) -> dict[str, Callable[[], Any]]:
    def oa(model: str, timeout: float = 5.0) -> Any:
        client = openai.OpenAI(
            base_url=f"{url}/v1", api_key="test-key", max_retries=0, timeout=timeout
        )
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )

    def an(model: str, timeout: float = 5.0) -> Any:
        client = anthropic.Anthropic(
            base_url=url, api_key="test-key", max_retries=0, timeout=timeout
        )
        return client.messages.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )

    async def sleepy() -> None:
        await asyncio.wait_for(asyncio.sleep(1), 0.01)

    return {
        "httpx 503": lambda: httpx.get(f"{url}/status/503").raise_for_status(),
        "httpx timeout": lambda: httpx.get(f"{url}/slow", timeout=0.1),
        "httpx connect": lambda: httpx.get(f"{dead}/x"),
        "requests 503": lambda: requests.get(f"{url}/status/503").raise_for_status(),
        "requests timeout": lambda: requests.get(f"{url}/slow", timeout=0.1),
        "requests connect": lambda: requests.get(f"{dead}/x"),
        "urllib 429": lambda: urllib.request.urlopen(f"{url}/status/429"),
        "openai 429": lambda: oa("error-429"),
        "openai 500": lambda: oa("error-500"),
        "openai timeout": lambda: oa("slow", timeout=0.1),
        "anthropic 429": lambda: an("error-429"),
        "anthropic 529": lambda: an("error-529"),
        "anthropic timeout": lambda: an("slow", timeout=0.1),
        "TimeoutError": lambda: (_ for _ in ()).throw(TimeoutError("upstream timed out")),
        "asyncio.TimeoutError": lambda: asyncio.run(sleepy()),
        "KeyError": lambda: {}["missing"],
        "FileNotFoundError": lambda: open(
            "/nonexistent-dir/x.txt"
        ),  # errno and filename are C fields
        "user error": lambda: (_ for _ in ()).throw(QuotaError("acct-1", 100)),
    }


def retry_view(e: BaseException) -> dict[str, Any]:
    """What a retry policy reads: class, message, status, Retry-After, the request, the response
    body.
    """
    view: dict[str, Any] = {"type": type(e), "str": str(e), "args_types": [type(a) for a in e.args]}
    for name in (
        "status_code",
        "code",
        "account",
        "limit",
        "request_id",
        "body",
        "errno",
        "filename",
    ):
        if name in vars(e) or isinstance(getattr(type(e), name, None), property):
            try:
                view[name] = getattr(e, name)
            except Exception as exc:  # noqa: BLE001 - httpx raises when no request was set
                view[name] = type(exc)
    resp = getattr(e, "response", None)
    view["response_type"] = type(resp)
    if resp is not None:
        view["response_status"] = resp.status_code
        view["retry_after"] = resp.headers.get("retry-after")
        view["response_json"] = resp.json()
    if isinstance(e, urllib.error.HTTPError):
        view["urllib_retry_after"] = e.headers.get("retry-after")
        view["reason"] = e.reason
    try:
        req = e.request  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001
        view["request"] = type(exc)
    else:
        view["request"] = None if req is None else (type(req), req.method, str(req.url))
    return view


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Any, str, dict[str, BaseException], pathlib.Path]:
    """One run whose tools raise every error of the matrix, recorded against the local service,
    which is then stopped.
    """
    db = tmp_path_factory.mktemp("errors") / "rec.db"
    rec = Recorder(db)
    seen: dict[str, BaseException] = {}
    with LocalService() as svc:
        cases = _cases(svc.url, f"http://localhost:{closed_port()}")

        @rec.tool("call")
        def call(case: str) -> Any:
            return cases[case]()

        @rec.agent("error-matrix")
        def agent(names: list[str]) -> str:
            for name in names:
                try:
                    call(name)
                except Exception as exc:  # noqa: BLE001
                    seen[name] = exc
            return "ok"

        agent(list(cases))
    rid = rec.last_run_id
    rec.close()
    assert set(seen) == set(cases), set(cases) - set(seen)
    return agent, rid, seen, db


def _replayed(recorded: Any) -> dict[str, BaseException]:
    agent, rid, seen, db = recorded
    original = dict(seen)
    seen.clear()
    try:
        res = replay_run(rid, db=db, agent=agent)
        replayed = dict(seen)
    finally:
        seen.clear()
        seen.update(original)
    assert res.exception is None, res.exception
    assert res.diff.is_empty, str(res.diff)
    return replayed


CASES = list(_cases("http://x", "http://y"))


@pytest.fixture(scope="module")
def replayed(recorded: Any) -> dict[str, BaseException]:
    """The same run replayed offline (the service is stopped, the network blocked)."""
    return _replayed(recorded)


@pytest.mark.parametrize("case", CASES)
def test_error_comes_back_as_the_clients_class(
    case: str, recorded: Any, replayed: dict[str, BaseException]
) -> None:
    """After replay, type(e) and the attributes a retry policy reads equal the original's."""
    original = recorded[2][case]
    again = replayed[case]
    assert type(again) is type(original)
    assert retry_view(again) == retry_view(original)


def test_http_errors_carry_real_response_objects(
    recorded: Any, replayed: dict[str, BaseException]
) -> None:
    """httpx and requests errors come back with real Response objects: status, Retry-After and the
    request.
    """
    e = replayed["httpx 503"]
    assert isinstance(e, httpx.HTTPStatusError) and isinstance(e.response, httpx.Response)
    assert e.response.status_code == 503 and e.response.headers["retry-after"] == "7"
    assert e.request.method == "GET" and e.request.url.path == "/status/503"
    r = replayed["requests 503"]
    assert isinstance(r, requests.HTTPError) and isinstance(r.response, requests.Response)
    assert r.response.status_code == 503 and r.response.headers["Retry-After"] == "7"
    o = replayed["openai 429"]
    assert isinstance(o, openai.RateLimitError) and o.status_code == 429
    assert o.response.headers["retry-after"] == "7"
    assert isinstance(replayed["openai timeout"], openai.APITimeoutError)
    assert isinstance(replayed["anthropic 529"], anthropic.APIStatusError)


def test_error_snapshot_keeps_the_keys_other_readers_use(recorded: Any) -> None:
    """The error snapshot still has error, module, qualname and message, next to args and attrs."""
    from replay.replayer import load_recording

    rec = load_recording(recorded[1], db=recorded[3])
    bodies = [rec.snapshots[e.output_sha][0] for e in rec.steps if e.status == "error"]
    assert bodies and all(
        {"error", "module", "qualname", "message", "args", "attrs"} <= set(b) for b in bodies
    )
    assert any(b["error"] == "httpx.HTTPStatusError[503]" for b in bodies)


def test_class_from_a_module_not_imported_falls_back_to_recorded_tool_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error whose module the agent has not imported is never imported: it comes back as
    RecordedToolError naming it.
    """
    modname = f"errmod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{modname}.py").write_text(
        textwrap.dedent("""
        class Boom(Exception):
            pass
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = __import__(modname)
    rec = Recorder(tmp_path / "rec.db")
    seen: list[BaseException] = []

    @rec.tool("t")
    def tool() -> None:
        raise mod.Boom("kaput")

    @rec.agent("a")
    def agent() -> None:
        try:
            tool()
        except Exception as exc:  # noqa: BLE001
            seen.append(exc)

    agent()
    rid = rec.last_run_id
    rec.close()
    del sys.modules[modname]
    replay_run(rid, db=tmp_path / "rec.db", agent=agent)
    assert (
        isinstance(seen[1], RecordedToolError)
        and seen[1].error.endswith("Boom")
        and "kaput" in str(seen[1])
    )
    assert modname not in sys.modules
