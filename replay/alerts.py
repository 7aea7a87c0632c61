"""Drift alerts: compare the most recent window of runs against the span before it.

The rules are the source document's drift signals ("success rate hides the interesting
failures"), each with a configurable threshold in `AlertRules`:

==================  ====================================================================
rule                fires when (current window vs baseline window)
==================  ====================================================================
tool_calls_p95      tool calls/run p95 >= ``tool_calls_p95_ratio`` x baseline (2x)
spend_per_run       average spend/run >= ``spend_ratio`` x baseline (2x)
latency_p95         run latency p95 >= ``latency_p95_ratio`` x baseline (2x)
loop_detected       share of runs stopped ``loop_detected`` > baseline share +
                    ``loop_detected_min_increase`` (2 points)
tool_timeout        share of runs stopped ``tool_timeout`` >= ``tool_timeout_ratio`` x baseline
                    (2x) and at least ``tool_timeout_min_increase`` (2 points) above it
retries             share of tool calls failing with 429/5xx (see `replay.stats.classify_error`)
                    was rare in the baseline (< ``retry_baseline_max``, 5%) and is constant now
                    (>= ``retry_current_min``, 25%)
==================  ====================================================================

A ratio rule whose baseline is 0 fires on any current value above 0. With fewer than
``min_runs`` runs in either window no rule is judged: each result says how many runs it needs.

Each rule is one small function registered by name in `REGISTRY` (``@alert_rule(name, ...)``):
it gets a `RuleInput` (both windows' `Stats`, the `AlertRules`, and `WorstRuns` to name the
runs to look at) and returns an `AlertResult`. `replay alerts` (and its ``--disable``) iterate
the registry, so adding a rule is adding one function. `alerts_for_store` reads both windows
through the SQL aggregates of `replay.stats.window_stats`; `evaluate` judges lists of runs and
events with the same rules.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from replay import queries
from replay.models import Event, Run
from replay.queries import RankKey
from replay.stats import (
    Stats,
    check_agent,
    classify_error,
    compute_stats,
    format_duration,
    run_tool_calls,
    window_stats,
)

if TYPE_CHECKING:
    from replay.store_api import StoreAPI as Store

__all__ = [
    "REGISTRY",
    "RULES",
    "AlertReport",
    "AlertResult",
    "AlertRule",
    "AlertRules",
    "RuleInput",
    "WorstRuns",
    "alert_rule",
    "alerts_for_store",
    "evaluate",
    "format_result",
    "judge",
]

Status = Literal["ok", "fired", "not_enough_runs"]


@dataclass
class AlertRules:
    """Thresholds of the drift rules. Set a rule's main threshold to None to switch it off."""

    #: Fewer runs than this in the current or the baseline window: no rule is judged.
    min_runs: int = 20
    tool_calls_p95_ratio: float | None = 2.0
    spend_ratio: float | None = 2.0
    latency_p95_ratio: float | None = 2.0
    #: Absolute increase of the loop_detected share (0.02 = 2 percentage points).
    loop_detected_min_increase: float | None = 0.02
    tool_timeout_ratio: float | None = 2.0
    tool_timeout_min_increase: float = 0.02
    #: Retries (429/5xx share of tool calls) count as "rare" below this in the baseline ...
    retry_baseline_max: float | None = 0.05
    #: ... and as "constant" at or above this in the current window.
    retry_current_min: float = 0.25
    #: How many run ids each result lists to look at.
    worst_runs: int = 5
    #: Names of rules not to judge (any registered rule, see `REGISTRY`).
    disabled: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.disabled = frozenset(self.disabled)
        unknown = sorted(self.disabled - set(REGISTRY))
        if unknown:
            raise ValueError(
                f"AlertRules.disabled names unknown rule(s) {', '.join(map(repr, unknown))}: "
                f"the rules are {', '.join(REGISTRY)}"
            )
        if not isinstance(self.min_runs, int) or self.min_runs < 1:
            raise ValueError(f"AlertRules.min_runs must be an integer >= 1, got {self.min_runs!r}")
        if not isinstance(self.worst_runs, int) or self.worst_runs < 0:
            raise ValueError(
                f"AlertRules.worst_runs must be an integer >= 0, got {self.worst_runs!r}"
            )
        for name in (
            "tool_calls_p95_ratio",
            "spend_ratio",
            "latency_p95_ratio",
            "tool_timeout_ratio",
        ):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(
                    f"AlertRules.{name} must be > 0 (e.g. 2.0 for 2x the baseline) or None, "
                    f"got {v!r}"
                )
        for name in (
            "loop_detected_min_increase",
            "tool_timeout_min_increase",
            "retry_baseline_max",
            "retry_current_min",
        ):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ValueError(
                    f"AlertRules.{name} is a share and must be within [0, 1] (0.05 = 5%), got {v!r}"
                )


