"""Canonical JSON and the 24-hex `sha` that every args_sha and output_sha is made of.

For plain JSON, `canonical_json(obj)` is byte-identical to
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` so hashes join with
hand-rolled loggers that follow the seed's ``sha()``. Non-JSON values are encoded the same way
everywhere (see `to_jsonable`).
"""

from __future__ import annotations

import base64
import codecs
import dataclasses
import datetime as _dt
import decimal
import enum
import gc
import hashlib
import json
import math
import pathlib
import pickle
import re
import uuid
from typing import Any

import orjson

__all__ = [
    "BYTES_TAG",
    "canonical_bytes",
    "canonical_json",
    "freeze",
    "freeze_lenient",
    "placeholder",
    "ordered_bytes",
    "sha",
    "sha_of_canonical",
    "thaw",
    "thaw_all",
    "to_jsonable",
    "truncated_snapshot",
    "type_tag",
    "TRUNCATED_TAG",
]

BYTES_TAG = "$bytes"
#: Marks a stored snapshot cut at the store's size limit (`truncated_snapshot`).
TRUNCATED_TAG = "$truncated"

_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
).encode

# The same text without sorting: a stored snapshot body keeps the tool's key order (only its hash
# is taken over the canonical, sorted form).
_dumps_ordered = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode

_SCALARS = (str, int, float, bool, type(None))


def _fmt_path(path: tuple[Any, ...]) -> str:
    out = "args"
    for p in path:
        out += f"[{json.dumps(p, ensure_ascii=False)}]" if isinstance(p, str) else f"[{p!r}]"
    return out


def _encode_leaf(obj: Any) -> Any:
    """Encode one non-JSON value; returns NotImplemented when the type is unsupported."""
    if isinstance(obj, _dt.datetime | _dt.date | _dt.time):
        return obj.isoformat()
    if isinstance(obj, bytes | bytearray | memoryview):
        return {BYTES_TAG: base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, decimal.Decimal | uuid.UUID | pathlib.PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    dump = getattr(obj, "model_dump", None)
    if dump is not None and callable(dump):
        return dump(mode="json")
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    return NotImplemented


def to_jsonable(obj: Any, _path: tuple[Any, ...] = ()) -> Any:
    """Return `obj` as plain JSON values (dict, list, str, int, float, bool, None).

    datetime/date -> ISO 8601, bytes -> ``{"$bytes": base64}``, set/frozenset -> sorted list,
    tuple -> list, Decimal/UUID/Path -> str, Enum -> value, dataclass -> its fields,
    pydantic model -> ``model_dump(mode="json")``.

    Raises:
        TypeError: for an unsupported type, naming the type and where it sits
            (``args["items"][3]``).
    """
    if isinstance(obj, _SCALARS):
        if isinstance(obj, enum.Enum):  # IntEnum / StrEnum are also int / str
            return to_jsonable(obj.value, _path)
        return obj
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            if not isinstance(k, _SCALARS):
                k = to_jsonable(k, _path + (k,))
                if not isinstance(k, _SCALARS):
                    raise TypeError(
                        f"unsupported dict key of type {type(k).__name__} at {_fmt_path(_path)}"
                    )
            out[k] = to_jsonable(v, _path + (k,))
        # Non-str keys become the strings json writes for them, then sort as strings: a recorded
        # value is frozen to JSON and thawed before hashing, so this is the only order both sides
        # see.
        if not all(isinstance(k, str) for k in out):
            out = {_key_str(k): v for k, v in out.items()}
        return out
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, _path + (i,)) for i, v in enumerate(obj)]
    if isinstance(obj, set | frozenset):
        items = [to_jsonable(v, _path + (i,)) for i, v in enumerate(obj)]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=lambda v: _dumps(v))
    enc = _encode_leaf(obj)
    if enc is NotImplemented:
        raise TypeError(
            f"cannot hash a value of type {type(obj).__module__}.{type(obj).__qualname__} "
            f"at {_fmt_path(_path)}: convert it to JSON-able data (dict, list, str, number) "
            "or a dataclass / pydantic model"
        )
    return to_jsonable(enc, _path)


#: Every value recording cannot encode faithfully becomes a string starting with this marker.
PLACEHOLDER_PREFIX = "[unencodable: "
#: Deeper than this, the lenient encoder stops and records a placeholder (orjson's limit: 254).
MAX_DEPTH = 200
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def placeholder(what: str, path: str) -> str:
    """The marked placeholder recorded in place of a value.

    For example ``[unencodable: cycle at args["x"]["self"]]``.
    """
    return f"{PLACEHOLDER_PREFIX}{what} at {path}]"


