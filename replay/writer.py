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

import base64
import collections
import contextlib
import logging
import os
import pathlib
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from replay.hashing import ordered_bytes, sha_of_canonical, thaw, type_tag
from replay.liveness import HEARTBEAT_S, STALE_MS, pid_alive, this_host
from replay.models import Event, Run, Usage

if TYPE_CHECKING:
    from replay.redaction import Redactor
    from replay.store_api import StoreAPI as Store

__all__ = ["Writer", "RecordingLossWarning", "TRUNCATED_TAG"]

log = logging.getLogger("replay")
events_log = logging.getLogger("replay.events")

TRUNCATED_TAG = "$truncated"


def _usage_json(u: Usage) -> str:
    return orjson.dumps(
        {
            "tokens_in": u.tokens_in,
            "tokens_out": u.tokens_out,
            "cost_usd": u.cost_usd,
            "tool_calls": u.tool_calls,
        }
    ).decode()


def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    from replay.store import EVENT_COLUMNS

    d = dict(zip(EVENT_COLUMNS, row, strict=False))
    if d["usage"] is not None:
        d["usage"] = orjson.loads(d["usage"])
    return d


def _row_event(row: tuple[Any, ...]) -> Event:
    return Event.model_validate(_row_dict(row))


def _row_json(row: tuple[Any, ...]) -> str:
    """One `replay.events` log line: the event as JSON, field names of the unified schema."""
    return orjson.dumps(_row_dict(row)).decode()


def _error_value(it: StepItem, error: tuple[str, str, str]) -> dict[str, Any]:
    """The error snapshot of a step whose tool raised: its class, message, args and attributes."""
    display, module, qualname = error
    out: dict[str, Any] = {
        "error": display,
        "module": module,
        "qualname": qualname,
        "message": it.message or "",
    }
    if it.error_detail is not None:
        detail = thaw(it.error_detail)
        if isinstance(detail, dict):
            out.update((k, v) for k, v in detail.items() if k not in out)
    return out


def _run_row(run: Run, stop: bool, ts_ms: int) -> tuple[Any, ...]:
    """The event row (EVENT_COLUMNS order) of a run's start (its input sha in args_sha) or stop."""
    from replay.store import EVENT_COLUMNS

    cols: dict[str, Any] = {"run_id": run.run_id, "ts_ms": ts_ms}
    if stop:
        cols.update(
            kind="stop",
            output_sha=run.output_sha,
            stop_reason=run.stop_reason,
            usage=_usage_json(run.usage),
        )
    else:
        cols.update(kind="run_start", args_sha=run.input_sha)
    return tuple(cols.get(c) for c in EVENT_COLUMNS)


def _check_text(values: tuple[Any, ...]) -> None:
    """Raise UnicodeEncodeError for a lone surrogate in a name or label: only that record is lost.

    Values are frozen leniently (no surrogate reaches a snapshot), but names, labels and versions
    come straight from code; SQLite would refuse the whole batch over one of them.
    """
    for v in values:
        if type(v) is tuple:
            _check_text(v)
        elif type(v) is str and not v.isascii():
            v.encode("utf-8")


def _label_value(red: Redactor, key: Any, value: Any) -> str:
    """A label or version value as written: secret keys hide it, pattern rules pseudonymize it."""
    if red.is_secret_key(str(key)):
        return "[REDACTED:secret]"
    return red.redact_name(str(value))


_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for w in list(_writers):
        w._after_fork()


if hasattr(os, "register_at_fork"):
    # A writer thread and a SQLite connection do not survive fork(): a child must start its own.
    os.register_at_fork(after_in_child=_reset_after_fork)


class RecordingLossWarning(RuntimeWarning):
    """Some records could not be written; the agent kept running. See ``Recorder.dropped``."""


@dataclass(slots=True)
class StepItem:
    """One tool or model call as the agent's path hands it over (values frozen, nothing hashed)."""

    run_id: str
    step_id: int
    parent_step_id: int | None
    kind: str
    tool: str
    args: bytes
    output: bytes | None
    error: tuple[str, str, str] | None  # (display name, module, qualname) of the exception
    message: str | None
    ts_ms: int
    duration_ms: int
    usage: Usage | None
    type_name: str | None
    args_sha: str | None = None  # precomputed by the replay layer, which had to hash anyway
    # An answer replayed from the recording: its output (or error) snapshot is the recorded one.
    output_sha: str | None = None
    # The step_id of the first step of its concurrent group (parallel calls), None if it ran alone.
    concurrent_group: int | None = None
    # A tool's exception: args, public attributes and their types, frozen (replay.fidelity).
    error_detail: bytes | None = None
    # The value the tool returned, held until the writer takes its type tag tree (`type_tag`):
    # walking it costs microseconds the agent's path does not pay. The recorded JSON is `output`,
    # frozen on the agent's path; a value the agent mutates before the writer gets to it can only
    # lose type tags (replay then hands back plain JSON there), never change what is recorded.
    output_ref: Any = None


