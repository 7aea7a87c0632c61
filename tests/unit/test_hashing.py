"""Canonical JSON and the 24-hex sha: byte-identity with the seed's sha() and stable encodings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import pathlib
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from replay.hashing import (
    canonical_bytes,
    canonical_json,
    freeze,
    freeze_lenient,
    sha,
    thaw,
    thaw_all,
)


def seed_sha(obj: object) -> str:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:24]


def seed_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


PLAIN_VECTORS = [
    {"url": "https://example.com/a?b=1", "n": 3},
    {"ü": "日本語", "emoji": "🙂", "q": '"quoted"\n\ttab'},
    {"nested": {"z": [1, {"b": 2, "a": 1}], "a": None, "t": True, "f": False}},
    [1e16, -0.0, 1.5e-7, 0.1, 1e-5, 123456789.125, 5e-324, 1.7976931348623157e308],
    {"big": 2**70, "neg": -(2**65), "small": -1},
    "\u2028\u2029\x7f",
    [],
    {},
]


@pytest.mark.parametrize("obj", PLAIN_VECTORS)
def test_plain_json_is_byte_identical_to_the_seed(obj: object) -> None:
    """For plain JSON the canonical text and hash equal the seed's json.dumps(...) and sha()."""
    assert canonical_json(obj) == seed_json(obj)
    assert canonical_bytes(obj) == seed_json(obj).encode("utf-8")
    assert sha(obj) == seed_sha(obj)
    assert len(sha(obj)) == 24


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_orjson_fast_path_never_differs_from_json(value: object) -> None:
    """canonical_bytes (orjson where safe) equals json.dumps for any plain JSON value."""
    assert canonical_bytes(value) == seed_json(value).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_freeze_then_thaw_keeps_the_hash(value: object) -> None:
    """A value frozen on the agent's path hashes the same after thawing on the writer thread."""
    assert sha(thaw(freeze(value))) == sha(value)


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int
    when: dt.date


class Ticket(BaseModel):
    id: int
    at: dt.datetime


ENCODED = [
    (dt.datetime(2026, 1, 2, 3, 4, 5, 6), '"2026-01-02T03:04:05.000006"'),
    (dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc), '"2026-01-02T00:00:00+00:00"'),
    (dt.date(2026, 1, 2), '"2026-01-02"'),
    (b"\x00\xffhi", '{"$bytes":"AP9oaQ=="}'),
    ({3, 1, 2}, "[1,2,3]"),
    (frozenset({"b", "a"}), '["a","b"]'),
    ((1, "a"), '[1,"a"]'),
    (decimal.Decimal("1.10"), '"1.10"'),
    (uuid.UUID(int=1), '"00000000-0000-0000-0000-000000000001"'),
    (pathlib.PurePosixPath("/tmp/x"), '"/tmp/x"'),
    (Color.RED, '"red"'),
    (Level.HIGH, "3"),
    (Point(1, dt.date(2026, 1, 1)), '{"when":"2026-01-01","x":1}'),
    (Ticket(id=7, at=dt.datetime(2026, 1, 1)), '{"at":"2026-01-01T00:00:00","id":7}'),
    ({2: "b", 10: "a"}, '{"10":"a","2":"b"}'),
]


@pytest.mark.parametrize(("value", "expected"), ENCODED, ids=[type(v).__name__ for v, _ in ENCODED])
def test_non_json_values_have_one_stable_encoding(value: object, expected: str) -> None:
    """Each supported non-JSON type encodes to the documented JSON, also through freeze/thaw."""
    assert canonical_json(value) == expected
    assert canonical_json(thaw(freeze(value))) == expected


def test_unsupported_type_names_the_type_and_where_it_sits() -> None:
    """An unsupported value raises TypeError naming its type and its path in the args."""
    with pytest.raises(TypeError) as info:
        sha({"items": [1, 2, 3, object()]})
    assert 'builtins.object at args["items"][3]' in str(info.value)


def test_lenient_freeze_records_a_placeholder_instead_of_raising() -> None:
    """The recorder's freeze replaces an unsupported value with a marked placeholder naming its
    type and path.
    """
    frozen, problem = freeze_lenient({"client": object(), "q": "x"})
    assert thaw(frozen) == {"client": '[unencodable: builtins.object at args["client"]]', "q": "x"}
    assert problem is not None and 'args["client"]' in problem


def test_a_lone_surrogate_hashes_as_u_fffd_everywhere() -> None:
    """Canonical bytes are always valid UTF-8: a lone surrogate becomes U+FFFD, and sha() agrees
    with canonical_bytes.
    """
    value = {"m": "a\ud800b"}
    body = canonical_bytes(value)
    assert body.decode("utf-8") == '{"m":"a\ufffdb"}'
    assert sha(value) == sha({"m": "a\ufffdb"})


