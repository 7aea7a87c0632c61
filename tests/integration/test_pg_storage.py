"""What the compact PostgreSQL events table (schema 10) keeps: every sha as written, 63-bit ids.

The PostgreSQL store keeps events' shas as bytes and its step ids as BIGINT; every reader still
sees the text and numbers it wrote, on both backends, and a store written before is converted.
"""

from __future__ import annotations

import psycopg
import pytest

from replay.migrations import PG_STEPS, SCHEMA_VERSION, STEPS
from replay.models import Event, Run, new_run_id
from replay.pg_store import sha_bytes, sha_text
from replay.store_api import open_store

T0 = 1_780_000_000_000
BIG = 2**40 + 7  # past a 32-bit integer
SHAS = (
    "ab" * 32,  # a sha256: 32 bytes on PostgreSQL
    "ff" + "01" * 31,  # hex whose first byte is the marker of text
    "AB" * 32,  # upper case: not the hex the hasher writes, kept as text
    "0123456789abcdef01234567",  # a shorter hex
    "not a sha / ünïcode",
    "abc",  # odd length
    "",
)


def _run_and_events(run_id: str) -> tuple[Run, list[Event]]:
    run = Run(run_id=run_id, agent="a", started_ms=T0, ended_ms=T0 + 9, stop_reason="completed")
    events = [Event(run_id=run_id, kind="run_start", ts_ms=T0)]
    for i, sha in enumerate(SHAS):
        events.append(
            Event(
                run_id=run_id,
                kind="tool_result",
                ts_ms=T0 + i,
                step_id=BIG + i,
                parent_step_id=BIG - 1,
                concurrent_group=BIG,
                tool="t",
                args_sha=sha,
                output_sha=SHAS[-1 - i],
                status="ok",
            )
        )
    events.append(Event(run_id=run_id, kind="stop", ts_ms=T0 + 9, stop_reason="completed"))
    return run, events


def test_shas_and_step_ids_past_32_bits_read_back_as_written(store_url: str) -> None:
    """Any sha text and step, parent and group ids above 2**31 come back as written, through the
    event reader, a query and the ISO view."""
    run_id = new_run_id(T0)
    run, events = _run_and_events(run_id)
    with open_store(store_url) as store:
        store.write_batch(runs=[run], events=events)
        assert store.events(run_id) == events
        got = store.query(
            "SELECT e.args_sha, e.output_sha, e.step_id FROM events e "
            "WHERE e.run_id = ? AND e.kind = 'tool_result' ORDER BY e.seq",
            [run_id],
        )
        assert got == [(e.args_sha, e.output_sha, e.step_id) for e in events[1:-1]]
        view = store.query("SELECT args_sha FROM events_view WHERE step_id = ?", [BIG])
        assert view == [(SHAS[0],)]


def test_postgresql_keeps_a_hex_sha_as_its_bytes(pg_url: str) -> None:
    """On PostgreSQL a sha256 takes 32 bytes, and the SQL conversions agree with the store's."""
    run_id = new_run_id(T0)
    run, events = _run_and_events(run_id)
    with open_store(pg_url) as store:
        store.write_batch(runs=[run], events=events)
    with psycopg.connect(pg_url) as conn:
        sizes = conn.execute(
            "SELECT octet_length(args_sha) FROM events WHERE step_id = %s", (BIG,)
        ).fetchall()
        assert sizes == [(32,)]
        for sha in SHAS:
            stored, text = conn.execute(
                "SELECT replay_sha_bytes(%s), replay_sha_text(replay_sha_bytes(%s))", (sha, sha)
            ).fetchone()
            assert (stored, text) == (sha_bytes(sha), sha)
            assert sha_text(stored) == sha


def test_a_postgresql_store_written_before_schema_10_is_converted(pg_url: str) -> None:
    """A store at schema 9 (text shas, 32-bit step ids) opens migrated with its events intact."""
    old = next(i for i, name in enumerate(STEPS) if name.endswith("_pg_compact_storage"))
    run_id = new_run_id(T0)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in STEPS[:old]:
            for stmt in PG_STEPS[name]:
                conn.execute(stmt)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s)", (str(old),))
        for seq, kind, sha in ((-(2**62), "run_start", None), (1, "tool_result", SHAS[0])):
            conn.execute(
                "INSERT INTO events (run_id, seq, kind, ts_ms, step_id, tool, args_sha, "
                "output_sha, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (run_id, seq, kind, T0, None if sha is None else 1, "t", sha, SHAS[4], "ok"),
            )
    with open_store(pg_url) as store:
        events = store.events(run_id)
        assert [(e.kind, e.args_sha, e.output_sha) for e in events] == [
            ("run_start", None, SHAS[4]),
            ("tool_result", SHAS[0], SHAS[4]),
        ]
        big = Event(run_id=run_id, kind="tool_result", ts_ms=T0, step_id=BIG, tool="t")
        store.write_batch(events=[big])
        assert store.events(run_id)[-1] == big
    with psycopg.connect(pg_url) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'events'"
            ).fetchall()
        )
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert types["args_sha"] == types["output_sha"] == "bytea"
    assert types["step_id"] == types["parent_step_id"] == types["concurrent_group"] == "bigint"
    assert version == (str(SCHEMA_VERSION),)


@pytest.mark.parametrize("sha", SHAS)
def test_sha_bytes_and_sha_text_are_inverse(sha: str) -> None:
    """Every sha text survives the conversion to bytes and back."""
    stored = sha_bytes(sha)
    assert stored is not None and sha_text(stored) == sha
