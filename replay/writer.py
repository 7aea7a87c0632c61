"""The background writer: redaction, hashing and storage, off the agent's path.

The agent's path only freezes values and appends a tuple to a bounded deque. This thread drains
the deque in batches, redacts, hashes, and writes each batch in one transaction. It never raises
into the agent: a store that fails makes it count what was lost and warn once.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import orjson

from replay.hashing import canonical_bytes, sha_of_canonical, thaw
from replay.models import Event, Run, Usage

if TYPE_CHECKING:
    from replay.processors import Redactor
    from replay.store import Store

__all__ = ["Writer", "RecordingLossWarning", "TRUNCATED_TAG"]

log = logging.getLogger("replay")
events_log = logging.getLogger("replay.events")

TRUNCATED_TAG = "$truncated"


def _usage_json(u: Usage) -> str:
    return orjson.dumps(
        {"tokens_in": u.tokens_in, "tokens_out": u.tokens_out, "cost_usd": u.cost_usd, "tool_calls": u.tool_calls}
    ).decode()


def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    from replay.store import EVENT_COLUMNS

    d = dict(zip(EVENT_COLUMNS, row))
    if d["usage"] is not None:
        d["usage"] = orjson.loads(d["usage"])
    return d


def _row_event(row: tuple[Any, ...]) -> Event:
    return Event.model_validate(_row_dict(row))


def _row_json(row: tuple[Any, ...]) -> str:
    """One `replay.events` log line: the event as JSON, field names of the unified schema."""
    return orjson.dumps(_row_dict(row)).decode()


_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for w in list(_writers):
        w._after_fork()


if hasattr(os, "register_at_fork"):
    # A writer thread and a SQLite connection do not survive fork(): a child must start its own.
    os.register_at_fork(after_in_child=_reset_after_fork)


class RecordingLossWarning(RuntimeWarning):
    """Some records could not be written; the agent kept running. See ``Recorder.dropped``."""


@dataclass
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


@dataclass
class RunItem:
    """A run's start or end."""

    run: Run
    input: bytes | None
    output: bytes | None
    stop: bool
    ts_ms: int
    output_type: str | None = None
    # The run's HTTP interactions (http=True runs, at stop): redacted and stored here, off the agent's path.
    http: list[Any] | None = None


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


