"""The optional HTTP layer: vcrpy records a run's HTTP traffic and plays it back in replay.

``@rec.agent(name, http=True)`` (or ``rec.run(name, http=True)``) starts an `HttpRecording` for the
run: every interaction made through a client vcrpy patches (http.client / urllib, requests,
urllib3, httpx, aiohttp, ...) goes to an in-memory vcrpy cassette in record mode ``all``; nothing
is written to a YAML file. At run end the interactions, in vcrpy's serialized dict form
(``{"request": {...}, "response": {...}}``, bodies decoded, compressed bodies decompressed), go to
the writer thread, which redacts them with the run's `Redactor` through `redact_interactions`
(headers such as ``Authorization``, ``Cookie``, ``X-Api-Key``, ``X-Session`` by the key rules; the
URL's query decoded and its secret parameters replaced; JSON and form bodies parsed so key rules
apply to their fields; every string by the pattern rules) and stores them as one
content-addressed snapshot of type ``$http`` named by ``Run.http_sha``.

In a replay, `http_playback` answers the agent's HTTP calls from those interactions with vcrpy
record mode ``none``, matched on method + uri. The live request is redacted with the session's
redactor before matching (vcrpy applies ``before_record_request`` to the live request in
``can_play_response_for`` / ``play_response``) by the same `redact_interactions`, so
pseudonyms and replaced query values in URLs match. A request with no
recorded answer raises vcrpy's ``CannotOverwriteExistingCassetteException`` inside the agent.

Concurrency: vcrpy patches the HTTP clients process-wide, so this module enters vcrpy's patches
once (reference-counted) while any HTTP recording or playback is active, and the patched clients
talk to a `_Router` that forwards to the cassette of the *current context* (a contextvar). So two
concurrent ``http=True`` runs in one process (threads, asyncio tasks) each get their own
interactions. HTTP made from a context with no capture (a thread started without
``replay.context.propagate``) passes through vcrpy unrecorded while recording, and is refused by
the socket block during a replay. One limit is vcrpy's own: while it sends a real request it
un-patches the clients process-wide (``vcr.patch.force_reset``), so a request another thread
*starts* in that moment goes out unrecorded.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import copy
import dataclasses
import json
import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

# vcrpy ships no type information (no py.typed, no stubs): its names are Any to mypy, and the two
# cassette classes below subclass its Cassette (hence their `type: ignore[misc]`).
from vcr import matchers as _vcr_matchers  # type: ignore[import-untyped]
from vcr.cassette import Cassette as VcrCassette  # type: ignore[import-untyped]
from vcr.errors import CannotOverwriteExistingCassetteException  # type: ignore[import-untyped]
from vcr.filters import decode_response  # type: ignore[import-untyped]
from vcr.matchers import get_matchers_results, requests_match  # type: ignore[import-untyped]
from vcr.patch import CassettePatcherBuilder  # type: ignore[import-untyped]
from vcr.persisters.filesystem import CassetteNotFoundError  # type: ignore[import-untyped]
from vcr.request import Request  # type: ignore[import-untyped]
from vcr.serialize import deserialize, serialize  # type: ignore[import-untyped]

from replay.context import step_var
from replay.errors import InvalidHttpMatchError, UnrecordedRequest
from replay.faults import Fault
from replay.http_faults import USES_RECORDED, faulted_response

__all__ = [
    "DEFAULT_MATCH",
    "HTTP_MATCHERS",
    "HTTP_TYPE",
    "CannotOverwriteExistingCassetteException",
    "HttpOptions",
    "HttpPlayback",
    "HttpRecording",
    "MemoryPersister",
    "attempts_by_step",
    "http_playback",
    "interactions_from_json",
    "redact_interactions",
]

#: The snapshot type name of a run's HTTP interactions.
HTTP_TYPE = "$http"
_BYTES_TAG = "$base64"
#: The request fields a matching rule may name (vcrpy's matchers), besides ``header:NAME``.
HTTP_MATCHERS: tuple[str, ...] = (
    "method",
    "uri",
    "scheme",
    "host",
    "port",
    "path",
    "query",
    "body",
    "headers",
)
#: The default matching rule: method and full URL.
DEFAULT_MATCH: tuple[str, ...] = ("method", "uri")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


# ---- matching rules --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HttpOptions:
    """How a run's HTTP requests are matched to the recorded ones in a replay.

    ``match_on`` names request fields that must be equal: any of `HTTP_MATCHERS` (vcrpy's
    matchers: ``body`` compares parsed JSON / form bodies) and ``header:NAME`` for one chosen
    header. The rule is stored with each recorded interaction, so a replay matches by the rule the
    run was recorded with. Each recorded interaction answers one request, in recorded order: a
    request retried three times gets the three recorded answers in turn.

    Example::

        @rec.agent("support", http=HttpOptions(match_on=("method", "uri", "body")))
        # the same idea:
        @rec.agent("support", http_match=("method", "path", "header:x-request-kind"))

    Raises:
        InvalidHttpMatchError: a rule that is not a known field or ``header:NAME``.
    """

    match_on: tuple[str, ...] = DEFAULT_MATCH

    def __post_init__(self) -> None:
        rules = (self.match_on,) if isinstance(self.match_on, str) else self.match_on
        try:
            rules = tuple(rules)
        except TypeError:
            raise InvalidHttpMatchError(self.match_on, HTTP_MATCHERS) from None
        if not rules:
            raise InvalidHttpMatchError("", HTTP_MATCHERS)
        out = []
        for rule in rules:
            if not isinstance(rule, str):
                raise InvalidHttpMatchError(rule, HTTP_MATCHERS)
            name = rule.strip()
            if name.lower().startswith("header:"):
                header = name.split(":", 1)[1].strip()
                if not _HEADER_NAME.fullmatch(header):
                    raise InvalidHttpMatchError(rule, HTTP_MATCHERS)
                name = f"header:{header.lower()}"
            elif name.lower() in HTTP_MATCHERS:
                name = name.lower()
            else:
                raise InvalidHttpMatchError(rule, HTTP_MATCHERS)
            if name not in out:
                out.append(name)
        object.__setattr__(self, "match_on", tuple(out))

    @classmethod
    def of(cls, http: Any, http_match: Sequence[str] | None = None) -> HttpOptions | None:
        """The options `rec.agent(http=..., http_match=...)` asks for; None when HTTP is not
        recorded.
        """
        if isinstance(http, HttpOptions):
            return http if http_match is None else cls(tuple(http_match))
        if http_match is not None:
            return cls(tuple(http_match) if not isinstance(http_match, str) else (http_match,))
        return cls() if http else None


def _header_matcher(name: str) -> Callable[[Request, Request], None]:
    header = name.split(":", 1)[1]

    def match(r1: Request, r2: Request) -> None:
        if r1.headers.get(header) != r2.headers.get(header):
            raise AssertionError(f"header {header} differs")

    match.__name__ = name
    return match


def _matchers(match_on: Iterable[str]) -> list[Callable[[Request, Request], None]]:
    out = []
    for name in match_on:
        if name.startswith("header:"):
            out.append(_header_matcher(name))
        else:
            out.append(getattr(_vcr_matchers, name))
    return out


# Pseudonyms (see replay.processors): a value keyed by the recording store's key. On another
# machine (another key, or none shared) the live request's pseudonym differs from the stored one,
# so the loose matching tier reads any pseudonym as equal to any other of the same place.
_PSEUDONYM = re.compile(
    r"(?:\[|%5B)REDACTED:[^\]%]*(?:\]|%5D)"
    r"|(?:\[|%5B)[a-z0-9_]{2,16}:[0-9a-f]{8}(?:\]|%5D)"
    r"|u[0-9a-f]{8}(?:@|%40)redacted\.invalid"
    r"|[A-Za-z0-9-]+\.redacted\.invalid"
    r"|(?<![0-9.])(?:192\.0\.2|198\.51\.100|203\.0\.113)\.[0-9]{1,3}(?![0-9])"
    r"|(?<![0-9A-Fa-f:])2001:0?db8:[0-9A-Fa-f:]*",
    re.IGNORECASE,
)


def _unpseudo(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return value
        return _PSEUDONYM.sub("<pseudonym>", text).encode("utf-8")
    if isinstance(value, str):
        return _PSEUDONYM.sub("<pseudonym>", value)
    if isinstance(value, list):
        return [_unpseudo(v) for v in value]
    return value


def _loose_request(r: Request) -> Request:
    headers = {k: _unpseudo(v) for k, v in r.headers.items()}
    return Request(r.method, _unpseudo(r.uri), _unpseudo(r.body), headers)


def _loose(matcher: Callable[[Request, Request], None]) -> Callable[[Request, Request], None]:
    """`matcher`, passing also when the requests differ only in pseudonyms."""

    def match(r1: Request, r2: Request) -> None:
        try:
            matcher(r1, r2)
        except AssertionError:
            matcher(_loose_request(r1), _loose_request(r2))

    match.__name__ = getattr(matcher, "__name__", "matcher")
    return match


class _DictSerializer:
    """A vcrpy serializer that keeps the cassette as a Python dict (no YAML, no JSON text)."""

    @staticmethod
    def serialize(data: dict[str, Any]) -> dict[str, Any]:
        return data

    @staticmethod
    def deserialize(data: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(data)


class MemoryPersister:
    """A vcrpy persister that keeps cassettes in a dict, keyed by cassette path (nothing on
    disk)."""

    _cassettes: ClassVar[dict[str, dict[str, Any]]] = {}
    _lock = threading.Lock()

    @classmethod
    def load_cassette(cls, cassette_path: str, serializer: Any) -> Any:
        with cls._lock:
            data = cls._cassettes.get(str(cassette_path))
        if data is None:
            raise CassetteNotFoundError()
        return deserialize(data, serializer)

    @classmethod
    def save_cassette(
        cls, cassette_path: str, cassette_dict: dict[str, Any], serializer: Any
    ) -> None:
        with cls._lock:
            cls._cassettes[str(cassette_path)] = serialize(cassette_dict, serializer)

    @classmethod
    def put(cls, cassette_path: str, interactions: list[dict[str, Any]]) -> None:
        with cls._lock:
            cls._cassettes[cassette_path] = {"version": 1, "interactions": interactions}

    @classmethod
    def discard(cls, cassette_path: str) -> None:
        with cls._lock:
            cls._cassettes.pop(cassette_path, None)


# ---- JSON form: bytes that are not UTF-8 become {"$base64": ...}; headers always lists -----------


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {_BYTES_TAG: base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_BYTES_TAG}:
            return base64.b64decode(value[_BYTES_TAG])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _header_lists(headers: Any) -> dict[str, list[Any]]:
    # Redaction turns a secret header's value list into one "[REDACTED:secret]" string.
    if not isinstance(headers, dict):
        return {}
    return {k: (v if isinstance(v, list) else [v]) for k, v in headers.items()}


def interactions_from_json(interactions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored (redacted, JSON) interactions back in vcrpy's serialized dict form."""
    out = []
    for it in interactions:
        it = _from_json(it)
        req, resp = dict(it.get("request") or {}), dict(it.get("response") or {})
        req["headers"] = _header_lists(req.get("headers"))
        if isinstance(req.get("uri"), str):
            # A redacted host ("http://[ipv4:1a2b3c4d]:80/") is not a valid URL: vcrpy's Request
            # parses it. Escaped, it parses, and live requests are escaped alike before matching.
            req["uri"] = req["uri"].replace("[", "%5B").replace("]", "%5D")
        resp["headers"] = _header_lists(resp.get("headers"))
        out.append({"request": req, "response": resp})
    return out


