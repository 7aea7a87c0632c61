"""A recorder's lifecycle in the process: atexit, fork, worker processes and the chained SIGTERM.

Every run ends with exactly one stop event, also when the process shuts down: at exit the open
runs end as ``killed`` and the queue is written; a forked child forgets its parent's open runs;
a multiprocessing worker (which leaves through ``os._exit``) closes its recorders in a finalizer;
SIGTERM ends open runs and writes the queue within a deadline, then runs the previous handler.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from replay.processors import Redactor

if TYPE_CHECKING:
    from replay.recorder import Recorder

__all__ = [
    "close_all",
    "in_worker_process",
    "install_sigterm",
    "register_worker_finalizer",
    "scrub",
    "track",
]

#: Every live recorder in the process (closed at exit, on SIGTERM, after a fork).
_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def track(rec: Recorder) -> None:
    """Close `rec` with the process (atexit, SIGTERM, worker exit)."""
    _recorders.add(rec)


_scratch: list[Redactor] = []


def scrub(text: str, redactor: Redactor | None = None) -> str:
    """Warning text with what redaction catches replaced (an exception's text can quote a value).

    Uses the recording's redactor when it exists, else a process-local one with a random key (a
    warning's pseudonyms need not match anything). Never raises: a warning must still go out.
    """
    try:
        if redactor is None:
            if not _scratch:
                _scratch.append(Redactor(os.urandom(32)))
            redactor = _scratch[0]
        return redactor.redact_text(text)
    except Exception:  # noqa: BLE001
        return "(detail withheld: it could not be redacted)"


def in_worker_process() -> bool:
    """A multiprocessing child (fork, spawn or forkserver; Pool, Process, ProcessPoolExecutor)."""
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


def register_worker_finalizer() -> None:
    """In a multiprocessing child, close the recorders when the worker exits normally.

    A worker leaves through ``os._exit`` (no atexit) after running multiprocessing's finalizers,
    which it clears when it starts; so this is registered at the first run in each process.
    """
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    try:
        from multiprocessing import util

        util.Finalize(None, close_all, exitpriority=100)
    except Exception:  # noqa: BLE001 - recording must never break the agent
        pass


def _after_fork_in_child() -> None:
    # The parent's open runs belong to the parent: the child must not end them as killed at exit.
    for rec in list(_recorders):
        rec.forget_parent_runs()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_sigterm_prev: Any = None
_sigterm_installed = False


def install_sigterm() -> None:
    """Chain a SIGTERM handler that ends open runs as killed and writes the queue, then runs the
    previous handler (or the default action). Only from the main thread, and only over the default
    action or a Python handler: an ignored SIGTERM or a handler set from C is left alone."""
    global _sigterm_prev, _sigterm_installed
    if _sigterm_installed or not hasattr(signal, "SIGTERM"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm:
            _sigterm_installed = True
            return
        if not (current == signal.SIG_DFL or callable(current)):
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return
    _sigterm_prev = current
    _sigterm_installed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    deadline = time.monotonic() + max(
        (r.sigterm_timeout_s or 0.0 for r in list(_recorders)), default=0.0
    )
    for rec in list(_recorders):
        if rec.sigterm_timeout_s is None:
            continue
        try:
            rec.terminate(max(0.0, min(rec.sigterm_timeout_s, deadline - time.monotonic())))
        except Exception:  # noqa: BLE001 - the previous handler must still run
            pass
    prev = _sigterm_prev
    if callable(prev) and prev is not _on_sigterm:
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    # The default action: terminate by SIGTERM, so the parent sees the same exit status as before.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@atexit.register
def close_all() -> None:
    # Every run ends with exactly one stop event, also when the process shuts down.
    for rec in list(_recorders):
        try:
            rec.close()
        except Exception:  # noqa: BLE001 - never raise at interpreter exit
            pass
