"""Replay at scale and the one definition of a run's steps: what the fast paths must keep equal."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from replay import Recorder, propagate, replay_run
from replay.cassette import cassette_from_store, load_cassette, write_cassette
from replay.errors import ExpiredSnapshotsError, UnrecordedCall
from replay.recording import load_recording
from replay.redaction import Redactor
from replay.store import Store
from replay.store_api import open_store


def _nested_run(tmp_path: Path, db: str | None = None) -> tuple[Recorder, Any, str]:
    """A run whose tool calls another tool (a nested step) and a model, recorded for real."""
    rec = Recorder(db or str(tmp_path / "replay.db"))

    @rec.tool("kb.fetch")
    def fetch(doc: str) -> dict[str, str]:
        return {"doc": doc, "text": "refunds take 5 days"}

    @rec.tool("kb.search")
    def search(query: str) -> list[dict[str, str]]:
        return [fetch(f"{query}-1"), fetch(f"{query}-2")]

    @rec.model("llm")
    def llm(prompt: str) -> dict[str, Any]:
        return {"answer": prompt.upper(), "usage": {"prompt_tokens": 12, "completion_tokens": 3}}

    @rec.agent("nested")
    def agent(q: str) -> str:
        hits = search(q)
        return str(llm(hits[0]["text"])["answer"])

    agent("refund")
    rec.flush()
    run_id = rec.last_run_id
    assert run_id is not None
    return rec, agent, run_id


def test_recording_and_cassette_agree_on_the_steps_of_a_run(tmp_path: Path) -> None:
    """Recording.steps and Cassette.steps are the same top-level steps; all_steps adds nested."""
    rec, _agent, run_id = _nested_run(tmp_path)
    with Store(rec.db) as store:
        path = write_cassette(cassette_from_store(store, run_id), tmp_path / "c.json")
    from_store, cassette = load_recording(run_id, db=rec.db), load_cassette(path)
    top = [(e.step_id, e.tool) for e in from_store.steps]
    assert top == [(e.step_id, e.tool) for e in cassette.steps] == [(1, "kb.search"), (4, "llm")]
    assert [e.tool for e in from_store.all_steps] == [e.tool for e in cassette.all_steps]
    assert [e.tool for e in cassette.all_steps].count("kb.fetch") == 2
    rec.close()


def test_trusted_store_rows_load_as_the_validated_events(tmp_path: Path) -> None:
    """Events read from a trusted store without validation equal the validated ones, usage too."""
    rec, _agent, run_id = _nested_run(tmp_path)
    with Store(rec.db) as store:
        checked, trusted = store.events(run_id), store.events(run_id, trusted=True)
    assert trusted == checked
    assert [e.model_dump() for e in trusted] == [e.model_dump() for e in checked]
    assert any(e.usage is not None and e.usage.tokens_in == 12 for e in trusted)
    rec.close()


def test_a_replay_loads_the_events_and_output_snapshots_the_readers_return(
    tmp_path: Path, store_url: str
) -> None:
    """`replay_events` (one query, unvalidated) returns what `events` and `snapshots` return, on
    both backends, and says when an output's snapshot is gone; a replay then refuses that step."""
    rec, agent, run_id = _nested_run(tmp_path, store_url)
    rec.close()
    with open_store(store_url) as store:
        events, snaps, gone = store.replay_events(run_id)
        assert events == store.events(run_id) and not gone
        outputs = [e.output_sha for e in events if e.output_sha]
        assert len(outputs) >= 4 and snaps == store.snapshots(outputs)
        assert any(e.usage is not None and e.usage.tokens_in == 12 for e in events)
        pruned = next(e.output_sha for e in events if e.tool == "llm")
    _delete_snapshot(store_url, pruned)
    with open_store(store_url) as store:
        events, snaps, gone = store.replay_events(run_id)
        assert gone and pruned not in snaps and len(snaps) == len(outputs) - 1
    with pytest.raises(ExpiredSnapshotsError, match="llm"):
        replay_run(run_id, agent=agent, db=store_url)


