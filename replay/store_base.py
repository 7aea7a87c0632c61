"""What both store backends share: the columns, row conversion, and every read query.

`StoreBase` holds the queries that read runs, events and snapshots. They are written once, in SQL
that SQLite and PostgreSQL both accept, with ``?`` placeholders; each backend's `_reading` yields a
connection whose ``execute(sql, params)`` runs them (the PostgreSQL one turns ``?`` into ``%s``).
Writes, retention and opening differ by dialect and live in `replay.store` (SQLite) and
`replay.pg_store` (PostgreSQL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from replay.errors import AmbiguousRunIdError, CorruptRowError, CorruptRowWarning, RunNotFoundError
from replay.event_table import EventTable
from replay.hashing import canonical_json, thaw
from replay.liveness import infer_killed
from replay.models import Event, Run, is_step, trusted_usage
from replay.queries import NO_STEPS, TOTAL_COLUMNS, TOTALS_COUNT, TOTALS_DETAIL, step_totals

__all__ = [
    "DAY_MS",
    "EVENT_COLUMNS",
    "EventRows",
    "PRUNE_BATCH",
    "RUN_COLUMNS",
    "RUN_UPSERT_COMMON",
    "RUN_WRITE_COLUMNS",
    "TOTALS_CLEAR",
    "PruneResult",
    "PruneTimer",
    "SnapshotRow",
    "StoreBase",
    "make_event_row",
    "now_ms",
    "event_row",
    "prune_plan",
    "run_row",
    "run_rows_with_totals",
    "untotalled_ids",
]

#: Column order of the tuples `Store.write_rows` takes: the `Event` fields, ``usage`` as compact
#: JSON text (or None). The store derives ``seq`` and ``expires_at`` itself.
EVENT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "kind",
    "ts_ms",
    "step_id",
    "tool",
    "args_sha",
    "output_sha",
    "duration_ms",
    "status",
    "error",
    "stop_reason",
    "usage",
    "parent_step_id",
    "concurrent_group",  # schema 4: parallel tool calls
)
_EVENT_COLUMN_SET = frozenset(EVENT_COLUMNS)


def make_event_row(**cols: Any) -> tuple[Any, ...]:
    """One `write_rows` tuple from named columns (`EVENT_COLUMNS` order); the others are None.

    Raises:
        TypeError: a name that is not an event column.
    """
    unknown = cols.keys() - _EVENT_COLUMN_SET
    if unknown:
        raise TypeError(f"not event columns: {', '.join(sorted(unknown))}")
    return tuple(cols.get(c) for c in EVENT_COLUMNS)


#: The columns of the runs table: the `Run` fields.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "agent",
    "entrypoint",
    "input",
    "output",
    "input_sha",
    "output_sha",
    "versions",
    "labels",
    "started_ms",
    "ended_ms",
    "stop_reason",
    "usage",
    "tool_calls",
    "pinned",
    "expires_at",
    "replay_of",
    "call_style",
    "host",
    "http_sha",  # schema 3: the optional HTTP layer
    "pid",  # schema 4: liveness of the recording process (replay/liveness.py)
    "last_seen_ms",
    "key_fingerprint",  # schema 7: the fingerprint of the key that redacted the run
)

#: The SET clauses of both backends' run upsert that read the same in both dialects: a later
#: write of a run replaces its columns, except the ones each dialect merges itself (pinned,
#: expires_at, last_seen_ms), and keeps the pid when the later write has none.
RUN_UPSERT_COMMON = (
    ", ".join(
        f"{c} = excluded.{c}"
        for c in RUN_COLUMNS[1:]
        if c not in ("pinned", "expires_at", "pid", "last_seen_ms")
    )
    + ", pid = coalesce(excluded.pid, runs.pid)"
    + "".join(f", {c} = excluded.{c}" for c in TOTAL_COLUMNS)
)

#: What both backends write of a run: its `RUN_COLUMNS`, then its step totals (`TOTAL_COLUMNS`,
#: computed from its events in the same transaction, see `run_rows_with_totals`).
RUN_WRITE_COLUMNS: tuple[str, ...] = (*RUN_COLUMNS, *TOTAL_COLUMNS)

#: Empties the totals of the runs (``{marks}``) whose events a batch wrote without their row, or
#: that prune deleted: their figures come from their events until the run row is written again.
TOTALS_CLEAR = (
    "UPDATE runs SET "
    + ", ".join(f"{c} = NULL" for c in TOTAL_COLUMNS)
    + " WHERE run_id IN ({marks}) AND tool_steps IS NOT NULL"
)

#: ``(sha, body, type_name, truncated)``: one content-addressed snapshot.
SnapshotRow = tuple[str, bytes, "str | None", bool]
#: Events as tuples in `EVENT_COLUMNS` order, as `StoreBase.write_rows` takes them.
EventRows = Sequence[Sequence[Any]]

DAY_MS = 86_400_000
#: Rows `prune` deletes per write transaction.
PRUNE_BATCH = 2_000
#: The event kinds that are steps (tool and model calls).


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """What `Store.prune` deleted (or, with ``dry_run``, would delete)."""

    runs: int
    events: int
    snapshots: int
    dry_run: bool = False
    #: how many short write transactions the deletion took (not compared: it depends on timing)
    batches: int = dataclasses.field(default=0, compare=False)
    #: the longest time one of them held the write lock, in milliseconds
    longest_lock_ms: float = dataclasses.field(default=0.0, compare=False)


class PruneTimer:
    """How many write transactions a prune took and the longest of them."""

    def __init__(self) -> None:
        self.batches = 0
        self.longest = 0.0

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Time one write transaction of a prune."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.batches += 1
            self.longest = max(self.longest, time.perf_counter() - t0)

    def result(self, counts: Sequence[int]) -> PruneResult:
        """The `PruneResult` of (runs, events, snapshots) deleted in these batches."""
        runs, events, snapshots = counts
        return PruneResult(
            runs,
            events,
            snapshots,
            batches=self.batches,
            longest_lock_ms=round(self.longest * 1000, 3),
        )


def prune_plan(
    pinned: str, unpinned: str, runs_key: str, snapshots_key: str, event_sha: str = "{}"
) -> tuple[tuple[str, str, str], ...]:
    """`StoreBase.prune`'s (table, key of a row, condition with ``:now``) in one SQL dialect.

    `pinned` and `unpinned` are the dialect's tests of ``runs.pinned``; the keys name a row of
    runs and of snapshots; `event_sha` turns an events sha column (``{}``) into the text that
    snapshots are keyed by (PostgreSQL stores it as bytes). Each condition holds before and after
    the others run, so the batches of one table can interleave with writers and with each other;
    ``expires_at <= :now`` leads every condition so the expiry indexes serve it (tests check the
    query plans).
    """
    runs = f"SELECT run_id FROM runs WHERE {pinned}"
    refs = " UNION ".join(
        [
            f"SELECT {event_sha.format(c)} FROM events WHERE run_id IN ({runs}) AND {c} IS NOT NULL"
            for c in ("output_sha", "args_sha")
        ]
        + [
            f"SELECT {c} FROM runs WHERE {pinned} AND {c} IS NOT NULL"
            for c in ("input_sha", "output_sha", "http_sha")
        ]
    )
    return (
        (
            "runs",
            runs_key,
            f"expires_at <= :now AND {unpinned} AND NOT EXISTS (SELECT 1 FROM events e "
            "WHERE e.run_id = runs.run_id AND (e.expires_at IS NULL OR e.expires_at > :now))",
        ),
        ("events", "run_id, seq", f"expires_at <= :now AND run_id NOT IN ({runs})"),
        ("snapshots", snapshots_key, f"expires_at <= :now AND sha NOT IN ({refs})"),
    )


def now_ms() -> int:
    """The time now in epoch milliseconds."""
    return int(time.time() * 1000)


_clock_ms = now_ms  # for methods whose `now_ms` parameter hides the function


def run_row(run: Run, event_ms: int) -> tuple[Any, ...]:
    """A `Run` as the tuple of `RUN_COLUMNS` both backends write; unpinned runs expire `event_ms`
    after they ended (or started) unless the run names its own expiry."""
    expires = run.expires_at
    if run.pinned:
        expires = None
    elif expires is None:
        expires = (run.ended_ms if run.ended_ms is not None else run.started_ms) + event_ms
    return (
        run.run_id,
        run.agent,
        run.entrypoint,
        None if run.input is None else canonical_json(run.input),
        None if run.output is None else canonical_json(run.output),
        run.input_sha,
        run.output_sha,
        orjson.dumps(run.versions, option=orjson.OPT_SORT_KEYS).decode(),  # dict[str, str]
        orjson.dumps(run.labels, option=orjson.OPT_SORT_KEYS).decode(),
        run.started_ms,
        run.ended_ms,
        run.stop_reason,
        orjson.dumps(run.usage.__dict__).decode(),
        run.tool_calls,
        int(run.pinned),
        expires,
        run.replay_of,
        getattr(run, "call_style", "bound"),
        run.host,
        run.http_sha,
        run.pid,
        run.last_seen_ms,
        run.key_fingerprint,
    )


def run_rows_with_totals(
    conn: Connectionish, runs: Sequence[Run], event_ms: int, marks: str = "?"
) -> list[tuple[Any, ...]]:
    """The `RUN_WRITE_COLUMNS` tuples of `runs`: `run_row` and the step totals read back from
    the events `conn` holds now (call it after the batch's events are written, in the same
    transaction). `marks` is the dialect's placeholder."""
    ids = list(dict.fromkeys(r.run_id for r in runs))
    totals: dict[str, tuple[int, str | None, str | None]] = {}
    for i in range(0, len(ids), 500):  # under every backend's bound-parameter limit
        chunk = ids[i : i + 500]
        where = {"marks": ", ".join([marks] * len(chunk))}
        counts = conn.execute(TOTALS_COUNT.format(**where), chunk).fetchall()
        details = conn.execute(TOTALS_DETAIL.format(**where), chunk).fetchall()
        totals.update(step_totals(counts, details))
    return [(*run_row(r, event_ms), *totals.get(r.run_id, NO_STEPS)) for r in runs]