# ---- one vcrpy activation for the process, routed per context -------------------------------

_current: contextvars.ContextVar[VcrCassette | None] = contextvars.ContextVar(
    "replay_http", default=None
)
# Requests from a context without a capture: really sent (record mode all), never kept.
_passthrough = VcrCassette(
    "agent-replay:passthrough",
    persister=MemoryPersister,
    serializer=_DictSerializer,
    record_mode="all",
    before_record_request=lambda request: None,
)


class _Router:
    """What vcrpy's patched clients hold as their cassette: forwards to the current context's
    one."""

    @staticmethod
    def _target() -> VcrCassette:
        cassette = _current.get()  # not `or`: an empty vcrpy cassette is falsy (it has __len__)
        return _passthrough if cassette is None else cassette

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    # Special methods are looked up on the type, not through __getattr__ (vcrpy's errors use them).
    def __len__(self) -> int:
        return len(self._target())

    def __contains__(self, request: Any) -> bool:
        return request in self._target()

    def __str__(self) -> str:
        return str(self._target())


_router = _Router()
_lock = threading.Lock()
_users = 0
_patches: contextlib.ExitStack | None = None


def _acquire() -> None:
    global _users, _patches
    with _lock:
        if _users == 0:
            stack = contextlib.ExitStack()
            try:
                for patcher in CassettePatcherBuilder(_router).build():
                    stack.enter_context(patcher)
            except BaseException:
                stack.close()
                raise
            _patches = stack
        _users += 1