@dataclass
class AlertResult:
    """One rule judged on one pair of windows.

    `current` and `baseline` are the rule's value in each window (None: no data); `threshold` is
    the value `current` had to reach for the rule to fire, `condition` says it in words; `runs`
    are the current window's worst runs for this rule, to look at first.
    """

    rule: str
    status: Status
    current: float | None
    baseline: float | None
    threshold: float | None
    condition: str
    runs: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def fired(self) -> bool:
        return self.status == "fired"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fired": self.fired}


# ---------------------------------------------------------------------------------------------
# The registry: each rule is one function, registered under its name


class WorstRuns(Protocol):
    """Where a firing rule finds the current window's runs to look at first."""

    def top(self, key: RankKey, n: int, stop_reason: str | None = None) -> list[str]:
        """The `n` runs highest by `key` (of one stop reason), ties to the newest."""
        ...

    def by_errors(self, errors: Sequence[str], n: int) -> list[str]:
        """The `n` runs with the most failed tool steps of these error classes."""
        ...


@dataclass(frozen=True)
class RuleInput:
    """What a rule judges: both windows' stats, the thresholds, and the current window's runs."""

    current: Stats
    baseline: Stats
    rules: AlertRules
    worst: WorstRuns

    @property
    def n(self) -> int:
        """How many runs a firing rule lists."""
        return self.rules.worst_runs


Unit = Literal["count", "usd", "ms", "share"]


@dataclass(frozen=True)
class AlertRule:
    """A registered rule: its name, how its value reads, the threshold that switches it off."""

    name: str
    label: str
    unit: Unit
    #: the `AlertRules` field whose None disables the rule (None: only ``disabled`` does)
    threshold: str | None
    judge: Callable[[RuleInput], AlertResult]

    def enabled(self, rules: AlertRules) -> bool:
        if self.name in rules.disabled:
            return False
        return self.threshold is None or getattr(rules, self.threshold) is not None


#: Every rule by name, in the order results are returned. Add one with `alert_rule`.
REGISTRY: dict[str, AlertRule] = {}

Judge = Callable[[RuleInput], AlertResult]


def alert_rule(
    name: str, *, label: str, unit: Unit, threshold: str | None = None
) -> Callable[[Judge], Judge]:
    """Register the decorated function as the rule `name` (`replay alerts`, `--disable NAME`).

    The function takes a `RuleInput` and returns its `AlertResult`; `label` and `unit` say how
    `format_result` prints its values; `threshold` names the `AlertRules` field that switches
    it off when None.
    """

    def register(fn: Judge) -> Judge:
        if name in REGISTRY:
            raise ValueError(f"alert rule {name!r} is already registered; pick another name")
        if threshold is not None and threshold not in AlertRules.__dataclass_fields__:
            raise ValueError(f"alert rule {name!r}: AlertRules has no field {threshold!r}")
        REGISTRY[name] = AlertRule(name, label, unit, threshold, fn)
        return fn

    return register


