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
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from replay.models import Event, Run
from replay.stats import (
    Stats,
    check_agent,
    classify_error,
    compute_stats,
    format_duration,
    load_window,
    run_tool_calls,
)

if TYPE_CHECKING:
    from replay.store import Store

__all__ = [
    "RULES",
    "AlertReport",
    "AlertResult",
    "AlertRules",
    "alerts_for_store",
    "evaluate",
    "format_result",
]

#: Rule names, in the order results are returned.
RULES: tuple[str, ...] = (
    "tool_calls_p95",
    "spend_per_run",
    "latency_p95",
    "loop_detected",
    "tool_timeout",
    "retries",
)

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

    def __post_init__(self) -> None:
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
                    f"AlertRules.{name} must be > 0 (e.g. 2.0 for 2x the baseline) or None, got {v!r}"
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
# Per-rule values


def _share_of(stats: Stats, reason: str) -> float | None:
    return stats.stop_reason_shares.get(reason, 0.0) if stats.finished_runs else None


def _retry_errors(steps: Sequence[Event]) -> Counter[str]:
    return Counter(
        e.run_id
        for e in steps
        if e.kind == "tool_result"
        and e.status == "error"
        and classify_error(e.error or "") in ("429", "5xx")
    )


def _worst(
    runs: Sequence[Run],
    key: Callable[[Run], float],
    n: int,
    keep: Callable[[Run], bool] = lambda r: True,
) -> list[str]:
    # Highest value first; ties go to the newest run.
    chosen = sorted((r for r in runs if keep(r)), key=lambda r: (-key(r), -r.started_ms, r.run_id))
    return [r.run_id for r in chosen[:n]]