def _release() -> None:
    global _users, _patches
    with _lock:
        _users -= 1
        if _users == 0 and _patches is not None:
            _patches.close()
            _patches = None


# ---- recording --------------------------------------------------------------------------------


class _CaptureCassette(VcrCassette):  # type: ignore[misc]  # vcrpy is untyped (see the imports)
    """A recording cassette that notes, with each interaction, the tool step that made it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[int | None] = []
        self._append_lock = threading.Lock()

    def append(self, request: Any, response: Any) -> None:
        step = step_var.get()  # the context of the request: the tool step executing it, if any
        with self._append_lock:
            before = len(self.data)
            super().append(request, response)
            if len(self.data) > before:
                self.steps.append(step)


class HttpRecording:
    """The HTTP capture of one run: `start()` in the run's context, `stop()` in the same context."""

    def __init__(self, name: str, options: HttpOptions | None = None) -> None:
        self.options = options or HttpOptions()
        self.cassette = _CaptureCassette(
            f"agent-replay:{name}",
            persister=MemoryPersister,
            serializer=_DictSerializer,
            record_mode="all",
            match_on=_matchers(self.options.match_on),
            # Compressed bodies are stored decompressed, so redaction sees the text.
            before_record_response=decode_response,
        )
        self._token: contextvars.Token[VcrCassette | None] | None = None

    def start(self) -> HttpRecording:
        _acquire()
        self._token = _current.set(self.cassette)
        return self

    def stop(self) -> list[dict[str, Any]]:
        """End the capture; the interactions in vcrpy's serialized form, JSON-safe (not yet
        redacted).

        Each interaction also carries ``step_id`` (the tool step that made it, None outside any
        step) and ``match_on`` (the run's matching rule, see `HttpOptions`).
        """
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # stopped in another context: leave that context as it is
                pass
            self._token = None
            _release()
        data = serialize(
            {"requests": self.cassette.requests, "responses": self.cassette.responses},
            _DictSerializer,
        )
        steps = list(self.cassette.steps)
        match_on = list(self.options.match_on)
        out = []
        for n, it in enumerate(data["interactions"]):
            item = _to_json(it)
            item["step_id"] = steps[n] if n < len(steps) else None
            item["match_on"] = match_on
            out.append(item)
        return out