def test_lenient_freeze_never_raises_and_always_gives_utf8() -> None:
    """Cycles, surrogates and raising objects come back as placeholders in valid UTF-8 JSON, with a
    problem to warn about.
    """

    class Boom:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    loop: dict[str, object] = {}
    loop["me"] = loop
    for value, marker in (
        (loop, 'cycle at output["me"]'),
        ("x\udfff", "lone surrogate in text at output"),
        ([Boom()], "Boom at output[0]"),
    ):
        frozen, problem = freeze_lenient(value, "output")
        frozen.decode("utf-8")
        assert problem is not None and marker in problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), '[unencodable: NaN at output["score"]]'),
        (float("inf"), '[unencodable: +inf at output["score"]]'),
        (float("-inf"), '[unencodable: -inf at output["score"]]'),
    ],
    ids=["nan", "plus-inf", "minus-inf"],
)
def test_nan_and_infinities_are_placeholders_not_null(value: float, expected: str) -> None:
    """A NaN or an infinity is recorded as a marked placeholder with its path (JSON has neither),
    with a problem to warn about, and hashes as that placeholder.
    """
    frozen, problem = freeze_lenient({"score": value, "none": None}, "output")
    assert thaw(frozen) == {"none": None, "score": expected}
    assert problem is not None and expected[len("[unencodable: ") : -1] == problem
    assert sha(thaw(frozen)) == sha({"none": None, "score": expected})


def test_none_and_finite_floats_are_kept_as_they_are() -> None:
    """A value with nulls and ordinary floats is frozen unchanged, key order kept,
    with no problem.
    """
    value = {"b": None, "a": [0.5, None, -1e308, {"c": None}]}
    frozen, problem = freeze_lenient(value)
    assert problem is None
    assert frozen == json.dumps(value, separators=(",", ":")).encode()


def test_a_nan_inside_a_dataclass_is_found_too() -> None:
    """A NaN held by a dataclass field (not a plain container) is still recorded as
    a placeholder.
    """

    @dataclasses.dataclass
    class Point:
        x: float

    frozen, problem = freeze_lenient({"p": Point(float("nan"))})
    assert problem == 'NaN at args["p"]["x"]'
    assert thaw(frozen) == {"p": {"x": '[unencodable: NaN at args["p"]["x"]]'}}


def test_a_nan_beside_a_huge_integer_is_a_placeholder_too() -> None:
    """A value orjson cannot encode (an int beyond 64 bits) takes the json encoder, whose NaN is
    also recorded as a placeholder.
    """
    frozen, problem = freeze_lenient({"big": 2**70, "x": float("nan")})
    assert problem == 'NaN at args["x"]'
    assert thaw(frozen) == {"big": 2**70, "x": '[unencodable: NaN at args["x"]]'}


def test_a_nan_deep_in_a_big_conversation_is_found() -> None:
    """A NaN inside a long message history (the walked path for big values) is a placeholder; the
    same history without it is frozen unchanged.
    """
    history: list[dict[str, object]] = [
        {"role": "user", "content": "word " * 40, "meta": {"score": 0.5, "tag": None}}
        for _ in range(60)
    ]
    clean, problem = freeze_lenient({"messages": history})
    assert problem is None and len(clean) > 8192
    assert clean == json.dumps({"messages": history}, separators=(",", ":")).encode()
    history[41] = {"role": "user", "content": "x", "meta": {"score": float("nan"), "tag": None}}
    frozen, problem = freeze_lenient({"messages": history})
    assert problem == 'NaN at args["messages"][41]["meta"]["score"]'
    assert thaw(frozen)["messages"][41]["meta"]["score"] == (
        '[unencodable: NaN at args["messages"][41]["meta"]["score"]]'
    )


def test_thaw_all_reads_many_values_as_thaw_reads_each_or_leaves_them_to_it() -> None:
    values = [{"i": 1, "note": "shipped"}, [1.5, None, "x"], "text", 12345678901234567]
    frozen = [freeze(v) for v in values]
    assert thaw_all(frozen) == [thaw(f) for f in frozen] == values
    # an integer beyond 64 bits (orjson would read it as a float), or a damaged value: None, so
    # that the caller thaws each value on its own (and names the damaged one)
    wide = [*frozen, freeze({"id": 2**70})]
    assert thaw_all(wide) is None and thaw(wide[-1]) == {"id": 2**70}
    assert thaw_all([*frozen, b'{"i": 1']) is None
    # digits of two values never join into one long run
    assert thaw_all([b"1234567890", b"123456789"]) == [1234567890, 123456789]
