"""The SQL behind `replay stats`, `alerts` and `metrics`: aggregates over a window of runs.

Every query runs through ``store.query(sql, params) -> list[tuple]`` with ``?`` placeholders and
SQL that SQLite and PostgreSQL both read (the PostgreSQL store translates ``?`` to ``%s``): no
JSON function and no dialect hook, as the usage JSON is parsed here, with orjson (text from
SQLite, text or an already-decoded dict from a PostgreSQL JSON column).

What is computed where:

- counts and group-bys (runs by stop reason, tool steps per window or per start) in SQL;
- percentiles from one numeric column per figure (tool calls per run, latency, tokens), and the
  failed steps' error classes as one narrow row each, fetched as plain tuples and cut with
  `replay.stats.percentile`: no `Run` or `Event` object is built per run or event;
- a run row that `Store.runs` would skip as unreadable is left out here too (`read_usage`,
  `RunColumns.skipped`, `warn_skipped`);
- runs that have no stop reason and carry a pid go through `replay.liveness.infer_killed`, so a
  run whose process died still counts as ``killed`` (inferred) as it does in `Store.runs`;
- a run's step figures (tool steps, failed tool steps by error class, each model step's tokens)
  are read from its row (`TOTAL_COLUMNS`, which the store fills from the run's events whenever it
  writes the run row, see `step_totals`), so stats and alerts read one row per run; only the runs
  whose totals are not there (still recording, written before schema 9, events pruned or written
  after the run row) have their events read (`Window.untotalled`).

A window is the runs started in ``[since_ms, until_ms)`` (either end open when None), optionally
of one agent, never the runs written by replay (``replay_of`` set). Each query reaches its runs
through an index on ``runs`` (``runs_started`` or ``runs_agent``) and their events through the
events primary key ``(run_id, seq)``; ``tests/integration/test_query_plans.py`` reads the plans.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from replay.errors import CorruptRowWarning
from replay.liveness import infer_killed
from replay.models import Run, validate_stop_reason

__all__ = [
    "QueryStore",
    "RunColumns",
    "NO_STEPS",
    "TOTALS_COUNT",
    "TOTALS_DETAIL",
    "TOTAL_COLUMNS",
    "StepValues",
    "Window",
    "finished_run_rows",
    "killed_inferred",
    "model_usage_by_run",
    "RankRow",
    "rank",
    "rank_rows",
    "read_usage",
    "run_columns",
    "step_errors",
    "step_tokens",
    "step_totals",
    "step_values",
    "stop_counts",
    "tool_step_counts",
    "top_runs_by_errors",
    "usage_of",
    "warn_skipped",
]


class QueryStore(Protocol):
    """What the monitoring queries need of a store: one read-only SQL statement at a time."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Window:
    """The production runs started in ``[since_ms, until_ms)``, optionally of one agent.

    `bucket_ms` (an hour or a day in ms) sorts what the queries return by the bucket each run
    started in (its start rounded down to a multiple of `bucket_ms`); None puts all in bucket 0.
    """

    since_ms: int | None = None
    until_ms: int | None = None
    agent: str | None = None
    bucket_ms: int | None = None
    #: run ids left out (unreadable rows, see `run_columns`)
    exclude: tuple[str, ...] = ()
    #: only the runs whose row holds no step totals (their steps are read from events)
    untotalled: bool = False

    def where(self, alias: str = "r") -> tuple[str, list[Any]]:
        """The WHERE clause (with its leading ``WHERE``) and its parameters."""
        clauses = [f"{alias}.replay_of IS NULL"]
        if self.untotalled:
            clauses.append(f"{alias}.tool_steps IS NULL")
        params: list[Any] = []
        if self.exclude:
            clauses.append(f"{alias}.run_id NOT IN ({', '.join('?' * len(self.exclude))})")
            params.extend(self.exclude)
        for cond, value in (
            ("agent = ?", self.agent),
            ("started_ms >= ?", self.since_ms),
            ("started_ms < ?", self.until_ms),
        ):
            if value is not None:
                clauses.append(f"{alias}.{cond}")
                params.append(value)
        return " WHERE " + " AND ".join(clauses), params

    def bucket_of(self, started_ms: int) -> int:
        """The bucket a run that started at `started_ms` falls in."""
        size = self.bucket_ms
        return 0 if size is None else started_ms - started_ms % size


