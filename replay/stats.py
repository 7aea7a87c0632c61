"""Run statistics over the recorded runs: the drift signals of the source document.

Everything here is a pure function over lists of `Run` and `Event` (so alerts, metrics and the
dashboard compute the same figures the same way); `load_window` and `stats_for_store` are the thin
wrappers that read a `Store`.

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

Percentiles use linear interpolation between closest ranks (numpy's default method, "type 7"):
see `percentile`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from replay.errors import ReplayError
from replay.models import Event, Run

if TYPE_CHECKING:
    from replay.store import Store

__all__ = [
    "ERROR_BUCKETS",
    "InvalidDurationError",
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
    """The shortest exact spelling of `ms` in days, hours, minutes, seconds (``600000`` -> ``10m``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def percentile(values: Iterable[float], q: float) -> float | None:
    """The `q`-quantile (0 <= q <= 1) of `values` by linear interpolation, or None when empty.

    Method: sort the n values, take the fractional rank ``h = (n - 1) * q`` and interpolate
    between the values at ranks ``floor(h)`` and ``ceil(h)`` (numpy's default "linear" method,
    Hyndman & Fan type 7). So p50 of [1, 2, 3, 4] is 2.5 and p95 of 1..20 is 19.05.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile q must be within [0, 1], got {q!r}: pass e.g. 0.95 for p95")
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    h = (len(xs) - 1) * q
    lo, hi = math.floor(h), math.ceil(h)
    return xs[lo] + (xs[hi] - xs[lo]) * (h - lo)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


_STATUS_SUFFIX = re.compile(r"(?<!\d)([1-5]\d\d)[\])]?$")
_RATE_LIMIT_NAMES = ("ratelimit", "toomanyrequests")
_SERVER_ERROR_NAMES = ("internalservererror", "badgateway", "serviceunavailable", "gatewaytimeout")


def classify_error(error: str | None) -> str | None:
    """The bucket of a tool error: ``"429"``, ``"5xx"``, ``"timeout"``, ``"other"``; None if no error.

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
    """Tool calls of a run: the run row's count, else the usage total (recorders fill one of them)."""
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


def compute_stats(runs: Sequence[Run], steps: Sequence[Event]) -> Stats:
    """The stats of `runs`; `steps` are their tool/model step events (others are ignored).

    Steps whose run is not in `runs` are left out, so a window's figures all describe the same
    runs. See the module docstring for each definition.
    """
    runs = _production(runs)
    if not runs:
        return Stats(runs=0)
    ids = {r.run_id for r in runs}
    steps = [e for e in steps if e.run_id in ids]

    calls = [float(run_tool_calls(r)) for r in runs]
    latencies = [float(r.latency_ms) for r in runs if r.latency_ms is not None]
    spend = [r.usage.cost_usd for r in runs]

    model_tokens = [
        float(e.usage.tokens_in + e.usage.tokens_out)
        for e in steps
        if e.kind == "model_result" and e.usage is not None
    ]
    basis: Literal["model_result", "run"]
    if model_tokens:
        tokens, basis = model_tokens, "model_result"
    else:
        tokens, basis = [float(r.usage.tokens_in + r.usage.tokens_out) for r in runs], "run"

    tool_steps = [e for e in steps if e.kind == "tool_result"]
    failed = [e for e in tool_steps if e.status == "error"]
    by_class = Counter(e.error or "unknown" for e in failed)
    by_bucket = Counter(classify_error(e.error or "unknown") for e in failed)

    finished = [r for r in runs if r.stop_reason is not None]
    reasons = Counter(r.stop_reason for r in finished)

    return Stats(
        runs=len(runs),
        finished_runs=len(finished),
        tool_calls_avg=_mean(calls),
        tool_calls_p95=percentile(calls, 0.95),
        latency_avg_ms=_mean(latencies),
        latency_p95_ms=percentile(latencies, 0.95),
        tokens_per_request_avg=_mean(tokens),
        tokens_per_request_p95=percentile(tokens, 0.95),
        tokens_basis=basis,
        model_requests=len(model_tokens),
        spend_avg_usd=_mean(spend),
        spend_total_usd=round(sum(spend), 10),
        tool_results=len(tool_steps),
        tool_errors=len(failed),
        tool_error_rate=_share(len(failed), len(tool_steps)),
        errors_by_class=dict(by_class.most_common()),
        errors_by_bucket={b: by_bucket.get(b, 0) for b in ERROR_BUCKETS},
        stop_reasons=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], str(kv[0])))),  # type: ignore[arg-type]
        success_rate=_share(reasons.get("completed", 0), len(finished)),
    )


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
    size = _BUCKET_MS[by]
    starts = [r.started_ms for r in runs]
    if since_ms is not None:
        starts.append(since_ms)
    if until_ms is not None:
        starts.append(max(until_ms - 1, since_ms or until_ms - 1))
    if not starts:
        return []
    groups: dict[int, list[Run]] = {}
    for r in runs:
        groups.setdefault(bucket_start(r.started_ms, by), []).append(r)
    bucket_of_run = {r.run_id: bucket_start(r.started_ms, by) for r in runs}
    steps_by: dict[int, list[Event]] = {}
    for e in steps:
        b = bucket_of_run.get(e.run_id)
        if b is not None:
            steps_by.setdefault(b, []).append(e)
    first, last = bucket_start(min(starts), by), bucket_start(max(starts), by)
    return [
        TimeBucket(b, b + size, compute_stats(groups.get(b, []), steps_by.get(b, [])))
        for b in range(first, last + size, size)
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


@dataclass
class StatsReport:
    """`replay stats` for one window: the overall stats, the time buckets, and what to say if empty."""

    stats: Stats
    buckets: list[TimeBucket]
    since_ms: int | None
    until_ms: int
    agent: str | None
    store_runs: int | None  # counted only when the window is empty (it is what the message says)
    window_label: str = ""

    @property
    def message(self) -> str | None:
        """Why there are no figures, e.g. ``no runs in the last 7d for agent 'x' (store has 0 runs)``."""
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
    """`compute_stats` (and `compute_stats_by` when `by` is given) over a store window.

    Raises:
        UnknownAgentError: `agent` is not the name of any run in a non-empty store.
    """
    check_agent(store, agent)
    runs, steps = load_window(store, since_ms=since_ms, until_ms=until_ms, agent=agent)
    stats = compute_stats(runs, steps)
    total = None if runs else store_run_count(store)
    buckets = (
        compute_stats_by(runs, steps, by, since_ms=since_ms, until_ms=until_ms)
        if by and runs
        else []
    )
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
    """One line per hour/day: runs, tool calls/run, latency p95, tokens/request, spend, errors, success."""
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
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in lines
    )
