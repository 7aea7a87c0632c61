"""Replay at scale and the one definition of a run's steps: what the fast paths must keep equal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replay import Recorder, replay_run
from replay.cassette import cassette_from_store, load_cassette, write_cassette
from replay.recording import load_recording
from replay.store import Store


def _nested_run(tmp_path: Path) -> tuple[Recorder, Any, str]:
    """A run whose tool calls another tool (a nested step) and a model, recorded for real."""
    rec = Recorder(str(tmp_path / "replay.db"))

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