# ---- redaction ----------------------------------------------------------------------------------


def _content_type(headers: Any) -> str:
    if isinstance(headers, dict):
        for k, v in headers.items():
            if str(k).lower() == "content-type":
                v = v[0] if isinstance(v, list) and v else v
                return str(v).lower()
    return ""


def _redact_form(text: str, redact: Callable[[Any], Any]) -> str | None:
    """A form-encoded text (``a=1&password=x``) with its pairs redacted by key and value; None if
    unchanged.
    """
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    if not pairs:
        return None
    red = redact({"_": [[k, v] for k, v in pairs]})["_"]
    secret = getattr(redact, "_is_secret_key_cached", None)
    out = []
    # `red` is `pairs` redacted item by item; not strict, so a redactor that changes a list's
    # length cannot make recording raise.
    for (k, _v), (rk, rv) in zip(pairs, red, strict=False):
        if secret is not None and secret(k):
            rv = "REDACTED"
        out.append((rk, rv))
    if out == pairs:
        return None
    return urllib.parse.urlencode(out, quote_via=urllib.parse.quote)


def _redact_body(body: Any, content_type: str, redact: Callable[[Any], Any]) -> Any:
    """A body parsed so key rules apply: JSON by its keys, form bodies by their field names."""
    if not isinstance(body, str) or not body:
        return body
    head = body.lstrip()[:1]
    if head in ("{", "[") or "json" in content_type:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        else:
            red = redact(parsed)
            if red == parsed:
                return body
            try:
                if json.loads(redact(body)) == red:
                    return body  # the text rules give the same: keep the server's formatting
            except ValueError:
                pass
            return json.dumps(red, ensure_ascii=False)
    if "x-www-form-urlencoded" in content_type or (
        "=" in body and " " not in body and "\n" not in body
    ):
        form = _redact_form(body, redact)
        if form is not None:
            return form
    return body