def test_fields_most_steps_leave_empty_load_as_the_readers_return_them(
    tmp_path: Path, store_url: str
) -> None:
    """An error, a usage, a parent step, a concurrent group, a stop reason, a typed and a truncated
    output (read in one packed column by `replay_events`) come back as `events` and `snapshots`
    return them, on both backends."""
    rec = Recorder(store_url, max_snapshot_bytes=1000)
    barrier = threading.Barrier(2)

    @rec.tool("kb.fetch")
    def fetch(doc: str) -> _Hit:
        return _Hit(doc)

    @rec.tool("kb.search")
    def search(query: str) -> list[_Hit]:
        barrier.wait(5)  # both searches in flight at once: a concurrent group
        return [fetch(query)]  # a nested step: its parent is the search

    @rec.tool("http.get")
    def get(url: str) -> str:
        raise TimeoutError("upstream too slow")

    @rec.tool("blob.read")
    def read() -> str:
        return "x" * 5000  # over max_snapshot_bytes: stored truncated

    @rec.model("llm")
    def llm(prompt: str) -> dict[str, Any]:
        return {"answer": prompt, "usage": {"prompt_tokens": 12, "completion_tokens": 3}}

    @rec.agent("every-field")
    def agent() -> str:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(propagate(search), ["a", "b"]))
        with contextlib.suppress(TimeoutError):
            get("https://example.invalid/slow")
        read()
        return str(llm("sum up")["answer"])

    agent()
    rec.flush()
    run_id = rec.last_run_id
    rec.close()
    with open_store(store_url) as store:
        events, snaps, gone = store.replay_events(run_id)
        assert events == store.events(run_id) and not gone
        assert snaps == store.snapshots([e.output_sha for e in events if e.output_sha])
    for field in ("error", "stop_reason", "usage", "parent_step_id", "concurrent_group"):
        assert any(getattr(e, field) is not None for e in events), field
    assert any(type_name for _, type_name, _ in snaps.values())
    assert any(truncated for _, _, truncated in snaps.values())


@dataclasses.dataclass
class _Hit:
    doc: str


def test_steps_answered_from_the_recording_are_timed_within_the_replayed_run(
    tmp_path: Path,
) -> None:
    """An answered step's time is the replayed run's start plus the time since (on the recorded
    clock by default, on the real one with clock="real")."""
    rec, agent, run_id = _nested_run(tmp_path)
    for clock in ("recorded", "real"):
        res = replay_run(run_id, agent=agent, db=rec.db, clock=clock)
        run = res.replayed
        assert res.diff.is_empty and run.ended_ms is not None
        assert len(res.steps) == 2
        assert all(run.started_ms <= e.ts_ms <= run.ended_ms for e in res.steps)
    rec.close()


def _delete_snapshot(store_url: str, sha: str | None) -> None:
    """Remove one snapshot as pruning would, through the database's own client."""
    if "://" in store_url:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as pg:
            pg.execute("DELETE FROM snapshots WHERE sha = %s", (sha,))
        return
    with contextlib.closing(sqlite3.connect(store_url)) as conn, conn:
        conn.execute("DELETE FROM snapshots WHERE sha = ?", (sha,))


def test_replay_in_memory_records_what_a_replay_into_a_store_records(tmp_path: Path) -> None:
    """The replayed run held in memory has the events a replay written to record_to has."""
    rec, agent, run_id = _nested_run(tmp_path)
    in_memory = replay_run(run_id, agent=agent, db=rec.db)
    stored = replay_run(run_id, agent=agent, db=rec.db, record_to=tmp_path / "replays.db")
    assert in_memory.diff.is_empty and stored.diff.is_empty

    def shape(res: Any) -> list[tuple[Any, ...]]:
        keep = ("kind", "step_id", "tool", "args_sha", "output_sha", "status", "parent_step_id")
        return [tuple(getattr(e, k) for k in keep) for e in res.replayed_events]

    assert shape(in_memory) == shape(stored)
    assert in_memory.usage == stored.usage and in_memory.replayed.stop_reason == "completed"
    rec.close()


def test_repeated_and_secret_args_hash_as_recorded(tmp_path: Path) -> None:
    """Calls repeating earlier args (a secret among them) hash as the recorder hashed them."""
    rec = Recorder(str(tmp_path / "replay.db"))

    @rec.tool("crm.get")
    def get(email: str, token: str) -> dict[str, str]:
        return {"email": email, "tier": "gold"}

    @rec.agent("repeat")
    def agent(n: int) -> int:
        args = [("ana@example.com", "sk-live-abcdefghijklmnop1234"), ("bo@example.com", "x")]
        return sum(len(get(*args[i % 2])["tier"]) for i in range(n))

    agent(6)
    rec.flush()
    result = replay_run(rec.last_run_id, agent=agent, db=rec.db)
    recorded = [e.args_sha for e in result.recording.steps]
    assert [e.args_sha for e in result.steps] == recorded
    assert len(set(recorded)) == 2 and result.diff.is_empty