def usage_of(value: Any) -> dict[str, Any]:
    """A usage column as a dict: from JSON text or a JSON column; {} when NULL or unreadable."""
    if isinstance(value, dict):
        return value
    if isinstance(value, (str, bytes)):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _num(usage: dict[str, Any], key: str) -> float:
    v = usage.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


_USAGE_KEYS = frozenset(("tokens_in", "tokens_out", "tool_calls", "cost_usd"))
_MAX_INT = 2**63 - 1


def _count_ok(v: Any) -> bool:
    return type(v) is int and 0 <= v <= _MAX_INT


def read_usage(value: Any) -> tuple[dict[str, Any], str | None]:
    """A run's usage column as `replay.models.Usage` would read it: ``(usage, None)``, or
    ``({}, field)`` naming what makes the row unreadable (`Store.runs` skips such a row)."""
    if value is None:
        return {}, None
    if isinstance(value, dict):
        usage: Any = value
    else:
        try:
            usage = orjson.loads(value)
        except (orjson.JSONDecodeError, TypeError):
            return {}, "usage"
        if type(usage) is not dict:
            return {}, "usage"
    if not usage.keys() <= _USAGE_KEYS:
        return {}, f"usage.{sorted(usage.keys() - _USAGE_KEYS)[0]}"
    for key in ("tokens_in", "tokens_out", "tool_calls"):
        v = usage.get(key, 0)  # inline `_count_ok`: this runs for every run of a window
        if type(v) is not int or not 0 <= v <= _MAX_INT:
            return {}, f"usage.{key}"
    cost = usage.get("cost_usd", 0.0)
    if type(cost) not in (int, float) or not (math.isfinite(cost) and cost >= 0):
        return {}, "usage.cost_usd"
    return usage, None


class _RowCheck:
    """The other columns `Store.runs` validates that the monitoring queries read."""

    def __init__(self) -> None:
        self.reasons: set[str] = set()  # stop reasons already found valid

    def problem(self, tool_calls: Any, latency: Any, stop_reason: Any) -> str | None:
        if not _count_ok(tool_calls):
            return "tool_calls"
        if latency is not None and type(latency) is not int:
            return "ended_ms"
        if stop_reason is not None and stop_reason not in self.reasons:
            try:
                validate_stop_reason(stop_reason)
            except ValueError:
                return "stop_reason"
            self.reasons.add(stop_reason)
        return None


@dataclass
class RunColumns:
    """One list per figure, index-aligned with `bucket` (the bucket of each run of the window),
    and the step totals of the runs whose row holds them (`TOTAL_COLUMNS`), by bucket."""

    bucket: list[int]
    calls: list[float]
    latency: list[float | None]
    cost: list[float]
    tokens: list[float]
    #: ``(run_id, field)`` of the rows left out because they cannot be read
    skipped: list[tuple[str, str]]
    #: bucket -> tool steps of its runs that hold totals
    tool_steps: dict[int, int] = field(default_factory=dict)
    #: bucket -> failed tool steps of those runs by error class
    step_errors: dict[int, dict[str, int]] = field(default_factory=dict)
    #: bucket -> ``tokens_in + tokens_out`` of each model step of those runs
    model_tokens: dict[int, list[float]] = field(default_factory=dict)
    #: how many of the window's runs hold no totals (`Window.untotalled` reads their events)
    untotalled: int = 0


def _run_rows(
    store: QueryStore, window: Window, cols: str, cond: str = ""
) -> list[tuple[Any, ...]]:
    """``SELECT cols FROM runs r`` of the window's runs, `cond` (`` AND ...``) appended."""
    where, params = window.where()
    return store.query(f"SELECT {cols} FROM runs r{where}{cond}", params)