def _redact_uri(uri: Any, redact: Callable[[Any], Any]) -> Any:
    """The query of a URL decoded so rules see ``email=jane%40x.com`` as the email it is."""
    if not isinstance(uri, str) or "?" not in uri:
        return uri
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri
    form = _redact_form(parts.query, redact) if parts.query else None
    if form is None:
        return uri
    return urllib.parse.urlunsplit(parts._replace(query=form))


def redact_interactions(interactions: Any, redact: Callable[[Any], Any]) -> Any:
    """Redact HTTP interactions (vcrpy's dict form, JSON-safe) for storage or for matching.

    URLs keep their shape (userinfo passwords and secret query values replaced, the query decoded
    first so encoded values are seen); headers go by the key rules (``Authorization``, ``Cookie``,
    ``X-Api-Key``, ``X-Session`` ...); JSON and form bodies are parsed so key rules apply to their
    fields, then re-encoded; every string then passes the pattern rules.
    """
    if not isinstance(interactions, list):
        return redact(interactions)
    out = []
    for it in interactions:
        if not isinstance(it, dict):
            out.append(it)
            continue
        it = dict(it)
        req = it.get("request")
        if isinstance(req, dict):
            req = dict(req)
            req["uri"] = _redact_uri(req.get("uri"), redact)
            req["body"] = _redact_body(req.get("body"), _content_type(req.get("headers")), redact)
            it["request"] = req
        resp = it.get("response")
        if isinstance(resp, dict) and isinstance(resp.get("body"), dict):
            resp = dict(resp)
            body = dict(resp["body"])
            body["string"] = _redact_body(
                body.get("string"), _content_type(resp.get("headers")), redact
            )
            resp["body"] = body
            it["response"] = resp
        out.append(it)
    return redact(out)


# ---- playback -----------------------------------------------------------------------------------


def _request_redactor(redact: Callable[[Any], Any]) -> Callable[[Request], Request]:
    """vcrpy's before_record_request for playback: the live request as it would have been stored."""

    def before_record_request(request: Request) -> Request:
        d = serialize({"requests": [request], "responses": [{}]}, _DictSerializer)["interactions"][
            0
        ]["request"]
        red = redact_interactions([{"request": _to_json(d), "response": {}}], redact)
        red = interactions_from_json(red)[0]["request"]
        return Request._from_dict(red)

    return before_record_request


#: `HttpPlayback.log`'s index for a request a status, timeout or connect fault answered.
FAULTED = -1