def freeze_lenient(obj: Any, root: str = "args", sort: bool = False) -> tuple[bytes, str | None]:
    """`freeze` that never raises: what cannot be encoded becomes a marked placeholder string.

    Cycles, nesting deeper than `MAX_DEPTH`, unsupported types, lone surrogates and objects whose
    ``__repr__``/``__iter__``/``__eq__``/``model_dump`` raise are each replaced by
    ``[unencodable: <what> at <path>]`` (`root` names the path's start: ``args``, ``input``,
    ``output``); everything else is kept. The result is always valid UTF-8 JSON.

    Returns the frozen bytes and a description of the first problem (or None), safe to show in a
    warning: its path names dict keys only when they look like identifiers (keys can be data).
    With `sort`, dict keys come sorted (a call's args: only hashed, never shown), so the bytes are
    the canonical form the writer hashes unless redaction has something to change.
    """
    # `freeze`, with which encoder it took. `snapshot_bytes` inline: this runs twice per recorded
    # call on the agent's thread, and a Python frame there costs more than the orjson call's setup.
    try:
        try:
            frozen = _orjson_dumps(
                obj, default=_orjson_default, option=_SNAP_SORTED if sort else _SNAP_OPTS
            )
            fast = True
        except TypeError:  # orjson cannot represent it faithfully (JSONEncodeError included)
            encode = _dumps if sort else _dumps_ordered
            frozen = encode(to_jsonable(obj)).encode("utf-8", "surrogatepass")
            fast = False
    except Exception:  # noqa: BLE001 - RecursionError, TypeError, or user code raising: go lenient
        return _freeze_placeholders(obj, root)
    # A lone surrogate survives `freeze` (surrogatepass) as ED A0..BF. Checked in C, cheapest
    # first: isascii (most values), then memchr for 0xED (an int needle: a bytes one costs 9x).
    if not frozen.isascii() and 0xED in frozen and not _valid_utf8(frozen):
        return _freeze_placeholders(obj, root)
    # NaN and infinities: orjson writes them as null, so a small value without a null has none
    # (one literal search in C: `rfind`, whose backward scan beat `re.search` by 20-30% and `in`
    # by 2x on 1-4 KB of text-heavy JSON). A big one (a conversation's history: mostly text) is
    # walked by `_maybe_nonfinite`, whose cost is per container and value, not per byte. The json
    # fallback writes NaN/Infinity: always walked.
    maybe = not fast or len(frozen) > _SEARCH_MAX or frozen.rfind(b"null") >= 0
    if maybe and _maybe_nonfinite(obj):
        marked, problem = _freeze_placeholders(obj, root)
        if problem is not None:
            return marked, problem
    # orjson's bytes keep the whole buffer it wrote into (about 4 KB, even for `[1]`): held in the
    # queue until the writer's next drain, those buffers cost fresh pages, page faults on the
    # agent's thread (4 per call measured on 1 KB args and output) and 4 KB of RSS per value. A
    # copy holds the exact size and hands the buffer straight back to be reused (about 0.2 us).
    return (memoryview(frozen).tobytes() if fast else frozen), None


def _maybe_nonfinite(obj: Any) -> bool:
    """Whether `obj` may hold a NaN or infinite float: False only when `obj` is made of dicts,
    lists, tuples, str, int, bool, None and finite floats (anything else answers True).

    Level by level in C: `gc.get_referents` gives the keys and values of every container of a
    level in one call (str, int and float have none), and the set of their types says whether a
    float (then checked) or anything but plain JSON is there. A value orjson encoded has no cycle
    and at most 255 levels.
    """
    level = [obj]
    referents = gc.get_referents
    while level:
        types = set(map(type, level))
        if not types <= _PLAIN_TYPES_ALL:
            return True
        if float in types:
            for v in level:
                if type(v) is float and v - v != 0.0:  # NaN, +inf, -inf (inf - inf is NaN)
                    return True
        level = referents(*level)
    return False


_PLAIN_TYPES_ALL = frozenset({dict, list, tuple, str, int, float, bool, type(None)})
_SEARCH_MAX = 4096  # bytes: above this, `_maybe_nonfinite` is cheaper than a search for null


