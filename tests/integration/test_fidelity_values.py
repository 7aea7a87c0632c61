"""Values come back from a replay as the tool returned them: same key order, same types.

Every test records through a real Recorder into a real SQLite file, then replays the run from the
store (or from an exported cassette) and compares what the agent received in both runs.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import json
import pathlib
import string
import sys
import textwrap
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from replay import Recorder, replay_run
from replay.cassette import cassette_from_store, write_cassette
from replay.store import Store


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Shade(str, enum.Enum):
    DARK = "dark"


@dataclasses.dataclass
class Line:
    sku: str
    qty: int
    at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Order:
    id: int
    lines: list[Line]
    tags: tuple[str, ...]


class Customer(BaseModel):
    name: str
    since: dt.date
    score: decimal.Decimal


Point = collections.namedtuple("Point", "x y")


def record_then_replay(
    tmp_path: pathlib.Path, value: Any, *, via_cassette: bool = False
) -> tuple[Any, Any]:
    """Record one run whose only tool returns `value`; replay it; return (original, replayed)."""
    rec = Recorder(tmp_path / "rec.db")
    received: list[Any] = []

    @rec.tool("lookup")
    def lookup(key: str) -> Any:
        return value

    @rec.agent("fidelity")
    def agent(key: str) -> str:
        received.append(lookup(key))
        return "done"

    agent("k-1")
    rid = rec.last_run_id
    rec.close()
    source: Any = rid
    if via_cassette:
        store = Store(tmp_path / "rec.db")
        try:
            source = str(
                write_cassette(
                    cassette_from_store(store, rid), tmp_path / "cassettes" / f"{rid}.json"
                )
            )
        finally:
            store.close()
    res = replay_run(source, db=tmp_path / "rec.db", agent=agent)
    assert res.exception is None, res.exception
    assert res.diff.is_empty, str(res.diff)
    assert len(received) == 2
    return received[0], received[1]


def shape(value: Any) -> Any:
    """The value's types all the way down (what `==` alone would not check)."""
    if isinstance(value, dict):
        return (type(value), [(type(k), shape(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value), [shape(v) for v in value])
    if isinstance(value, set | frozenset):
        return (type(value), sorted(repr(shape(v)) for v in value))
    if dataclasses.is_dataclass(value):
        return (type(value), [shape(getattr(value, f.name)) for f in dataclasses.fields(value)])
    return type(value)


def test_dict_key_order_is_the_tools(tmp_path: pathlib.Path) -> None:
    """A tool's dict comes back in its own key order, so json.dumps(result) is byte-identical."""
    value = {
        "name": "Alice",
        "age": 3,
        "address": {"zip": "10115", "city": "Berlin"},
        "b": [{"z": 1, "a": 2}],
    }
    original, replayed = record_then_replay(tmp_path, value)
    assert json.dumps(replayed) == json.dumps(original) == json.dumps(value)


def test_key_order_survives_a_cassette(tmp_path: pathlib.Path) -> None:
    """Exported to a cassette and replayed from the file, a dict keeps its key order."""
    value = {"zeta": 1, "alpha": {"y": 2, "x": 1}}
    original, replayed = record_then_replay(tmp_path, value, via_cassette=True)
    assert json.dumps(replayed) == json.dumps(original)


def test_key_order_survives_export_and_import_into_another_store(tmp_path: pathlib.Path) -> None:
    """A cassette imported into another store replays with the tool's key order."""
    from replay.cassette import import_cassette

    value = {"zeta": 1, "alpha": {"y": 2, "x": 1}}
    record_then_replay(tmp_path, value, via_cassette=True)
    cassette = next((tmp_path / "cassettes").glob("*.json"))
    other = tmp_path / "other.db"
    with Store(other) as store:
        assert import_cassette(store, cassette)
    rec_run = json.loads(cassette.read_text())["run"]["run_id"]
    from replay.replayer import load_recording

    recording = load_recording(rec_run, db=other)
    step = recording.steps[0]
    assert json.dumps(recording.snapshots[step.output_sha][0]) == json.dumps(value)


def test_stored_hash_is_over_the_canonical_form(tmp_path: pathlib.Path) -> None:
    """The output_sha of an unordered dict equals the seed's sha() over sorted keys (hashes join
    with logs).
    """
    from replay.hashing import sha

    rec = Recorder(tmp_path / "rec.db")
    tool = rec.tool("t")(lambda: {"b": 1, "a": 2})
    with rec.run("a"):
        tool()
    rid = rec.last_run_id
    rec.close()
    store = Store(tmp_path / "rec.db")
    try:
        step = next(e for e in store.events(rid) if e.kind == "tool_result")
        body = store.snapshot(step.output_sha)[0]
    finally:
        store.close()
    assert step.output_sha == sha({"a": 2, "b": 1})
    assert list(json.loads(body)) == ["b", "a"]


# Letters no secret key name (SECRET_KEYS) contains: redaction is not what this property is about.
JSON_KEYS = st.text(alphabet="bgjmq", min_size=1, max_size=6)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.text(alphabet=string.ascii_lowercase, max_size=10)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_KEYS, inner, max_size=5),
    max_leaves=20,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.dictionaries(JSON_KEYS, JSON_VALUES, min_size=1, max_size=6))
def test_property_json_dumps_of_replayed_equals_original(
    tmp_path_factory: pytest.TempPathFactory, value: dict
) -> None:
    """For JSON-like values in any key order, json.dumps (no sort_keys) of the replayed value
    equals the original's.
    """
    original, replayed = record_then_replay(tmp_path_factory.mktemp("prop"), value)
    assert json.dumps(replayed) == json.dumps(original)