def run_columns(store: QueryStore, window: Window) -> RunColumns:
    """Per run of the window: tool calls, latency (None if unfinished), spend, tokens; and the
    step totals (`TOTAL_COLUMNS`) of the runs that hold them, by bucket.

    Reads narrow columns; the JSON columns are parsed here (orjson), the same on every backend. A
    row `Store.runs` would skip as unreadable is left out and named in `RunColumns.skipped`.
    """
    rows = _run_rows(
        store,
        window,
        "r.run_id, r.started_ms, r.tool_calls, r.ended_ms - r.started_ms, r.usage, r.stop_reason, "
        "r.tool_steps, r.step_errors, r.model_tokens",
    )
    cols = RunColumns([], [], [], [], [], [])
    check = _RowCheck()
    bucket_of = window.bucket_of
    buckets, calls_, latency_, cost_, tokens_ = (
        cols.bucket.append,
        cols.calls.append,
        cols.latency.append,
        cols.cost.append,
        cols.tokens.append,
    )
    steps_by, errors_by = cols.tool_steps, cols.step_errors
    model_by: dict[int, list[str]] = {}  # bucket -> the runs' JSON arrays, parsed at once below
    for run_id, started, calls, latency, usage_text, reason, steps, errors, model in rows:
        usage, problem = read_usage(usage_text)
        problem = problem or check.problem(calls, latency, reason)
        if problem is not None:
            cols.skipped.append((str(run_id), problem))
            continue
        get = usage.get
        b = bucket_of(started)
        buckets(b)
        calls_(float(calls or get("tool_calls", 0)))
        latency_(None if latency is None else float(latency))
        cost_(float(get("cost_usd", 0.0)))
        tokens_(float(get("tokens_in", 0) + get("tokens_out", 0)))
        if steps is None:
            cols.untotalled += 1
            continue
        steps_by[b] = steps_by.get(b, 0) + int(steps)
        if errors is not None:
            counts = errors_by.get(b)
            if counts is None:
                counts = errors_by[b] = {}
            for name, n in _step_errors_of(errors).items():
                counts[name] = counts.get(name, 0) + n
        if model is not None:
            model_by.setdefault(b, []).append(model)
    for b, texts in model_by.items():
        cols.model_tokens[b] = _model_tokens_of(texts)
    return cols


def warn_skipped(store: object, skipped: Sequence[tuple[str, str]], stacklevel: int = 3) -> None:
    """One `CorruptRowWarning` naming the skipped runs and fields (as `Store.runs` words it)."""
    if not skipped:
        return
    names = ", ".join(f"{rid} ({field})" for rid, field in skipped[:5])
    more = ", …" if len(skipped) > 5 else ""
    warnings.warn(
        f"{getattr(store, 'path', 'the store')}: skipped {len(skipped)} unreadable row(s) of "
        f"runs: {names}{more}; `replay show RUN_ID` names the problem",
        CorruptRowWarning,
        stacklevel=stacklevel,
    )


def stop_counts(store: QueryStore, window: Window) -> list[tuple[int, str | None, int]]:
    """``(bucket, stop_reason, runs)`` of the window, as stored (None: no stop event yet)."""
    where, params = window.where()
    if window.bucket_ms is None:
        sql = f"SELECT 0, r.stop_reason, count(*) FROM runs r{where} GROUP BY r.stop_reason"
    else:
        sql = (
            f"SELECT r.started_ms - r.started_ms % ? AS b, r.stop_reason, count(*) FROM runs r"
            f"{where} GROUP BY b, r.stop_reason"
        )
        params = [window.bucket_ms, *params]
    return [(int(b), reason, int(n)) for b, reason, n in store.query(sql, params)]


def killed_inferred(store: QueryStore, window: Window) -> list[tuple[int, str]]:
    """``(bucket, run_id)`` of the window's runs with no stop whose process is gone.

    The candidates (no stop reason, a pid) are few; `replay.liveness.infer_killed` judges them
    exactly as `Store.runs` does.
    """
    rows = _run_rows(
        store,
        window,
        "r.run_id, r.agent, r.started_ms, r.host, r.pid, r.last_seen_ms",
        " AND r.stop_reason IS NULL AND r.pid IS NOT NULL",
    )
    runs = []
    for rid, agent, started, host, pid, seen in rows:
        try:
            run = Run(run_id=rid, agent=agent, started_ms=started, pid=pid, last_seen_ms=seen)
        except ValueError:  # an unreadable row: the listing that reads it names it
            continue
        run.host = host or ""
        runs.append(run)
    infer_killed(runs)
    return [(window.bucket_of(r.started_ms), r.run_id) for r in runs if r.stop_reason == "killed"]


