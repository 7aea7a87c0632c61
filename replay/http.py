"""The optional HTTP layer: vcrpy records a run's HTTP traffic and plays it back in replay.

``@rec.agent(name, http=True)`` (or ``rec.run(name, http=True)``) starts an `HttpRecording` for the
run: every interaction made through a client vcrpy patches (http.client / urllib, requests,
urllib3, httpx, aiohttp, ...) goes to an in-memory vcrpy cassette in record mode ``all``; nothing
is written to a YAML file. At run end the interactions, in vcrpy's serialized dict form
(``{"request": {...}, "response": {...}}``, bodies decoded, compressed bodies decompressed), go to
the writer thread, which redacts them with the run's `Redactor` (``Authorization``, ``Cookie``,
``Set-Cookie`` ... by the key rules; URLs and bodies by the pattern rules) and stores them as one
content-addressed snapshot of type ``$http`` named by ``Run.http_sha``.

In a replay, `http_playback` answers the agent's HTTP calls from those interactions with vcrpy
record mode ``none``, matched on method + uri. The live request is redacted with the session's
redactor before matching (vcrpy applies ``before_record_request`` to the live request in
``can_play_response_for`` / ``play_response``), so pseudonyms in URLs match. A request with no
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
import threading
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


# ---- playback -----------------------------------------------------------------------------------


def _request_redactor(redact: Callable[[Any], Any]) -> Callable[[Request], Request]:
    """vcrpy's before_record_request for playback: the live request as it would have been stored."""

    def before_record_request(request: Request) -> Request:
        d = serialize({"requests": [request], "responses": [{}]}, _DictSerializer)["interactions"][0]["request"]
        red = interactions_from_json([{"request": redact(_to_json(d)), "response": {}}])[0]["request"]
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
