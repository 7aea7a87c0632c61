"""Fault injection: replace a tool's recorded answers with an error or a bad answer.

A fault turns one recorded run into a test of how the agent copes with a failing tool::

    replay_run("cassettes/x.json", faults={"http.get": 503})            # every call answers 503
    replay_run(..., faults="http.get=429:retry-after=2@first:2")        # the first two calls
    replay_run(..., faults={"http.get": ["timeout@call:1", "503@call:2"]})

One spec syntax for Python, ``replay run --fault`` and pytest (``--replay-fault``, the marker's
``faults=``)::

    TOOL=KIND[:OPTION=VALUE...][@every | @first:N | @call:K]

KIND is ``timeout``, ``connect`` (a connection error), an HTTP status (``429``, ``500``, ``503``,
any 4xx/5xx), ``malformed`` (the answer is not valid JSON), ``drift`` (the recorded answer with a
field missing: ``drift:field=status``, a dotted path for nested fields; default: its first field)
or ``slow`` (the recorded answer, late: ``slow:2s``, ``slow:750ms``; default: the tool's slowest
recorded call). OPTIONs: ``retry-after=SECONDS`` (429/503), ``client=httpx|requests|openai|
anthropic|builtin|MODULE:CLASS``. Without ``@``, every call of the tool is faulted; ``@first:N``
faults calls 1..N, ``@call:K`` only call K (calls of that tool, counted from 1).

The error raised is the client's own, picked by what the recording says the tool is (the class
of an error it recorded, or the type of a value it returned) or by ``client=``:
``httpx.ReadTimeout`` / ``ConnectError`` / ``HTTPStatusError`` with a real ``httpx.Response``
(``retry-after`` in its headers), ``requests``' equivalents, ``openai.RateLimitError`` /
``InternalServerError`` / ``APITimeoutError`` built as the SDK builds them, the tool's own
recorded error class with its ``status_code`` set, and otherwise a `ToolFault`
(`ToolTimeout` is a ``TimeoutError``, `ToolConnectionError` a ``ConnectionError``,
`ToolMalformedAnswer` a ``json.JSONDecodeError``). Trust model: a class is used only when its
module is already in ``sys.modules`` (the agent imported it); nothing is imported because a
recording or a spec names it.

A faulted call does not use up the recorded answer: the next call with the same arguments gets
it, as a retry after a transient failure would. The replayed step records the fault's error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import functools
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from replay.errors import ReplayError
from replay.fidelity import loaded_class
from replay.report import Outcome

__all__ = [
    "CallFaults",
    "Fault",
    "FaultOutcome",
    "FaultPlan",
    "FaultSpecError",
    "ToolConnectionError",
    "ToolFault",
    "ToolHTTPError",
    "ToolMalformedAnswer",
    "ToolTimeout",
    "expand",
    "judge",
    "parse_fault",
]

KINDS = ("timeout", "connect", "malformed", "drift", "slow")
CLIENTS = ("httpx", "httpx2", "requests", "openai", "anthropic", "builtin")
_SYNTAX = (
    "TOOL=KIND[:OPTION=VALUE][@every|@first:N|@call:K], e.g. http.get=429:retry-after=2@first:2"
)
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class FaultSpecError(ReplayError, ValueError):
    """A fault spec that cannot be used; the message names the spec, the problem and the syntax."""


# ---- the generic errors, for plain tools ----------------------------------------------------


class ToolFault(Exception):
    """An injected fault in a plain tool (no client library to imitate).

    Attributes:
        tool: the faulted tool.
        fault: the fault's spec (``http.get=503``).
    """

    tool: str = ""
    fault: str = ""


class ToolTimeout(ToolFault, TimeoutError):
    """An injected timeout: ``except TimeoutError`` catches it."""


class ToolConnectionError(ToolFault, ConnectionError):
    """An injected connection failure: ``except ConnectionError`` catches it."""


class ToolHTTPError(ToolFault):
    """An injected HTTP error answer.

    Attributes:
        status_code: the HTTP status.
        headers: the answer's headers (``retry-after`` when the fault has one).
        retry_after: the ``retry-after`` value in seconds, or None.
    """

    def __init__(
        self, message: str, *, status_code: int, headers: dict[str, str], retry_after: float | None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers
        self.retry_after = retry_after


class ToolMalformedAnswer(ToolFault, json.JSONDecodeError):
    """An injected answer that is not valid JSON: ``except ValueError`` / ``JSONDecodeError`` catch
    it."""


# ---- the spec -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault on one tool (see the module docstring for the syntax).

    Attributes:
        tool: the tool (or model) name.
        kind: ``timeout``, ``connect``, ``status``, ``malformed``, ``drift`` or ``slow``.
        status: the HTTP status for ``status``.
        retry_after: the ``retry-after`` header value (seconds, as text), or None.
        field: for ``drift``: the (dotted) field removed; None: the answer's first field.
        delay_s: for ``slow``: the delay; None: the tool's slowest recorded call.
        client: ``client=`` as given, or None to pick from the recording.
        when: ``("every", 0)``, ``("first", N)`` or ``("call", K)``.
        spec: the canonical spec text (test ids, messages).
    """

    tool: str
    kind: str
    status: int | None = None
    retry_after: str | None = None
    field: str | None = None
    delay_s: float | None = None
    client: str | None = None
    when: tuple[str, int] = ("every", 0)
    spec: str = ""

    @property
    def label(self) -> str:
        """The spec without its tool (``503``, ``timeout@first:2``): the diff's note on the step."""
        return self.spec.partition("=")[2] or self.kind

    def applies(self, n: int) -> bool:
        """Whether call number `n` (from 1) of the tool is faulted."""
        mode, k = self.when
        return mode == "every" or (mode == "first" and n <= k) or (mode == "call" and n == k)