def _steps_from(window: Window) -> tuple[str, list[Any]]:
    # CROSS JOIN keeps SQLite's join order as written (PostgreSQL reads it as an inner join):
    # the window's runs through their index, then each run's events by primary key. Left to
    # itself, SQLite can pick a scan of every event when the step conditions look selective.
    where, params = window.where()
    return f" FROM runs r CROSS JOIN events e{where} AND e.run_id = r.run_id", params


def tool_step_counts(store: QueryStore, window: Window) -> list[tuple[int, int]]:
    """``(bucket, tool steps)`` of the window's runs (``tool_result`` events)."""
    source, params = _steps_from(window)
    cond = " AND e.kind = 'tool_result'"
    if window.bucket_ms is None:
        return [(0, int(n)) for (n,) in store.query(f"SELECT count(*){source}{cond}", params)]
    # Grouped by the start itself: rows arrive in index order, so no sort of every step.
    rows = store.query(f"SELECT r.started_ms, count(*){source}{cond} GROUP BY r.started_ms", params)
    return [(window.bucket_of(started), int(n)) for started, n in rows]


@dataclass
class StepValues:
    """The failed tool steps (by error class) and the model steps' tokens of a window's runs."""

    errors: list[tuple[int, str]]
    tokens: list[tuple[int, float]]


def step_values(store: QueryStore, window: Window) -> StepValues:
    """Each failed tool step's ``(bucket, error class)`` (``"unknown"`` when unnamed) and each
    model step's ``(bucket, tokens_in + tokens_out)`` (the steps that carry usage), in one pass."""
    source, params = _steps_from(window)
    rows = store.query(
        f"SELECT r.started_ms, e.kind, e.error, e.usage{source} AND ("
        "(e.kind = 'tool_result' AND e.status = 'error') "
        "OR (e.kind = 'model_result' AND e.usage IS NOT NULL))",
        params,
    )
    out = StepValues([], [])
    errors, tokens, bucket_of = out.errors.append, out.tokens.append, window.bucket_of
    for started, kind, error, usage_text in rows:
        if kind == "tool_result":
            errors((bucket_of(started), error or "unknown"))
        else:
            tokens((bucket_of(started), step_tokens(usage_text)))
    return out


def step_tokens(usage_text: Any) -> float:
    """``tokens_in + tokens_out`` of a model step's usage column (a part that is not a number
    counts 0)."""
    try:  # the fast path: JSON text holding two numbers
        usage = orjson.loads(usage_text)
        return float(usage["tokens_in"] + usage["tokens_out"])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        usage = usage_of(usage_text)
        return _num(usage, "tokens_in") + _num(usage, "tokens_out")


#: The runs columns that hold a run's step figures (schema 9). The store fills them from the
#: run's events each time it writes the run row (`step_totals`), and empties them when events of
#: the run are written without its row or pruned, so they are either NULL or what the events say:
#: the number of ``tool_result`` steps (NULL: not computed), the failed ones as JSON
#: ``{error class: count}`` (NULL: none), each model step's ``tokens_in + tokens_out`` as a JSON
#: array in step order (NULL: none).
TOTAL_COLUMNS: tuple[str, ...] = ("tool_steps", "step_errors", "model_tokens")
#: The totals of a run with no step.
NO_STEPS: tuple[int, None, None] = (0, None, None)
#: What `step_totals` reads of events (``{marks}``: the run ids): the tool steps counted in the
#: database, then only the steps whose value is needed (failed tool steps, model steps with usage,
#: about a fifth of a run's events) as rows.
TOTALS_COUNT = (
    "SELECT run_id, count(*) FROM events WHERE run_id IN ({marks}) AND kind = 'tool_result' "
    "GROUP BY run_id"
)
TOTALS_DETAIL = (
    "SELECT run_id, kind, error, usage FROM events WHERE run_id IN ({marks}) AND ("
    "(kind = 'tool_result' AND status = 'error') OR (kind = 'model_result' AND usage IS NOT NULL))"
)
_BIG = 2**53