def test_a_models_price_change_shows_in_the_replays_spend(tmp_path: Path) -> None:
    """A model answered from the recording keeps its recorded tokens, priced at today's prices."""
    rec = Recorder(str(tmp_path / "replay.db"))
    prices = {"in": 1.0}

    def build() -> Any:
        @rec.model("llm", price_in_per_mtok=prices["in"], price_out_per_mtok=2.0)
        def llm(prompt: str) -> dict[str, Any]:
            return {"answer": "ok", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

        @rec.agent("priced")
        def agent(q: str) -> str:
            return str(llm(q)["answer"])

        return agent

    build()("hello")
    rec.flush()
    same = replay_run(rec.last_run_id, agent=build(), db=rec.db)
    assert same.steps[0].usage == same.recording.steps[0].usage
    assert same.usage is not None and same.usage.tokens_in == 1000 and same.diff.is_empty
    prices["in"] = 3.0
    dearer = replay_run(rec.last_run_id, agent=build(), db=rec.db)
    assert dearer.steps[0].usage is not None
    assert (dearer.steps[0].usage.tokens_in, dearer.steps[0].usage.cost_usd) == (1000, 0.004)
    assert dearer.recording.steps[0].usage is not None
    assert dearer.recording.steps[0].usage.cost_usd == 0.002


def test_args_recorded_as_they_are_match_without_the_redactor_and_redacted_ones_through_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Args with nothing to redact are matched by their hash alone (the redactor is not run for
    them); args holding an email or a secret key still match through the redactor, and a changed
    arg does not match: the same answers as matching every call through the redactor."""
    rec = Recorder(str(tmp_path / "replay.db"))

    @rec.tool("crm.find")
    def find(query: dict[str, Any]) -> dict[str, Any]:
        return {"found": sorted(query)}

    @rec.agent("crm")
    def agent(name: str) -> list[Any]:
        return [
            find({"name": name, "limit": 5}),
            find({"email": "ada.lovelace@example.com", "limit": 5}),
            find({"api_key": "sk-live-0123456789abcdef0123", "z": 1, "a": 2}),
        ]

    agent("ada")
    rec.flush()
    run_id = rec.last_run_id
    rec.close()
    seen: list[Any] = []
    canonical = Redactor.canonical

    def counting(self: Redactor, value: Any, size_hint: int | None = None) -> bytes:
        seen.append(value)
        return canonical(self, value, size_hint)

    monkeypatch.setattr(Redactor, "canonical", counting)
    res = replay_run(run_id, agent=agent, db=rec.db)
    assert res.exception is None and res.diff.is_empty, res.diff.to_text()
    queries = [v["query"] for v in seen]  # the bound args: {"query": {...}}
    assert {"name": "ada", "limit": 5} not in queries  # matched without the redactor
    assert any("email" in q for q in queries) and any("api_key" in q for q in queries)

    def changed(name: str) -> Any:
        return find({"name": name + "-2", "limit": 5})

    res = replay_run(run_id, agent=changed, db=rec.db)
    assert isinstance(res.exception, UnrecordedCall)


def test_two_tools_called_with_the_same_args_each_answer_their_own_steps(tmp_path: Path) -> None:
    """The answers are indexed per tool: two tools called with the same args (the same args_sha)
    each get their own recorded answers, in order, and a tool never gets another's answer."""
    rec = Recorder(str(tmp_path / "replay.db"))
    served: dict[str, int] = {"crm.get": 0, "billing.get": 0}

    def make(name: str) -> Any:
        @rec.tool(name)
        def tool(customer: str) -> dict[str, Any]:
            served[name] += 1
            return {"tool": name, "n": served[name]}

        return tool

    crm, billing = make("crm.get"), make("billing.get")

    @rec.agent("two-tools")
    def agent(customer: str) -> list[Any]:
        return [crm(customer), billing(customer), billing(customer), crm(customer)]

    agent("c-1")
    rec.flush()
    run_id = rec.last_run_id
    rec.close()
    res = replay_run(run_id, agent=agent, db=rec.db)
    assert res.diff.is_empty, res.diff.to_text()
    assert [(o["tool"], o["n"]) for o in res.output] == [
        ("crm.get", 1),
        ("billing.get", 1),
        ("billing.get", 2),
        ("crm.get", 2),
    ]
    assert len({s.args_sha for s in res.steps}) == 1  # one args_sha, four answers

    def billing_thrice(customer: str) -> list[Any]:
        return [crm(customer), billing(customer), billing(customer), billing(customer)]

    res = replay_run(run_id, agent=billing_thrice, db=rec.db)
    assert isinstance(res.exception, UnrecordedCall) and res.exception.tool == "billing.get"