TYPED_VALUES = {
    "tuple": (1, "a", (2, 3)),
    "set": {1, 2, 3},
    "frozenset of tuples": frozenset({(1, 2), (3, 4)}),
    "bytes": b"\x00\xffraw",
    "bytearray": bytearray(b"abc"),
    "datetime aware": dt.datetime(2026, 11, 3, 9, 30, tzinfo=dt.timezone.utc),
    "datetime naive": dt.datetime(2026, 11, 3, 9, 30, 15, 123456),
    "date": dt.date(2026, 1, 2),
    "time": dt.time(8, 15),
    "timedelta": dt.timedelta(seconds=90.5),
    "decimal": decimal.Decimal("19.99"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "path": pathlib.PurePosixPath("/srv/data/x.csv"),
    "enum": Color.BLUE,
    "int enum": Level.HIGH,
    "str enum inside a dict": {"shade": Shade.DARK, "level": [Level.LOW]},
    "named tuple": Point(1, (2, 3)),
    "int keys": {1: "one", 2: "two", 10: (1, 2)},
    "dataclass": Order(7, [Line("SKU-1", 2, dt.datetime(2026, 5, 1, 12, 0))], ("x", "y")),
    "pydantic": Customer(name="Ann", since=dt.date(2020, 2, 2), score=decimal.Decimal("1.5")),
    "mixed": {"when": dt.date(2026, 3, 3), "pts": [Point(0, 1)], "ok": True, "color": Color.RED},
}


@pytest.mark.parametrize("name", list(TYPED_VALUES))
def test_types_come_back_as_the_tool_returned_them(tmp_path: pathlib.Path, name: str) -> None:
    """Tuples, sets, bytes, datetimes, Decimal, UUID, Path, Enum, named tuples, dataclasses and
    pydantic models replay as themselves.
    """
    value = TYPED_VALUES[name]
    original, replayed = record_then_replay(tmp_path, value)
    assert replayed == original
    assert shape(replayed) == shape(original)


def test_openai_chat_completion_comes_back_as_the_sdk_object(tmp_path: pathlib.Path) -> None:
    """An openai ChatCompletion with tool calls replays as a ChatCompletion the agent can read as
    usual.
    """
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-test",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )
    original, replayed = record_then_replay(tmp_path, completion)
    assert type(replayed) is ChatCompletion
    assert replayed == original
    assert replayed.choices[0].message.tool_calls[0].function.arguments == '{"q": "x"}'


def test_the_agent_may_mutate_a_replayed_value(tmp_path: pathlib.Path) -> None:
    """Two answers from one snapshot are separate objects: mutating the first does not change the
    second.
    """
    rec = Recorder(tmp_path / "rec.db")
    got: list[Any] = []
    tool = rec.tool("t")(lambda i: {"items": [1]})

    @rec.agent("m")
    def agent() -> None:
        for i in range(2):
            v = tool(i)
            got.append(list(v["items"]))
            v["items"].append("mutated")

    agent()
    rid = rec.last_run_id
    rec.close()
    got.clear()
    replay_run(rid, db=tmp_path / "rec.db", agent=agent)
    assert got == [[1], [1]]


def test_a_class_from_a_module_not_imported_is_never_imported(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay builds no class from a module the agent has not imported: the value comes back as
    plain JSON.
    """
    modname = f"fidelity_mod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{modname}.py").write_text(
        textwrap.dedent("""
        import dataclasses
        IMPORTED = []
        IMPORTED.append(1)

        @dataclasses.dataclass
        class Box:
            n: int
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(modname)
    value = mod.Box(3)
    del sys.modules[modname]
    original, replayed = record_then_replay(tmp_path, value)
    assert type(original).__name__ == "Box"
    assert replayed == {"n": 3}
    assert modname not in sys.modules


@pytest.mark.parametrize("via_cassette", [False, True])
def test_the_agent_is_called_with_its_input_in_the_recorded_key_order(
    tmp_path: pathlib.Path, via_cassette: bool
) -> None:
    """A ticket dict given to the agent comes back in its own key order, so json.dumps(ticket) in a
    prompt matches.
    """
    rec = Recorder(tmp_path / "rec.db")
    llm = rec.model("llm")(lambda prompt: "ok")

    @rec.agent("ticketed")
    def agent(ticket: dict) -> str:
        return llm(f"Ticket: {json.dumps(ticket)}")

    agent({"subject": "late", "order": "A-1", "body": "where is it"})
    rid = rec.last_run_id
    rec.close()
    source: Any = rid
    if via_cassette:
        with Store(tmp_path / "rec.db") as store:
            source = str(write_cassette(cassette_from_store(store, rid), tmp_path / f"{rid}.json"))
    res = replay_run(source, db=tmp_path / "rec.db", agent=agent)
    assert res.exception is None and res.diff.is_empty, str(res.diff)


def test_mutating_a_result_right_after_the_call_never_changes_what_was_recorded(
    tmp_path: pathlib.Path,
) -> None:
    """The recorded JSON is frozen on the agent's path: a result mutated at once still replays as
    the tool returned it.
    """
    rec = Recorder(tmp_path / "rec.db")
    tool = rec.tool("t")(lambda: {"rows": [(1, "a")], "n": 1})
    seen: list[str] = []

    @rec.agent("mutator")
    def agent() -> None:
        result = tool()
        seen.append(json.dumps(result))
        result["rows"].append((2, "b"))
        result["n"] = 2

    agent()
    rid = rec.last_run_id
    rec.close()
    res = replay_run(rid, db=tmp_path / "rec.db", agent=agent)
    assert res.diff.is_empty, str(res.diff)
    assert seen[1] == seen[0] == json.dumps({"rows": [[1, "a"]], "n": 1})