def _fmt(rule: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if rule in ("loop_detected", "tool_timeout", "retries"):
        return f"{v * 100:.1f}%"
    if rule == "spend_per_run":
        return f"${v:.4f}"
    if rule == "latency_p95":
        return f"{v:,.0f} ms"
    return f"{v:.1f}"


_LABEL = {
    "tool_calls_p95": "tool calls/run p95",
    "spend_per_run": "spend/run avg",
    "latency_p95": "run latency p95",
    "loop_detected": "loop_detected share of runs",
    "tool_timeout": "tool_timeout share of runs",
    "retries": "429/5xx share of tool calls",
}


def _ratio_rule(
    rule: str, cur: float | None, base: float | None, ratio: float, runs: list[str]
) -> AlertResult:
    cond = f"current >= {ratio:g}x baseline"
    if cur is None or base is None:
        return AlertResult(rule, "ok", cur, base, None, cond, [], "no data in one of the windows")
    threshold = ratio * base
    fired = cur >= threshold and cur > 0
    return AlertResult(
        rule, "fired" if fired else "ok", cur, base, threshold, cond, runs if fired else []
    )


def evaluate(
    current_runs: Sequence[Run],
    current_steps: Sequence[Event],
    baseline_runs: Sequence[Run],
    baseline_steps: Sequence[Event],
    rules: AlertRules | None = None,
) -> list[AlertResult]:
    """Judge every enabled rule on the current window against the baseline window.

    Returns one `AlertResult` per enabled rule, in `RULES` order. With fewer than
    ``rules.min_runs`` runs in either window every result has status ``not_enough_runs``
    and a message saying how many runs each window has and needs.
    """
    rules = rules or AlertRules()
    cur, base = (
        compute_stats(current_runs, current_steps),
        compute_stats(baseline_runs, baseline_steps),
    )
    enabled = {
        "tool_calls_p95": rules.tool_calls_p95_ratio,
        "spend_per_run": rules.spend_ratio,
        "latency_p95": rules.latency_p95_ratio,
        "loop_detected": rules.loop_detected_min_increase,
        "tool_timeout": rules.tool_timeout_ratio,
        "retries": rules.retry_baseline_max,
    }
    active = [r for r in RULES if enabled[r] is not None]

    short = []
    if cur.runs < rules.min_runs:
        short.append(f"the current window has {cur.runs} runs")
    if base.runs < rules.min_runs:
        short.append(f"the baseline has {base.runs} runs")
    if short:
        msg = (
            f"not enough runs to judge: {' and '.join(short)}; each window needs at least "
            f"{rules.min_runs} (widen --window/--baseline or lower --min-runs)"
        )
        return [AlertResult(r, "not_enough_runs", None, None, None, "", [], msg) for r in active]

    runs = [r for r in current_runs if r.replay_of is None]
    n = rules.worst_runs
    results: list[AlertResult] = []
    for rule in active:
        if rule == "tool_calls_p95":
            worst = _worst(runs, lambda r: run_tool_calls(r), n)
            results.append(
                _ratio_rule(
                    rule, cur.tool_calls_p95, base.tool_calls_p95, rules.tool_calls_p95_ratio, worst
                )
            )  # type: ignore[arg-type]
        elif rule == "spend_per_run":
            worst = _worst(runs, lambda r: r.usage.cost_usd, n)
            results.append(
                _ratio_rule(rule, cur.spend_avg_usd, base.spend_avg_usd, rules.spend_ratio, worst)
            )  # type: ignore[arg-type]
        elif rule == "latency_p95":
            worst = _worst(runs, lambda r: r.latency_ms or 0, n, lambda r: r.latency_ms is not None)
            results.append(
                _ratio_rule(
                    rule, cur.latency_p95_ms, base.latency_p95_ms, rules.latency_p95_ratio, worst
                )
            )  # type: ignore[arg-type]
        elif rule == "loop_detected":
            inc = rules.loop_detected_min_increase or 0.0
            c, b = _share_of(cur, "loop_detected"), _share_of(base, "loop_detected")
            cond = f"current > baseline + {inc * 100:g} points"
            if c is None or b is None:
                results.append(
                    AlertResult(
                        rule, "ok", c, b, None, cond, [], "no finished runs in one of the windows"
                    )
                )
                continue
            fired = c > b + inc
            worst = _worst(
                runs, lambda r: run_tool_calls(r), n, lambda r: r.stop_reason == "loop_detected"
            )
            results.append(
                AlertResult(
                    rule, "fired" if fired else "ok", c, b, b + inc, cond, worst if fired else []
                )
            )
        elif rule == "tool_timeout":
            ratio, inc = rules.tool_timeout_ratio or 0.0, rules.tool_timeout_min_increase
            c, b = _share_of(cur, "tool_timeout"), _share_of(base, "tool_timeout")
            cond = f"current >= {ratio:g}x baseline and >= baseline + {inc * 100:g} points"
            if c is None or b is None:
                results.append(
                    AlertResult(
                        rule, "ok", c, b, None, cond, [], "no finished runs in one of the windows"
                    )
                )
                continue
            threshold = max(ratio * b, b + inc)
            fired = c >= threshold and c > 0
            worst = _worst(
                runs, lambda r: r.latency_ms or 0, n, lambda r: r.stop_reason == "tool_timeout"
            )
            results.append(
                AlertResult(
                    rule, "fired" if fired else "ok", c, b, threshold, cond, worst if fired else []
                )
            )
        elif rule == "retries":
            rare, constant = rules.retry_baseline_max or 0.0, rules.retry_current_min
            c, b = cur.retry_rate, base.retry_rate
            cond = f"baseline < {rare * 100:g}% and current >= {constant * 100:g}%"
            if c is None or b is None:
                results.append(
                    AlertResult(
                        rule, "ok", c, b, None, cond, [], "no tool calls in one of the windows"
                    )
                )
                continue
            fired = b < rare and c >= constant
            per_run = _retry_errors(current_steps)
            worst = _worst(
                runs, lambda r: per_run.get(r.run_id, 0), n, lambda r: per_run.get(r.run_id, 0) > 0
            )
            results.append(
                AlertResult(
                    rule, "fired" if fired else "ok", c, b, constant, cond, worst if fired else []
                )
            )
    return results


def format_result(result: AlertResult) -> str:
    """One line: ``FIRING tool_calls_p95: tool calls/run p95 21.0 (baseline 8.0, threshold 16.0 = ...); look at r_…``."""
    r = result
    if r.status == "not_enough_runs":
        return f"SKIPPED {r.rule}: {r.message}"
    head = "FIRING" if r.fired else "ok"
    line = (
        f"{head} {r.rule}: {_LABEL[r.rule]} {_fmt(r.rule, r.current)} "
        f"(baseline {_fmt(r.rule, r.baseline)}, threshold {_fmt(r.rule, r.threshold)}: {r.condition})"
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
    """`evaluate` the last `window_ms` against the `baseline_ms` before it.

    Raises:
        UnknownAgentError: `agent` is not the name of any run in a non-empty store.
    """
    check_agent(store, agent)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    start = now - window_ms
    base_start = start - baseline_ms
    cur_runs, cur_steps = load_window(store, since_ms=start, until_ms=now + 1, agent=agent)
    base_runs, base_steps = load_window(store, since_ms=base_start, until_ms=start, agent=agent)
    results = evaluate(cur_runs, cur_steps, base_runs, base_steps, rules)
    return AlertReport(results, start, now, base_start, len(cur_runs), len(base_runs), agent)