def _freeze_placeholders(obj: Any, root: str) -> tuple[bytes, str | None]:
    problems: list[str] = []
    try:
        plain = _lenient(obj, (), set(), problems, root)
        return _dumps(plain).encode("utf-8"), problems[0] if problems else None
    except Exception:  # noqa: BLE001 - even the lenient walk failed (no stack left): keep nothing
        what = f"{_type_name(obj)} (could not be walked)"
        return _dumps(placeholder(what, root)).encode("utf-8"), f"{what} at {root}"


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _type_name(obj: Any) -> str:
    t = type(obj)
    return f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', '?')}"


def _path_text(root: str, path: tuple[Any, ...], *, safe: bool) -> str:
    """``args["x"][0]``; `safe` hides keys that are not identifiers (a key can be an email)."""
    parts = list(path)
    if len(parts) > 12:
        parts = parts[:6] + [Ellipsis] + parts[-4:]
    out = root
    for p in parts:
        if p is Ellipsis:
            out += f"…({len(path)} levels)…"
        elif isinstance(p, bool) or not isinstance(p, (int, str)):
            out += "[?]"
        elif isinstance(p, int):
            out += f"[{p}]"
        elif safe and not _IDENT.fullmatch(p):
            out += "[…]"
        else:
            out += "[" + json.dumps(p, ensure_ascii=True) + "]"
    return out


def _bad(what: str, root: str, path: tuple[Any, ...], problems: list[str]) -> str:
    if not problems:
        problems.append(f"{what} at {_path_text(root, path, safe=True)}")
    return placeholder(what, _path_text(root, path, safe=False))


def _clean_str(s: str, root: str, path: tuple[Any, ...], problems: list[str]) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return _bad("lone surrogate in text", root, path, problems)


def _lenient(
    obj: Any, path: tuple[Any, ...], stack: set[int], problems: list[str], root: str
) -> Any:
    """Plain JSON values for `obj`, with placeholders where it cannot be encoded."""
    if isinstance(obj, enum.Enum):
        try:
            obj = obj.value
        except Exception:  # noqa: BLE001
            return _bad(_type_name(obj), root, path, problems)
    if isinstance(obj, str):
        return _clean_str(str.__str__(obj), root, path, problems)
    if isinstance(obj, float) and not math.isfinite(obj):
        # JSON has no NaN or infinity (orjson writes null): a marked placeholder, not a silent null.
        what = "NaN" if obj != obj else "+inf" if obj > 0 else "-inf"
        return _bad(what, root, path, problems)
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    if len(path) >= MAX_DEPTH:
        return _bad(f"nested deeper than {MAX_DEPTH} levels", root, path, problems)
    if id(obj) in stack:
        return _bad("cycle", root, path, problems)
    stack.add(id(obj))
    try:
        try:
            if isinstance(obj, dict):
                items = list(obj.items())
            elif isinstance(obj, list | tuple):
                items = list(enumerate(obj))
            elif isinstance(obj, set | frozenset):
                values = [
                    _lenient(v, path + (i,), stack, problems, root) for i, v in enumerate(list(obj))
                ]
                try:
                    return sorted(values)
                except Exception:  # noqa: BLE001 - mixed types (or __lt__ raising): sort by JSON text
                    return sorted(values, key=_dumps)
            else:
                enc = _encode_leaf(obj)
                if enc is NotImplemented:
                    return _bad(_type_name(obj), root, path, problems)
                return _lenient(enc, path, stack, problems, root)
        except RecursionError:
            raise
        except Exception as exc:  # noqa: BLE001 - __iter__ / items() / model_dump raising
            return _bad(f"{_type_name(obj)} raised {type(exc).__name__}", root, path, problems)
        if isinstance(obj, dict):
            return _lenient_dict(items, path, stack, problems, root)
        return [_lenient(v, path + (i,), stack, problems, root) for i, v in items]
    finally:
        stack.discard(id(obj))