def bad_spec(spec: str, why: str) -> FaultSpecError:
    return FaultSpecError(f"fault {spec!r}: {why}; syntax: {_SYNTAX}")


def _when(spec: str, text: str) -> tuple[str, int]:
    if text == "every":
        return ("every", 0)
    m = re.fullmatch(r"(first|call):(\d+)", text)
    if m is None or int(m.group(2)) < 1:
        raise bad_spec(spec, f"'@{text}' is not @every, @first:N or @call:K (N, K from 1)")
    return (m.group(1), int(m.group(2)))


def _duration(spec: str, text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)?", text)
    if m is None:
        raise bad_spec(spec, f"duration {text!r} is not a number of seconds, e.g. 2s or 750ms")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value


def _kind(spec: str, text: str) -> tuple[str, int | None]:
    aliases = {
        "connection": "connect",
        "connection-error": "connect",
        "malformed-json": "malformed",
    }
    name = aliases.get(text.lower(), text.lower())
    if name in KINDS:
        return name, None
    if re.fullmatch(r"[45]\d\d", name):
        return "status", int(name)
    raise bad_spec(
        spec, f"unknown fault {text!r}: use {', '.join(KINDS)} or an HTTP status (4xx/5xx)"
    )


def parse_fault(tool: str | None, value: Any) -> Fault:
    """One fault from ``"TOOL=SPEC"`` (`tool` None) or a tool and its value (``503``,
    ``"timeout"``).

    Raises:
        FaultSpecError: naming the spec, what is wrong and the syntax.
    """
    if isinstance(value, Fault):
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad_spec(
            repr(value), f"a fault is a string or an HTTP status, not {type(value).__name__}"
        )
    text = str(value).strip()
    if tool is None:
        tool, sep, text = text.partition("=")
        tool = tool.strip()
        if not sep or not tool:
            raise bad_spec(str(value), "name the tool first: TOOL=KIND")
    spec = f"{tool}={text}"
    body, _, when_text = text.partition("@")
    # Options start at a colon followed by NAME= (a client=MODULE:CLASS keeps its own colon).
    first, *options = re.split(r":(?=[A-Za-z_-]+=)", body)
    kind_text, _, positional = first.partition(":")
    if not kind_text:
        raise bad_spec(spec, "the fault kind is missing after '='")
    kind, status = _kind(spec, kind_text)
    fields: dict[str, Any] = {"status": status}
    if positional:
        if kind != "slow":
            raise bad_spec(
                spec, f"{positional!r} is not NAME=VALUE (only slow takes a duration: slow:2s)"
            )
        fields["delay_s"] = _duration(spec, positional)
    for opt in options:
        fields.update(_option(spec, kind, opt))
    when = _when(spec, when_text) if when_text else ("every", 0)
    return Fault(tool=tool, kind=kind, when=when, spec=spec, **fields)