class HttpPlayback(VcrCassette):  # type: ignore[misc]  # vcrpy is untyped (see the imports)
    """The record-mode-none cassette a replay answers from, with what it answered, step by step.

    Matching has two tiers: a recorded request equal to the live one under the run's rule (both
    redacted alike) first; then, only if none is left, one that differs only in pseudonyms (the
    cassette is replayed on a machine with another redaction key). Each recorded interaction
    answers once, in recorded order (vcrpy's ``allow_playback_repeats`` stays off).

    Attributes:
        log: ``(step_id, interaction index or None)`` per request the agent made, in order; None
            for a request with no recorded answer, `FAULTED` for one a fault answered.
        unrecorded: the `UnrecordedRequest` errors raised, in order.
    """

    def __init__(
        self,
        *args: Any,
        match_names: Sequence[str] = DEFAULT_MATCH,
        loose: bool = True,
        **kwargs: Any,
    ) -> None:
        exact = _matchers(match_names)
        super().__init__(*args, match_on=exact, **kwargs)
        self.match_names = list(match_names)
        self._loose = [_loose(m) for m in exact] if loose else None
        self.log: list[tuple[int | None, int | None]] = []
        self.unrecorded: list[UnrecordedRequest] = []
        self._play_lock = threading.Lock()
        #: what-if faults on the recorded responses (`replay.http_faults`): the replay's
        #: `FaultPlan` and its step marks, set when the plan has ``http:`` targets
        self.faults: Any = None
        self.marks: dict[int, str] = {}

    def _responses(self, request: Any) -> Iterator[tuple[int, Any]]:
        request = self._before_record_request(request)
        exact = [
            i
            for i, (stored, _) in enumerate(self.data)
            if requests_match(request, stored, self._match_on)
        ]
        for i in exact:
            yield i, self.data[i][1]
        if self._loose is not None and not any(self.play_counts[i] == 0 for i in exact):
            for i, (stored, response) in enumerate(self.data):
                if i not in exact and requests_match(request, stored, self._loose):
                    yield i, response

    def play_response(self, request: Any) -> Any:
        fault = self._fault(request) if self.faults is not None else None
        if fault is not None and fault.kind not in USES_RECORDED:
            with self._play_lock:
                self.log.append((step_var.get(), FAULTED))
            return faulted_response(fault, str(request.uri), None)
        found = None
        with self._play_lock:
            for index, response in self._responses(request):
                if self.play_counts[index] == 0:
                    self.play_counts[index] += 1
                    self.log.append((step_var.get(), index))
                    found = response
                    break
        if found is None:  # not reached through vcrpy's clients: they ask can_play_response_for
            raise self._unrecorded(request)
        return found if fault is None else faulted_response(fault, str(request.uri), found)

    def _fault(self, request: Any) -> Fault | None:
        """The fault that answers `request` (matched by its live and its redacted URI)."""
        redacted = self._before_record_request(request)
        fault: Fault | None = self.faults.pick_http(
            str(request.uri), str(getattr(redacted, "uri", ""))
        )
        step = step_var.get()
        if fault is not None and step is not None:
            note, prior = f"fault: {fault.spec}", self.marks.get(step)
            if prior is None or note not in prior:  # a live step keeps its "live"
                self.marks[step] = note if prior is None else f"{prior}; {note}"
        return fault

    def filter_request(self, request: Any) -> Any:
        # vcrpy's clients call this only for a request a write-protected cassette cannot answer,
        # right before raising CannotOverwriteExistingCassetteException with record-mode advice.
        raise self._unrecorded(request)

    def _unrecorded(self, request: Any) -> UnrecordedRequest:
        red = self._before_record_request(request)
        step = step_var.get()
        best: tuple[int, int, Any, list[str], list[str]] | None = None
        times = 0
        for index, (stored, _) in enumerate(self.data):
            passed, failed = get_matchers_results(red, stored, self._match_on)
            if not failed:
                times += 1
            if self._loose is not None and failed:
                lpassed, lfailed = get_matchers_results(red, stored, self._loose)
                if len(lpassed) > len(passed):
                    passed, failed = lpassed, lfailed
            rank = (len(passed), -index)
            if best is None or rank > (best[0], best[1]):
                best = (len(passed), -index, stored, list(passed), [name for name, _ in failed])
        method = str(getattr(red, "method", "?"))
        url = _display_url(getattr(red, "uri", "?"))
        if best is None:
            err = UnrecordedRequest(
                method,
                url,
                step_id=step,
                nearest=None,
                passed=[],
                failed=[],
                reason="nothing_recorded",
                match_on=self.match_names,
            )
        else:
            _, _, stored, passed, failed = best
            nearest = f"{stored.method} {_display_url(stored.uri)}"
            err = UnrecordedRequest(
                method,
                url,
                step_id=step,
                nearest=nearest,
                passed=passed,
                failed=failed,
                reason="no_match" if failed else "already_played",
                match_on=self.match_names,
                times=times,
            )
        with self._play_lock:
            self.log.append((step, None))
            self.unrecorded.append(err)
        return err


def _display_url(value: Any) -> str:
    text = str(value).replace("%5B", "[").replace("%5D", "]")
    return text if len(text) <= 200 else text[:199] + "…"