class Writer:
    """Drains recorded items into a store on a daemon thread.

    Args:
        open_store: opens the store; called on the writer thread (SQLite connections stay there).
        make_redactor: builds the redactor from the store's secret key.
        max_queue: items held at most before ``on_full`` applies.
        on_full: ``"drop"`` counts and drops new items; ``"block"`` makes the agent wait.
        max_snapshot_bytes: larger snapshots are stored truncated, with the full hash.
    """

    def __init__(
        self,
        open_store: Callable[[], Store],
        make_redactor: Callable[[bytes | None], Redactor],
        *,
        max_queue: int = 10_000,
        on_full: str = "block",
        max_snapshot_bytes: int = 1_000_000,
        store_args: bool = False,
        listeners: list[Callable[[Run, list[Event]], None]] | None = None,
        flush_interval: float = 0.05,
        batch_size: int = 5_000,
    ) -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full={on_full!r}: use 'drop' (count and drop) or 'block' (wait)")
        self._open_store = open_store
        self._make_redactor = make_redactor
        self.max_queue = max_queue
        self.on_full = on_full
        self.max_snapshot_bytes = max_snapshot_bytes
        self.store_args = store_args
        self.listeners = listeners if listeners is not None else []
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.dropped = 0
        self._warned = False
        self._q: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._store: Store | None = None
        self._store_failed: BaseException | None = None
        self._redactor: Redactor | None = None
        self._closed = False
        # Error steps per open run, handed to listeners at the run's end (metrics count them).
        # Only errors: keeping every step would grow memory with the run.
        self._errors: dict[str, list[Event]] = {}
        _writers.add(self)

    def _after_fork(self) -> None:
        """In a forked child (gunicorn, multiprocessing): a fresh thread and connection, no parent records."""
        self._thread = None
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._q = collections.deque()  # the parent writes what it queued; the child must not again
        self._store = None
        self._redactor = None

    # ---- the agent's side -------------------------------------------------------------------

    def submit(self, item: StepItem | RunItem) -> None:
        """Queue one item; never raises. Cheap: a length check and a deque append."""
        q = self._q
        if len(q) >= self.max_queue:
            if self.on_full == "block" and self._thread is not None and self._thread.is_alive():
                self._wake.set()
                while len(q) >= self.max_queue:
                    time.sleep(0.001)
            else:
                self._lose(1, "the record queue is full (the store is slower than the agent)")
                return
        q.append(item)
        if self._thread is None:
            self._start()
        elif len(q) >= self.batch_size or (type(item) is RunItem and item.stop):
            self._wake.set()  # a full batch, or a run that ended: write it now, not at the next tick

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write everything queued so far. Returns False if that did not finish in `timeout`."""
        if self._thread is None:
            return True
        if not self._thread.is_alive():
            # Closed (or died): nothing will drain a marker, so waiting would only time out
            # (a second close(), e.g. at exit, took `timeout` seconds). Done if nothing is left.
            return not self._q
        marker = _Flush()
        self._q.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
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
        try:
            self._store = self._open_store()
            key: bytes | None = self._store.secret_key
        except BaseException as exc:  # noqa: BLE001 - fail open: the agent must keep running
            self._store_failed = exc
            key = None
        try:
            self._redactor = self._make_redactor(key)
        except BaseException as exc:  # noqa: BLE001
            self._store_failed = exc
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self._drain()
            if self._closed and not self._q:
                return

    def _drain(self) -> None:
        q = self._q
        while q:
            batch: list[Any] = []
            markers: list[_Flush] = []
            while q and len(batch) < self.batch_size:
                item = q.popleft()
                if isinstance(item, _Flush):
                    markers.append(item)
                    break  # write what came before the marker, then release its waiter
                batch.append(item)
            if batch:
                self._write(batch)
            for m in markers:
                m.done.set()

    def _write(self, batch: list[Any]) -> None:
        if self._store is None or self._redactor is None:
            self._lose(len(batch), f"the store could not be opened ({self._store_failed!r})")
            return
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
                    rows.append(row)
                    if row[8] == "error" and self.listeners:
                        errs = self._errors.setdefault(item.run_id, [])
                        if len(errs) < 10_000:
                            errs.append(_row_event(row))
                else:
                    run, row = self._run_rows(item, snapshots)
                    runs[run.run_id] = run
                    rows.append(row)
                    if item.stop:
                        finished.append(run)
            except Exception as exc:  # noqa: BLE001 - one bad record must not lose the batch
                self._lose(1, f"a record could not be encoded ({exc!r})")
        try:
            self._store.write_rows(rows, runs=list(runs.values()), snapshots=list(snapshots.values()))
        except Exception as exc:  # noqa: BLE001 - fail open
            self._lose(len(rows), f"writing to {getattr(self._store, 'path', 'the store')} failed ({exc!r})")
            return
        if events_log.isEnabledFor(logging.INFO):
            for row in rows:
                events_log.info(_row_json(row))
        for run in finished:
            errors = self._errors.pop(run.run_id, [])
            for listener in self.listeners:
                try:
                    if getattr(listener, "wants_steps", False):  # e.g. OtelExporter: every event, read back
                        wants_all: Any = listener
                        wants_all(run, self._store.events(run.run_id), self._store)
                    else:
                        listener(run, errors)
                except Exception as exc:  # noqa: BLE001 - a metrics bug must not stop recording
                    log.warning("replay: run listener %r failed: %r", listener, exc)

    def _snapshot(
        self, value: Any, snapshots: dict[str, tuple[str, bytes, str | None, bool]], type_name: str | None
    ) -> tuple[str, bytes]:
        """Redact `value`, store it content-addressed, return (sha, redacted canonical bytes)."""
        assert self._redactor is not None
        body = self._redactor.canonical(value)
        canonical = body
        digest = sha_of_canonical(body)
        if digest not in snapshots:
            truncated = len(body) > self.max_snapshot_bytes
            if truncated:
                head = body[: self.max_snapshot_bytes].decode("utf-8", "ignore")
                body = orjson.dumps(
                    {TRUNCATED_TAG: True, "sha": digest, "size": len(body), "head": head},
                    option=orjson.OPT_SORT_KEYS,
                )
            snapshots[digest] = (digest, body, type_name, truncated)
        return digest, canonical

    def _step_row(self, it: StepItem, snapshots: dict[str, tuple[str, bytes, str | None, bool]]) -> tuple[Any, ...]:
        assert self._redactor is not None
        args_sha = it.args_sha
        if args_sha is None or self.store_args:
            args_body = self._redactor.canonical(thaw(it.args))
            args_sha = sha_of_canonical(args_body)
            if self.store_args and args_sha not in snapshots:
                snapshots[args_sha] = (args_sha, args_body, "$args", False)
        if it.output_sha is not None:
            output_sha: str | None = it.output_sha
        elif it.error is not None:
            display, module, qualname = it.error
            out = {"error": display, "module": module, "qualname": qualname, "message": it.message or ""}
            output_sha, _ = self._snapshot(out, snapshots, "$error")
        elif it.output is not None:
            output_sha, _ = self._snapshot(thaw(it.output), snapshots, it.type_name)
        else:
            output_sha = None
        return (
            it.run_id, it.kind, it.ts_ms, it.step_id, it.tool, args_sha, output_sha, it.duration_ms,
            "error" if it.error is not None else "ok", None if it.error is None else it.error[0], None,
            None if it.usage is None else _usage_json(it.usage), it.parent_step_id,
        )

    def _run_rows(
        self, it: RunItem, snapshots: dict[str, tuple[str, bytes, str | None, bool]]
    ) -> tuple[Run, tuple[Any, ...]]:
        assert self._redactor is not None
        run = it.run
        if it.input is not None:
            run.input_sha, body = self._snapshot(thaw(it.input), snapshots, None)
            run.input = thaw(body)
        if it.output is not None:
            run.output_sha, body = self._snapshot(thaw(it.output), snapshots, it.output_type)
            run.output = thaw(body)
        if it.http:
            run.http_sha, _ = self._snapshot(it.http, snapshots, "$http")
        row: tuple[Any, ...]
        if it.stop:
            row = (run.run_id, "stop", it.ts_ms, None, None, None, run.output_sha, None, None, None,
                   run.stop_reason, _usage_json(run.usage), None)
        else:
            row = (run.run_id, "run_start", it.ts_ms, None, None, run.input_sha, None, None, None, None,
                   None, None, None)
        return run, row

    def _lose(self, n: int, why: str) -> None:
        self.dropped += n
        if not self._warned:
            self._warned = True
            msg = (
                f"agent-replay lost {n} record(s): {why}. The agent keeps running; "
                "the count is in Recorder.dropped. Check the store path (--db / REPLAY_DB)."
            )
            log.warning(msg)
            warnings.warn(msg, RecordingLossWarning, stacklevel=2)
