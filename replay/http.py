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
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from vcr.cassette import Cassette as VcrCassette
from vcr.errors import CannotOverwriteExistingCassetteException
from vcr.filters import decode_response
from vcr.matchers import method, uri
from vcr.patch import CassettePatcherBuilder
from vcr.persisters.filesystem import CassetteNotFoundError
from vcr.request import Request
from vcr.serialize import deserialize, serialize

__all__ = [
    "HTTP_TYPE",
    "CannotOverwriteExistingCassetteException",
    "HttpRecording",
    "MemoryPersister",
    "http_playback",
    "interactions_from_json",
    "redact_interactions",
]

#: The snapshot type name of a run's HTTP interactions.
HTTP_TYPE = "$http"
_BYTES_TAG = "$base64"
_MATCH_ON = (method, uri)


class _DictSerializer:
    """A vcrpy serializer that keeps the cassette as a Python dict (no YAML, no JSON text)."""

    @staticmethod
    def serialize(data: dict[str, Any]) -> dict[str, Any]:
        return data

    @staticmethod
    def deserialize(data: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(data)


class MemoryPersister:
    """A vcrpy persister that keeps cassettes in a dict, keyed by cassette path (nothing on disk)."""

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
    def save_cassette(cls, cassette_path: str, cassette_dict: dict[str, Any], serializer: Any) -> None:
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


# ---- JSON form: bytes that are not UTF-8 become {"$base64": ...}; headers always lists ------------


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

_current: contextvars.ContextVar[VcrCassette | None] = contextvars.ContextVar("replay_http", default=None)
# Requests from a context without a capture: really sent (record mode all), never kept.
_passthrough = VcrCassette("agent-replay:passthrough", persister=MemoryPersister, serializer=_DictSerializer,
                           record_mode="all", before_record_request=lambda request: None)


class _Router:
    """What vcrpy's patched clients hold as their cassette: forwards to the current context's one."""

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


class HttpRecording:
    """The HTTP capture of one run: `start()` in the run's context, `stop()` in the same context."""

    def __init__(self, name: str) -> None:
        self.cassette = VcrCassette(
            f"agent-replay:{name}", persister=MemoryPersister, serializer=_DictSerializer,
            record_mode="all", match_on=_MATCH_ON,
            # Compressed bodies are stored decompressed, so redaction sees the text.
            before_record_response=decode_response,
        )
        self._token: contextvars.Token[VcrCassette | None] | None = None

    def start(self) -> HttpRecording:
        _acquire()
        self._token = _current.set(self.cassette)
        return self

    def stop(self) -> list[dict[str, Any]]:
        """End the capture; the interactions in vcrpy's serialized form, JSON-safe (not yet redacted)."""
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # stopped in another context: leave that context as it is
                pass
            self._token = None
            _release()
        data = serialize({"requests": self.cassette.requests, "responses": self.cassette.responses},
                         _DictSerializer)
        return [_to_json(it) for it in data["interactions"]]


# ---- redaction ----------------------------------------------------------------------------------


def _content_type(headers: Any) -> str:
    if isinstance(headers, dict):
        for k, v in headers.items():
            if str(k).lower() == "content-type":
                v = v[0] if isinstance(v, list) and v else v
                return str(v).lower()
    return ""


def _redact_form(text: str, redact: Callable[[Any], Any]) -> str | None:
    """A form-encoded text (``a=1&password=x``) with its pairs redacted by key and value; None if unchanged."""
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    if not pairs:
        return None
    red = redact({"_": [[k, v] for k, v in pairs]})["_"]
    secret = getattr(redact, "_is_secret_key_cached", None)
    out = []
    for (k, v), (rk, rv) in zip(pairs, red):
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
    if "x-www-form-urlencoded" in content_type or ("=" in body and " " not in body and "\n" not in body):
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
            body["string"] = _redact_body(body.get("string"), _content_type(resp.get("headers")), redact)
            resp["body"] = body
            it["response"] = resp
        out.append(it)
    return redact(out)


# ---- playback -----------------------------------------------------------------------------------


def _request_redactor(redact: Callable[[Any], Any]) -> Callable[[Request], Request]:
    """vcrpy's before_record_request for playback: the live request as it would have been stored."""

    def before_record_request(request: Request) -> Request:
        d = serialize({"requests": [request], "responses": [{}]}, _DictSerializer)["interactions"][0]["request"]
        red = redact_interactions([{"request": _to_json(d), "response": {}}], redact)
        red = interactions_from_json(red)[0]["request"]
        return Request._from_dict(red)

    return before_record_request


@contextlib.contextmanager
def http_playback(interactions: list[dict[str, Any]], redact: Callable[[Any], Any], name: str) -> Iterator[VcrCassette]:
    """Answer this context's HTTP calls from `interactions` (record mode none) until the block exits."""
    path = f"agent-replay:replay:{name}:{id(interactions):x}"
    MemoryPersister.put(path, interactions_from_json(interactions))
    try:
        cassette = VcrCassette.load(
            path=path, persister=MemoryPersister, serializer=_DictSerializer, record_mode="none",
            match_on=_MATCH_ON, before_record_request=_request_redactor(redact),
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
