"""Hostile values never break the agent or cost other runs' records (issue 11 item 5).

Each value is handed to a recorded tool (as an argument and as its return value) against a real
SQLite store: the tool still runs, the value is recorded as ``[unencodable: <what> at <path>]``
where it cannot be encoded faithfully, one warning is given, and every other run is stored.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from replay import Recorder
from replay.hashing import sha
from replay.store import Store
from replay.writer import RecordingLossWarning


class _RaisingRepr:
    def __repr__(self) -> str:
        raise ValueError("repr exploded")


class _RaisingIter(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise ValueError("iter exploded")


class _RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise ValueError("eq exploded")

    __hash__ = object.__hash__


class _RaisingItems(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("items exploded")


def _cycle() -> dict[str, Any]:
    d: dict[str, Any] = {"name": "loop"}
    d["self"] = d
    return d


def _deep(n: int) -> list[Any]:
    root: list[Any] = []
    cur = root
    for _ in range(n):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    return root


def _list_cycle() -> list[Any]:
    lst: list[Any] = [1]
    lst.append(lst)
    return lst


# (id, value, the marker the stored args must hold, or None when the value is kept faithfully)
HOSTILE: list[tuple[str, Any, str | None]] = [
    ("dict-cycle", _cycle(), '[unencodable: cycle at args["x"]["self"]]'),
    ("list-cycle", _list_cycle(), '[unencodable: cycle at args["x"][1]]'),
    ("deep-10000", _deep(10_000), "[unencodable: nested deeper than 200 levels at args"),
    ("lone-surrogate", "caf\ud800e", '[unencodable: lone surrogate in text at args["x"]]'),
    ("surrogate-key", {"\udc80": 1}, "[unencodable: lone surrogate in text at args"),
    ("object", object(), '[unencodable: builtins.object at args["x"]]'),
    ("raising-repr", _RaisingRepr(), "_RaisingRepr at args"),
    ("raising-iter", _RaisingIter([1, 2]), "_RaisingIter raised ValueError at args"),
    ("raising-eq", _RaisingEq(), "_RaisingEq at args"),
    ("raising-items", _RaisingItems(a=1), "_RaisingItems raised RuntimeError at args"),
    ("int-2^63", 2**63, None),
    ("int-above-2^64", 2**64 + 7, None),
    ("nan", float("nan"), '[unencodable: NaN at args["x"]]'),
    ("minus-inf", float("-inf"), '[unencodable: -inf at args["x"]]'),
    ("plus-inf-nested", {"a": [1.5, float("inf")]}, '[unencodable: +inf at args["x"]["a"][1]]'),
    ("none-kept", {"a": None, "b": [None, 0.5]}, None),
]


def _strings(v: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, dict):
        return [s for k, x in v.items() for s in [k, *_strings(x)]]
    if isinstance(v, list):
        return [s for x in v for s in _strings(x)]
    return []


def _stored_args(rec: Recorder, db: Path, run_id: str) -> Any:
    with Store(db) as s:
        step = [e for e in s.events(run_id) if e.kind == "tool_result"][0]
        body = s.snapshot(step.args_sha or "")
    return body


@pytest.mark.parametrize(
    ("value", "marker"), [(v, m) for _, v, m in HOSTILE], ids=[i for i, _, _ in HOSTILE]
)
def test_hostile_value_is_recorded_and_the_tool_still_runs(
    tmp_path: Path, value: Any, marker: str | None
) -> None:
    """The tool runs and returns, the run is stored with its steps, and an unencodable value is a marked placeholder."""
    db = tmp_path / "replay.db"
    rec = Recorder(db, store_args="redacted")
    calls = []

    @rec.tool("t")
    def t(x: Any) -> Any:
        calls.append(1)
        return x

    @rec.agent("a")
    def agent(x: Any) -> str:
        t(x)
        return "done"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert agent(value) == "done"
    rec.flush()
    assert calls == [1]
    assert rec.dropped == 0
    with Store(db) as s:
        run = s.get_run(rec.last_run_id or "")
        events = s.events(run.run_id)
    assert run.stop_reason == "completed"
    assert [e.kind for e in events] == ["run_start", "tool_result", "stop"]
    body = _stored_args(rec, db, run.run_id)
    assert body is not None
    text = body[0].decode("utf-8")  # always valid UTF-8: no surrogate reaches the store
    strings = _strings(json.loads(text))
    placeholder_warnings = [w for w in caught if issubclass(w.category, RecordingLossWarning)]
    if marker is None:
        assert "[unencodable" not in text
        assert placeholder_warnings == []
    else:
        assert any(marker in s for s in strings)
        assert len(placeholder_warnings) == 1  # input, args and output all hit it: warned once
    rec.close()


def test_a_cycle_is_hashed_as_its_placeholder(tmp_path: Path) -> None:
    """args_sha of a self-referencing dict is the sha of the documented placeholder structure."""
    rec = Recorder(tmp_path / "r.db")

    @rec.tool("t")
    def t(x: Any) -> str:
        return "ok"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rec.run("a"):
            t(_cycle())
    rec.flush()
    with Store(tmp_path / "r.db") as s:
        step = [e for e in s.events(rec.last_run_id or "") if e.kind == "tool_result"][0]
    assert step.args_sha == sha(
        {"x": {"name": "loop", "self": '[unencodable: cycle at args["x"]["self"]]'}}
    )
    rec.close()


def test_one_lone_surrogate_costs_no_other_run(tmp_path: Path) -> None:
    """40 runs written in one batch, one of them with a lone surrogate in its args: all 40 runs and 480 events are stored."""
    db = tmp_path / "replay.db"
    rec = Recorder(db)

    @rec.tool("t")
    def t(i: int, text: str) -> str:
        return text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(40):
            with rec.run("a", input={"i": i}):
                for j in range(10):
                    t(i, "bad \udfff" if (i, j) == (17, 3) else f"ok {j}")
    rec.flush()
    assert rec.dropped == 0
    with Store(db) as s:
        runs = s.runs(limit=None)
        n_events = sum(len(s.events(r.run_id)) for r in runs)
    assert len(runs) == 40
    assert n_events == 40 * 12
    rec.close()


def test_a_surrogate_in_a_label_loses_only_that_run(tmp_path: Path) -> None:
    """A lone surrogate in one run's label loses that run's records alone (counted), not the 39 beside it."""
    db = tmp_path / "replay.db"
    rec = Recorder(db)

    @rec.tool("t")
    def t(i: int) -> int:
        return i

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(40):
            with rec.run("a", input={"i": i}, labels={"team": "x\ud800" if i == 5 else "x"}):
                t(i)
        rec.flush()
    with Store(db) as s:
        runs = s.runs(limit=None)
    assert len(runs) == 39
    assert rec.dropped == 2  # its run_start and its stop; its step rows went in
    loss = [str(w.message) for w in caught if issubclass(w.category, RecordingLossWarning)]
    assert len(loss) == 1 and "\ud800" not in loss[0] and "UnicodeEncodeError" in loss[0]
    rec.close()


def test_the_warning_never_prints_user_keys_or_values(tmp_path: Path) -> None:
    """The placeholder warning names the kind of problem and a path, hiding keys that are not identifiers."""
    rec = Recorder(tmp_path / "r.db")

    @rec.tool("t")
    def t(payload: Any) -> str:
        return "ok"

    secret_key = "alice@example.com"
    loop: dict[str, Any] = {}
    loop[secret_key] = {"ssn 078-05-1120": loop}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with rec.run("a"):
            t(loop)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RecordingLossWarning)]
    assert len(msgs) == 1
    assert 'cycle at args["payload"][…][…]' in msgs[0]
    assert "alice" not in msgs[0] and "078-05" not in msgs[0]
    rec.close()


def test_the_stored_placeholder_is_redacted_like_any_text(tmp_path: Path) -> None:
    """A placeholder's path holds the user's keys, so it goes through redaction before it reaches disk."""
    db = tmp_path / "r.db"
    rec = Recorder(db, store_args="redacted")

    @rec.tool("t")
    def t(payload: Any) -> str:
        return "ok"

    loop: dict[str, Any] = {}
    loop["bob@example.com"] = loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rec.run("a"):
            t(loop)
    rec.flush()
    rec.close()
    assert b"bob@example.com" not in db.read_bytes()
    with Store(db) as s:
        step = [e for e in s.events(rec.last_run_id or "") if e.kind == "tool_result"][0]
        body = s.snapshot(step.args_sha or "")
    assert body is not None and b"[unencodable: cycle at args" in body[0]


@pytest.mark.parametrize(
    ("code", "reason"), [(0, "completed"), (None, "completed"), (3, "error"), ("bye", "error")]
)
def test_system_exit_ends_the_run_by_its_code(tmp_path: Path, code: Any, reason: str) -> None:
    """sys.exit() or sys.exit(0) in an agent ends its run `completed`, a nonzero code `error`; SystemExit still propagates."""
    db = tmp_path / "r.db"
    rec = Recorder(db)

    @rec.agent("a")
    def agent() -> None:
        sys.exit(code)

    with pytest.raises(SystemExit):
        agent()
    rec.flush()
    with Store(db) as s:
        assert s.get_run(rec.last_run_id or "").stop_reason == reason
    rec.close()


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"tokens_in": -5}, (0, 0, 0.0)),
        ({"cost_usd": float("nan")}, (0, 0, 0.0)),
        ({"cost_usd": -1.0}, (0, 0, 0.0)),
        ({"tokens_in": 3, "cost_usd": 0.5}, (3, 0, 0.5)),
    ],
)
def test_nonsense_usage_is_ignored_not_raised(
    tmp_path: Path, usage: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    """rec.usage() with a negative or NaN amount leaves it out with a warning; the run ends normally."""
    db = tmp_path / "r.db"
    rec = Recorder(db)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rec.run("a"):
            rec.usage(**usage)
    rec.flush()
    with Store(db) as s:
        u = s.get_run(rec.last_run_id or "").usage
    assert (u.tokens_in, u.tokens_out, u.cost_usd) == expected
    rec.close()


def test_a_lone_surrogate_in_an_error_message_is_stored_and_exported(tmp_path: Path) -> None:
    """A tool error whose message holds a lone surrogate is recorded (as U+FFFD) and the run exports as a cassette."""
    from click.testing import CliRunner

    from replay.cli import cli

    db = tmp_path / "r.db"
    rec = Recorder(db)

    @rec.tool("t")
    def t() -> None:
        raise ValueError("bad \ud800 byte")

    @rec.agent("a")
    def agent() -> str:
        with pytest.raises(ValueError):
            t()
        return "ok"

    agent()
    rec.flush()
    assert rec.dropped == 0
    res = CliRunner().invoke(
        cli,
        ["export", rec.last_run_id or "", "--db", str(db), "-o", str(tmp_path / "c")],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    text = next((tmp_path / "c").glob("*.json")).read_text(encoding="utf-8")
    assert '"message": "bad \ufffd byte"' in text
    rec.close()


@pytest.mark.parametrize("name", ["kb\x00search", "kb\ud800"])
def test_a_tool_name_sqlite_cannot_store_is_refused_at_decoration(
    tmp_path: Path, name: str
) -> None:
    """@rec.tool with a NUL or a lone surrogate in its name raises ValueError at import time, not mid-run."""
    rec = Recorder(tmp_path / "r.db")
    with pytest.raises(ValueError, match="tool name"):
        rec.tool(name)(lambda: None)
    with pytest.raises(ValueError, match="agent name"):
        rec.agent(name)(lambda: None)
    rec.close()


def test_a_run_name_with_a_nul_is_recorded_with_u_fffd(tmp_path: Path) -> None:
    """rec.run() with a NUL in its agent name does not fail the run: the name is stored with U+FFFD in its place."""
    db = tmp_path / "r.db"
    rec = Recorder(db)
    with rec.run("support\x00agent"):
        pass
    rec.flush()
    with Store(db) as s:
        assert [r.agent for r in s.runs()] == ["support\ufffdagent"]
    rec.close()


def test_a_run_with_hostile_args_replays_and_matches(tmp_path: Path) -> None:
    """Replaying a run whose tool got a cycle, a deep list and a lone surrogate gives the same args_sha: the diff is empty."""
    from replay import replay_run

    db = tmp_path / "r.db"
    rec = Recorder(db)

    @rec.tool("t")
    def t(x: Any) -> str:
        return "ok"

    @rec.agent("a")
    def agent(n: int) -> str:
        t(_cycle())
        t(_deep(5_000))
        t("caf\ud800e")
        return "done"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent(1)
        rec.flush()
        result = replay_run(rec.last_run_id or "", agent=agent, db=db)
    assert result.diff.is_empty, str(result.diff)
    assert len(result.steps) == 3
    rec.close()


def test_an_agent_calling_sys_exit_0_replays_as_completed(tmp_path: Path) -> None:
    """A replay of an agent that ends with sys.exit(0) catches the SystemExit, stops `completed`, and matches."""
    from replay import replay_run

    db = tmp_path / "r.db"
    rec = Recorder(db)

    @rec.tool("t")
    def t() -> int:
        return 1

    @rec.agent("a")
    def agent() -> None:
        t()
        sys.exit(0)

    with pytest.raises(SystemExit):
        agent()
    rec.flush()
    result = replay_run(rec.last_run_id or "", agent=agent, db=db)
    assert isinstance(result.exception, SystemExit)
    assert result.stop_reason == "completed" and result.diff.is_empty
    rec.close()