def _lenient_dict(
    items: list[tuple[Any, Any]],
    path: tuple[Any, ...],
    stack: set[int],
    problems: list[str],
    root: str,
) -> dict[str, Any]:
    """`_lenient` of a dict's items: keys as the strings JSON writes (or a placeholder)."""
    out: dict[str, Any] = {}
    for k, v in items:
        if isinstance(k, str):
            key = (
                _clean_str(k, root, path + ("?",), problems)
                if not isinstance(k, enum.Enum)
                else str(k.value)
            )
        elif isinstance(k, _SCALARS):
            key = _key_str(k)
        else:
            try:
                kk = to_jsonable(k)
                key = (
                    _key_str(kk)
                    if isinstance(kk, _SCALARS)
                    else f"[unencodable key: {_type_name(k)}]"
                )
            except Exception:  # noqa: BLE001
                key = f"[unencodable key: {_type_name(k)}]"
            key = _clean_str(key, root, path + ("?",), problems)
        out[key] = _lenient(v, path + (key,), stack, problems, root)
    return out


def _key_str(k: Any) -> str:
    if isinstance(k, str):
        return k
    return json.dumps(k) if not isinstance(k, float) else float.__repr__(k)


def _replace_surrogates(err: UnicodeError) -> tuple[bytes, int]:
    # The UTF-8 encoder takes only ASCII text from a handler: give it U+FFFD already encoded.
    if isinstance(err, UnicodeEncodeError):
        return "\ufffd".encode() * (err.end - err.start), err.end
    raise err


codecs.register_error("agent-replay.fffd", _replace_surrogates)
#: How canonical text becomes bytes: a lone surrogate (which no UTF-8 file, SQLite text or
#: cassette can hold, and which the seed's ``sha()`` could not hash at all) becomes U+FFFD, so a
#: recorded error message holding one is stored, exported and hashed like any other text.
TEXT_ERRORS = "agent-replay.fffd"


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of `obj` (sorted keys, no spaces, UTF-8 kept)."""
    return _dumps(to_jsonable(obj))


# orjson writes some floats differently from Python's repr (1e16 vs 1e+16, 0.00001 vs 1e-05).
# Every float token in its output starts the text or follows ':', ',' or '[', so this finds each
# one that could differ; a false hit inside a string only costs the slower path.
_RISKY_NUMBER = re.compile(rb"(?:^|[:,\[])-?(?:\d+(?:\.\d+)?[eE]|0\.0000)")
# With every digit mapped to 0, a risky number needs "0e", "0E" or "0.0000": three substring
# tests in C settle most outputs without running the regex at all.
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")


def canonical_bytes(plain: Any) -> bytes:
    """Canonical JSON of already-plain JSON values as UTF-8 bytes, via orjson where byte-identical.

    Falls back to `json` for floats orjson formats differently, ints beyond 64 bits, and
    non-str keys, so the result always equals ``canonical_json(plain).encode("utf-8",
    TEXT_ERRORS)`` (plain UTF-8; a lone surrogate becomes U+FFFD).
    """
    try:
        out = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return canonical_json(plain).encode("utf-8", TEXT_ERRORS)
    zeroed = out.translate(_ZERO_DIGITS)
    if b"0e" not in zeroed and b"0E" not in zeroed and b"0.0000" not in zeroed:
        return out
    if _RISKY_NUMBER.search(out) is None:
        return out
    return canonical_json(plain).encode("utf-8", TEXT_ERRORS)


def sha_of_canonical(text: str | bytes) -> str:
    """The 24-hex hash of an already canonical JSON text."""
    if isinstance(text, str):
        text = text.encode("utf-8", TEXT_ERRORS)
    return hashlib.sha256(text).hexdigest()[:24]


def sha(obj: Any) -> str:
    """``sha256(canonical_json(obj))[:24]``, the seed's ``sha()`` for plain JSON."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8", TEXT_ERRORS)).hexdigest()[:24]


def thaw(frozen: bytes) -> Any:
    """Parse a `freeze`d value back into plain JSON values."""
    if not may_hold_wide_ints(frozen):
        try:
            return orjson.loads(frozen)
        except orjson.JSONDecodeError:
            pass
    return json.loads(frozen)


def thaw_all(frozen: list[bytes]) -> list[Any] | None:
    """`thaw` of many values, None when one needs `thaw`'s slower path: then thaw each. Their
    integers are checked in one pass over them all, not one per value."""
    if may_hold_wide_ints(b"\n".join(frozen)):  # no run of digits spans a newline
        return None
    try:
        return list(map(orjson.loads, frozen))
    except orjson.JSONDecodeError:
        return None


def may_hold_wide_ints(text: bytes) -> bool:
    """Whether JSON `text` may hold an integer beyond 64 bits, which orjson reads as a float.

    A run of 19 digits is needed for one (-2**63 - 1 has 19); mapping digits to 0 lets a
    substring test find it in C.
    """
    return b"0000000000000000000" in text.translate(_ZERO_DIGITS)