def _fmt(rule: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    unit = REGISTRY[rule].unit if rule in REGISTRY else "count"
    if unit == "share":
        return f"{v * 100:.1f}%"
    if unit == "usd":
        return f"${v:.4f}"
    if unit == "ms":
        return f"{v:,.0f} ms"
    return f"{v:.1f}"


def _share_of(stats: Stats, reason: str) -> float | None:
    return stats.stop_reason_shares.get(reason, 0.0) if stats.finished_runs else None


def _ratio_rule(
    rule: str,
    cur: float | None,
    base: float | None,
    ratio: float | None,
    worst: Callable[[], list[str]],
) -> AlertResult:
    ratio = ratio or 0.0
    cond = f"current >= {ratio:g}x baseline"
    if cur is None or base is None:
        return AlertResult(rule, "ok", cur, base, None, cond, [], "no data in one of the windows")
    threshold = ratio * base
    fired = cur >= threshold and cur > 0
    return AlertResult(
        rule, "fired" if fired else "ok", cur, base, threshold, cond, worst() if fired else []
    )


def _share_rule(
    rule: str,
    cur: float | None,
    base: float | None,
    threshold: Callable[[float], float],
    cond: str,
    worst: Callable[[], list[str]],
    missing: str = "no finished runs in one of the windows",
) -> AlertResult:
    """A rule on a share: fires when `cur` reaches ``threshold(base)`` (and is above 0)."""
    if cur is None or base is None:
        return AlertResult(rule, "ok", cur, base, None, cond, [], missing)
    limit = threshold(base)
    fired = cur >= limit and cur > 0
    return AlertResult(
        rule, "fired" if fired else "ok", cur, base, limit, cond, worst() if fired else []
    )


def _ratio_of(
    name: str, label: str, unit: Unit, figure: str, threshold: str, rank: RankKey
) -> None:
    """Register `name`: `figure` of `Stats` at `threshold` x its baseline; worst runs by `rank`."""

    @alert_rule(name, label=label, unit=unit, threshold=threshold)
    def judge(x: RuleInput) -> AlertResult:
        return _ratio_rule(
            name,
            getattr(x.current, figure),
            getattr(x.baseline, figure),
            getattr(x.rules, threshold),
            lambda: x.worst.top(rank, x.n),
        )


_ratio_of(
    "tool_calls_p95",
    "tool calls/run p95",
    "count",
    "tool_calls_p95",
    "tool_calls_p95_ratio",
    "calls",
)
_ratio_of("spend_per_run", "spend/run avg", "usd", "spend_avg_usd", "spend_ratio", "spend")
_ratio_of("latency_p95", "run latency p95", "ms", "latency_p95_ms", "latency_p95_ratio", "latency")


@alert_rule(
    "loop_detected",
    label="loop_detected share of runs",
    unit="share",
    threshold="loop_detected_min_increase",
)
def _loop_detected(x: RuleInput) -> AlertResult:
    inc = x.rules.loop_detected_min_increase or 0.0
    c, b = _share_of(x.current, "loop_detected"), _share_of(x.baseline, "loop_detected")
    cond = f"current > baseline + {inc * 100:g} points"
    if c is None or b is None:
        return AlertResult(
            "loop_detected", "ok", c, b, None, cond, [], "no finished runs in one of the windows"
        )
    fired = c > b + inc
    worst = x.worst.top("calls", x.n, "loop_detected") if fired else []
    return AlertResult("loop_detected", "fired" if fired else "ok", c, b, b + inc, cond, worst)


@alert_rule(
    "tool_timeout", label="tool_timeout share of runs", unit="share", threshold="tool_timeout_ratio"
)
def _tool_timeout(x: RuleInput) -> AlertResult:
    ratio, inc = x.rules.tool_timeout_ratio or 0.0, x.rules.tool_timeout_min_increase
    return _share_rule(
        "tool_timeout",
        _share_of(x.current, "tool_timeout"),
        _share_of(x.baseline, "tool_timeout"),
        lambda b: max(ratio * b, b + inc),
        f"current >= {ratio:g}x baseline and >= baseline + {inc * 100:g} points",
        lambda: x.worst.top("latency_or_0", x.n, "tool_timeout"),
    )


@alert_rule(
    "retries", label="429/5xx share of tool calls", unit="share", threshold="retry_baseline_max"
)
def _retries(x: RuleInput) -> AlertResult:
    rare, constant = x.rules.retry_baseline_max or 0.0, x.rules.retry_current_min
    c, b = x.current.retry_rate, x.baseline.retry_rate
    cond = f"baseline < {rare * 100:g}% and current >= {constant * 100:g}%"
    if c is None or b is None:
        return AlertResult(
            "retries", "ok", c, b, None, cond, [], "no tool calls in one of the windows"
        )
    fired = b < rare and c >= constant
    retried = [e for e in x.current.errors_by_class if classify_error(e) in ("429", "5xx")]
    worst = x.worst.by_errors(retried, x.n) if fired else []
    return AlertResult("retries", "fired" if fired else "ok", c, b, constant, cond, worst)


#: The built-in rule names, in the order results are returned.
RULES: tuple[str, ...] = tuple(REGISTRY)


# ---------------------------------------------------------------------------------------------
# Judging


class _MemoryWorst:
    """`WorstRuns` over lists of runs and step events (for `evaluate`)."""

    def __init__(self, runs: Sequence[Run], steps: Sequence[Event]) -> None:
        self.runs, self.steps = runs, steps
        self.rows = [
            queries.RankRow(
                r.run_id,
                r.started_ms,
                r.stop_reason,
                float(run_tool_calls(r)),
                r.usage.cost_usd,
                r.latency_ms,
            )
            for r in runs
        ]

    def top(self, key: RankKey, n: int, stop_reason: str | None = None) -> list[str]:
        return queries.rank(self.rows, key, n, stop_reason)

    def by_errors(self, errors: Sequence[str], n: int) -> list[str]:
        wanted = set(errors)
        per_run = Counter(
            e.run_id
            for e in self.steps
            if e.kind == "tool_result" and e.status == "error" and (e.error or "unknown") in wanted
        )
        chosen = sorted(
            (r for r in self.runs if per_run.get(r.run_id, 0) > 0),
            key=lambda r: (-per_run[r.run_id], -r.started_ms, r.run_id),
        )
        return [r.run_id for r in chosen[:n]]


class _StoreWorst:
    """`WorstRuns` through `replay.queries`: the window's runs read once, as narrow rows."""

    def __init__(self, store: Store, window: queries.Window) -> None:
        self.store, self.window = store, window
        self._rows: list[queries.RankRow] | None = None

    def top(self, key: RankKey, n: int, stop_reason: str | None = None) -> list[str]:
        if self._rows is None:
            self._rows = queries.rank_rows(self.store, self.window)
        return queries.rank(self._rows, key, n, stop_reason)

    def by_errors(self, errors: Sequence[str], n: int) -> list[str]:
        return queries.top_runs_by_errors(self.store, self.window, errors, n)


def judge(
    current: Stats, baseline: Stats, worst: WorstRuns, rules: AlertRules | None = None
) -> list[AlertResult]:
    """Judge every enabled rule of `REGISTRY` on the current window's stats against the baseline's.

    With fewer than ``rules.min_runs`` runs in either window every result has status
    ``not_enough_runs`` and a message saying how many runs each window has and needs.
    """
    rules = rules or AlertRules()
    active = [r for r in REGISTRY.values() if r.enabled(rules)]
    short = []
    if current.runs < rules.min_runs:
        short.append(f"the current window has {current.runs} runs")
    if baseline.runs < rules.min_runs:
        short.append(f"the baseline has {baseline.runs} runs")
    if short:
        msg = (
            f"not enough runs to judge: {' and '.join(short)}; each window needs at least "
            f"{rules.min_runs} (widen --window/--baseline or lower --min-runs)"
        )
        return [
            AlertResult(r.name, "not_enough_runs", None, None, None, "", [], msg) for r in active
        ]
    x = RuleInput(current, baseline, rules, worst)
    return [r.judge(x) for r in active]


def evaluate(
    current_runs: Sequence[Run],
    current_steps: Sequence[Event],
    baseline_runs: Sequence[Run],
    baseline_steps: Sequence[Event],
    rules: AlertRules | None = None,
) -> list[AlertResult]:
    """Judge every enabled rule on the current window against the baseline window (`judge`).

    Returns one `AlertResult` per enabled rule, in `REGISTRY` order.
    """
    runs = [r for r in current_runs if r.replay_of is None]
    return judge(
        compute_stats(current_runs, current_steps),
        compute_stats(baseline_runs, baseline_steps),
        _MemoryWorst(runs, current_steps),
        rules,
    )


def format_result(result: AlertResult) -> str:
    """One line per result.

    ``FIRING tool_calls_p95: tool calls/run p95 21.0 (baseline 8.0, threshold 16.0: ...);
    look at r_…`` (on one line).
    """
    r = result
    if r.status == "not_enough_runs":
        return f"SKIPPED {r.rule}: {r.message}"
    head = "FIRING" if r.fired else "ok"
    label = REGISTRY[r.rule].label if r.rule in REGISTRY else r.rule
    line = (
        f"{head} {r.rule}: {label} {_fmt(r.rule, r.current)} "
        f"(baseline {_fmt(r.rule, r.baseline)}, "
        f"threshold {_fmt(r.rule, r.threshold)}: {r.condition})"
    )
    if r.message:
        line += f"; {r.message}"
    if r.runs:
        line += "; look at " + ", ".join(r.runs)
    return line


# ---------------------------------------------------------------------------------------------
# Store-backed wrapper


@dataclass
class AlertReport:
    """The results of `alerts_for_store` with the two windows they were judged on."""

    results: list[AlertResult]
    window_start_ms: int
    now_ms: int
    baseline_start_ms: int
    current_runs: int
    baseline_runs: int
    agent: str | None

    @property
    def fired(self) -> list[AlertResult]:
        return [r for r in self.results if r.fired]

    @property
    def judged(self) -> bool:
        """False when the windows had too few runs for any rule to be judged."""
        return not any(r.status == "not_enough_runs" for r in self.results)

    def summary(self) -> str:
        """``current window: last 10m (34 runs); baseline: the 7d before it (2,011 runs)``."""
        window = format_duration(self.now_ms - self.window_start_ms)
        baseline = format_duration(self.window_start_ms - self.baseline_start_ms)
        who = f" for agent {self.agent!r}" if self.agent else ""
        return (
            f"current window: last {window} ({self.current_runs} runs); "
            f"baseline: the {baseline} before it ({self.baseline_runs} runs){who}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_start_ms": self.window_start_ms,
            "now_ms": self.now_ms,
            "baseline_start_ms": self.baseline_start_ms,
            "current_runs": self.current_runs,
            "baseline_runs": self.baseline_runs,
            "agent": self.agent,
            "fired": [r.rule for r in self.fired],
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def alerts_for_store(
    store: Store,
    *,
    window_ms: int,
    baseline_ms: int,
    agent: str | None = None,
    rules: AlertRules | None = None,
    now_ms: int | None = None,
) -> AlertReport:
    """Judge the last `window_ms` against the `baseline_ms` before it, from SQL aggregates.

    The same results as `evaluate` over `replay.stats.load_window` of both windows.

    Raises:
        UnknownAgentError: `agent` is not the name of any run in a non-empty store.
    """
    check_agent(store, agent)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    start = now - window_ms
    base_start = start - baseline_ms
    current = queries.Window(start, now + 1, agent)
    cur = window_stats(store, current)
    base = window_stats(store, queries.Window(base_start, start, agent))
    results = judge(cur, base, _StoreWorst(store, current), rules)
    return AlertReport(results, start, now, base_start, cur.runs, base.runs, agent)