@dataclass(slots=True)
class RunItem:
    """A run's start or end."""

    run: Run
    input: bytes | None
    output: bytes | None
    stop: bool
    ts_ms: int
    output_type: str | None = None
    # The run's HTTP interactions (http=True runs, at stop): redacted and stored here, off the
    # agent's path.
    http: list[Any] | None = None


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


def _item_bytes(item: Any) -> int:
    """The frozen bytes an item holds (what `max_queue_bytes` counts)."""
    if type(item) is StepItem:
        return len(item.args) + (len(item.output) if item.output is not None else 0)
    if type(item) is RunItem:
        return (len(item.input) if item.input is not None else 0) + (
            len(item.output) if item.output is not None else 0
        )
    return 0


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
            n = _item_bytes(item)
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
        self._ingest_orphans()

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
                nbytes += _item_bytes(item)
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
                self._bytes_out += _item_bytes(item)
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
                events_log.info(_row_json(row))
        self._notify(finished, spooled)

    def _encode(
        self, batch: list[Any]
    ) -> tuple[
        list[tuple[Any, ...]], list[Run], list[tuple[str, bytes, str | None, bool]], list[Run]
    ]:
        """Event rows, runs, snapshots and the runs that ended, for one batch; a record that
        cannot be encoded is counted lost, never the batch around it."""
        runs: dict[str, Run] = {}
        # Event rows as tuples in EVENT_COLUMNS order: building pydantic Events would cost more
        # than the insert itself. Errors become Events for listeners (metrics) only.
        rows: list[tuple[Any, ...]] = []
        snapshots: dict[str, tuple[str, bytes, str | None, bool]] = {}
        finished: list[Run] = []
        for item in batch:
            try:
                if isinstance(item, StepItem):
                    row = self._step_row(item, snapshots)
                    _check_text(row)
                    rows.append(row)
                    if row[8] == "error" and self.listeners:
                        errs = self._errors.setdefault(item.run_id, [])
                        if len(errs) < 10_000:
                            errs.append(_row_event(row))
                else:
                    run, row = self._run_rows(item, snapshots)
                    _check_text(
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
        return self.spool_dir / f"{this_host()}-{os.getpid()}.jsonl"

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
            line = (
                orjson.dumps(
                    {
                        "v": 1,
                        "rows": rows,
                        "runs": [r.model_dump(mode="json") for r in runs],
                        "snapshots": [
                            [sha, base64.b64encode(body).decode(), t, tr]
                            for sha, body, t, tr in snapshots
                        ],
                    }
                )
                + b"\n"
            )
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.spool_dir, 0o700)
            if self.spool_dir.is_symlink():
                raise PermissionError("the spool folder is a symlink")
            fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600
            )
            try:
                if os.fstat(fd).st_size + len(line) > self.max_spool_bytes:
                    self._lose(
                        n,
                        f"{self._write_failure()} and the spool {path} is full "
                        f"(max_spool_bytes={self.max_spool_bytes}); free the store, then restart",
                    )
                    return
                os.write(fd, line)
            finally:
                os.close(fd)
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
                self._ingest_file(path)
                path.unlink()
        except Exception as exc:  # noqa: BLE001 - still locked: try again later
            self._store_failed = exc
            self._backoff_next(now)
            return
        self._spooling = False
        self._backoff = 0.0
        self._store_failed = None

    def _ingest_file(self, path: pathlib.Path) -> int:
        """Write every batch of a spool file into the store; returns the rows written."""
        assert self._store is not None
        n = 0
        with open(path, "rb") as f:
            for line in f:
                try:
                    d = orjson.loads(line)
                    rows = [tuple(r) for r in d["rows"]]
                    runs = [Run.model_validate(r) for r in d["runs"]]
                    snaps = [
                        (sha, base64.b64decode(b), t, bool(tr)) for sha, b, t, tr in d["snapshots"]
                    ]
                except Exception:  # noqa: BLE001 - a line cut short by a kill: the rest is still good
                    continue
                self._store.write_rows(rows, runs=runs, snapshots=snaps)
                n += len(rows)
        return n

    def _ingest_orphans(self) -> None:
        """Write the spools of processes that died before their store came back; delete them."""
        d = self.spool_dir
        if d is None or not d.is_dir():
            return
        host, me = this_host(), os.getpid()
        for path in sorted(d.iterdir()):
            name = path.name
            if not name.endswith(".jsonl") or path.is_symlink():
                continue
            owner_host, _, pid_text = name[: -len(".jsonl")].rpartition("-")
            try:
                pid = int(pid_text)
            except ValueError:
                continue
            if owner_host == host:
                if pid == me or pid_alive(pid):
                    continue
            else:
                try:
                    if (time.time() - path.stat().st_mtime) * 1000 < STALE_MS:
                        continue  # another host: only when it has not written for a while
                except OSError:
                    continue
            claimed = path.with_name(f"{name}.{host}-{me}.ingest")
            try:
                os.rename(path, claimed)  # atomic: one process ingests each file
            except OSError:
                continue
            try:
                self._ingest_file(claimed)
                claimed.unlink()
            except Exception as exc:  # noqa: BLE001 - leave it for the next open
                with contextlib.suppress(OSError):
                    os.rename(claimed, path)
                log.warning(
                    "replay: could not ingest the spool %s yet (%s)", path, type(exc).__name__
                )
                return

    def _snapshot(
        self,
        value: Any,
        snapshots: dict[str, tuple[str, bytes, str | None, bool]],
        type_name: str | None,
        frozen: bytes | None = None,
        check: tuple[bytes, bool] | None = None,
    ) -> tuple[str, bytes]:
        """Redact `value`, store it content-addressed, return (sha, redacted body bytes).

        The body keeps the value's own key order (replay hands it back as the tool returned it);
        the sha is over the canonical, sorted form, so hashes join with hand-rolled loggers.
        `frozen` is `value`'s JSON as the agent's path froze it: when redaction changed nothing,
        it is the body as it is (no second copy, no second serialization). `check` is
        ``Redactor.checked(value)`` when the caller already has it.
        """
        assert self._redactor is not None
        canonical, clean = self._redactor.checked(value) if check is None else check
        digest = sha_of_canonical(canonical)
        if frozen is not None and clean:
            body = frozen  # nothing was redacted
        else:
            body = ordered_bytes(self._redactor(value))
        if digest not in snapshots:
            stored = body
            truncated = len(body) > self.max_snapshot_bytes
            if truncated:
                head = body[: self.max_snapshot_bytes].decode("utf-8", "ignore")
                stored = orjson.dumps(
                    {TRUNCATED_TAG: True, "sha": digest, "size": len(body), "head": head},
                    option=orjson.OPT_SORT_KEYS,
                )
            snapshots[digest] = (digest, stored, type_name, truncated)
        return digest, body

    def _step_row(
        self, it: StepItem, snapshots: dict[str, tuple[str, bytes, str | None, bool]]
    ) -> tuple[Any, ...]:
        assert self._redactor is not None
        args_sha = it.args_sha
        value: Any = None
        out_check: tuple[bytes, bool] | None = None
        # Redacted args are kept if the recorder or its RedactionConfig says store_args="redacted".
        store_args = self.store_args or self._redactor.config.store_args == "redacted"
        if args_sha is None or store_args:
            args = thaw(it.args)
            if it.output_sha is None and it.error is None and it.output is not None:
                # The common step: args and output through one detector pass.
                value = thaw(it.output)
                (args_body, _), out_check = self._redactor.checked_pair(args, value, len(it.args))
            else:
                args_body = self._redactor.canonical(args, len(it.args))
            args_sha = sha_of_canonical(args_body)
            if store_args and args_sha not in snapshots:
                snapshots[args_sha] = (args_sha, args_body, "$args", False)
        if it.output_sha is not None:
            output_sha: str | None = it.output_sha
        elif it.error is not None:
            output_sha, _ = self._snapshot(_error_value(it, it.error), snapshots, "$error")
        elif it.output is not None:
            if out_check is None:
                value = thaw(it.output)
            type_name = it.type_name
            if it.output_ref is not None:
                type_name = type_tag(it.output_ref, value)
                it.output_ref = None
            output_sha, _ = self._snapshot(value, snapshots, type_name, it.output, out_check)
        else:
            output_sha = None
        red = self._redactor
        return (
            it.run_id,
            it.kind,
            it.ts_ms,
            it.step_id,
            red.redact_name(it.tool),
            args_sha,
            output_sha,
            it.duration_ms,
            "error" if it.error is not None else "ok",
            None if it.error is None else red.redact_name(it.error[0]),
            None,
            None if it.usage is None else _usage_json(it.usage),
            it.parent_step_id,
            it.concurrent_group,
        )

    def _run_rows(
        self, it: RunItem, snapshots: dict[str, tuple[str, bytes, str | None, bool]]
    ) -> tuple[Run, tuple[Any, ...]]:
        assert self._redactor is not None
        run = it.run
        red = self._redactor
        # Names, labels, versions and stop reasons are written too: they pass the redactor (a name
        # is pseudonymized the same way each time, so matching by name still works).
        run.key_fingerprint = red.key_fingerprint
        run.agent = red.redact_name(run.agent)
        if run.labels:
            run.labels = {
                red.redact_name(str(k)): _label_value(red, k, v) for k, v in run.labels.items()
            }
        if run.versions:
            run.versions = {
                red.redact_name(str(k)): _label_value(red, k, v) for k, v in run.versions.items()
            }
        if run.stop_reason is not None:
            run.stop_reason = red.redact_token(run.stop_reason)
        if it.input is not None:
            run.input_sha, body = self._snapshot(thaw(it.input), snapshots, None, it.input)
            run.input = thaw(body)
        if it.output is not None:
            run.output_sha, body = self._snapshot(
                thaw(it.output), snapshots, it.output_type, it.output
            )
            run.output = thaw(body)
        if it.http:
            from replay.http import redact_interactions

            http = redact_interactions(it.http, red)
            run.http_sha, _ = self._snapshot(http, snapshots, "$http")
        return run, _run_row(run, it.stop, it.ts_ms)

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
