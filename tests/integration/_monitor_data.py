"""A generated store for the monitoring tests: a few hundred runs with every case stats must handle.

Varied stop reasons (a custom one too), tool errors of every bucket and unnamed ones, usage on the
run or only on its model steps, tool calls counted on the run row or only in its usage, agents
without model steps, replays (left out of every figure), runs still open in a live process, runs
from before liveness existed (no pid), and runs whose process is gone (killed, inferred).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from replay.alerts import AlertRules
from replay.liveness import this_host
from replay.models import STOP_REASONS, Event, Run, Usage
from replay.store_api import StoreAPI, open_store

HOUR = 3_600_000
DAY = 24 * HOUR
#: Above Linux's pid_max: no process has it, so liveness reads its runs as killed.
DEAD_PID = 4_194_305
AGENTS = ("support", "billing", "batch")  # "batch" records no model steps
# Every reason of the taxonomy, "completed" more often, and one a user added.
REASONS = ("completed", "completed", *STOP_REASONS, "escalated")
ERRORS = ("HTTP429", "HTTP503", "TimeoutError", "ValueError", "openai.RateLimitError", None)


#: Thresholds at which every rule fires on the generated store (so each worst-runs query runs).
EVERYTHING_FIRES = AlertRules(
    min_runs=5,
    tool_calls_p95_ratio=0.1,
    spend_ratio=0.1,
    latency_p95_ratio=0.1,
    loop_detected_min_increase=0.0,
    tool_timeout_ratio=0.1,
    tool_timeout_min_increase=0.0,
    retry_baseline_max=1.0,
    retry_current_min=0.0,
    worst_runs=4,
)


def _steps(rng: random.Random, rid: str, agent: str, start: int) -> tuple[list[Event], Usage]:
    events, ts = [], start
    tin = tout = calls = 0
    cost = 0.0
    for step in range(1, rng.randrange(1, 12) + 1):
        ts += rng.randrange(1, 900)
        if agent != "batch" and rng.random() < 0.3:
            u = Usage(
                tokens_in=rng.randrange(0, 3000),
                tokens_out=rng.randrange(0, 400),
                cost_usd=round(rng.random() / 100, 6),
            )
            tin, tout, cost = tin + u.tokens_in, tout + u.tokens_out, cost + u.cost_usd
            usage = None if rng.random() < 0.1 else u  # a model step without usage
            model = {"kind": "model_result", "tool": "openai.chat", "status": "ok"}
            events.append(Event(run_id=rid, ts_ms=ts, step_id=step, usage=usage, **model))
            continue
        calls += 1
        failed = rng.random() < 0.2
        events.append(
            Event(
                run_id=rid,
                kind="tool_result",
                ts_ms=ts,
                step_id=step,
                tool=f"tool.{step % 3}",
                duration_ms=rng.randrange(1, 900),
                status="error" if failed else "ok",
                error=rng.choice(ERRORS) if failed else None,
            )
        )
    return events, Usage(tokens_in=tin, tokens_out=tout, cost_usd=cost, tool_calls=calls)


def _run(rng: random.Random, i: int, now: int) -> tuple[Run, list[Event]]:
    agent = AGENTS[i % len(AGENTS)]
    start = now - rng.randrange(1, 10 * DAY)
    rid = f"r_{start:013d}{i:05d}"
    events, usage = _steps(rng, rid, agent, start)
    end = (events[-1].ts_ms if events else start) + rng.randrange(1, 50)
    kind = rng.random()
    reason: str | None = rng.choice(REASONS)
    drift = rng.random() if start > now - 2 * DAY else 1.0
    if drift < 0.25:  # a recent drift, so the alert rules have something to find
        reason = "loop_detected" if drift < 0.15 else "tool_timeout"
    pid = None
    last_seen = None
    if kind < 0.05:  # the process died without a stop event: killed (inferred)
        reason, pid, last_seen = None, DEAD_PID, end
    elif kind < 0.08:  # still running in this (live) process
        reason, pid, last_seen = None, os.getpid(), now
    elif kind < 0.10:  # written before liveness existed: unfinished, never inferred
        reason = None
    run_usage = usage
    if i % 7 == 0:  # usage kept on the model steps only
        run_usage = Usage()
    tool_calls = usage.tool_calls if i % 5 else 0  # some recorders fill only usage.tool_calls
    run = Run(
        run_id=rid,
        agent=agent,
        started_ms=start,
        ended_ms=None if reason is None else end,
        stop_reason=reason,
        usage=run_usage,
        tool_calls=tool_calls,
        host=this_host(),
        pid=pid,
        last_seen_ms=last_seen,
        replay_of=f"r_original{i}" if i % 11 == 0 else None,
    )
    start_ev = Event(run_id=rid, kind="run_start", ts_ms=start)
    stop = (
        []
        if reason is None
        else [Event(run_id=rid, kind="stop", ts_ms=end, stop_reason=reason, usage=run_usage)]
    )
    return run, [start_ev, *events, *stop]


def build_store(
    path: Path | str, n_runs: int = 400, seed: int = 7, split: bool = False
) -> tuple[StoreAPI, int]:
    """A store of `n_runs` generated runs over the last 10 days; returns it and its "now".

    With `split`, the runs are written as a recorder spread over batches writes them: a third
    with all their events (their rows hold step totals), a third with part of their events then
    the rest without the run row (no totals: read from events), a third with no events, then
    all of them, then the run row again (totals computed from the events written before).
    """
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    store = open_store(path)
    runs, events, late, again = [], [], [], []
    for i in range(n_runs):
        run, evs = _run(rng, i, now)
        runs.append(run)
        if not split or i % 3 == 0:
            events.extend(evs)
        elif i % 3 == 1:
            events.extend(evs[: len(evs) // 2])
            late.extend(evs[len(evs) // 2 :])
        else:
            late.extend(evs)
            again.append(run)
    store.write_batch(runs=runs, events=events)
    if split:
        store.write_batch(events=late)
        store.write_batch(runs=again)
    return store, now