def _option(spec: str, kind: str, opt: str) -> dict[str, Any]:
    name, sep, val = opt.partition("=")
    name = name.strip().lower()
    if not sep or not val:
        raise bad_spec(spec, f"option {opt!r} is not NAME=VALUE")
    if name in ("retry-after", "retry_after"):
        _duration(spec, val)
        return {"retry_after": val}
    if name == "client":
        if val not in CLIENTS and ":" not in val:
            raise bad_spec(spec, f"client={val!r}: use {', '.join(CLIENTS)} or MODULE:CLASS")
        return {"client": val}
    if name == "field" and kind == "drift":
        return {"field": val}
    raise bad_spec(spec, f"unknown option {name!r} for {kind}")


def _values(tool: str, value: Any) -> list[Fault]:
    items = value if isinstance(value, list | tuple) else [value]
    return [parse_fault(tool, v) for v in items]


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_faults(faults: Any) -> list[Fault]:
    """Every fault of one replay: ``"a=503,b=timeout"``, ``["a=503", ...]`` or ``{"a": [503,
    ...]}``.

    Raises:
        FaultSpecError: a bad spec, or two faults of one tool where the first always wins.
    """
    out: list[Fault] = []
    if isinstance(faults, str):
        out = [parse_fault(None, s) for s in _split(faults)]
    elif isinstance(faults, Mapping):
        for tool, value in faults.items():
            out += _values(str(tool), value)
    elif isinstance(faults, Iterable):
        for item in faults:
            out += (
                [parse_fault(None, s) for s in _split(item)]
                if isinstance(item, str)
                else [parse_fault(None, item)]
            )
    else:
        raise bad_spec(
            repr(faults), "faults= takes a spec string, a list of them or a {tool: fault} dict"
        )
    seen: dict[str, Fault] = {}
    for f in out:
        prior = seen.get(f.tool)
        if prior is not None and prior.when[0] == "every":
            raise bad_spec(
                f.spec,
                f"{prior.spec!r} already answers every call of {f.tool}, so this one is never "
                "used: "
                "give each a selector (@first:N, @call:K), or make one replay per fault "
                "(replay.faults.expand, the pytest marker and --fault do)",
            )
        seen[f.tool] = f
    return out


def expand(faults: Any) -> list[str]:
    """One spec string per replay: each fault of ``{tool: [f1, f2]}`` alone; a string or list item
    as given.

    What the pytest marker's ``faults=`` and repeated ``--fault`` make one test item / replay of.
    """
    if faults is None:
        return []
    if isinstance(faults, str):
        return [faults]
    if isinstance(faults, Mapping):
        return [f.spec for tool, value in faults.items() for f in _values(str(tool), value)]
    return [",".join(f.spec for f in parse_faults(item)) for item in faults]


# ---- building the errors --------------------------------------------------------------------


