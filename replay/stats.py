"""Run statistics over the recorded runs: the drift signals of the source document.

Two ways in, one definition: `compute_stats` takes lists of `Run` and `Event` (tests, a recorder
listener, a cassette); `stats_for_store` / `window_stats` read a store through the SQL aggregates
of `replay.queries` (counts and group-bys in SQL, one numeric column per percentile, no model
object per event), which is what `replay stats` and `replay alerts` use: 100,000 runs in well under
a second. Both fill the same `Sample` and `Sample.stats` computes every figure from it, so the two
give identical results (`tests/integration/test_stats_store.py` checks it on a generated store).

Definitions (what `replay stats` prints):

- *tool calls per run*: ``run.tool_calls`` (or ``run.usage.tool_calls`` when the row has 0).
- *run latency*: ``ended_ms - started_ms`` of finished runs.
- *tokens per request*: ``tokens_in + tokens_out`` of each ``model_result`` step that carries
  usage; when the window has no such step, per run from the run's usage totals instead
  (``tokens_basis`` says which).
- *spend per run*: ``run.usage.cost_usd``.
- *tool-call error rate*: ``tool_result`` steps with status ``error`` over all ``tool_result``
  steps, also per error class and per bucket (see `classify_error`).
- *stop reasons* and *success rate*: over finished runs (those with a stop reason); success is
  the share that stopped ``completed``.
- Runs written by replay (``replay_of`` set) are not production traffic and are left out.

Percentiles use linear interpolation between closest ranks (numpy's default method, "type 7"),
computed by `statistics.quantiles`: see `percentile`. Means and sums use `math.fsum`, so they do not
depend on the order rows arrive in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from replay import queries
from replay.errors import ReplayError
from replay.models import Event, Run

if TYPE_CHECKING:
    from replay.store_api import StoreAPI as Store

__all__ = [
    "ERROR_BUCKETS",
    "InvalidDurationError",
    "Sample",
    "Stats",
    "StatsReport",
    "TimeBucket",
    "UnknownAgentError",
    "bucket_start",
    "classify_error",
    "compute_stats",
    "compute_stats_by",
    "format_duration",
    "format_stats",
    "format_stats_table",
    "known_agents",
    "load_window",
    "parse_duration",
    "percentile",
    "run_tool_calls",
    "stats_for_store",
    "store_run_count",
    "window_samples",
    "window_stats",
]

#: The buckets tool-call errors are sorted into; "retries" in the alerts are 429 + 5xx.
ERROR_BUCKETS: tuple[str, ...] = ("429", "5xx", "timeout", "other")

BucketSize = Literal["hour", "day"]
_BUCKET_MS: dict[str, int] = {"hour": 3_600_000, "day": 86_400_000}


class InvalidDurationError(ReplayError, ValueError):
    """A duration such as ``--since`` or ``--window`` that cannot be parsed."""

    def __init__(self, text: str, option: str = "duration") -> None:
        self.text, self.option = text, option
        super().__init__(
            f"cannot parse {option} {text!r}: use a number and a unit, "
            "e.g. 90s, 10m, 24h, 7d, 2w (or combined: 1h30m)"
        )


class UnknownAgentError(ReplayError, LookupError):
    """An agent name that no run in the store carries."""

    def __init__(self, agent: str, known: Sequence[str], store: str = "the store") -> None:
        self.agent, self.known, self.store = agent, list(known), store
        listing = ", ".join(repr(a) for a in self.known[:20]) + (
            " …" if len(self.known) > 20 else ""
        )
        super().__init__(
            f"unknown agent {agent!r} in {store}: known agents are {listing}; "
            "pass one of them to --agent, or leave --agent out for all agents"
        )


# ---------------------------------------------------------------------------------------------
# Small pure helpers


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration(text: str, option: str = "duration") -> int:
    """Milliseconds in a duration like ``90s``, ``10m``, ``24h``, ``7d``, ``2w`` or ``1h30m``.

    Raises:
        InvalidDurationError: for anything else, or a duration of zero.
    """
    s = str(text).strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s) or total <= 0:
        raise InvalidDurationError(text, option)
    return int(total)


def format_duration(ms: int) -> str:
    """The shortest exact spelling of `ms` in d, h, m, s (``600000`` -> ``10m``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def percentile(values: Iterable[float], q: float) -> float | None:
    """The `q`-quantile (0 <= q <= 1, at most three decimals) of `values`, or None when empty.

    Linear interpolation between closest ranks (numpy's default "linear" method, Hyndman & Fan
    type 7): the fractional rank is ``h = (n - 1) * q`` and the value lies between the values at
    ranks ``floor(h)`` and ``ceil(h)``. So p50 of [1, 2, 3, 4] is 2.5 and p95 of 1..20 is 19.05.

    Computed by ``statistics.quantiles(method="inclusive")``, which is that definition with the
    rank taken exactly in integers (q as a fraction ``i/n``). It agrees with the hand-rolled
    formula it replaced except in the last bit of a float where ``(n - 1) * q`` in floating point
    fell just below a whole rank; q is therefore limited to three decimals (p99.9 is the finest),
    and q = 0, q = 1 and a single value are the minimum / maximum (quantiles gives only the cut
    points strictly inside, and before Python 3.13 needs two values).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile q must be within [0, 1], got {q!r}: pass e.g. 0.95 for p95")
    frac = Fraction(str(q))
    if frac.denominator > 1000:
        raise ValueError(f"percentile q must have at most three decimals (e.g. 0.999), got {q!r}")
    xs = [float(v) for v in values]
    if not xs:
        return None
    if frac == 0:
        return min(xs)
    if frac == 1 or len(xs) == 1:
        return max(xs)
    return statistics.quantiles(xs, n=frac.denominator, method="inclusive")[frac.numerator - 1]


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


_STATUS_SUFFIX = re.compile(r"(?<!\d)([1-5]\d\d)[\])]?$")
_RATE_LIMIT_NAMES = ("ratelimit", "toomanyrequests")
_SERVER_ERROR_NAMES = ("internalservererror", "badgateway", "serviceunavailable", "gatewaytimeout")


def classify_error(error: str | None) -> str | None:
    """The bucket of a tool error: ``"429"``, ``"5xx"``, ``"timeout"``, ``"other"``; None if none.

    The recorder stores the error *class* only (``httpx.HTTPStatusError`` carries no status code),
    so the bucket is read from the name, first rule that matches:

    1. a name ending in a 3-digit HTTP status, optionally in brackets: ``HTTP429``,
       ``HTTPStatusError[503]``, ``http_error_502`` -> 429 is ``"429"``, 5xx is ``"5xx"``, any other
       code ``"other"``. Tools that want their HTTP errors bucketed raise (or re-raise as) such a
       class, e.g. ``class HTTP503(Exception)``.
    2. rate-limit names (``RateLimitError``, ``TooManyRequests``) -> ``"429"``.
    3. server-error names (``InternalServerError``, ``BadGateway``, ``ServiceUnavailable``,
       ``GatewayTimeout``) -> ``"5xx"``.
    4. a name containing ``Timeout`` or ``TimedOut`` (``TimeoutError``, ``httpx.ReadTimeout``,
       ``asyncio.TimeoutError``) -> ``"timeout"``.
    5. anything else -> ``"other"``.
    """
    if not error:
        return None
    m = _STATUS_SUFFIX.search(error)
    if m:
        code = int(m.group(1))
        return "429" if code == 429 else "5xx" if code >= 500 else "other"
    low = error.lower().replace("_", "")
    if any(n in low for n in _RATE_LIMIT_NAMES):
        return "429"
    if any(n in low for n in _SERVER_ERROR_NAMES):
        return "5xx"
    if "timeout" in low or "timedout" in low:
        return "timeout"
    return "other"


def run_tool_calls(run: Run) -> int:
    """Tool calls of a run: the run row's count, else the usage total (recorders fill one)."""
    return run.tool_calls or run.usage.tool_calls


def bucket_start(ts_ms: int, by: BucketSize) -> int:
    """The start (UTC epoch ms) of the hour or day that `ts_ms` falls in."""
    size = _BUCKET_MS[by]
    return ts_ms - ts_ms % size


# ---------------------------------------------------------------------------------------------
# Stats


@dataclass
class Stats:
    """The figures `replay stats` prints for one set of runs. None means "no data", never 0/0."""

    runs: int
    finished_runs: int = 0
    tool_calls_avg: float | None = None
    tool_calls_p95: float | None = None
    latency_avg_ms: float | None = None
    latency_p95_ms: float | None = None
    tokens_per_request_avg: float | None = None
    tokens_per_request_p95: float | None = None
    tokens_basis: Literal["model_result", "run"] | None = None
    model_requests: int = 0
    spend_avg_usd: float | None = None
    spend_total_usd: float = 0.0
    tool_results: int = 0
    tool_errors: int = 0
    tool_error_rate: float | None = None
    errors_by_class: dict[str, int] = field(default_factory=dict)
    errors_by_bucket: dict[str, int] = field(default_factory=dict)
    stop_reasons: dict[str, int] = field(default_factory=dict)
    success_rate: float | None = None

    @property
    def stop_reason_shares(self) -> dict[str, float]:
        """Each stop reason's share of the finished runs."""
        return (
            {k: v / self.finished_runs for k, v in self.stop_reasons.items()}
            if self.finished_runs
            else {}
        )

    @property
    def error_bucket_rates(self) -> dict[str, float]:
        """Each error bucket's share of all tool calls (429, 5xx, timeout, other)."""
        if not self.tool_results:
            return {}
        return {b: self.errors_by_bucket.get(b, 0) / self.tool_results for b in ERROR_BUCKETS}

    @property
    def retry_rate(self) -> float | None:
        """Share of tool calls that failed with 429 or 5xx: what a retrying tool layer retries."""
        if not self.tool_results:
            return None
        return (
            self.errors_by_bucket.get("429", 0) + self.errors_by_bucket.get("5xx", 0)
        ) / self.tool_results

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, with stop reasons and error buckets as ``{"count", "share"}``."""
        d = asdict(self)
        d["stop_reasons"] = {
            k: {"count": v, "share": self.stop_reason_shares.get(k)}
            for k, v in self.stop_reasons.items()
        }
        d["errors_by_bucket"] = {
            b: {"count": self.errors_by_bucket.get(b, 0), "rate": self.error_bucket_rates.get(b)}
            for b in ERROR_BUCKETS
        }
        d["retry_rate"] = self.retry_rate
        return d

    def to_json(self) -> str:
        """`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _production(runs: Iterable[Run]) -> list[Run]:
    return [r for r in runs if r.replay_of is None]


def _by_count(counts: Counter[str]) -> list[tuple[str, int]]:
    # Most first, ties by name: the same order whatever order the rows came in.
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass
class Sample:
    """What the figures of one set of runs are computed from: counts, and one list per percentile.

    `compute_stats` fills it from `Run`/`Event` objects, `window_samples` from SQL aggregates;
    `stats` turns it into `Stats`, the one place each figure is defined.
    """

    runs: int = 0
    #: tool calls per run (`run_tool_calls`)
    calls: list[float] = field(default_factory=list)
    #: ``ended_ms - started_ms`` of the runs that have an end
    latencies: list[float] = field(default_factory=list)
    #: ``usage.cost_usd`` per run
    spend: list[float] = field(default_factory=list)
    #: ``tokens_in + tokens_out`` per run, from the run's usage totals
    run_tokens: list[float] = field(default_factory=list)
    #: ``tokens_in + tokens_out`` per model step that carries usage
    model_tokens: list[float] = field(default_factory=list)
    tool_results: int = 0
    #: failed tool steps by error class (``"unknown"`` when unnamed)
    errors: Counter[str] = field(default_factory=Counter)
    #: finished runs by stop reason (a run inferred killed counts as ``killed``)
    stops: Counter[str] = field(default_factory=Counter)

    def add(self, other: Sample) -> None:
        """Add the runs of `other` (for the whole window out of its buckets)."""
        self.runs += other.runs
        self.calls += other.calls
        self.latencies += other.latencies
        self.spend += other.spend
        self.run_tokens += other.run_tokens
        self.model_tokens += other.model_tokens
        self.tool_results += other.tool_results
        self.errors.update(other.errors)
        self.stops.update(other.stops)

    def stats(self) -> Stats:
        """Every figure of `replay stats` (see the module docstring for the definitions)."""
        if not self.runs:
            return Stats(runs=0)
        basis: Literal["model_result", "run"]
        tokens, basis = (
            (self.model_tokens, "model_result") if self.model_tokens else (self.run_tokens, "run")
        )
        failed = sum(self.errors.values())
        by_bucket = Counter[str]()
        for error, n in self.errors.items():
            by_bucket[classify_error(error) or "other"] += n
        finished = sum(self.stops.values())
        return Stats(
            runs=self.runs,
            finished_runs=finished,
            tool_calls_avg=_mean(self.calls),
            tool_calls_p95=percentile(self.calls, 0.95),
            latency_avg_ms=_mean(self.latencies),
            latency_p95_ms=percentile(self.latencies, 0.95),
            tokens_per_request_avg=_mean(tokens),
            tokens_per_request_p95=percentile(tokens, 0.95),
            tokens_basis=basis,
            model_requests=len(self.model_tokens),
            spend_avg_usd=_mean(self.spend),
            spend_total_usd=round(math.fsum(self.spend), 10),
            tool_results=self.tool_results,
            tool_errors=failed,
            tool_error_rate=_share(failed, self.tool_results),
            errors_by_class=dict(_by_count(self.errors)),
            errors_by_bucket={b: by_bucket.get(b, 0) for b in ERROR_BUCKETS},
            stop_reasons=dict(_by_count(self.stops)),
            success_rate=_share(self.stops.get("completed", 0), finished),
        )


def _sample(runs: Sequence[Run], steps: Iterable[Event]) -> Sample:
    """The `Sample` of these (production) runs and those of `steps` that belong to them."""
    s = Sample(runs=len(runs))
    for r in runs:
        s.calls.append(float(run_tool_calls(r)))
        if r.latency_ms is not None:
            s.latencies.append(float(r.latency_ms))
        s.spend.append(r.usage.cost_usd)
        s.run_tokens.append(float(r.usage.tokens_in + r.usage.tokens_out))
        if r.stop_reason is not None:
            s.stops[r.stop_reason] += 1
    ids = {r.run_id for r in runs}
    for e in steps:
        if e.run_id not in ids:
            continue
        if e.kind == "model_result" and e.usage is not None:
            s.model_tokens.append(float(e.usage.tokens_in + e.usage.tokens_out))
        elif e.kind == "tool_result":
            s.tool_results += 1
            if e.status == "error":
                s.errors[e.error or "unknown"] += 1
    return s


def compute_stats(runs: Sequence[Run], steps: Sequence[Event]) -> Stats:
    """The stats of `runs`; `steps` are their tool/model step events (others are ignored).

    Steps whose run is not in `runs` are left out, so a window's figures all describe the same
    runs. See the module docstring for each definition.
    """
    return _sample(_production(runs), steps).stats()


def _bucket_keys(
    keys: Iterable[int], by: BucketSize, since_ms: int | None, until_ms: int | None
) -> list[int]:
    """Every bucket start from the first to the last, the window's ends included when given."""
    size = _BUCKET_MS[by]
    starts = list(keys)
    if since_ms is not None:
        starts.append(since_ms)
    if until_ms is not None:
        starts.append(max(until_ms - 1, since_ms or until_ms - 1))
    if not starts:
        return []
    first, last = bucket_start(min(starts), by), bucket_start(max(starts), by)
    return list(range(first, last + size, size))


@dataclass
class TimeBucket:
    """The stats of the runs that started within one hour or day (UTC)."""

    start_ms: int
    end_ms: int
    stats: Stats

    def to_dict(self) -> dict[str, Any]:
        return {"start_ms": self.start_ms, "end_ms": self.end_ms, **self.stats.to_dict()}


def compute_stats_by(
    runs: Sequence[Run],
    steps: Sequence[Event],
    by: BucketSize,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[TimeBucket]:
    """`compute_stats` per hour or day (UTC), by each run's start, oldest first.

    Every bucket from the first to the last is present, empty ones with ``runs == 0``, so a chart
    shows the gaps; `since_ms`/`until_ms` widen that range to the whole window.
    """
    if by not in _BUCKET_MS:
        raise ValueError(f"cannot bucket by {by!r}: use 'hour' or 'day'")
    runs = _production(runs)
    groups: dict[int, list[Run]] = {}
    for r in runs:
        groups.setdefault(bucket_start(r.started_ms, by), []).append(r)
    bucket_of_run = {r.run_id: bucket_start(r.started_ms, by) for r in runs}
    steps_by: dict[int, list[Event]] = {}
    for e in steps:
        b = bucket_of_run.get(e.run_id)
        if b is not None:
            steps_by.setdefault(b, []).append(e)
    size = _BUCKET_MS[by]
    return [
        TimeBucket(b, b + size, compute_stats(groups.get(b, []), steps_by.get(b, [])))
        for b in _bucket_keys(groups, by, since_ms, until_ms)
    ]


# ---------------------------------------------------------------------------------------------
# Store-backed wrappers


def store_run_count(store: Store) -> int:
    """How many runs the store holds (all agents, all time)."""
    count = getattr(store, "count_runs", None)
    if callable(count):
        return int(count())
    return len(store.runs())


def known_agents(store: Store) -> list[str]:
    """The agent names of the runs in the store, sorted."""
    agents = getattr(store, "agents", None)
    if callable(agents):
        return sorted(agents())
    return sorted({r.agent for r in store.runs()})


def check_agent(store: Store, agent: str | None) -> None:
    """Raise `UnknownAgentError` if `agent` is given and no run in a non-empty store carries it."""
    if agent is None:
        return
    names = known_agents(store)
    if names and agent not in names:
        raise UnknownAgentError(agent, names, str(getattr(store, "path", "the store")))


def load_window(
    store: Store,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    agent: str | None = None,
) -> tuple[list[Run], list[Event]]:
    """The runs that started in ``[since_ms, until_ms)`` and all their step events.

    The store selects steps by their run's start, so a run that started inside the window and
    ended after it still has all its steps.
    """
    runs = _production(store.runs(agent=agent, since_ms=since_ms, until_ms=until_ms))
    if not runs:
        return [], []
    ids = {r.run_id for r in runs}
    steps = [
        e
        for e in store.step_events(since_ms=since_ms, until_ms=until_ms, agent=agent)
        if e.run_id in ids
    ]
    return runs, steps


def window_samples(store: Store, window: queries.Window) -> dict[int, Sample]:
    """The `Sample` of each bucket of `window` (bucket 0 only, without ``bucket_ms``), from SQL.

    Counts and group-bys run in the database; the percentile figures come as one numeric column
    each. Runs inferred killed (no stop, process gone) count as stopped ``killed``; a run row
    that cannot be read is left out with its steps, with one `CorruptRowWarning` naming it.
    """
    out: dict[int, Sample] = {}

    def at(bucket: int) -> Sample:
        s = out.get(bucket)
        if s is None:
            s = out[bucket] = Sample()
        return s

    cols = queries.run_columns(store, window)
    if cols.skipped:  # unreadable rows: left out, with their steps, as `Store.runs` does
        queries.warn_skipped(store, cols.skipped)
        window = dataclasses.replace(window, exclude=tuple(rid for rid, _f in cols.skipped))
    if window.bucket_ms is None and cols.bucket:  # one bucket: the columns as they are
        s = at(0)
        s.runs, s.calls, s.spend, s.run_tokens = (
            len(cols.bucket),
            cols.calls,
            cols.cost,
            cols.tokens,
        )
        s.latencies = [x for x in cols.latency if x is not None]
    else:
        for b, calls, latency, cost, tokens in zip(
            cols.bucket, cols.calls, cols.latency, cols.cost, cols.tokens, strict=True
        ):
            s = at(b)
            s.runs += 1
            s.calls.append(calls)
            if latency is not None:
                s.latencies.append(latency)
            s.spend.append(cost)
            s.run_tokens.append(tokens)
    # The step figures of the runs whose row holds them (one row per run, no event read).
    for b, n in cols.tool_steps.items():
        at(b).tool_results += n
    for b, errors in cols.step_errors.items():
        at(b).errors.update(errors)
    for b, model in cols.model_tokens.items():
        at(b).model_tokens += model
    if not out:
        return out
    for b, reason, n in queries.stop_counts(store, window):
        if reason is not None:
            at(b).stops[reason] += n
    for b, _run_id in queries.killed_inferred(store, window):
        at(b).stops["killed"] += 1
    if cols.untotalled:  # runs whose row holds no totals: their steps, from the events
        _steps_from_events(dataclasses.replace(window, untotalled=True), store, at)
    return out


def _steps_from_events(window: queries.Window, store: Store, at: Callable[[int], Sample]) -> None:
    for b, n in queries.tool_step_counts(store, window):
        at(b).tool_results += n
    values = queries.step_values(store, window)
    for b, error in values.errors:
        at(b).errors[error] += 1
    for b, tokens in values.tokens:
        at(b).model_tokens.append(tokens)


def window_stats(store: Store, window: queries.Window) -> Stats:
    """The `Stats` of the runs of `window`, from SQL aggregates (equal to `compute_stats` over
    `load_window`)."""
    return _whole(window_samples(store, window)).stats()


def _whole(samples: dict[int, Sample]) -> Sample:
    total = Sample()
    for s in samples.values():
        total.add(s)
    return total


@dataclass
class StatsReport:
    """`replay stats` for one window: overall stats, time buckets, and what to say if empty."""

    stats: Stats
    buckets: list[TimeBucket]
    since_ms: int | None
    until_ms: int
    agent: str | None
    store_runs: int | None  # counted only when the window is empty (it is what the message says)
    window_label: str = ""

    @property
    def message(self) -> str | None:
        """Why there are no figures.

        For example ``no runs in the last 7d for agent 'x' (store has 0 runs)``.
        """
        if self.stats.runs:
            return None
        who = f" for agent {self.agent!r}" if self.agent else ""
        when = f" {self.window_label}" if self.window_label else ""
        total = self.store_runs or 0
        hint = "" if total else "; record runs first, or point --db at another store"
        return f"no runs{when}{who} (store has {total} runs{hint})"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "agent": self.agent,
            "store_runs": self.store_runs,
            "message": self.message,
            **self.stats.to_dict(),
        }
        if self.buckets:
            d["buckets"] = [b.to_dict() for b in self.buckets]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def stats_for_store(
    store: Store,
    *,
    since_ms: int | None,
    until_ms: int,
    agent: str | None = None,
    by: BucketSize | None = None,
    window_label: str = "",
) -> StatsReport:
    """The stats of a store window (and per hour or day when `by` is given), from SQL aggregates.

    Equal to `compute_stats` / `compute_stats_by` over `load_window`, without building a model
    object per run or event.

    Raises:
        UnknownAgentError: `agent` is not the name of any run in a non-empty store.
    """
    check_agent(store, agent)
    size = _BUCKET_MS.get(by) if by else None
    if by and size is None:
        raise ValueError(f"cannot bucket by {by!r}: use 'hour' or 'day'")
    window = queries.Window(since_ms, until_ms, agent, size)
    samples = window_samples(store, window)
    stats = _whole(samples).stats()
    total = None if stats.runs else store_run_count(store)
    buckets = []
    if by is not None and size is not None and stats.runs:
        buckets = [
            TimeBucket(b, b + size, samples.get(b, Sample()).stats())
            for b in _bucket_keys(samples, by, since_ms, until_ms)
        ]
    return StatsReport(stats, buckets, since_ms, until_ms, agent, total, window_label)


# ---------------------------------------------------------------------------------------------
# Text rendering


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def _usd(v: float | None) -> str:
    return "-" if v is None else f"${v:.4f}"


def format_stats(stats: Stats) -> str:
    """The stats as aligned ``label  value`` lines."""
    if not stats.runs:
        return "runs                0"
    basis = (
        "per model call"
        if stats.tokens_basis == "model_result"
        else "per run: no model steps recorded"
    )
    rates = stats.error_bucket_rates
    buckets = ", ".join(f"{b}: {_pct(rates.get(b))}" for b in ERROR_BUCKETS)
    rows = [
        ("runs", f"{stats.runs} ({stats.finished_runs} finished)"),
        (
            "tool calls / run",
            f"avg {_num(stats.tool_calls_avg)}   p95 {_num(stats.tool_calls_p95)}",
        ),
        ("run latency", f"avg {_ms(stats.latency_avg_ms)}   p95 {_ms(stats.latency_p95_ms)}"),
        (
            "tokens / request",
            f"avg {_num(stats.tokens_per_request_avg, '{:,.0f}')}   "
            f"p95 {_num(stats.tokens_per_request_p95, '{:,.0f}')}   ({basis})",
        ),
        ("spend / run", f"avg {_usd(stats.spend_avg_usd)}   total {_usd(stats.spend_total_usd)}"),
        (
            "tool-call errors",
            f"{_pct(stats.tool_error_rate)} of {stats.tool_results} calls"
            + (f"   ({buckets})" if stats.tool_results else ""),
        ),
    ]
    if stats.errors_by_class:
        rows.append(
            ("  by error class", ", ".join(f"{k} {v}" for k, v in stats.errors_by_class.items()))
        )
    rows.append(("success rate", f"{_pct(stats.success_rate)} completed"))
    shares = stats.stop_reason_shares
    rows.append(
        (
            "stop reasons",
            ", ".join(f"{k} {v} ({_pct(shares[k])})" for k, v in stats.stop_reasons.items()) or "-",
        )
    )
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k.ljust(width)}{v}" for k, v in rows)


def format_stats_table(buckets: Sequence[TimeBucket], by: BucketSize) -> str:
    """One line per hour/day: runs, tool calls/run, latency p95, tokens/request, spend, errors,
    success."""
    import datetime as _dt

    fmt = "%Y-%m-%d %H:00" if by == "hour" else "%Y-%m-%d"
    header = (
        "start (UTC)",
        "runs",
        "calls avg",
        "calls p95",
        "lat p95 ms",
        "tok/req",
        "spend/run",
        "err %",
        "success",
    )
    lines = [header]
    for b in buckets:
        s = b.stats
        lines.append(
            (
                _dt.datetime.fromtimestamp(b.start_ms / 1000, _dt.timezone.utc).strftime(fmt),
                str(s.runs),
                _num(s.tool_calls_avg),
                _num(s.tool_calls_p95),
                _num(s.latency_p95_ms, "{:,.0f}"),
                _num(s.tokens_per_request_avg, "{:,.0f}"),
                _usd(s.spend_avg_usd),
                _pct(s.tool_error_rate),
                _pct(s.success_rate),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in lines
    )
