"""Which runs without a stop event read as killed (inferred): pid, host and heartbeat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from replay import Recorder
from replay.liveness import STALE_MS, infer_killed, this_host
from replay.models import Run
from replay.store import Store

NOW = 1_800_000_000_000


def _run(**kw: object) -> Run:
    base: dict[str, object] = {
        "run_id": "r_x",
        "agent": "a",
        "started_ms": NOW - 1000,
        "host": this_host(),
    }
    base.update(kw)
    return Run.model_validate(base)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_run_of_a_live_process_on_this_host_is_still_running() -> None:
    """An open run whose process exists (this one) keeps no stop reason."""
    (r,) = infer_killed([_run(pid=os.getpid(), last_seen_ms=NOW)], now_ms=NOW)
    assert r.stop_reason is None and not r.stop_inferred


def test_a_run_of_a_dead_process_on_this_host_is_killed() -> None:
    """An open run whose process is gone reads as killed, marked inferred."""
    (r,) = infer_killed([_run(pid=_dead_pid(), last_seen_ms=NOW)], now_ms=NOW)
    assert r.stop_reason == "killed" and r.stop_inferred


def test_another_host_is_judged_by_its_heartbeat() -> None:
    """On another host the pid cannot be checked: a fresh heartbeat means running, a stale one
    killed.
    """
    fresh, stale = infer_killed(
        [
            _run(host="elsewhere", pid=1, last_seen_ms=NOW - 1000),
            _run(run_id="r_y", host="elsewhere", pid=1, last_seen_ms=NOW - STALE_MS - 1),
        ],
        now_ms=NOW,
    )
    assert fresh.stop_reason is None
    assert stale.stop_reason == "killed" and stale.stop_inferred


def test_rows_without_a_pid_and_finished_runs_are_left_alone() -> None:
    """Rows from before schema 4 (no pid) stay as they are; a real stop is never replaced."""
    legacy, done = infer_killed(
        [_run(), _run(run_id="r_y", pid=_dead_pid(), stop_reason="completed")],
        now_ms=NOW + 10 * STALE_MS,
    )
    assert legacy.stop_reason is None
    assert done.stop_reason == "completed" and not done.stop_inferred


def test_the_writer_refreshes_the_heartbeat_of_open_runs(tmp_path: Path) -> None:
    """While a run is open its last_seen_ms moves forward; its pid is this process's."""
    db = tmp_path / "r.db"
    rec = Recorder(db)
    rec._writer.heartbeat_s = 0.05
    with rec.run("long") as run:
        rec.flush()
        with Store(db) as s:
            first = s.get_run(run.run_id)
        deadline = time.monotonic() + 5
        later = first
        while later.last_seen_ms == first.last_seen_ms and time.monotonic() < deadline:
            time.sleep(0.06)
            rec.flush()
            with Store(db) as s:
                later = s.get_run(run.run_id)
    rec.close()
    assert first.pid == os.getpid() and first.stop_reason is None
    assert first.last_seen_ms is not None and later.last_seen_ms is not None
    assert later.last_seen_ms > first.last_seen_ms