def status_message(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Error')}"


def fault_headers(f: Fault) -> dict[str, str]:
    h = {"content-type": "application/json"}
    if f.retry_after is not None:
        h["retry-after"] = f.retry_after
    return h


def _url(args: tuple[Any, ...], kwargs: dict[str, Any], tool: str) -> str:
    for v in (*args, *kwargs.values()):
        if isinstance(v, str) and re.match(r"https?://", v):
            return v
    return f"http://fault.invalid/{tool}"


def _httpx(names: Iterable[str] = ("httpx", "httpx2")) -> Any:
    for name in names:
        mod = sys.modules.get(name)
        if mod is not None and isinstance(vars(mod).get("Response"), type):
            return mod
    return None


def httpx_error(f: Fault, url: str, lib: str = "httpx") -> BaseException | None:
    httpx = _httpx((lib,) if lib == "httpx2" else ("httpx", "httpx2"))
    if httpx is None:
        return None
    request = httpx.Request("GET", url)
    if f.kind == "timeout":
        return httpx.ReadTimeout("timed out (injected fault)", request=request)  # type: ignore[no-any-return]
    if f.kind == "connect":
        return httpx.ConnectError("connection refused (injected fault)", request=request)  # type: ignore[no-any-return]
    if f.kind == "malformed":
        return json.JSONDecodeError("Expecting value (injected fault)", '{"truncated', 12)
    assert f.status is not None
    response = httpx.Response(
        f.status,
        headers=fault_headers(f),
        json={"error": status_message(f.status)},
        request=request,
    )
    kind = "Client" if f.status < 500 else "Server"
    message = (
        f"{kind} error '{status_message(f.status)}' for url '{url}'\n"
        f"For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/{f.status}"
    )
    return httpx.HTTPStatusError(message, request=request, response=response)  # type: ignore[no-any-return]


def _requests_error(f: Fault, url: str) -> BaseException | None:
    exc_mod = sys.modules.get("requests.exceptions")
    models = sys.modules.get("requests.models")
    structures = sys.modules.get("requests.structures")
    if exc_mod is None or models is None or structures is None:
        return None
    if f.kind == "timeout":
        return exc_mod.ReadTimeout("Read timed out. (injected fault)")  # type: ignore[no-any-return]
    if f.kind == "connect":
        return exc_mod.ConnectionError("Connection refused (injected fault)")  # type: ignore[no-any-return]
    if f.kind == "malformed":
        return exc_mod.JSONDecodeError("Expecting value (injected fault)", '{"truncated', 12)  # type: ignore[no-any-return]
    assert f.status is not None
    r = models.Response()
    r.status_code = f.status
    r.headers = structures.CaseInsensitiveDict(fault_headers(f))
    r._content = json.dumps({"error": status_message(f.status)}).encode()
    r.reason = _REASONS.get(f.status, "Error")
    r.url = url
    r.encoding = "utf-8"
    kind = "Client" if f.status < 500 else "Server"
    return exc_mod.HTTPError(f"{f.status} {kind} Error: {r.reason} for url: {url}", response=r)  # type: ignore[no-any-return]


def _sdk_status_class(exc_mod: Any, base: type, status: int) -> type:
    """The SDK's class for `status`: the subclass declaring that ``status_code`` (as the client
    picks it: ``RateLimitError`` for 429, anthropic's ``OverloadedError`` for 529), else
    ``InternalServerError`` for 5xx, else ``APIStatusError``."""
    classes = [c for c in vars(exc_mod).values() if isinstance(c, type) and issubclass(c, base)]
    exact = [c for c in classes if vars(c).get("status_code") == status]
    if exact:
        return exact[0]
    fallback = vars(exc_mod).get("InternalServerError") if status >= 500 else None
    return fallback if isinstance(fallback, type) else base


def _sdk_error(f: Fault, url: str, sdk: str) -> BaseException | None:
    """An openai / anthropic error as the SDK's client builds it (`_make_status_error`)."""
    mod = sys.modules.get(sdk)
    exc_mod = sys.modules.get(f"{sdk}._exceptions")
    if mod is None or exc_mod is None:
        return None
    # The SDK's own httpx: the one its exception module imported (httpx2 in newer SDKs).
    httpx = next(
        (v for k, v in vars(exc_mod).items() if k in ("httpx", "httpx2") and hasattr(v, "Request")),
        None,
    )
    if httpx is None:
        return None
    ns = vars(mod)
    request = httpx.Request("POST", url)
    if f.kind == "timeout":
        return ns["APITimeoutError"](request=request)  # type: ignore[no-any-return]
    if f.kind == "connect":
        return ns["APIConnectionError"](request=request)  # type: ignore[no-any-return]
    if f.kind == "malformed":
        return json.JSONDecodeError("Expecting value (injected fault)", '{"truncated', 12)
    assert f.status is not None
    text = status_message(f.status)
    body = {"error": {"message": f"{text} (injected fault)", "type": "fault", "code": None}}
    response = httpx.Response(f.status, headers=fault_headers(f), json=body, request=request)
    cls = _sdk_status_class(exc_mod, ns["APIStatusError"], f.status)
    return cls(  # type: ignore[no-any-return]
        f"Error code: {f.status} - {body['error']['message']}",
        response=response,
        body=body["error"],
    )


def _own_error(f: Fault, cls: type) -> BaseException | None:
    """The tool's own error class (recorded, or ``client=MODULE:CLASS``) with the status set."""
    if f.kind != "status" or not issubclass(cls, BaseException):
        return None
    assert f.status is not None
    message = f"{status_message(f.status)}: injected fault {f.spec}"
    try:
        exc = cls.__new__(cls, message)
        BaseException.__init__(exc, message)
        exc.status_code = f.status  # type: ignore[attr-defined]
        if f.retry_after is not None:
            exc.headers = fault_headers(f)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a class that cannot be built that way: the generic fault
        return None
    return exc


def generic_error(f: Fault) -> BaseException:
    """The `ToolFault` for `f` (a tool no client library stands behind)."""
    exc: ToolFault
    if f.kind == "timeout":
        exc = ToolTimeout(f"{f.tool} timed out (injected fault {f.spec})")
    elif f.kind == "connect":
        exc = ToolConnectionError(f"{f.tool}: connection refused (injected fault {f.spec})")
    elif f.kind == "malformed":
        exc = ToolMalformedAnswer(
            f"{f.tool} answered invalid JSON (injected fault {f.spec})", '{"truncated', 12
        )
    else:
        assert f.status is not None
        retry = float(f.retry_after.rstrip("s")) if f.retry_after else None
        exc = ToolHTTPError(
            f"{status_message(f.status)} (injected fault {f.spec})",
            status_code=f.status,
            headers=fault_headers(f),
            retry_after=retry,
        )
    exc.tool, exc.fault = f.tool, f.spec
    return exc


# ---- which client a tool is -----------------------------------------------------------------


def _family_of(path: str) -> str | None:
    top = path.split(":")[0].split(".")[0]
    if top in ("httpx", "httpx2"):
        return top
    if top in ("requests", "urllib3"):
        return "requests"
    if top in ("openai", "anthropic"):
        return top
    return None


def recorded_client(recording: Any, tool: str) -> str | None:
    """What the recording says `tool` is: a client family, ``MODULE:CLASS`` of its own error, or
    None."""
    own: str | None = None
    for e in recording.steps:
        if e.tool != tool or not e.output_sha:
            continue
        snap = recording.snapshots.get(e.output_sha)
        if snap is None:
            continue
        if e.status == "error" and isinstance(snap[0], dict):
            path = f"{snap[0].get('module', '')}:{snap[0].get('qualname', '')}"
            family = _family_of(path)
            if family is not None:
                return family
            attrs = snap[0].get("attrs")
            # A status in the recorded name ("HTTPStatusError[503]") or attributes: the tool's own
            # HTTP error class, which a status fault imitates.
            has_status = isinstance(attrs, dict) and "status_code" in attrs
            if own is None and (has_status or re.search(r"\[\d{3}\]$", e.error or "")):
                own = path
        elif isinstance(snap[1], str):
            m = re.search(r"\b(httpx2?|requests|openai|anthropic)[.:]", snap[1])
            if m:
                return m.group(1)
    return own


def build_error(
    f: Fault, client: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> BaseException:
    """The exception for fault `f` as `client` raises it; the generic `ToolFault` when it is not
    loaded."""
    url = _url(args, kwargs, f.tool)
    exc: BaseException | None = None
    if client in ("httpx", "httpx2"):
        exc = httpx_error(f, url, client)
    elif client == "requests":
        exc = _requests_error(f, url)
    elif client in ("openai", "anthropic"):
        exc = _sdk_error(f, url, client)
    elif client is not None and ":" in client:
        cls = loaded_class(client)
        exc = _own_error(f, cls) if cls is not None else None
    return exc if exc is not None else generic_error(f)


# ---- targets of the HTTP layer: ``http:HOST[/PATH]`` -----------------------------------------

HTTP_TARGET = "http:"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#]*)([^?#]*)")


def is_http_target(name: str) -> bool:
    """Whether a fault names requests of the HTTP layer (``http:HOST[/PATH]``), not a tool."""
    return name.startswith(HTTP_TARGET)


def _places(uri: str) -> tuple[str, ...]:
    """What an ``http:`` target's glob is matched with: host and host:port, alone or with the
    path (no userinfo, no query)."""
    m = _URL.match(uri.replace("%5B", "[").replace("%5D", "]"))
    if m is None:
        return ()
    netloc, path = m.group(1).lower(), m.group(2) or "/"
    host, sep, port = netloc.rpartition(":")
    if not sep or not port.isdigit() or netloc.endswith("]"):
        host = netloc
    return (netloc, host, netloc + path, host + path)


def http_target_matches(target: str, uri: str) -> bool:
    """Whether the request to `uri` is one of ``http:GLOB``'s (fnmatch: ``*`` spans ``/``)."""
    pattern = target[len(HTTP_TARGET) :]
    return any(fnmatch.fnmatchcase(place, pattern) for place in _places(uri))


def _check_http_target(f: Fault, recording: Any) -> None:
    uris = [
        str((it.get("request") or {}).get("uri", ""))
        for it in (getattr(recording, "http", None) or [])
        if isinstance(it, dict)
    ]
    if not uris:
        raise bad_spec(
            f.spec,
            f"the recording {recording.run.run_id} has no HTTP requests to fault (record the "
            "agent with http=True, or fault a tool instead)",
        )
    if f.kind == "slow" and f.delay_s is None:
        raise bad_spec(f.spec, "an HTTP request has no recorded duration: give one, e.g. slow:2s")
    if not any(http_target_matches(f.tool, uri) for uri in uris):
        hosts = sorted({p[0] for p in map(_places, uris) if p})
        raise bad_spec(
            f.spec,
            f"no recorded HTTP request of {recording.run.run_id} matches {f.tool!r} (its hosts: "
            f"{', '.join(hosts[:10])})",
        )


# ---- the plan: which call gets which fault --------------------------------------------------


def drop_field(value: Any, path: str | None) -> Any:
    """`value` without the field at dotted `path` (None: its first field); a copy."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if not isinstance(value, dict) or not value:
        return value
    out = dict(value)
    if path is None:
        out.pop(next(iter(out)))
        return out
    head, _, rest = path.partition(".")
    if head in out and rest:
        out[head] = drop_field(out[head], rest)
    else:
        out.pop(head, None)
    return out


class _Counted:
    """Counts the calls of each name and picks the fault that answers each one (thread-safe)."""

    def __init__(self, faults: list[Fault]) -> None:
        for f in faults:
            if f.client is not None and ":" in f.client and loaded_class(f.client) is None:
                raise bad_spec(
                    f.spec,
                    f"client={f.client} is not a class of a module the agent imported "
                    "(faults never import a module): import it first, or use one of "
                    + ", ".join(CLIENTS),
                )
        self.faults = faults
        self.calls: dict[str, int] = {}
        self.injected: list[tuple[int, str]] = []  # (call number, spec), in order
        self._lock = threading.Lock()

    def pick(self, tool: str) -> Fault | None:
        """Count a call of `tool`; the fault that answers it, None when it is not faulted."""
        with self._lock:
            n = self.calls[tool] = self.calls.get(tool, 0) + 1
        fault = next((f for f in self.faults if f.tool == tool and f.applies(n)), None)
        if fault is not None:
            with self._lock:
                self.injected.append((n, fault.spec))
        return fault


class FaultPlan(_Counted):
    """The faults of one replay, bound to its recording; counts each tool's calls (thread-safe)."""

    def __init__(self, faults: list[Fault], recording: Any) -> None:
        tools = {e.tool for e in recording.steps if e.tool}
        for f in faults:
            if is_http_target(f.tool):
                _check_http_target(f, recording)
            elif f.tool not in tools:
                raise bad_spec(
                    f.spec,
                    f"the recording {recording.run.run_id} has no call of {f.tool!r} "
                    f"(its tools: {', '.join(sorted(tools)) or '(none)'})",
                )
        super().__init__(faults)
        self.recording = recording
        self._clients = {f.tool: f.client or recorded_client(recording, f.tool) for f in faults}
        #: the ``http:`` targets, in spec order (`pick_http`)
        self.http_targets = list(dict.fromkeys(f.tool for f in faults if is_http_target(f.tool)))

    def pick_http(self, *uris: str) -> Fault | None:
        """Count a request of the HTTP layer (its live and its redacted URI) under each ``http:``
        target it matches; the fault that answers it (the first target's), None when none does."""
        for target in self.http_targets:
            if any(http_target_matches(target, uri) for uri in uris):
                fault = self.pick(target)
                if fault is not None:
                    return fault
        return None

    @classmethod
    def parse(cls, faults: Any, recording: Any) -> FaultPlan:
        """The plan for `faults` (any form `parse_faults` takes) on `recording`."""
        return cls(parse_faults(faults), recording)

    def error(self, fault: Fault, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BaseException:
        """The exception a faulted call raises (timeout, connect, status, malformed)."""
        client = "builtin" if fault.client == "builtin" else self._clients.get(fault.tool)
        return build_error(fault, client, args, kwargs)

    def delay(self, fault: Fault) -> None:
        """Let a ``slow`` fault's time pass before the call is answered as recorded."""
        wait(fault.delay_s if fault.delay_s is not None else self._slowest(fault.tool))

    async def adelay(self, fault: Fault) -> None:
        """`delay` in an async tool's call: the event loop is not blocked."""
        await await_wait(fault.delay_s if fault.delay_s is not None else self._slowest(fault.tool))

    @staticmethod
    def drift(fault: Fault, value: Any) -> Any:
        """A ``drift`` fault's answer: `value` (the recorded or stub answer) with its field gone."""
        return drop_field(value, fault.field)

    def _slowest(self, tool: str) -> float:
        return max(
            ((e.duration_ms or 0) / 1000 for e in self.recording.steps if e.tool == tool),
            default=0.0,
        )


class CallFaults(_Counted):
    """Faults on what a live tool calls below itself (its client, an upstream), same spec syntax.

    A fault on a tool replaces its whole answer, so code inside the tool (a retry loop around
    its client) never runs. To test that code, run the tool live (``live={"http.get"}``) and
    fault the calls it makes instead: `wrap` puts the plan in front of one callable::

        faults = CallFaults("upstream.get=503@first:3", client="shop.client:HTTPStatusError")
        client.get = faults.wrap("upstream.get", client.get)

    A faulted call raises the fault's error (`client` names the class, as ``client=`` does in a
    spec; default: a `ToolFault`), or answers late (``slow``) or drifted (``drift``); the others
    go through. `calls` counts every call per name, faulted ones included; `injected` lists
    ``(call number, spec)`` of the faulted ones.
    """

    def __init__(self, faults: Any, *, client: str | None = None) -> None:
        faults = parse_faults(faults)
        if client is not None:  # checked as a spec's own client= is
            faults = [dataclasses.replace(f, client=f.client or client) for f in faults]
            _option(f"client={client}", "status", f"client={client}")
        super().__init__(faults)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` behind the faults of `name`: each call counted, the faulted ones answered so."""

        @functools.wraps(fn)
        def faulted(*args: Any, **kwargs: Any) -> Any:
            fault = self.pick(name)
            if fault is None:
                return fn(*args, **kwargs)
            if fault.kind == "slow":
                wait(fault.delay_s or 0.0)
                return fn(*args, **kwargs)
            if fault.kind == "drift":
                return drop_field(fn(*args, **kwargs), fault.field)
            client = None if fault.client == "builtin" else fault.client
            raise build_error(fault, client, args, kwargs)

        return faulted


def wait(seconds: float) -> None:
    """Let `seconds` pass: on the replay's recorded clock when it travels (no real wait), else
    sleep."""
    if not _shift_clock(seconds):
        time.sleep(seconds)


async def await_wait(seconds: float) -> None:
    """`wait` for async code: without the recorded clock, the event loop runs on meanwhile."""
    if not _shift_clock(seconds):
        await asyncio.sleep(seconds)


def _shift_clock(seconds: float) -> bool:
    """Move the replay's travelling clock (time-machine) on by `seconds`; False when none is."""
    tm = sys.modules.get("time_machine")
    stack = (
        (getattr(tm, "traveller_stack", None) or getattr(tm, "coordinates_stack", None))
        if tm
        else None
    )
    if stack:
        stack[-1].shift(seconds)
        return True
    return False


# ---- judging a faulted replay ---------------------------------------------------------------


def judge(result: Any) -> list[str]:
    """Why the agent did not cope with the faults of this replay (empty: it did).

    It copes when it neither raised (a deliberate ``replay.stop`` is fine) nor stopped with
    ``error`` or ``killed``. What it must do beyond that (stop reason, how many retries) is for
    the test to assert.
    """
    from replay.errors import StopRun

    problems = []
    exc = result.exception
    if exc is not None and not isinstance(exc, StopRun):
        problems.append(f"the agent raised {type(exc).__name__} under the fault")
    if result.stop_reason in ("error", "killed"):
        problems.append(f"the run stopped with {result.stop_reason}")
    return problems


# ---- one faulted replay as a report outcome (``replay run --fault``) ------------------------


@dataclasses.dataclass
class FaultOutcome(Outcome):
    """A replay under faults: ``matched`` when the agent coped (see `judge`), else ``diverged``."""

    fault: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    stop: str | None = None
    tool_calls: int = 0

    def summary(self) -> str:
        rid = self.run_id or self.source
        if self.status == "error":
            return f"{rid} [{self.fault}]  error: {self.error}"
        did = f"stopped {self.stop} after {self.tool_calls} tool call(s)"
        if self.problems:
            return f"{rid} [{self.fault}]  did not cope: {'; '.join(self.problems)} ({did})"
        return f"{rid} [{self.fault}]  coped: {did}"

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(fault=self.fault, problems=self.problems, stop_reason=self.stop)
        return data