def attempts_by_step(interactions: Sequence[Mapping[str, Any]]) -> dict[int | None, int] | None:
    """Recorded HTTP attempts per tool step id (None: outside any step); None when not recorded.

    Runs recorded before the HTTP layer noted steps (no ``step_id`` key) give None.
    """
    if not interactions or not all(
        isinstance(it, Mapping) and "step_id" in it for it in interactions
    ):
        return None
    out: Counter[int | None] = Counter()
    for it in interactions:
        step = it.get("step_id")
        out[step if isinstance(step, int) and not isinstance(step, bool) else None] += 1
    return dict(out)


def _match_names(interactions: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    for it in interactions:
        rule = it.get("match_on") if isinstance(it, Mapping) else None
        if rule:
            try:
                return HttpOptions(tuple(rule)).match_on
            except (InvalidHttpMatchError, TypeError):
                break  # a damaged rule: fall back to the default rather than refuse the replay
    return DEFAULT_MATCH


@contextlib.contextmanager
def http_playback(
    interactions: list[dict[str, Any]],
    redact: Callable[[Any], Any],
    name: str,
    *,
    loose: bool = True,
) -> Iterator[HttpPlayback]:
    """Answer this context's HTTP calls from `interactions` (record mode none) until the block
    exits.

    Requests are matched by the rule stored with the interactions (`HttpOptions`), the live
    request redacted with `redact` first. ``loose`` adds the pseudonym-tolerant second tier. A
    request with no answer raises `UnrecordedRequest` inside the agent.
    """
    path = f"agent-replay:replay:{name}:{id(interactions):x}"
    MemoryPersister.put(path, interactions_from_json(interactions))
    try:
        cassette = HttpPlayback.load(
            path=path,
            persister=MemoryPersister,
            serializer=_DictSerializer,
            record_mode="none",
            match_names=_match_names(interactions),
            loose=loose,
            before_record_request=_request_redactor(redact),
        )
    finally:
        MemoryPersister.discard(path)
    _acquire()
    token = _current.set(cassette)
    try:
        yield cassette
    finally:
        try:
            _current.reset(token)
        except ValueError:
            pass
        _release()


# ---- attempts per step ------------------------------------------------------------------------


def _top_level(events: Iterable[Any]) -> Callable[[int | None], int | None]:
    """step_id -> the id of its top-level step (a tool called inside a tool counts for the outer
    one).
    """
    parent = {
        e.step_id: e.parent_step_id for e in events if getattr(e, "step_id", None) is not None
    }

    def top(step: int | None) -> int | None:
        seen = 0
        while step is not None and parent.get(step) is not None and seen < 1000:
            step = parent[step]
            seen += 1
        return step

    return top


def rollup(
    counts: Mapping[int | None, int] | None, events: Iterable[Any]
) -> dict[int | None, int] | None:
    """Attempts per step id summed onto top-level steps (the steps a diff aligns)."""
    if counts is None:
        return None
    top = _top_level(events)
    out: Counter[int | None] = Counter()
    for step, n in counts.items():
        out[top(step)] += n
    return dict(out)


def replayed_attempts(
    playback: HttpPlayback | None,
    answered: Mapping[int, int],
    recorded: Mapping[int | None, int] | None,
    events: Iterable[Any],
) -> tuple[dict[int | None, int] | None, dict[int | None, int]]:
    """(attempts, unrecorded) per top-level replayed step id, for a replay of a run with HTTP
    counts.

    A step answered from the recording never ran, so it keeps the recorded step's attempts;
    requests the replay made (stubs, code outside tool steps) count where they were made.
    """
    if recorded is None:
        return None, {}
    events = list(events)
    top = _top_level(events)
    attempts: Counter[int | None] = Counter()
    unrecorded: Counter[int | None] = Counter()
    for replayed_step, recorded_step in answered.items():
        n = recorded.get(recorded_step, 0)
        if n:
            attempts[top(replayed_step)] += n
    for step, index in playback.log if playback is not None else []:
        attempts[top(step)] += 1
        if index is None:
            unrecorded[top(step)] += 1
    return dict(attempts), dict(unrecorded)