def step_totals(
    counts: Iterable[Sequence[Any]], details: Iterable[Sequence[Any]]
) -> dict[str, tuple[int, str | None, str | None]]:
    """The `TOTAL_COLUMNS` values of each run from the rows of `TOTALS_COUNT` (``(run_id, tool
    steps)``) and `TOTALS_DETAIL` (``(run_id, kind, error, usage)``); a run with no step is
    absent (its totals are `NO_STEPS`).

    The figures are those `tool_step_counts` and `step_values` compute from the same events.
    """
    acc: dict[str, tuple[list[int], dict[str, int], list[float]]] = {
        run_id: ([int(n)], {}, []) for run_id, n in counts
    }
    for run_id, kind, error, usage in details:
        got = acc.get(run_id)
        if got is None:
            got = acc[run_id] = ([0], {}, [])
        if kind == "tool_result":
            name = error or "unknown"
            got[1][name] = got[1].get(name, 0) + 1
        else:
            got[2].append(step_tokens(usage))
    return {
        run_id: (
            n[0],
            orjson.dumps(errors, option=orjson.OPT_SORT_KEYS).decode() if errors else None,
            # whole numbers as JSON integers (shorter); read back as the same floats
            orjson.dumps(
                [int(v) if v.is_integer() and abs(v) < _BIG else v for v in tokens]
            ).decode()
            if tokens
            else None,
        )
        for run_id, (n, errors, tokens) in acc.items()
    }


def _step_errors_of(value: Any) -> dict[str, int]:
    try:
        parsed = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError):
        return {}
    if type(parsed) is not dict:
        return {}
    return {k: v for k, v in parsed.items() if type(v) is int}


def _model_tokens_of(texts: list[str]) -> list[float]:
    """The numbers of many `model_tokens` JSON arrays, parsed as one array (~10x faster)."""
    try:
        values = orjson.loads("[" + ",".join(t[1:-1] for t in texts if t != "[]") + "]")
        math.fsum(values)  # raises TypeError unless every item is a number
        return values  # type: ignore[no-any-return]  # JSON numbers: int or float
    except (orjson.JSONDecodeError, TypeError, ValueError, OverflowError):
        out: list[float] = []
        for t in texts:  # a damaged row: read each on its own, keep its numbers
            try:
                parsed = orjson.loads(t)
            except orjson.JSONDecodeError:
                continue
            if type(parsed) is list:
                out += [float(v) for v in parsed if type(v) in (int, float)]
        return out


#: What `rank` orders by: tool calls, spend, latency of finished runs, latency with unfinished
#: runs counted as 0.
RankKey = Literal["calls", "spend", "latency", "latency_or_0"]


class RankRow(NamedTuple):
    """What ranking a run needs: a narrow row, not a `Run`."""

    run_id: str
    started_ms: int
    stop_reason: str | None
    calls: float
    spend: float
    latency_ms: int | None


def rank(
    rows: Sequence[RankRow], key: RankKey, n: int, stop_reason: str | None = None
) -> list[str]:
    """The ids of the `n` rows highest by `key` (of one stop reason); ties go to the newest run,
    then the smaller id. The one definition of "the runs to look at first"."""
    value: Callable[[RankRow], float] = {
        "calls": lambda r: r.calls,
        "spend": lambda r: r.spend,
        "latency": lambda r: float(r.latency_ms or 0),
        "latency_or_0": lambda r: float(r.latency_ms or 0),
    }[key]
    chosen = [
        r
        for r in rows
        if (stop_reason is None or r.stop_reason == stop_reason)
        and (key != "latency" or r.latency_ms is not None)
    ]
    chosen.sort(key=lambda r: (-value(r), -r.started_ms, r.run_id))
    return [r.run_id for r in chosen[: max(n, 0)]]


