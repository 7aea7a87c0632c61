"""The background writer: redaction, hashing and storage, off the agent's path.

The agent's path only freezes values and appends a tuple to a deque bounded by records and by bytes.
This thread drains the deque in batches, redacts, hashes, and writes each batch in one transaction;
a run's stop wakes it, so a run is written as soon as it ends. It never raises into the agent.

What keeps records when the store is not there (see README "What can be lost"):

- Opening is retried with backoff (a lock held at startup, a folder created a moment later).
  Until the store's key is known nothing can be redacted, so records wait in memory (bounded).
- A batch the store refuses (locked past the busy timeout, disk full, read-only) is spooled,
  redacted, to ``<db>.spool/<host>-<pid>.jsonl`` (0600) and written to the store when it comes
  back, by this process or by the next one that opens the store after this one died.
- `dropped` counts only what is truly lost: a spool that is full or unwritable, a store that can
  never be opened (not SQLite, a newer schema), records left in memory at exit; warned once.
- For open runs the writer refreshes ``runs.last_seen_ms`` every ``heartbeat_s`` (see
  `replay.liveness`), so a run whose process died reads as ``killed`` (inferred).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pathlib
import queue
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replay.liveness import HEARTBEAT_S
from replay.models import Event, Run
from replay.rows import (
    TRUNCATED_TAG,
    RowEncoder,
    RunItem,
    Snapshots,
    StepItem,
    check_text,
    item_bytes,
    row_event,
    row_json,
)
from replay.spool import SpoolFull, append_batch, ingest_file, ingest_orphans, own_spool

if TYPE_CHECKING:
    from replay.redaction import Redactor
    from replay.store_api import StoreAPI as Store

__all__ = ["Writer", "RecordingLossWarning", "RunItem", "StepItem", "TRUNCATED_TAG"]

log = logging.getLogger("replay")
events_log = logging.getLogger("replay.events")

_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for w in list(_writers):
        w._after_fork()


if hasattr(os, "register_at_fork"):
    # A writer thread and a SQLite connection do not survive fork(): a child must start its own.
    os.register_at_fork(after_in_child=_reset_after_fork)


class RecordingLossWarning(RuntimeWarning):
    """Some records could not be written; the agent kept running. See ``Recorder.dropped``."""


#: Signals raised by the thread's own fault: never blocked.
_SYNCHRONOUS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT")


def _leave_signals_to_the_application() -> None:
    """Block the asynchronous signals (SIGTERM, SIGINT, SIGALRM, ...) in the calling thread.

    For a thread this library starts: the kernel hands a process signal to any thread that does
    not block it, and Python runs its handler only when the main thread next runs Python code. A
    SIGTERM taken by the writer while the main thread waits in a long ``sleep`` or ``recv`` would
    wait with it, past a container's grace period, and the runs it should end would be lost.
    """
    if not hasattr(signal, "pthread_sigmask"):
        return
    keep = {getattr(signal, name) for name in _SYNCHRONOUS if hasattr(signal, name)}
    with contextlib.suppress(OSError, ValueError):
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - keep)


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = True  # False: released without the records before it written or spooled


class _Wake:
    """Wakes the writer thread; `set` is safe in a signal handler.

    A `threading.Event` takes a lock in `set()`: a SIGTERM handler that sets it while the
    interrupted main thread was inside `set()` deadlocks. `queue.SimpleQueue.put` is reentrant.
    """

    __slots__ = ("_q",)

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[None] = queue.SimpleQueue()

    def set(self) -> None:
        self._q.put(None)

    def wait(self, timeout: float) -> bool:
        try:
            self._q.get(timeout=timeout)
        except queue.Empty:
            return False
        return True

    def clear(self) -> None:
        q = self._q
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()


# Open failures worth retrying: the store may be there in a moment. Anything else (not SQLite, a
# newer schema, a folder where the file should be) will not fix itself: records are dropped.
_TRANSIENT = (
    "locked",
    "busy",
    "does not exist",
    "unable to open",
    "readonly",
    "read-only",
    "disk i/o",
    "full",
    "permission denied",
)


def _check_positive(**limits: float) -> None:
    """Raise ValueError naming the first limit that is not more than 0."""
    for name, v in limits.items():
        if not v > 0:
            raise ValueError(f"{name}={v!r}: must be more than 0")


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or any(t in str(exc).lower() for t in _TRANSIENT)


class Writer:
    """Drains recorded items into a store on a daemon thread.

    Args:
        open_store: opens the store; called on the writer thread (SQLite connections stay there).
        make_redactor: builds the redactor from the store's secret key.
        max_queue: items held at most before ``on_full`` applies.
        max_queue_bytes: frozen bytes (args, outputs, inputs) held at most before ``on_full``
            applies.
        on_full: ``"drop"`` counts and drops new items; ``"block"`` makes the agent wait.
        max_snapshot_bytes: larger snapshots are stored truncated, with the full hash.
        flush_interval: seconds between two drains of the queue (a run's stop wakes the writer at
            once).
        peek_key: reads the store's key without opening it for writing (a locked store), or None.
        spool_dir: where batches the store refuses are kept until it comes back (None: no spool).
        max_spool_bytes: a spool file larger than this drops new batches (counted in `dropped`).
        heartbeat_s: how often ``runs.last_seen_ms`` of open runs is refreshed.
        sync_runs: the agent's thread waits (at most `sync_timeout`) until a run's stop is written;
            set in worker processes, which may leave through ``os._exit`` (see `Recorder`).
    """

    def __init__(
        self,
        open_store: Callable[[], Store],
        make_redactor: Callable[[bytes | None], Redactor],
        *,
        max_queue: int = 10_000,
        max_queue_bytes: int = 64 << 20,
        on_full: str = "block",
        max_snapshot_bytes: int = 1_000_000,
        store_args: bool = False,
        listeners: list[Callable[[Run, list[Event]], None]] | None = None,
        flush_interval: float = 0.05,
        batch_size: int = 5_000,
        peek_key: Callable[[], bytes | None] | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        max_spool_bytes: int = 256 << 20,
        heartbeat_s: float = HEARTBEAT_S,
        sync_runs: bool = False,
        sync_timeout: float = 5.0,
    ) -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full={on_full!r}: use 'drop' (count and drop) or 'block' (wait)")
        _check_positive(
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
            flush_interval=flush_interval,
            max_spool_bytes=max_spool_bytes,
            heartbeat_s=heartbeat_s,
        )
        self._open_store = open_store
        self._make_redactor = make_redactor
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.on_full = on_full
        self.max_snapshot_bytes = max_snapshot_bytes
        self.store_args = store_args
        self.listeners = listeners if listeners is not None else []
        self.flush_interval = flush_interval
        self._lag_ms = max(1, int(flush_interval * 1000))
        self.batch_size = batch_size
        self.peek_key = peek_key
        self.spool_dir = None if spool_dir is None else pathlib.Path(spool_dir)
        self.max_spool_bytes = max_spool_bytes
        self.heartbeat_s = heartbeat_s
        self.sync_runs = sync_runs
        self.sync_timeout = sync_timeout
        self._init_state()
        _writers.add(self)

    def _init_state(self) -> None:
        """Counters, the queue and the writer thread's state, empty."""
        self.dropped = 0
        self.spooled = 0  # records written to the spool (and later ingested), for tests and reports
        self._warned = False
        self._warned_spool = False
        self._q: collections.deque[Any] = collections.deque()
        # Bytes queued = _bytes_in - _bytes_out. Two counters, each written by one side, so a lost
        # update between agent threads can only under-count (never wedge the queue as full).
        self._bytes_in = 0
        self._bytes_out = 0
        self._wake = _Wake()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.RLock()  # RLock: a SIGTERM handler may submit while it is held
        self._store: Store | None = None
        self._store_failed: BaseException | None = None
        self._permanent = False  # the store can never be opened: drop instead of waiting
        self._redactor: Redactor | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._spooling = False  # this process's spool holds batches not yet in the store
        self._open_runs: dict[str, None] = {}
        self._beat_at = 0.0
        self._closed = False
        # Error steps per open run, handed to listeners at the run's end (metrics count them).
        # Only errors: keeping every step would grow memory with the run.
        self._errors: dict[str, list[Event]] = {}

    def _after_fork(self) -> None:
        """In a forked child (gunicorn, multiprocessing): a fresh thread and connection, no parent
        records.

        A child may leave through ``os._exit`` (no atexit), so from now on each run's stop is
        written before the run returns (`sync_runs`).
        """
        self._thread = None
        self._start_lock = threading.RLock()
        self._wake = _Wake()
        self._q = collections.deque()  # the parent writes what it queued; the child must not again
        self._bytes_in = self._bytes_out = 0
        self._store = None
        self._redactor = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._spooling = False
        self._open_runs = {}
        self._errors = {}
        self.sync_runs = True

    # ---- the agent's side -------------------------------------------------------------------

    def submit(self, item: StepItem | RunItem) -> None:
        """Queue one item; never raises. Cheap: two bound checks and a deque append."""
        q = self._q
        if type(item) is StepItem:
            n = len(item.args) + (len(item.output) if item.output is not None else 0)
        else:
            n = item_bytes(item)
        if len(q) >= self.max_queue or (
            q and self._bytes_in - self._bytes_out + n > self.max_queue_bytes
        ):
            if not self._wait_for_room(n):
                what = (
                    f"the record queue is full ({self.max_queue} records or "
                    f"{self.max_queue_bytes >> 20} MB of values: "
                    "the store is slower than the agent)"
                )
                self._lose(
                    1,
                    what
                    + "; raise Recorder(max_queue=..., max_queue_bytes=...) or use on_full='block'",
                )
                return
        self._bytes_in += n
        q.append(item)
        if self._thread is None:
            self._start()
        elif len(q) >= self.batch_size or (type(item) is RunItem and item.stop):
            # A full batch, or a run that ended: write it now, not at the next tick.
            self._wake.set()

    def _wait_for_room(self, n: int) -> bool:
        """on_full='block': wait while the writer makes progress. False: drop the item."""
        q = self._q
        if self.on_full != "block":
            return False
        while len(q) >= self.max_queue or (
            q and self._bytes_in - self._bytes_out + n > self.max_queue_bytes
        ):
            t = self._thread
            if (
                t is None
                or not t.is_alive()
                or self._redactor is None
                and self._store_failed is not None
            ):
                # No writer, or it cannot drain (no store and no key yet): waiting could be forever.
                return False
            self._wake.set()
            time.sleep(0.001)
        return True

    def keep_up(self, now_ms: int) -> None:
        """At a run's end: if the writer is more than one flush interval behind, wait until it
        catches up.

        A fast agent in the main process could otherwise queue thousands of ended runs that a
        SIGKILL would lose. Waiting is bounded (1 s) and skipped with ``on_full="drop"`` (the agent
        never waits) or while the store is unavailable (the spool or the queue bound applies then).
        """
        q = self._q
        try:
            oldest = q[0].ts_ms
        except (IndexError, AttributeError):
            return
        if (
            now_ms - oldest > self._lag_ms
            and self.on_full == "block"
            and self._store_failed is None
        ):
            t = self._thread
            if t is not None and t is not threading.current_thread():
                self.flush(1.0)

    def wait_run(self) -> bool:
        """In `sync_runs` mode: wait (bounded) until all that is queued, a stop too, is written."""
        if self._thread is None or threading.current_thread() is self._thread:
            return True
        if self._redactor is None and self._store_failed is not None:
            return (
                False  # the store has not opened yet: nothing can be written, do not wait per run
            )
        return self.flush(self.sync_timeout)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write (or spool) everything queued so far. False if that did not finish in `timeout`."""
        if self._thread is None:
            return True
        if not self._thread.is_alive():
            # Closed (or died): nothing will drain a marker, so waiting would only time out
            # (a second close(), e.g. at exit, took `timeout` seconds). Done if nothing is left.
            return not self._q
        marker = _Flush()
        self._q.append(marker)
        self._wake.set()
        return marker.done.wait(timeout) and marker.ok

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, then stop the thread; what is not written in time is lost."""
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Still writing (a slow store): closing its connection now would fail that write.
                return
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # noqa: BLE001 - closing must not raise at exit
                pass

    # ---- the writer's side ------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                t = threading.Thread(target=self._loop, name="replay-writer", daemon=True)
                self._thread = t
                t.start()

    def _loop(self) -> None:
        _leave_signals_to_the_application()
        while True:
            if not self._closed:
                self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any bug of its own
                log.warning("replay: the writer hit an unexpected error and keeps going: %r", exc)
            if self._closed and not self._q:
                return

    def _tick(self) -> None:
        now = time.monotonic()
        if self._store is None and not self._permanent and (now >= self._retry_at or self._closed):
            # (at close, one last try whatever the backoff: the folder may have appeared meanwhile)
            self._try_open(now)
        if self._store is not None and self._spooling and (now >= self._retry_at or self._closed):
            self._retry_spool(now)
        if self._redactor is None:
            if self._permanent or self._closed:
                self._lose_queue()
            else:
                self._release_markers()  # a flush cannot finish until the store opens: do not hang
            return
        if self._store is None and not self._can_spool():
            # Redaction works but there is nowhere to put the rows yet (the folder is missing).
            if self._closed:
                self._lose_queue()
            else:
                self._release_markers()
            return
        self._drain()
        if (
            self._store is not None
            and not self._spooling
            and self._open_runs
            and now >= self._beat_at
        ):
            self._beat_at = now + self.heartbeat_s
            with contextlib.suppress(
                Exception
            ):  # a missed heartbeat only delays nothing: the next one comes
                self._store.touch_runs(list(self._open_runs))

    def _backoff_next(self, now: float) -> None:
        self._backoff = min(2.0, max(0.05, self._backoff * 2))
        self._retry_at = now + self._backoff

    def _try_open(self, now: float) -> None:
        try:
            store = self._open_store()
            key: bytes | None = store.secret_key
        except BaseException as exc:  # noqa: BLE001 - fail open: the agent must keep running
            self._store_failed = exc
            if not _transient(exc):
                self._permanent = True
                with contextlib.suppress(BaseException):
                    self._redactor = self._make_redactor(None)  # drops are counted in _write
                return
            self._backoff_next(now)
            if self._redactor is None and self.peek_key is not None:
                with contextlib.suppress(Exception):
                    key = self.peek_key()  # a locked store still lets us read its key
                    if key is not None:
                        self._redactor = self._make_redactor(key)
            return
        self._store, self._store_failed, self._backoff = store, None, 0.0
        try:
            self._redactor = self._make_redactor(key)
        except BaseException as exc:  # noqa: BLE001
            self._store_failed = exc
            self._permanent = True
            return
        self._spooling = self._own_spool().exists() if self.spool_dir is not None else False
        if self._spooling:
            self._retry_spool(now)
        ingest_orphans(store, self.spool_dir)

    def _drain(self) -> None:
        q = self._q
        # A batch stops at batch_size records or at a quarter of the byte bound: its values are
        # thawed, redacted and encoded all at once, so its size bounds the writer's working memory.
        max_bytes = max(1, self.max_queue_bytes // 4)
        while q:
            batch: list[Any] = []
            markers: list[_Flush] = []
            nbytes = 0
            while q and len(batch) < self.batch_size and nbytes < max_bytes:
                item = q.popleft()
                if isinstance(item, _Flush):
                    markers.append(item)
                    break  # write what came before the marker, then release its waiter
                nbytes += item_bytes(item)
                batch.append(item)
            if batch:
                try:
                    self._write(batch)
                finally:
                    del batch
                    self._bytes_out += (
                        nbytes  # counted until written: the bound covers the batch in hand
                    )
            for m in markers:
                m.done.set()

    def _release_markers(self) -> None:
        for item in list(self._q):
            if isinstance(item, _Flush):
                item.ok = False
                item.done.set()

    def _lose_queue(self) -> None:
        q = self._q
        lost = 0
        while q:
            item = q.popleft()
            if isinstance(item, _Flush):
                item.ok = False
                item.done.set()
            else:
                self._bytes_out += item_bytes(item)
                lost += 1
        if lost:
            self._lose(lost, self._open_failure())

    def _open_failure(self) -> str:
        exc = self._store_failed
        if exc is None:
            return "the store could not be opened"
        name = type(exc).__name__
        return f"the store could not be opened ({name}: {exc})"

    def _write(self, batch: list[Any]) -> None:
        if self._redactor is None or (self._store is None and self._permanent):
            self._lose(len(batch), self._open_failure())
            return
        rows, runs, snapshots, finished = self._encode(batch)
        spooled = self._persist(rows, runs, snapshots)
        if events_log.isEnabledFor(logging.INFO):
            for row in rows:
                events_log.info(row_json(row))
        self._notify(finished, spooled)

    def _encode(
        self, batch: list[Any]
    ) -> tuple[
        list[tuple[Any, ...]], list[Run], list[tuple[str, bytes, str | None, bool]], list[Run]
    ]:
        """Event rows, runs, snapshots and the runs that ended, for one batch; a record that
        cannot be encoded is counted lost, never the batch around it."""
        assert self._redactor is not None
        enc = RowEncoder(self._redactor, self.max_snapshot_bytes, self.store_args)
        runs: dict[str, Run] = {}
        # Event rows as tuples in EVENT_COLUMNS order: building pydantic Events would cost more
        # than the insert itself. Errors become Events for listeners (metrics) only.
        rows: list[tuple[Any, ...]] = []
        snapshots: Snapshots = {}
        finished: list[Run] = []
        for item in batch:
            try:
                if isinstance(item, StepItem):
                    row = enc.step_row(item, snapshots)
                    check_text(row)
                    rows.append(row)
                    if row[8] == "error" and self.listeners:
                        errs = self._errors.setdefault(item.run_id, [])
                        if len(errs) < 10_000:
                            errs.append(row_event(row))
                else:
                    run, row = enc.run_rows(item, snapshots)
                    check_text(
                        (
                            run.agent,
                            run.entrypoint,
                            run.host,
                            *run.labels.items(),
                            *run.versions.items(),
                        )
                    )
                    runs[run.run_id] = run
                    rows.append(row)
                    if item.stop:
                        finished.append(run)
                        self._open_runs.pop(run.run_id, None)
                    else:
                        self._open_runs[run.run_id] = None
            except Exception as exc:  # noqa: BLE001 - one bad record must not lose the batch
                # The exception's type only: its text can hold the user's value.
                self._lose(1, f"a record could not be encoded ({type(exc).__name__})")
        return rows, list(runs.values()), list(snapshots.values()), finished

    def _persist(
        self,
        rows: list[tuple[Any, ...]],
        run_list: list[Run],
        snap_list: list[tuple[str, bytes, str | None, bool]],
    ) -> bool:
        """Write one batch to the store, else to the spool. True when it went to the spool."""
        if self._store is None or self._spooling:
            # Keep the order: later batches queue behind earlier ones.
            self._spool(rows, run_list, snap_list)
            return True
        try:
            self._store.write_rows(rows, runs=run_list, snapshots=snap_list)
        except Exception as exc:  # noqa: BLE001 - fail open: keep the batch in the spool
            self._store_failed = exc
            self._backoff_next(time.monotonic())
            self._spool(rows, run_list, snap_list)
            return True  # as when already spooling: log lines and listeners still see the runs
        return False

    def _notify(self, finished: list[Run], spooled: bool) -> None:
        """Hand each run that ended to the listeners (metrics, OpenTelemetry); never raises."""
        for run in finished:
            errors = self._errors.pop(run.run_id, [])
            for listener in self.listeners:
                try:
                    # e.g. OtelExporter: every event, read back
                    if getattr(listener, "wants_steps", False):
                        # A spooled run is not in the store yet: None says so (the exporter
                        # counts it).
                        wants_all: Any = listener
                        if spooled or self._store is None:
                            wants_all(run, None, None)
                        else:
                            wants_all(run, self._store.events(run.run_id), self._store)
                    else:
                        listener(run, errors)
                except Exception as exc:  # noqa: BLE001 - a metrics bug must not stop recording
                    log.warning(
                        "replay: run listener %r failed: %s", listener, self._safe(repr(exc))
                    )

    # ---- the spool ----------------------------------------------------------------------------

    def _own_spool(self) -> pathlib.Path:
        assert self.spool_dir is not None
        return own_spool(self.spool_dir)

    def _can_spool(self) -> bool:
        return self.spool_dir is not None and self.spool_dir.parent.is_dir()

    def _spool(self, rows: list[tuple[Any, ...]], runs: list[Run], snapshots: list[Any]) -> None:
        """Append one batch (redacted) to this process's spool file; count it lost if that fails."""
        n = len(rows)
        if not n and not runs:
            return
        if self.spool_dir is None:
            self._lose(n, f"{self._write_failure()} and no spool folder is set")
            return
        path = self._own_spool()
        try:
            append_batch(self.spool_dir, rows, runs, snapshots, self.max_spool_bytes)
        except SpoolFull:
            self._lose(
                n,
                f"{self._write_failure()} and the spool {path} is full "
                f"(max_spool_bytes={self.max_spool_bytes}); free the store, then restart",
            )
            return
        except Exception as exc:  # noqa: BLE001
            self._lose(
                n,
                f"{self._write_failure()} and the spool {path} is not writable "
                f"({type(exc).__name__}); "
                "make the folder writable or set Recorder(spool_dir=...)",
            )
            return
        self._spooling = True
        self.spooled += n
        if not self._warned_spool:
            self._warned_spool = True
            log.warning(
                "replay: %s; records are kept in %s and written when the store is back",
                self._write_failure(),
                path,
            )

    def _write_failure(self) -> str:
        exc = self._store_failed
        return (
            "the store is not available"
            if exc is None
            else f"the store is not available ({type(exc).__name__}: {exc})"
        )

    def _retry_spool(self, now: float) -> None:
        """The store is open: write this process's spool into it, then write directly again."""
        assert self._store is not None
        path = self._own_spool()
        try:
            if path.exists():
                ingest_file(self._store, path)
                path.unlink()
        except Exception as exc:  # noqa: BLE001 - still locked: try again later
            self._store_failed = exc
            self._backoff_next(now)
            return
        self._spooling = False
        self._backoff = 0.0
        self._store_failed = None

    def _safe(self, text: str) -> str:
        """Text for a warning or a log line: redacted (an exception's repr can quote a value)."""
        try:
            red = self._redactor
            if red is None:
                from replay.redaction import Redactor

                red = self._redactor_for_text = getattr(
                    self, "_redactor_for_text", None
                ) or Redactor(os.urandom(32))
            return red.redact_text(text)
        except Exception:  # noqa: BLE001 - a warning must still go out, without the detail
            return "(detail withheld)"

    def _lose(self, n: int, why: str) -> None:
        self.dropped += n
        if not self._warned:
            self._warned = True
            why = self._safe(why)
            msg = (
                f"agent-replay lost {n} record(s): {why}. The agent keeps running; "
                "the count is in Recorder.dropped. Check the store path (--db / REPLAY_DB)."
            )
            log.warning(msg)
            warnings.warn(msg, RecordingLossWarning, stacklevel=2)