def untotalled_ids(events: Sequence[Sequence[Any]], runs: Sequence[Run]) -> list[str]:
    """The runs with events in this batch but no row: their totals are to be emptied."""
    written = {r.run_id for r in runs}
    return sorted({e[0] for e in events} - written)


def _run_filter(
    agent: str | None,
    stop_reason: str | None,
    since_ms: int | None,
    until_ms: int | None,
    include_replays: bool,
    alias: str,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for cond, value in (
        ("agent = ?", agent),
        ("stop_reason = ?", stop_reason),
        ("started_ms >= ?", since_ms),
        ("started_ms < ?", until_ms),
    ):
        if value is not None:
            clauses.append(alias + cond)
            params.append(value)
    if not include_replays:
        clauses.append(f"{alias}replay_of IS NULL")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


_event_fields = operator.itemgetter(*EVENT_COLUMNS)


def event_row(e: Event) -> tuple[Any, ...]:
    row: tuple[Any, ...] = _event_fields(e.__dict__)  # pydantic keeps field values in __dict__
    usage = row[11]
    if usage is None:
        return row
    # Usage's __dict__ holds exactly its four fields: orjson dumps it ~5x faster than model_dump().
    return row[:11] + (orjson.dumps(usage.__dict__).decode(),) + row[12:]


def _safe_id(value: Any) -> str:
    """A run id from a row as it can be shown: printable ASCII, at most 40 characters."""
    text = value if isinstance(value, str) else repr(value)
    shown = ascii(text)[1:-1]
    return shown if len(shown) <= 40 else shown[:39] + "…"


def _corrupt(
    path: str, table: str, columns: Sequence[str], row: Sequence[Any], exc: Exception
) -> CorruptRowError:
    """What is wrong with `row`, named by run id and field; never the value itself."""
    from pydantic import ValidationError

    run_id = _safe_id(row[0] if row else None)
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(row)"
        problem = err["msg"]
    elif isinstance(exc, _FieldError):
        field, problem = exc.field, exc.problem
    else:
        field, problem = "(row)", type(exc).__name__
    return CorruptRowError(path, table, run_id, field, problem)


class _FieldError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem


def _json_field(d: dict[str, Any], key: str, reader: Any) -> None:
    value = d[key]
    if value is None:
        return
    try:
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogatepass")
        if not isinstance(value, bytes):
            raise TypeError
        d[key] = reader(value)
    except RecursionError:
        raise _FieldError(key, "JSON nested too deeply") from None
    except (TypeError, ValueError):
        raise _FieldError(key, "not valid JSON") from None


def _event_from_row(row: Sequence[Any]) -> Event:
    # model_validate runs in pydantic-core (Rust); model_construct is pure Python and 4x slower.
    d = dict(zip(EVENT_COLUMNS, row, strict=True))
    if d["usage"] is not None:
        _json_field(d, "usage", orjson.loads)
    return Event.model_validate(d)


def _trusted_events(
    rows: Iterable[Sequence[Any]], run_id: str
) -> tuple[EventTable, dict[str, tuple[bytes, str | None, bool]], bool]:
    """`StoreBase.replay_events` from its rows (`_REPLAY_SELECT`): the event columns set on
    most steps, the output snapshot's body (NULL when it is gone), then the rest
    (`_REPLAY_RARE`)."""
    gone = False
    intern = sys.intern  # one string per kind, tool and status rather than one per row (memory)
    events: list[tuple[Any, ...]] = []
    snaps: dict[str, tuple[bytes, str | None, bool]] = {}
    usages: dict[str | bytes, dict[str, Any]] = {}  # usage text -> its fields (`trusted_usage`)
    for kind, ts_ms, step_id, tool, args_sha, output_sha, duration_ms, status, body, rare in rows:
        error, stop, usage, parent, group, type_name, truncated = (
            _NONE_RARE if rare is None else _rare_values(rare, usages)
        )
        events.append(
            (  # `EVENT_FIELDS` order
                run_id,
                intern(kind),
                ts_ms,
                step_id,
                tool if tool is None else intern(tool),
                args_sha,
                output_sha,
                duration_ms,
                status if status is None else intern(status),
                error,
                stop,
                usage,
                parent,
                group,
            )
        )
        if body is not None and output_sha not in snaps:
            snaps[output_sha] = (
                body if type(body) is bytes else _body_bytes(body),
                type_name,
                bool(truncated),
            )
        elif body is None and output_sha is not None:
            gone = True
    return EventTable(events), snaps, gone


_NONE_RARE = (None, None, None, None, None, None, 0)


def _rare_values(rare: str | bytes, usages: dict[str | bytes, dict[str, Any]]) -> list[Any]:
    """The values of `_RARE_COLUMNS` from their JSON array, the usage made a `Usage`."""
    values = orjson.loads(rare)
    if values[2] is not None:
        values[2] = trusted_usage(values[2], usages)
    return values  # type: ignore[no-any-return]


def _body_bytes(body: Any) -> bytes:
    return bytes(body) if isinstance(body, (bytes, memoryview)) else str(body).encode()


def _run_from_row(row: Sequence[Any]) -> Run:
    d: dict[str, Any] = dict(zip(RUN_COLUMNS, row, strict=True))
    for key in ("input", "output"):
        _json_field(d, key, thaw)
    for key in ("versions", "labels", "usage"):
        if d[key] is None:
            d[key] = {}
        else:
            _json_field(d, key, orjson.loads)
    d["pinned"] = bool(d["pinned"])
    if "call_style" not in Run.model_fields:
        d.pop("call_style")
    return Run.model_validate(d)


_RUN_SELECT = ", ".join(RUN_COLUMNS)
_EVENT_SELECT = ", ".join(EVENT_COLUMNS)
# What a replay reads of each event (`StoreBase.replay_events`): the columns set on most steps
# and the output snapshot's body, then the columns most steps leave empty in one JSON array,
# NULL when they are all empty (a column costs a replay's load per row, also when NULL).
_REPLAY_SELECT = (
    "e.kind, e.ts_ms, e.step_id, e.tool, e.args_sha, e.output_sha, e.duration_ms, e.status, "
    "s.body, {rare}"
)
_RARE_COLUMNS = (
    "e.error",
    "e.stop_reason",
    "e.usage",
    "e.parent_step_id",
    "e.concurrent_group",
    "s.type_name",
    "s.truncated",
)


def rare_columns(array: str) -> str:
    """The last column of `_REPLAY_SELECT`, with `array` the SQL that makes a JSON array text of
    its ``{}`` (SQLite's ``json_array({})``)."""
    empty = " AND ".join(f"{c} IS NULL" for c in _RARE_COLUMNS[:-1])
    values = array.format(", ".join(_RARE_COLUMNS))
    return f"CASE WHEN {empty} AND coalesce(s.truncated, 0) = 0 THEN NULL ELSE {values} END"


class Connectionish(Protocol):
    """What the read queries need of a connection: ``execute(sql, params)`` with ``?`` marks."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...


class StoreBase:
    """The Store interface (`replay.store_api.StoreAPI` names it) and the read side of a replay
    store, shared by the SQLite and the PostgreSQL backend.

    A backend sets the attributes below and implements `_reading` (a context manager yielding a
    `Connectionish` and turning the driver's errors into `StoreError`), the key and naming
    properties, `query`, and the writing, retention and lifecycle methods that raise
    ``NotImplementedError`` here.
    """

    #: ``"sqlite"`` or ``"postgresql"``: for the few queries `query` callers write per dialect
    dialect: str = ""
    #: the fingerprint the store was first written with (``meta.key_fingerprint``)
    stored_fingerprint: str | None
    snapshot_days: float
    event_days: float
    _snapshot_ms: int
    _event_ms: int

    # -- what a backend provides ------------------------------------------------------------------

    if TYPE_CHECKING:  # an attribute of the SQLite store, a property of the PostgreSQL one

        @property
        def secret_key(self) -> bytes:
            """The pseudonym key in use (never kept in the store itself)."""

        @property
        def key_source(self) -> str:
            """Where `secret_key` came from: ``"env"``, ``"file"`` or ``"memory"``."""

        @property
        def key_fingerprint(self) -> str:
            """`replay.keys.fingerprint` of `secret_key`."""

        @property
        def path(self) -> str | os.PathLike[str]:
            """The file, or the URL without its password."""

    @property
    def display_name(self) -> str:
        """A short name of the store for messages (a file name, or a URL without its password)."""
        raise NotImplementedError

    @property
    def location(self) -> str:
        """The full name of the store for messages (a path, or a URL without its password)."""
        raise NotImplementedError

    def _reading(self, action: str) -> contextlib.AbstractContextManager[Connectionish]:
        raise NotImplementedError

    @property
    def _prune_plan(self) -> tuple[tuple[str, str, str], ...]:
        """(table, key of a row, condition with ``:now``) in the order `prune` deletes them."""
        raise NotImplementedError

    def _retention_writing(self, action: str) -> contextlib.AbstractContextManager[Connectionish]:
        """One write transaction whose ``execute`` takes SQLite's ``?`` and ``:name`` marks."""
        raise NotImplementedError

    def _touch(self, now: int, run_ids: Sequence[str]) -> None:
        """Set the heartbeat of the still-open runs among `run_ids` to `now` (one transaction)."""
        raise NotImplementedError

    def _prune_events(self, p: dict[str, int], pause_s: float, timer: PruneTimer) -> int:
        """Delete the expired events in batches (each backend pages them its own way)."""
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only SQL statement with ``?`` placeholders (on either backend).

        Raises:
            StoreError: the statement failed or tried to write.
        """
        raise NotImplementedError

    def write_rows(
        self, events: EventRows, *, runs: Sequence[Run] = (), snapshots: Sequence[SnapshotRow] = ()
    ) -> None:
        """`write_batch` for events as tuples in `EVENT_COLUMNS` order (the writer's fast path).

        ``usage`` is compact JSON text or None. Rows are not validated beyond their length: the
        caller builds them from the same fields as `Event`.

        Raises:
            ValueError: a row does not have ``len(EVENT_COLUMNS)`` items.
            StoreError: the write failed; nothing was written.
        """
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def touch_runs(self, run_ids: Sequence[str], now_ms: int | None = None) -> None:
        """The writer's heartbeat: the runs in `run_ids` are still open in a live process.

        Raises:
            StoreError: the write failed.
        """
        if run_ids:
            self._touch(_clock_ms() if now_ms is None else int(now_ms), run_ids)

    # -- retention (shared; SQL in SQLite's placeholders, translated by the PostgreSQL store) --

    def pin(self, run_id: str, pinned: bool = True) -> Run:
        """Pin a run (an incident) so that nothing of it expires, or unpin it.

        Pinning clears expires_at on the run and its events, and `prune` keeps the snapshots they
        reference. Unpinning gives them the store's normal lifetimes back, counted from their times.

        Raises:
            RunNotFoundError: no such run.
        """
        with self._retention_writing("pinning a run") as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise RunNotFoundError(run_id, self.display_name, self.count_runs())
            if pinned:
                conn.execute(
                    "UPDATE runs SET pinned = 1, expires_at = NULL WHERE run_id = ?", (run_id,)
                )
                conn.execute("UPDATE events SET expires_at = NULL WHERE run_id = ?", (run_id,))
            else:
                conn.execute(
                    "UPDATE runs SET pinned = 0, expires_at = coalesce(ended_ms, started_ms) + ? "
                    "WHERE run_id = ?",
                    (self._event_ms, run_id),
                )
                conn.execute(
                    "UPDATE events SET expires_at = ts_ms + ? WHERE run_id = ?",
                    (self._event_ms, run_id),
                )
        return self.get_run(run_id)

    def prune(
        self,
        *,
        now_ms: int | None = None,
        dry_run: bool = False,
        batch_size: int = PRUNE_BATCH,
        pause_s: float = 0.002,
    ) -> PruneResult:
        """Delete what has expired at `now_ms` (default: now); with `dry_run`, only count it.

        Deletes expired events; runs whose events are all expired and whose own expiry has passed;
        expired snapshots. Nothing of a pinned run is deleted: not its row, not its events, not the
        snapshots its events or its input/output reference.

        Deletion runs in short transactions of at most `batch_size` rows each, with a `pause_s`
        gap between them. Runs and snapshots are found through their expiry indexes; events
        (no such index: it would grow every event) are paged in key order outside the write
        lock and deleted by key, the condition re-checked so a recording process waiting for the
        write lock gets it well within its busy timeout. A prune that stops half way (killed, or
        a batch failing) leaves a consistent store; the next prune carries on.

        Raises:
            ValueError: `batch_size` below 1.
            StoreError: a batch failed (the batches before it stay deleted).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: delete at least 1 row per transaction")
        p = {"now": _clock_ms() if now_ms is None else int(now_ms), "n": int(batch_size)}
        if dry_run:
            with self._reading("counting expired records") as conn:
                counts = [
                    int(conn.execute(f"SELECT count(*) FROM {table} WHERE {cond}", p).fetchone()[0])
                    for table, _key, cond in self._prune_plan
                ]
            runs, events, snaps = counts
            return PruneResult(runs, events, snaps, dry_run=True)
        timer = PruneTimer()
        counts = []
        for table, key, cond in self._prune_plan:
            if table == "events":
                counts.append(self._prune_events(p, pause_s, timer))
                continue
            sql = (
                f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {cond} "
                f"LIMIT :n)"
            )
            n, total = batch_size, 0
            while n >= batch_size:
                with timer.batch(), self._retention_writing("pruning") as conn:
                    n = conn.execute(sql, p).rowcount
                total += n
                if n >= batch_size and pause_s > 0:
                    time.sleep(pause_s)  # let a writer waiting for the lock in
            counts.append(total)
        return timer.result(counts)

    # -- shared ----------------------------------------------------------------------------------

    def write_batch(
        self,
        *,
        runs: Sequence[Run] = (),
        events: Sequence[Event] = (),
        snapshots: Sequence[SnapshotRow] = (),
    ) -> None:
        """Write runs, events and snapshots in one transaction: all of them or, on error, none.

        A run is upserted: a later write of the same run_id replaces its fields, except that a
        pinned run stays pinned. An event is keyed by (run_id, step) and a rewrite replaces it.
        A snapshot is stored once per sha; writing it again only extends its expiry.

        Raises:
            StoreError: the write failed (locked, disk full, read-only, ...); nothing was written.
        """
        self.write_rows([event_row(e) for e in events], runs=runs, snapshots=snapshots)

    def get_run(self, run_id: str) -> Run:
        """The run with this exact id.

        Raises:
            RunNotFoundError: no such run; the message names the store and how many runs it has.
        """
        with self._reading("reading a run") as conn:
            row = conn.execute(
                f"SELECT {_RUN_SELECT} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise RunNotFoundError(run_id, self.display_name, self.count_runs())
        return infer_killed([self._run(row)])[0]

    def find_run(self, prefix: str) -> Run:
        """The run whose id is `prefix` or starts with it (``r_`` may be left out), for the CLI.

        Raises:
            RunNotFoundError: no run matches.
            AmbiguousRunIdError: several runs match; the message lists them.
        """
        prefix = prefix.strip()
        if not prefix:
            raise ValueError(
                "empty run id: pass a run id or a unique prefix of one (see `replay runs`)"
            )
        with self._reading("looking up a run") as conn:
            row = conn.execute(
                f"SELECT {_RUN_SELECT} FROM runs WHERE run_id = ?", (prefix,)
            ).fetchone()
            if row is not None:
                return infer_killed([self._run(row)])[0]
            tries = [prefix] if prefix.startswith("r_") else [prefix, "r_" + prefix]
            for p in tries:
                # A range, not LIKE: run ids contain '_', LIKE's wildcard.
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? "
                        "ORDER BY run_id LIMIT 11",
                        (p, p + "\U0010ffff"),
                    ).fetchall()
                ]
                if len(ids) == 1:
                    return self.get_run(ids[0])
                if ids:
                    raise AmbiguousRunIdError(
                        prefix, self.display_name, ids[:10], more=len(ids) > 10
                    )
        raise RunNotFoundError(prefix, self.display_name, self.count_runs())

    def events(self, run_id: str, *, trusted: bool = False) -> list[Event]:
        """The run's events in order: run_start, the steps by step_id, stop. Empty for an unknown
        run.

        ``trusted=True`` (replay of a long run) skips validating each row again: see
        `trusted_event`.
        """
        if trusted:
            return self.replay_events(run_id)[0].events()
        with self._reading("reading events") as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_SELECT} FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        return [self._event(r) for r in rows]

    #: how a snapshot row matches an event's output_sha in SQL (PostgreSQL stores that as bytes)
    _OUTPUT_SNAPSHOT = "s.sha = e.output_sha"
    #: the columns of an event most steps leave empty, as one JSON array (see `_REPLAY_SELECT`)
    _REPLAY_RARE = rare_columns("json_array({})")

    def replay_events(
        self, run_id: str
    ) -> tuple[EventTable, dict[str, tuple[bytes, str | None, bool]], bool]:
        """`events` (trusted: see `trusted_event`; an `EventTable`, made `Event`s when read) and
        `snapshots` of their outputs, in one query: what a replay loads. An output whose snapshot
        is gone (pruned) is absent from the snapshots; the last value says whether any is."""
        with self._reading("reading events") as conn:
            # Row by row, not fetchall: each row is freed once read, so a 100,000-step run's rows
            # are never all held, and the memory they take is reused while still in the cache.
            return _trusted_events(
                conn.execute(
                    f"SELECT {_REPLAY_SELECT.format(rare=self._REPLAY_RARE)} FROM events e "
                    f"LEFT JOIN snapshots s ON {self._OUTPUT_SNAPSHOT} WHERE e.run_id = ? "
                    "ORDER BY e.seq",
                    (run_id,),
                ),
                run_id,
            )

    def snapshot(self, sha: str) -> tuple[bytes, str | None, bool] | None:
        """``(body, type_name, truncated)`` of the snapshot with this sha; None if never stored or
        pruned."""
        return self.snapshots([sha]).get(sha)

    def snapshots(self, shas: Iterable[str]) -> dict[str, tuple[bytes, str | None, bool]]:
        """`snapshot` for many shas in a few queries (a 10,000-step replay reads them all at once).

        Shas never stored or already pruned are absent from the result.
        """
        wanted = list(dict.fromkeys(s for s in shas if s))
        out: dict[str, tuple[bytes, str | None, bool]] = {}
        with self._reading("reading snapshots") as conn:
            for i in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for sha, body, type_name, truncated in conn.execute(
                    f"SELECT sha, body, type_name, truncated FROM snapshots WHERE sha IN ({marks})",
                    chunk,
                ).fetchall():
                    out[sha] = (_body_bytes(body), type_name, bool(truncated))
        return out

    def runs(
        self,
        *,
        agent: str | None = None,
        stop_reason: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
        include_replays: bool = False,
    ) -> list[Run]:
        """Runs newest first, started in ``[since_ms, until_ms)``.

        Replays of recorded runs (``replay_of`` set) are left out unless `include_replays`.
        """
        where, params = _run_filter(agent, stop_reason, since_ms, until_ms, include_replays, "")
        sql = f"SELECT {_RUN_SELECT} FROM runs{where} ORDER BY started_ms DESC, run_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._reading("listing runs") as conn:
            rows = conn.execute(sql, params).fetchall()
        return infer_killed(self._readable(rows, self._run, "runs"))

    def count_runs(self) -> int:
        """How many runs the store holds (replays included)."""
        with self._reading("counting runs") as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])

    def agents(self) -> list[str]:
        """The agent names that have runs, sorted."""
        with self._reading("listing agents") as conn:
            rows = conn.execute("SELECT DISTINCT agent FROM runs ORDER BY agent").fetchall()
        return sorted(str(r[0]) for r in rows)

    def step_events(
        self,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        agent: str | None = None,
        include_replays: bool = False,
    ) -> list[Event]:
        """The tool_result and model_result events of the runs started in ``[since_ms, until_ms)``.

        Ordered by run start, then step. Replays are left out unless `include_replays`.
        """
        where, params = _run_filter(agent, None, since_ms, until_ms, include_replays, "r.")
        where = (
            where + " AND" if where else " WHERE"
        ) + " e.kind IN ('tool_result', 'model_result')"
        cols = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
        sql = (
            f"SELECT {cols} FROM runs r JOIN events e ON e.run_id = r.run_id{where} "
            "ORDER BY r.started_ms, e.run_id, e.seq"
        )
        with self._reading("reading step events") as conn:
            rows = conn.execute(sql, params).fetchall()
        return self._readable(rows, self._event, "events")

    def expired_steps(
        self, run: Run, events: Sequence[Event] | None = None
    ) -> list[tuple[int, str, int]]:
        """The top-level steps of `run` whose output snapshot is gone: ``(step_id, tool, since)``.

        `since_ms` is when the snapshot expired: written with the step, it lived `snapshot_days`
        from then (a later write of the same content would have kept it longer). Empty when every
        snapshot a replay needs is still there.
        """
        if run.replay_of is not None:
            # a replay's answers point at the recording's snapshots, kept in its own store
            return []
        if events is None:
            events = self.events(run.run_id)
        steps = [e for e in events if is_step(e) and e.output_sha]
        if not steps:
            return []
        found = self.snapshots(e.output_sha for e in steps if e.output_sha)
        return [
            (e.step_id or 0, e.tool or "?", e.ts_ms + self._snapshot_ms)
            for e in steps
            if e.output_sha not in found
        ]

    # -- row reading -----------------------------------------------------------------------------

    def _run(self, row: Sequence[Any]) -> Run:
        try:
            return _run_from_row(row)
        except CorruptRowError:
            raise
        except Exception as exc:  # noqa: BLE001 - any damage in the row: name it, never crash
            raise _corrupt(self.location, "runs", RUN_COLUMNS, row, exc) from None

    def _event(self, row: Sequence[Any]) -> Event:
        try:
            return _event_from_row(row)
        except Exception as exc:  # noqa: BLE001
            raise _corrupt(self.location, "events", EVENT_COLUMNS, row, exc) from None

    def _readable(self, rows: list[Any], read: Callable[[Any], Any], table: str) -> list[Any]:
        """Rows read for a listing; an unreadable one is skipped with one warning naming its run."""
        out, bad = [], []
        for r in rows:
            try:
                out.append(read(r))
            except CorruptRowError as exc:
                bad.append(exc)
        if bad:
            names = ", ".join(f"{e.run_id} ({e.field})" for e in bad[:5]) + (
                ", …" if len(bad) > 5 else ""
            )
            warnings.warn(
                f"{self.location}: skipped {len(bad)} unreadable row(s) of {table}: {names}; "
                f"`replay show RUN_ID` names the problem",
                CorruptRowWarning,
                stacklevel=3,
            )
        return out

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
