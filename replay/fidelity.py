"""Values and errors handed back in replay as the tool produced them.

Recording side: `capture_error` turns an exception into plain data (class path, args, public
attributes; HTTP responses and requests as status, headers, body, method and URL), which the
writer redacts into the error snapshot. Values are tagged with `replay.hashing.type_tag`.

Replay side: `rebuild_value` and `rebuild_error` turn that data back into the tool's own types.
Trust rule (DESIGN, Trust model): recorded data never imports anything. A class named in the data
is looked up only in modules already in ``sys.modules`` (the agent imported them), by plain
``__dict__`` lookups (no module ``__getattr__`` runs), and built only in safe ways: pydantic
``model_validate``, dataclass fields set on ``cls.__new__(cls)``, ``Enum(value)``, a named
tuple's ``_make``, an exception's ``__new__`` + ``BaseException.__init__(*args)`` + its recorded
attributes, and ``httpx.Response`` / ``requests.Response`` from recorded status, headers and body.
Whatever cannot be rebuilt that way comes back as the plain JSON value.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as _dt
import decimal
import enum
import inspect
import pathlib
import sys
import types
import uuid
from typing import Any

import orjson

from replay.hashing import BYTES_TAG, type_tag

__all__ = ["capture_error", "loaded_class", "plain_copy", "rebuild_error", "rebuild_value"]

RESPONSE_TAG = "$response"
REQUEST_TAG = "$request"
HEADERS_TAG = "$headers"
EXCEPTION_TAG = (
    "$exception"  # an exception held by another (requests' ConnectionError wraps urllib3's)
)
_MAX_BODY = 64 * 1024


# ---- class lookup under the trust rule ------------------------------------------------------


def loaded_class(path: Any) -> type | None:
    """The class ``module:qualname`` if its module is already imported, else None. Never imports."""
    if not isinstance(path, str) or ":" not in path:
        return None
    module, qualname = path.split(":", 1)
    mod = sys.modules.get(module)
    if mod is None or "<locals>" in qualname:
        return None
    obj: Any = mod
    for part in qualname.split("."):
        try:
            ns = vars(obj)
        except TypeError:
            return None
        if part not in ns:
            return None
        obj = ns[part]
    return obj if isinstance(obj, type) else None


# ---- values ---------------------------------------------------------------------------------


_SCALAR_TYPES = frozenset((str, int, float, bool, type(None)))


def plain_copy(value: Any) -> Any:
    """A private copy of plain JSON `value` (the agent may mutate what a tool returned)."""
    t = type(value)
    if t is dict or t is list:
        # A flat dict or list (the common tool answer) is copied in C; nested ones through orjson.
        if _SCALAR_TYPES.issuperset(map(type, value.values() if t is dict else value)):
            return value.copy()
        try:
            return orjson.loads(orjson.dumps(value))
        except (TypeError, orjson.JSONEncodeError):
            return copy.deepcopy(value)
    return value


def rebuild_value(value: Any, tag: str | None) -> Any:
    """`value` (plain JSON, not modified) rebuilt as the types its tag names, else the JSON value.

    `tag` is a `type_tag` tree (a string starting with ``[``) or, in older recordings, a single
    ``module:qualname`` of a dataclass or pydantic model.
    """
    if not tag or tag.startswith("$"):
        return plain_copy(value)
    if tag.startswith("["):
        try:
            node = orjson.loads(tag)
        except orjson.JSONDecodeError:
            return plain_copy(value)
        return _rebuild(value, node)
    cls = loaded_class(tag)
    if cls is None:
        return plain_copy(value)
    kind = "pd" if hasattr(cls, "model_validate") else "dc"
    return _rebuild(value, [kind, tag])


def _kid(kids: Any, i: int) -> Any:
    return kids.get(str(i)) if isinstance(kids, dict) else None


def _rebuild(value: Any, node: Any) -> Any:
    if not isinstance(node, list) or not node:
        return plain_copy(value)
    try:
        return _build(value, node)
    except Exception:  # noqa: BLE001 - a value changed by redaction, a class changed since: plain JSON
        return plain_copy(value)


def _items(value: Any, kids: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("not a list")
    if not kids:
        return plain_copy(value)  # type: ignore[no-any-return]
    return [_rebuild(v, _kid(kids, i)) for i, v in enumerate(value)]


def _build(value: Any, node: list[Any]) -> Any:
    tag = node[0]
    arg = node[1] if len(node) > 1 else None
    if tag == "d":
        if not isinstance(value, dict):
            raise TypeError("not a dict")
        keys = node[2] if len(node) > 2 and isinstance(node[2], dict) else {}
        out: dict[Any, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            kt = keys.get(str(i))
            out[_key(k, kt) if kt else k] = _rebuild(v, _kid(arg, i))
        return out
    if tag == "l":
        return _items(value, arg)
    if tag == "t":
        return tuple(_items(value, arg))
    if tag in ("s", "fs"):
        if not isinstance(value, list):
            raise TypeError("not a list")
        items = [_rebuild(v, arg) for v in value]
        return set(items) if tag == "s" else frozenset(items)
    if tag == "dt":
        return _dt.datetime.fromisoformat(value)
    if tag == "date":
        return _dt.date.fromisoformat(value)
    if tag == "time":
        return _dt.time.fromisoformat(value)
    if tag == "td":
        return _dt.timedelta(seconds=value)
    if tag in ("b", "ba"):
        raw = base64.b64decode(value[BYTES_TAG])
        return raw if tag == "b" else bytearray(raw)
    if tag == "dec":
        return decimal.Decimal(value)
    if tag == "uuid":
        return uuid.UUID(value)
    if tag == "path":
        cls = vars(pathlib).get(str(arg))
        if not (isinstance(cls, type) and issubclass(cls, pathlib.PurePath)):
            raise TypeError("not a pathlib class")
        return cls(value)
    cls = loaded_class(arg)
    if cls is None:
        raise LookupError("class not loaded")
    kids = node[2] if len(node) > 2 else None
    if tag == "e" and issubclass(cls, enum.Enum):
        return cls(value)
    if tag == "nt" and issubclass(cls, tuple) and hasattr(cls, "_make"):
        return cls._make(_items(value, kids))
    if tag == "dc" and dataclasses.is_dataclass(cls):
        fields = dataclasses.fields(cls)
        if not isinstance(value, dict) or set(value) != {f.name for f in fields}:
            raise TypeError("the dataclass changed since the recording")
        obj = cls.__new__(cls)
        for i, f in enumerate(fields):
            object.__setattr__(obj, f.name, _rebuild(value[f.name], _kid(kids, i)))
        return obj
    if tag == "pd" and hasattr(cls, "model_validate"):
        return cls.model_validate(value)
    raise TypeError(f"cannot rebuild {tag}")


def _key(k: str, tag: str) -> Any:
    if tag == "i":
        return int(k)
    if tag == "f":
        return float(k)
    if tag == "b":
        return k == "true"
    if tag == "n":
        return None
    return k


# ---- errors: capture ------------------------------------------------------------------------


def _cls_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_response(obj: Any) -> bool:
    return (
        isinstance(getattr(obj, "status_code", None), int)
        and hasattr(obj, "headers")
        and not isinstance(obj, BaseException | type)
    )


def _is_request(obj: Any) -> bool:
    return (
        isinstance(getattr(obj, "method", None), str)
        and hasattr(obj, "url")
        and not isinstance(obj, BaseException | type)
    )


def _headers(h: Any) -> dict[str, str]:
    try:
        items = h.items()
    except Exception:  # noqa: BLE001
        return {}
    out: dict[str, str] = {}
    for k, v in items:
        k = k.decode("latin-1") if isinstance(k, bytes) else str(k)
        v = v.decode("latin-1") if isinstance(v, bytes) else str(v)
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def _request_data(req: Any) -> dict[str, Any]:
    return {REQUEST_TAG: _cls_path(type(req)), "method": str(req.method), "url": str(req.url)}


def _response_data(resp: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        RESPONSE_TAG: _cls_path(type(resp)),
        "status": resp.status_code,
        "headers": _headers(resp.headers),
    }
    reason = getattr(resp, "reason_phrase", None) or getattr(resp, "reason", None)
    if isinstance(reason, str):
        out["reason"] = reason
    # Only a body already read (httpx and requests keep it in `_content`): reading it here would
    # consume a stream the agent may still read.
    body = vars(resp).get("_content") if hasattr(resp, "__dict__") else None
    if isinstance(body, bytes):
        try:
            if len(body) > _MAX_BODY:
                raise ValueError("too long to keep whole")
            out["json"] = orjson.loads(body)
        except ValueError:  # not JSON (orjson.JSONDecodeError is a ValueError), or too long
            out["text"] = body[:_MAX_BODY].decode("utf-8", "replace")
    try:
        req = resp.request  # httpx raises when the response has no request
    except Exception:  # noqa: BLE001
        req = None
    if req is not None and _is_request(req):
        out["request"] = _request_data(req)
    return out


def _capture(value: Any, depth: int = 0) -> Any:
    """One recorded attribute or argument as plain data (responses, requests, headers included)."""
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    if depth > 8:
        return None
    if _is_response(value):
        return _response_data(value)
    if _is_request(value):
        return _request_data(value)
    email_message = sys.modules.get("email.message")
    if email_message is not None and isinstance(value, email_message.Message):
        return {HEADERS_TAG: _cls_path(type(value)), "headers": _headers(value)}
    if isinstance(value, BaseException):
        if depth > 3:
            return str(value)
        return {
            EXCEPTION_TAG: _cls_path(type(value)),
            "args": [_capture(a, depth + 1) for a in value.args],
            "attrs": _public_attrs(value, depth + 1),
        }
    if isinstance(value, dict):
        return {k: _capture(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_capture(v, depth + 1) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_capture(v, depth + 1) for v in value)
    return value  # frozen leniently by the recorder: unencodable values become placeholders


def _public_attrs(exc: BaseException, depth: int = 0) -> dict[str, Any]:
    """Public instance attributes, then public fields declared in C or with __slots__.

    (``OSError.filename`` is such a field.)
    """
    try:
        state = vars(exc)
    except TypeError:
        state = {}
    cls = type(exc)
    out: dict[str, Any] = {}
    for name, value in state.items():
        if name.startswith("__"):
            continue
        # A private field is kept only behind a public property (httpx keeps `.request` in
        # `_request`).
        if name.startswith("_") and not isinstance(
            inspect.getattr_static(cls, name[1:], None), property
        ):
            continue
        if callable(value) and not _is_response(value) and not _is_request(value):
            continue
        out[name] = _capture(value, depth)
    for klass in cls.__mro__:
        if klass is BaseException or klass is object:
            continue
        for name, descriptor in vars(klass).items():
            if name.startswith("_") or name in out or name in state:
                continue
            if isinstance(descriptor, types.MemberDescriptorType | types.GetSetDescriptorType):
                try:
                    value = getattr(exc, name)
                except Exception:  # noqa: BLE001 - a field never set (OSError.characters_written)
                    continue
                if value is not None:
                    out[name] = _capture(value, depth)
    return out


def capture_error(exc: BaseException) -> dict[str, Any]:
    """What replay needs to raise `exc` again: its args, public attributes and their types."""
    detail = {"args": [_capture(a) for a in exc.args], "attrs": _public_attrs(exc)}
    tag = type_tag(detail)
    if tag is not None:
        detail["types"] = orjson.loads(tag)
    return detail


# ---- errors: rebuild ------------------------------------------------------------------------


def _rebuild_http(value: Any) -> Any:
    """Recorded responses, requests and headers as real objects of their library, if loaded."""
    if isinstance(value, list):
        return [_rebuild_http(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_rebuild_http(v) for v in value)
    if not isinstance(value, dict):
        return value
    if RESPONSE_TAG in value:
        built = _build_response(value)
        if built is not None:
            return built
    elif REQUEST_TAG in value:
        built = _build_request(value)
        if built is not None:
            return built
    elif EXCEPTION_TAG in value:
        module, _, qualname = str(value[EXCEPTION_TAG]).partition(":")
        built = rebuild_error(
            {
                "module": module,
                "qualname": qualname,
                "args": value.get("args"),
                "attrs": value.get("attrs"),
            }
        )
        if built is not None:
            return built
    elif HEADERS_TAG in value:
        cls = loaded_class(value[HEADERS_TAG])
        email_message = sys.modules.get("email.message")
        if cls is not None and email_message is not None and issubclass(cls, email_message.Message):
            msg = cls()
            for k, v in (value.get("headers") or {}).items():
                msg[k] = v
            return msg
    return {k: _rebuild_http(v) for k, v in value.items()}


# httpx and its successor package httpx2 (which newer openai / anthropic SDKs use) share one API.
_HTTPX_LIBS = ("httpx", "httpx2")


def _httpx_class(path: Any, name: str) -> Any:
    """The httpx(2) class `name` (or the recorded subclass of it) when that library is imported."""
    top = path.split(":")[0].split(".")[0] if isinstance(path, str) else ""
    for lib in _HTTPX_LIBS:
        mod = sys.modules.get(lib)
        base = vars(mod).get(name) if mod is not None else None
        if not isinstance(base, type):
            continue
        cls = loaded_class(path)
        if cls is not None and issubclass(cls, base):
            return cls
        if top == lib:
            return base
    return None


def _body_bytes(d: dict[str, Any]) -> bytes:
    if "json" in d:
        return orjson.dumps(d["json"])
    text = d.get("text")
    return text.encode("utf-8") if isinstance(text, str) else b""


def _build_request(d: dict[str, Any]) -> Any:
    try:
        return _make_request(d)
    except Exception:  # noqa: BLE001 - e.g. a URL redaction made unparsable: keep the plain data
        return None


def _make_request(d: dict[str, Any]) -> Any:
    path = d.get(REQUEST_TAG)
    method, url = str(d.get("method", "GET")), str(d.get("url", ""))
    httpx_request = _httpx_class(path, "Request")
    if httpx_request is not None:
        return httpx_request(method, url)
    models = sys.modules.get("requests.models")
    if models is not None and isinstance(path, str) and path.startswith("requests"):
        prepared = models.PreparedRequest()
        prepared.method = method
        prepared.url = url
        prepared.headers = sys.modules["requests.structures"].CaseInsensitiveDict()
        return prepared
    return None


def _build_response(d: dict[str, Any]) -> Any:
    try:
        return _make_response(d)
    except Exception:  # noqa: BLE001 - the plain data is still there for code that reads it
        return None


def _make_response(d: dict[str, Any]) -> Any:
    path = d.get(RESPONSE_TAG)
    status = d.get("status")
    if not isinstance(status, int):
        return None
    headers = {str(k): str(v) for k, v in (d.get("headers") or {}).items()}
    body = _body_bytes(d)
    req = d.get("request")
    request = _build_request(req) if isinstance(req, dict) else None
    httpx_response = _httpx_class(path, "Response")
    if httpx_response is not None:
        headers.pop("content-encoding", None)  # the body is stored decoded
        headers.pop("transfer-encoding", None)
        headers["content-length"] = str(len(body))
        return httpx_response(status, headers=headers, content=body, request=request)
    models = sys.modules.get("requests.models")
    if models is not None and isinstance(path, str) and path.startswith("requests"):
        r = models.Response()
        r.status_code = status
        r.headers = sys.modules["requests.structures"].CaseInsensitiveDict(headers)
        r._content = body
        r._content_consumed = True
        r.reason = d.get("reason")
        r.url = request.url if request is not None else ""
        r.request = request
        r.encoding = "utf-8"
        return r
    return None


def rebuild_error(body: dict[str, Any]) -> BaseException | None:
    """The recorded exception as its own class, or None when that class is not loaded.

    Built without running the class's ``__init__`` (which may take other arguments than
    ``args``): ``cls.__new__(cls, *args)``, ``BaseException.__init__(exc, *args)``, then each
    recorded public attribute set again (responses as real ``httpx`` / ``requests`` objects).
    """
    module, qualname = body.get("module"), body.get("qualname")
    if not module or not qualname:
        return None
    cls = loaded_class(f"{module}:{qualname}")
    if cls is None or not issubclass(cls, BaseException):
        return None
    types = body.get("types")
    tag = orjson.dumps(types).decode() if isinstance(types, list) else None
    detail = {"args": body.get("args"), "attrs": body.get("attrs")}
    if isinstance(detail["args"], list):
        detail = rebuild_value(detail, tag) if tag else plain_copy(detail)
        args = tuple(_rebuild_http(a) for a in detail["args"])
        attrs = detail.get("attrs") if isinstance(detail.get("attrs"), dict) else {}
    else:  # recorded before args were kept: the message is the one argument, as replay did then
        args = (str(body.get("message", "")),)
        attrs = {}
        try:
            return cls(*args)
        except Exception:  # noqa: BLE001 - an __init__ that takes other arguments
            pass
    try:
        exc = cls.__new__(cls, *args)
    except Exception:  # noqa: BLE001 - a __new__ with its own signature
        try:
            exc = cls.__new__(cls)
        except Exception:  # noqa: BLE001
            return None
    try:
        BaseException.__init__(exc, *args)
    except Exception:  # noqa: BLE001
        return None
    for name, value in attrs.items():
        value = _rebuild_http(value)
        try:
            setattr(exc, name, value)
        except Exception:  # noqa: BLE001 - a read-only property: set the instance field itself
            try:
                vars(exc)[name] = value
            except Exception:  # noqa: BLE001
                pass
    return exc
