"""Benchmark of replay (issue 3, Speed; issue 13, replay at scale).

Run: ``python benchmarks/bench_replay.py`` (``--scale`` for the replay-at-scale rows only,
``--sequence`` for the model-matching row). Figures:
- replay + diff of a recorded 10,000-step run (median of 3), target <= 1 s;
- replay + diff at 10,000 and 100,000 steps against a hand-rolled positional replay of the same
  recording measured in the same run (read the rows with sqlite3, answer the n-th call with the
  n-th recorded output, compare the (tool, args sha) sequences): target <= 2x; and the memory a
  replay allocates per step at its peak (tracemalloc), target about half of 5.7 KB;
- replay + diff of a 10,000-step run whose agent calls a model each step, after a prompt change,
  with ``match={"llm": "sequence"}`` against the positional replay: target <= 3x;
- the fixed tool layer's answer per call in a 1,000-step and a 10,000-step recording (it must
  not grow with the recording: a dict keyed by (tool, args_sha)), target < 50 us;
- loading a 10,000-step cassette, target <= 0.5 s; reference: json.loads of the same file.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay import Recorder, replay_run  # noqa: E402
from replay.cassette import cassette_from_store, load_cassette, write_cassette  # noqa: E402
from replay.store import Store  # noqa: E402

_STATE: dict[str, Any] = {}


def _build(n: int, d: str) -> tuple[Any, str, Any]:
    rec = Recorder(os.path.join(d, f"r{n}.db"))

    @rec.tool("lookup")
    def lookup(i: int) -> dict[str, Any]:
        return {"i": i, "status": "ok", "note": "customer order shipped"}

    call_ns: list[int] = []

    @rec.agent("bench-agent")
    def agent(n_steps: int) -> int:
        total = 0
        call_ns.clear()
        for i in range(n_steps):
            t0 = time.perf_counter_ns()
            total += lookup(i)["i"]
            call_ns.append(time.perf_counter_ns() - t0)
        return total

    agent.call_ns = call_ns  # type: ignore[attr-defined]

    agent(n)
    rec.flush(120)
    return rec, rec.last_run_id, agent


def _lookup_args(i: int) -> dict[str, Any]:
    return {"i": i}


def _positional(
    db: str, run_id: str, n_steps: int, tool: str = "lookup", args_of: Any = _lookup_args
) -> float:
    """Seconds for a hand-rolled positional replay of the run: the baseline of the ratio.

    What a team writes without agent-replay: read the steps and their outputs with sqlite3, answer
    the n-th call with the n-th output, hash the args as the recorder does, compare the sequences.
    """
    t0 = time.perf_counter()
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT e.tool, e.args_sha, s.body FROM events e LEFT JOIN snapshots s ON s.sha = "
        "e.output_sha"
        " WHERE e.run_id = ? AND e.kind IN ('tool_result', 'model_result') ORDER BY e.seq",
        (run_id,),
    ).fetchall()
    con.close()
    outputs = [json.loads(body) for _, _, body in rows]
    seen: list[tuple[str, str]] = []

    def call(i: int) -> Any:
        args = json.dumps(args_of(i), sort_keys=True, separators=(",", ":"))
        seen.append((tool, hashlib.sha256(args.encode()).hexdigest()[:24]))
        return outputs[len(seen) - 1]

    for i in range(n_steps):
        call(i)
    # positional: the n-th call is answered whatever its args; only the sequence length is checked
    assert len(seen) == len(rows) and all(r[0] == tool for r in rows)
    return time.perf_counter() - t0


#: The prompt the model bench agent sends: changed between record and replay (a fix to the prompt).
_PROMPT = {"system": "You are a support agent."}


def _model_args(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": _PROMPT["system"]},
            {"role": "user", "content": f"ticket {i}: where is my order?"},
        ]
    }


def _build_model(n: int, d: str) -> tuple[Any, str, Any]:
    """A recorded run whose agent calls a model each step (OpenAI-shaped answers with usage)."""
    rec = Recorder(os.path.join(d, f"m{n}.db"))

    @rec.model("llm")
    def llm(messages: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "choices": [{"message": {"role": "assistant", "content": "It shipped yesterday."}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5},
        }

    @rec.agent("bench-model-agent")
    def agent(n_steps: int) -> int:
        return sum(len(llm(**_model_args(i))["choices"]) for i in range(n_steps))

    _PROMPT["system"] = "You are a support agent."
    agent(n)
    rec.flush(120)
    return rec, rec.last_run_id, agent


def sequence_rows(d: str, sizes: tuple[int, ...] = (10_000,)) -> list[dict[str, Any]]:
    """Replay + diff with ``match={"llm": "sequence"}`` after a prompt change, vs positional."""
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rec, rid, agent = _build_model(n, d)
        rec.close()
        _PROMPT["system"] = "You are a careful support agent."  # every model call's args change
        ours, base = [], []
        for _ in range(3):
            gc.collect()
            t0 = time.perf_counter()
            res = replay_run(rid, agent=agent, db=rec.db, match={"llm": "sequence"})
            ours.append(time.perf_counter() - t0)
            assert res.exception is None and len(res.steps) == n, res.exception
            assert sum(1 for c in res.diff.changes if c.kind == "args_changed") == n
            del res
            gc.collect()
            base.append(_positional(str(rec.db), rid, n, "llm", _model_args))
        name = f'replay + diff, match={{"llm": "sequence"}}, {n:,} model steps'
        rows.append(_against_positional(name, ours, base, limit=3))
    return rows


def _against_positional(
    name: str, ours: list[float], base: list[float], limit: float
) -> dict[str, Any]:
    """A row: the median replay time against the median positional replay of the same run."""
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "name": name,
        "value": round(o, 3),
        "unit": "s",
        "reference_name": "hand-rolled positional replay",
        "reference_value": round(b, 3),
        "ratio": round(o / b, 2),
        "target": f"<= {limit:g}x",
        "ok": o / b <= limit,
    }


def _peak_bytes(fn: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def scale_rows(d: str, sizes: tuple[int, ...] = (10_000, 100_000)) -> list[dict[str, Any]]:
    """Replay + diff against the positional baseline, and peak memory per step, at each size."""
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rec, rid, agent = _build(n, d)
        rec.close()
        reps = 3 if n <= 10_000 else 1
        ours, base = [], []
        for _ in range(reps):
            gc.collect()
            t0 = time.perf_counter()
            res = replay_run(rid, agent=agent, db=rec.db)
            ours.append(time.perf_counter() - t0)
            assert res.diff.is_empty, res.diff.to_text()
            del res
            gc.collect()
            base.append(_positional(str(rec.db), rid, n))
        rows.append(_against_positional(f"replay + diff, {n:,} steps", ours, base, limit=2))
        peak = _peak_bytes(functools.partial(replay_run, rid, agent=agent, db=rec.db))
        per_step = peak / n / 1024
        rows.append(
            {
                "name": f"replay + diff, peak memory per step, {n:,} steps",
                "value": round(per_step, 2),
                "unit": "KB",
                "reference_name": "-",
                "reference_value": None,
                "ratio": None,
                "target": "<= 2.85 KB (half of 5.7)",
                "ok": per_step <= 2.85,
            }
        )
    return rows


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        rec, rid, agent = _build(10_000, d)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = replay_run(rid, agent=agent, db=rec.db)
            times.append(time.perf_counter() - t0)
            assert res.diff.is_empty, res.diff.to_text()
        med = statistics.median(times)
        rows.append(
            {
                "name": "replay + diff of a 10,000-step run (median of 3)",
                "value": round(med, 3),
                "unit": "s",
                "reference_name": "-",
                "reference_value": None,
                "ratio": None,
                "target": "<= 1 s",
                "ok": med <= 1.0,
            }
        )
        per_call = {}
        for n in (1_000, 10_000):
            r2, rid2, agent2 = (rec, rid, agent) if n == 10_000 else _build(n, d)
            replay_run(rid2, agent=agent2, db=r2.db)
            # what the agent waits for per tool call: hash, look up, rebuild, hand to the writer
            per_call[n] = statistics.median(agent2.call_ns) / 1000
            if n != 10_000:
                r2.close()
        rows.append(
            {
                "name": "fixed tool layer: answer per call (median), 10,000 steps",
                "value": round(per_call[10_000], 1),
                "unit": "us",
                "reference_name": "same, 1,000-step recording",
                "reference_value": round(per_call[1_000], 1),
                "ratio": round(per_call[10_000] / per_call[1_000], 2),
                "target": "< 50 us and flat",
                "ok": per_call[10_000] < 50 and per_call[10_000] / per_call[1_000] < 2,
            }
        )
        with Store(rec.db) as s:
            path = write_cassette(cassette_from_store(s, rid), Path(d) / "c.json")
        loads = []
        raw = []
        for _ in range(3):
            t0 = time.perf_counter()
            load_cassette(path)
            loads.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            json.loads(path.read_bytes())
            raw.append(time.perf_counter() - t0)
        lm, rm = statistics.median(loads), statistics.median(raw)
        rows.append(
            {
                "name": "load + validate a 10,000-step cassette",
                "value": round(lm, 3),
                "unit": "s",
                "reference_name": "json.loads of the same file",
                "reference_value": round(rm, 3),
                "ratio": round(lm / rm, 2),
                "target": "<= 0.5 s",
                "ok": lm <= 0.5,
            }
        )
        rec.close()
        rows.extend(scale_rows(d))
        rows.extend(sequence_rows(d))
    return rows


if __name__ == "__main__":
    from bench_recorder import print_rows

    if "--scale" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            print_rows(scale_rows(tmp) + sequence_rows(tmp))
    elif "--sequence" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            print_rows(sequence_rows(tmp))
    else:
        print_rows(run())
