"""Faults on the HTTP layer's recorded responses: the real client meets the failure.

A run recorded with ``http=True`` replays its HTTP requests from the recording. A fault whose
target is ``http:HOST[/PATH]`` (a glob on the request's host, ``host:port``, either with the path)
changes what those requests get, below the client, so the client's own code runs: its status
handling, its retries, its exceptions::

    replay_run(run, live={"inventory.get"}, faults="http:api.shop.test=503@first:2")
    replay_run(run, faults={"http:*/v1/chat/completions": ["429:retry-after=1", "timeout"]})

- a status (``429``, ``503``, any 4xx/5xx, ``retry-after`` as a header) is a real response of that
  status with a JSON error body: ``raise_for_status()`` raises the client's own error, and an SDK
  (openai, anthropic) retries as it would against the service;
- ``timeout`` and ``connect`` raise what the transport raises: ``httpx.ReadTimeout`` /
  ``ConnectError`` under httpx (and SDKs built on it), ``aiohttp.ServerTimeoutError`` /
  ``ClientConnectionError`` under aiohttp, and a socket ``TimeoutError`` /
  ``ConnectionRefusedError`` under ``http.client``, which urllib3 and requests turn into their
  own (``ReadTimeout``, ``ConnectionError``);
- ``malformed``, ``drift`` and ``slow`` take the recorded response: its body cut, a JSON field
  dropped, or answered late (``slow:2s``: on the replay's recorded clock, no real wait).

As with tool faults, a status, timeout or connect fault does not use up the recorded response (a
retry gets it); the other three answer with it. Calls are counted per target, from 1, for
``@first:N`` / ``@call:K``. The step the request was made in is marked ``fault: <spec>`` in the
diff. Trust model: an exception class is used only when its module is already imported.
"""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Mapping
from typing import Any

from replay.faults import Fault, drop_field, fault_headers, httpx_error, status_message, wait

__all__ = ["USES_RECORDED", "faulted_response"]

#: Fault kinds answered with (a changed copy of) the recorded response, which they use up.
USES_RECORDED = ("slow", "drift", "malformed")

_STUBS = {"vcr.stubs.httpx_stubs": "httpx", "vcr.stubs.aiohttp_stubs": "aiohttp"}


def faulted_response(fault: Fault, uri: str, recorded: Mapping[str, Any] | None) -> dict[str, Any]:
    """The response (vcrpy's serialized form) a request under `fault` gets, or its error raised.

    `recorded` is the recorded response the request would have had (None for a status, timeout
    or connect fault, which do not use one up).
    """
    if fault.kind in ("timeout", "connect"):
        raise _transport_error(fault, uri, _caller_client())
    if fault.kind == "status":
        assert fault.status is not None
        text = f"{status_message(fault.status)} (injected fault)"
        body = json.dumps({"error": {"message": text, "type": "fault", "code": None}}).encode()
        headers = {k: [v] for k, v in fault_headers(fault).items()}
        message = status_message(fault.status).partition(" ")[2]
        return _response(fault.status, message, headers, body)
    assert recorded is not None  # the other kinds answer with the recorded response
    status = dict(recorded.get("status") or {})
    headers = dict(recorded.get("headers") or {})
    body = (recorded.get("body") or {}).get("string", b"")
    if fault.kind == "slow":
        wait(fault.delay_s or 0.0)
        return dict(recorded)
    if fault.kind == "malformed":
        body = b'{"truncated'
    else:  # drift: a JSON object body loses a field; any other body is left as it is
        try:
            value = json.loads(body)
        except (TypeError, ValueError):
            return dict(recorded)
        body = json.dumps(drop_field(value, fault.field)).encode()
    headers.pop(next((k for k in headers if k.lower() == "content-encoding"), ""), None)
    return _response(int(status.get("code", 200)), str(status.get("message", "OK")), headers, body)


def _response(code: int, message: str, headers: dict[str, Any], body: bytes) -> dict[str, Any]:
    for name in [k for k in headers if k.lower() == "content-length"]:
        del headers[name]
    headers["content-length"] = [str(len(body))]
    return {
        "status": {"code": code, "message": message},
        "headers": headers,
        "body": {"string": body},
    }


def _caller_client() -> str:
    """Which of vcrpy's stubs is asking: ``httpx``, ``aiohttp`` or ``http.client`` (the rest)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("vcr.stubs"):
            return _STUBS.get(name, "http.client")
        frame = frame.f_back  # type: ignore[assignment]  # None ends the walk
    return "http.client"


def _transport_error(fault: Fault, uri: str, client: str) -> BaseException:
    """The exception the transport raises for a timeout or a refused connection."""
    timeout = fault.kind == "timeout"
    if client == "httpx":
        exc = httpx_error(fault, uri)
        if exc is not None:
            return exc
    aiohttp: Any = sys.modules.get("aiohttp") if client == "aiohttp" else None
    if aiohttp is not None:
        if timeout:
            error: BaseException = aiohttp.ServerTimeoutError(
                "Timeout on reading data (injected fault)"
            )
        else:
            error = aiohttp.ClientConnectionError("Cannot connect to host (injected fault)")
        return error
    if timeout:
        return TimeoutError("timed out (injected fault)")
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused (injected fault)")