def freeze(obj: Any) -> bytes:
    """An immutable JSON copy of `obj`, cheap enough for the agent's hot path.

    Raises:
        TypeError: the value holds a type that cannot be encoded (see `to_jsonable`).
    """
    frozen = snapshot_bytes(obj)
    if frozen is None:
        # Key order kept here too: replay hands the value back in the order the tool returned it.
        frozen = _dumps_ordered(to_jsonable(obj)).encode("utf-8", "surrogatepass")
    return frozen


def ordered_bytes(plain: Any) -> bytes:
    """JSON bytes of already-plain JSON values in their own key order (a snapshot's stored body)."""
    try:
        return orjson.dumps(plain)
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits, non-str keys
        return _dumps_ordered(to_jsonable(plain)).encode("utf-8", TEXT_ERRORS)


def _orjson_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return to_jsonable(obj)
    if isinstance(obj, tuple):  # named tuples: orjson writes plain tuples only
        return list(obj)
    enc = _encode_leaf(obj)
    if enc is NotImplemented:
        raise TypeError(type(obj).__qualname__)
    return enc


# No OPT_NON_STR_KEYS: such dicts take the `to_jsonable` path so key strings match it exactly.
_SNAP_OPTS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME
_SNAP_SORTED = _SNAP_OPTS | orjson.OPT_SORT_KEYS
_orjson_dumps = orjson.dumps  # one global load on the agent's path (`freeze_lenient`)


def snapshot_bytes(obj: Any) -> bytes | None:
    """A cheap immutable copy of `obj` taken on the agent's hot path (orjson, ~4x json.dumps).

    Not canonical: it only freezes the value so later mutation by the agent cannot change what is
    recorded. Returns None when orjson cannot represent the value faithfully (big ints, unusual
    types); the caller then falls back to `to_jsonable`.
    """
    try:
        return orjson.dumps(obj, default=_orjson_default, option=_SNAP_OPTS)
    except (TypeError, orjson.JSONEncodeError):
        return None


# ---- type tags: what replay needs to hand a value back as the tool's own types ---------------
#
# JSON keeps dicts, lists, strings, numbers, booleans and null. Everything else a tool may return
# (tuples, sets, bytes, datetimes, Decimal, UUID, Path, Enum, dataclasses, pydantic models, named
# tuples, dicts with int keys) is recorded as its JSON encoding plus a compact tag tree stored
# beside the snapshot. A node is None (plain JSON below this point) or a list ``[tag, ...]``;
# children are addressed by position (never by key: a key may be personal data, the tag is not
# redacted). Classes are named ``module:qualname``; replay rebuilds them only from modules the
# agent has already imported (see `replay.replayer`).

_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))
_NO_PLAIN: Any = object()
_STR_TYPE = frozenset((str,))
_TAG_DEPTH = 64


def _cls_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _kids(items: Any, depth: int) -> dict[str, Any] | None:
    kids: dict[str, Any] | None = None
    plain = _PLAIN_TYPES
    for i, v in enumerate(items):
        if type(v) in plain:
            continue
        node = _tree(v, depth)
        if node is not None:
            if kids is None:
                kids = {}
            kids[str(i)] = node
    return kids


def _key_tag(k: Any) -> str | None:
    t = type(k)
    if t is str:
        return None
    if t is bool:
        return "b"
    if t is int:
        return "i"
    if t is float:
        return "f"
    if k is None:
        return "n"
    return None


def _tree(obj: Any, depth: int) -> Any:
    t = type(obj)
    if t in _PLAIN_TYPES:
        return None
    if depth > _TAG_DEPTH:
        return None
    depth += 1
    # issuperset(map(type, ...)) checks a whole level in C: plain levels cost little.
    if t is dict:
        return _dict_tree(obj, depth)
    if t is list:
        if _PLAIN_TYPES.issuperset(map(type, obj)):
            return None
        kids = _kids(obj, depth)
        return None if kids is None else ["l", kids]
    if t is tuple:
        kids = _kids(obj, depth)
        return ["t"] if kids is None else ["t", kids]
    return _object_tree(obj, t, depth)