def rank_rows(store: QueryStore, window: Window) -> list[RankRow]:
    """A `RankRow` per readable run of the window (unreadable rows are left out, as in `stats`)."""
    rows = _run_rows(
        store,
        window,
        "r.run_id, r.started_ms, r.stop_reason, r.tool_calls, r.usage, r.ended_ms - r.started_ms",
    )
    out = []
    check = _RowCheck()
    for run_id, started, reason, calls, usage_text, latency in rows:
        usage, problem = read_usage(usage_text)
        if problem is None and check.problem(calls, latency, reason) is None:
            get = usage.get
            calls_ = float(calls or get("tool_calls", 0))
            out.append(
                RankRow(run_id, started, reason, calls_, float(get("cost_usd", 0.0)), latency)
            )
    return out


def top_runs_by_errors(
    store: QueryStore, window: Window, errors: Sequence[str], n: int
) -> list[str]:
    """The ids of the `n` runs with the most failed tool steps of these error classes."""
    if n <= 0 or not errors:
        return []
    source, params = _steps_from(window)
    marks = ", ".join("?" * len(errors))
    rows = store.query(
        f"SELECT e.run_id, count(*) AS k, max(r.started_ms) AS s{source} "
        f"AND e.kind = 'tool_result' AND e.status = 'error' AND e.error IN ({marks}) "
        "GROUP BY e.run_id ORDER BY k DESC, s DESC, e.run_id LIMIT ?",
        [*params, *errors, n],
    )
    return [str(r[0]) for r in rows]


def finished_run_rows(store: QueryStore, window: Window) -> list[tuple[Any, ...]]:
    """What metrics count per finished run of the window, oldest first.

    ``(run_id, agent, started_ms, stop_reason, tool_calls, latency_ms, tokens_in, tokens_out,
    cost_usd)``; runs inferred killed are included with stop reason ``killed`` and no latency.
    Unreadable rows are left out with one `CorruptRowWarning` (as `Store.runs` does).
    """
    where, params = window.where()
    cols = (
        "r.run_id, r.agent, r.started_ms, r.stop_reason, r.tool_calls, "
        "r.ended_ms - r.started_ms, r.usage"
    )
    rows = store.query(f"SELECT {cols} FROM runs r{where} AND r.stop_reason IS NOT NULL", params)
    killed = [rid for _b, rid in killed_inferred(store, window)]
    for i in range(0, len(killed), 500):  # under every backend's bound-parameter limit
        chunk = killed[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        for row in store.query(
            f"SELECT {cols} FROM runs r{where} AND r.run_id IN ({marks})", [*params, *chunk]
        ):
            rows.append((*row[:3], "killed", row[4], None, row[6]))
    out, skipped = [], []
    check = _RowCheck()
    for rid, agent, started, reason, calls, latency, usage_text in rows:
        usage, problem = read_usage(usage_text)
        problem = problem or check.problem(calls, latency, reason)
        if problem is not None:
            skipped.append((str(rid), problem))
            continue
        get = usage.get
        out.append(
            (
                rid,
                agent,
                started,
                reason,
                int(calls or get("tool_calls", 0)),
                latency,
                int(get("tokens_in", 0)),
                int(get("tokens_out", 0)),
                float(get("cost_usd", 0.0)),
            )
        )
    warn_skipped(store, skipped)
    return sorted(out, key=lambda r: (r[2], r[0]))


def step_errors(store: QueryStore, window: Window) -> list[tuple[str, str | None]]:
    """``(run_id, error)`` of each failed tool step of the window's runs."""
    source, params = _steps_from(window)
    return [
        (str(rid), error)
        for rid, error in store.query(
            f"SELECT e.run_id, e.error{source} AND e.kind = 'tool_result' AND e.status = 'error'",
            params,
        )
    ]


def model_usage_by_run(
    store: QueryStore, window: Window, run_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The usage of each model step of these runs (of the window), in step order."""
    out: dict[str, list[dict[str, Any]]] = {}
    source, params = _steps_from(window)
    ids = list(run_ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        for rid, usage_text in store.query(
            f"SELECT e.run_id, e.usage{source} AND e.kind = 'model_result' "
            f"AND e.usage IS NOT NULL AND e.run_id IN ({marks}) ORDER BY e.run_id, e.seq",
            [*params, *chunk],
        ):
            out.setdefault(str(rid), []).append(usage_of(usage_text))
    return out
