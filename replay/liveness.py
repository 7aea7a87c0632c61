"""Runs whose process died without writing a stop event read as ``killed`` (inferred).

A run row carries the recording process's `pid`, its `host` and `last_seen_ms`, a heartbeat the
background writer refreshes every `HEARTBEAT_S` seconds while the run is open (and sets at its start
and stop). A run with no stop reason is inferred killed when:

- it was recorded on this host and its process no longer exists (or is a zombie), or
- its heartbeat is older than `STALE_MS` (another host, where the pid cannot be checked, or this
  host with the pid reused by an unrelated process).

Rows written before schema 4 carry no pid and are left as they are (shown as still running).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replay.models import Run

__all__ = ["HEARTBEAT_S", "STALE_MS", "infer_killed", "pid_alive", "this_host"]

#: How often the writer refreshes ``runs.last_seen_ms`` of the runs open in its process.
HEARTBEAT_S = 10.0
# : A run not seen for this long is dead even when a process with its pid exists (or on another
# host).
STALE_MS = 120_000


def this_host() -> str:
    """The host name recorded with each run (``Run.host``)."""
    return os.uname().nodename if hasattr(os, "uname") else ""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell: do not call a run dead on a guess
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # "pid (comm) S ...": the state follows the last ')' (comm may contain spaces or parens)
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return True


def infer_killed(runs: Sequence[Run], now_ms: int | None = None) -> list[Run]:
    """Mark the runs with no stop whose process is gone as ``killed`` (``run.stop_inferred``).

    Changes the given Run objects in place and returns them as a list. Nothing is written.
    """
    out = list(runs)
    if not any(r.stop_reason is None and r.pid is not None for r in out):
        return out
    now = int(time.time() * 1000) if now_ms is None else now_ms
    host = this_host()
    alive: dict[int, bool] = {}
    for r in out:
        if r.stop_reason is not None or r.pid is None:
            continue
        seen = r.last_seen_ms if r.last_seen_ms is not None else r.started_ms
        dead = now - seen > STALE_MS
        if not dead and r.host == host:
            if r.pid not in alive:
                alive[r.pid] = pid_alive(r.pid)
            dead = not alive[r.pid]
        if dead:
            r.stop_reason = "killed"
            r._stop_inferred = True
    return out