def _dict_tree(obj: dict[Any, Any], depth: int) -> Any:
    """The tag node of a plain dict: its values' tags and its non-str keys' tags, or None."""
    values = obj.values()
    kids = None if _PLAIN_TYPES.issuperset(map(type, values)) else _kids(values, depth)
    keys: dict[str, str] | None = None
    if not _STR_TYPE.issuperset(map(type, obj)):
        for i, k in enumerate(obj):
            tag = _key_tag(k)
            if tag is not None:
                if keys is None:
                    keys = {}
                keys[str(i)] = tag
    if kids is None and keys is None:
        return None
    return ["d", kids] if keys is None else ["d", kids, keys]


#: Types whose tag node is their tag alone, in the order they are tried (datetime before date).
_LEAF_TAGS: tuple[tuple[type, str], ...] = (
    (_dt.datetime, "dt"),
    (_dt.date, "date"),
    (_dt.time, "time"),
    (_dt.timedelta, "td"),
    (bytes, "b"),
    (bytearray, "ba"),
    (decimal.Decimal, "dec"),
    (uuid.UUID, "uuid"),
)


def _class_node(tag: str, t: type, kids: Any) -> list[Any]:
    """A tag node naming the value's class, with its children's tags when any are not plain."""
    return [tag, _cls_path(t)] if kids is None else [tag, _cls_path(t), kids]


def _object_tree(obj: Any, t: type, depth: int) -> Any:
    """The tag node of anything but a plain dict, list or tuple (`depth` already counted)."""
    if isinstance(obj, enum.Enum):
        return ["e", _cls_path(t)]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return _class_node("nt", t, _kids(obj, depth))
    if isinstance(obj, set | frozenset):
        # Stored sorted; one tag for every element, when they share one (a set of tuples).
        nodes = {orjson.dumps(_tree(v, depth)) for v in obj}
        tag = "s" if isinstance(obj, set) else "fs"
        if len(nodes) == 1:
            node = orjson.loads(nodes.pop())
            if node is not None:
                return [tag, node]
        return [tag]
    for cls, leaf in _LEAF_TAGS:
        if isinstance(obj, cls):
            return [leaf]
    if isinstance(obj, pathlib.PurePath):
        return ["path", t.__name__]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _class_node(
            "dc", t, _kids([getattr(obj, f.name) for f in dataclasses.fields(obj)], depth)
        )
    if callable(getattr(obj, "model_dump", None)) and hasattr(t, "model_validate"):
        return ["pd", _cls_path(t)]
    if isinstance(obj, dict):  # OrderedDict, defaultdict, ...: a dict in JSON
        return _tree(dict(obj), depth - 1)
    if isinstance(obj, list):
        return _tree(list(obj), depth - 1)
    return None


def truncated_snapshot(body: bytes, digest: str, limit: int) -> tuple[bytes, bool]:
    """What a store keeps of a snapshot `body` (sha `digest`): the body itself when it is at
    most `limit` bytes, else a `TRUNCATED_TAG` stub with its sha, size and first bytes as text;
    and whether it was truncated.
    """
    if len(body) <= limit:
        return body, False
    head = body[:limit].decode("utf-8", "ignore")
    stub = {TRUNCATED_TAG: True, "sha": digest, "size": len(body), "head": head}
    return orjson.dumps(stub, option=orjson.OPT_SORT_KEYS), True


def type_tag(obj: Any, plain: Any = _NO_PLAIN) -> str | None:
    """The tag tree of `obj` as compact JSON, or None when `obj` is plain JSON all the way down.

    `plain`, when given, is `obj` parsed back from its frozen JSON. Then most plain values are
    settled in C without a walk: a tuple, set, bytes, datetime, Decimal, UUID, Path, dataclass,
    model, plain Enum or int key never equals its JSON form, and a pickle of a value made only of
    dict, list, str, int, float, bool and None names no class (STACK_GLOBAL, byte 0x93), which
    catches what does compare equal (IntEnum, StrEnum, OrderedDict). Never raises.
    """
    t = type(obj)
    if t in _PLAIN_TYPES:
        return None
    if plain is not _NO_PLAIN:
        try:
            if plain == obj and b"\x93" not in pickle.dumps(obj, 5):
                return None
        except Exception:  # noqa: BLE001 - unpicklable or an __eq__ that raises: walk it
            pass
    try:
        node = _tree(obj, 0)
    except Exception:  # noqa: BLE001 - a strange value: replay hands back plain JSON for it
        return None
    return None if node is None else orjson.dumps(node).decode()
