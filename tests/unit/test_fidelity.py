"""Rebuilding recorded values and errors: the tag tree, the trust rule, the fallbacks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.message
import http.client
import io
import sys
import types
import urllib.error

import orjson
import pytest

from replay.fidelity import capture_error, loaded_class, rebuild_error, rebuild_value
from replay.hashing import freeze, freeze_lenient, thaw, type_tag


@dataclasses.dataclass
class Item:
    name: str
    at: dt.date


def roundtrip(value: object) -> object:
    """What replay hands back for `value`: its frozen JSON rebuilt with its tag tree."""
    return rebuild_value(thaw(freeze(value)), type_tag(value))


def test_plain_json_has_no_tag() -> None:
    """Plain JSON (dicts with str keys, lists, scalars) needs no tag, so nothing extra is stored."""
    assert type_tag({"a": [1, 2.5, "x", None, True, {"b": []}]}) is None
    assert type_tag("text") is None


def test_tags_address_children_by_position_never_by_key() -> None:
    """The tag tree holds no dict key (a key may be personal data; tags are not redacted)."""
    tag = type_tag({"alice@example.com": (1, 2), "x": [dt.date(2026, 1, 1)]})
    assert tag is not None and "alice" not in tag
    assert roundtrip({"alice@example.com": (1, 2), "x": [dt.date(2026, 1, 1)]}) == {
        "alice@example.com": (1, 2),
        "x": [dt.date(2026, 1, 1)],
    }


def test_a_tag_that_no_longer_fits_gives_the_plain_value() -> None:
    """A value changed by redaction (a datetime now '[REDACTED:secret]') comes back as the recorded
    JSON, not an error.
    """
    tag = type_tag({"token": dt.datetime(2026, 1, 1)})
    assert rebuild_value({"token": "[REDACTED:secret]"}, tag) == {"token": "[REDACTED:secret]"}


def test_older_single_class_tags_still_rebuild() -> None:
    """A recording made before tag trees (type 'module:qualname') still rebuilds its dataclass."""
    value = rebuild_value({"name": "a", "at": "2026-01-01"}, f"{__name__}:Item")
    assert isinstance(value, Item) and value.name == "a"


def test_loaded_class_never_imports_and_runs_no_module_getattr() -> None:
    """A class path is looked up only in sys.modules, by __dict__: no import, no module
    __getattr__.
    """
    assert loaded_class("replay_fidelity_not_a_module:Thing") is None
    assert "replay_fidelity_not_a_module" not in sys.modules
    mod = types.ModuleType("replay_fidelity_lazy")
    calls: list[str] = []

    def __getattr__(name: str) -> object:
        calls.append(name)
        return Item

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[mod.__name__] = mod
    try:
        assert loaded_class("replay_fidelity_lazy:Item") is None
        assert calls == []
    finally:
        del sys.modules[mod.__name__]
    assert loaded_class("builtins:KeyError") is KeyError
    assert loaded_class("builtins:len") is None, "only classes"


def test_urllib_http_error_keeps_code_and_headers() -> None:
    """urllib's HTTPError (whose __init__ takes url, code, msg, hdrs, fp) rebuilds with .code and
    .headers.
    """
    hdrs = http.client.HTTPMessage()
    hdrs["Retry-After"] = "30"
    exc = urllib.error.HTTPError(
        "http://localhost/x", 429, "Too Many Requests", hdrs, io.BytesIO(b"slow")
    )
    body = {
        "module": "urllib.error",
        "qualname": "HTTPError",
        **orjson.loads(freeze_lenient(capture_error(exc))[0]),
    }
    again = rebuild_error(body)
    assert type(again) is urllib.error.HTTPError
    assert again.code == 429 and again.reason == "Too Many Requests"
    assert isinstance(again.headers, email.message.Message) and again.headers["retry-after"] == "30"
    assert str(again) == str(exc)


def test_an_unknown_error_class_is_not_rebuilt() -> None:
    """An error whose module is not loaded, or that names a non-exception, gives None (then
    RecordedToolError).
    """
    assert (
        rebuild_error({"module": "not_loaded_mod", "qualname": "Boom", "args": ["x"], "attrs": {}})
        is None
    )
    assert (
        rebuild_error({"module": "builtins", "qualname": "dict", "args": [], "attrs": {}}) is None
    )


def test_capture_never_keeps_callables_or_private_fields() -> None:
    """Only public attributes (and private fields behind a public property) are recorded."""

    class E(Exception):
        def __init__(self) -> None:
            super().__init__("m")
            self.retry_in = 3
            self._secret_state = "x"
            self.callback = print

    detail = capture_error(E())
    assert detail["attrs"] == {"retry_in": 3}


@pytest.mark.parametrize(
    "value",
    [
        (1, [2, (3,)]),
        {1: "a", 2.5: "b", False: "c", None: "d"},
        {"s": {1, 2}, "f": frozenset({"a"})},
        [b"raw", bytearray(b"x"), dt.timedelta(seconds=3)],
    ],
)
def test_roundtrip_of_non_json_values(value: object) -> None:
    """Tuples, int/float/bool/None keys, sets, bytes and timedeltas come back equal and of the same
    type.
    """
    again = roundtrip(value)
    assert again == value and type(again) is type(value)
