"""replay.alerts: each drift rule fires at its threshold and not below, and says what to look at."""

from __future__ import annotations

import pytest

from replay.alerts import (
    REGISTRY,
    RULES,
    AlertResult,
    AlertRules,
    alert_rule,
    evaluate,
    format_result,
)
from replay.models import Event, Run, Usage

T0 = 1_760_000_000_000


def make_runs(
    prefix: str,
    n: int,
    *,
    calls: int | list[int] = 4,
    latency: int | list[int] = 2000,
    cost: float = 0.01,
    reasons: dict[str, int] | None = None,
) -> list[Run]:
    """`n` runs; `reasons` gives how many runs stop with each non-completed reason."""
    order = [r for r, k in (reasons or {}).items() for _ in range(k)]
    order += ["completed"] * (n - len(order))
    out = []
    for i in range(n):
        c = calls[i % len(calls)] if isinstance(calls, list) else calls
        lat = latency[i % len(latency)] if isinstance(latency, list) else latency
        out.append(
            Run(
                run_id=f"{prefix}{i:03d}",
                agent="support",
                started_ms=T0 + i * 1000,
                ended_ms=T0 + i * 1000 + lat,
                stop_reason=order[i],
                tool_calls=c,
                usage=Usage(cost_usd=cost, tool_calls=c),
                host="h",
            )
        )
    return out


def make_steps(runs: list[Run], error_every: int = 0, error: str = "HTTP429") -> list[Event]:
    """One tool_result step per tool call; every `error_every`-th call fails with `error`."""
    steps, k = [], 0
    for r in runs:
        for s in range(1, r.tool_calls + 1):
            k += 1
            failed = error_every and k % error_every == 0
            steps.append(
                Event(
                    run_id=r.run_id,
                    kind="tool_result",
                    ts_ms=r.started_ms + s,
                    step_id=s,
                    tool="http.get",
                    status="error" if failed else "ok",
                    error=error if failed else None,
                )
            )
    return steps


def by_rule(results):
    return {r.rule: r for r in results}


BASE = make_runs("b", 40)


def test_quiet_windows_fire_nothing():
    """Two windows with the same behaviour fire no rule and list no runs."""
    cur = make_runs("c", 40)
    results = evaluate(cur, make_steps(cur), BASE, make_steps(BASE))
    assert [r.rule for r in results] == list(RULES)
    assert [r.status for r in results] == ["ok"] * len(RULES)
    assert all(r.runs == [] and not r.fired for r in results)


class TestMinRuns:
    def test_too_few_current_runs_is_not_an_alert(self):
        """Too few runs in the current window: nothing fires; each result says what it needs."""
        cur = make_runs("c", 5, calls=50)
        results = evaluate(cur, [], BASE, [])
        assert all(r.status == "not_enough_runs" and not r.fired for r in results)
        assert "the current window has 5 runs" in results[0].message
        assert "at least 20" in results[0].message

    def test_too_few_baseline_runs_says_how_many_it_needs(self):
        """A baseline with too few runs is reported with its count and the minimum, not judged."""
        results = evaluate(
            make_runs("c", 40, calls=50), [], make_runs("b", 3), [], AlertRules(min_runs=10)
        )
        assert {r.status for r in results} == {"not_enough_runs"}
        assert (
            "the baseline has 3 runs" in results[0].message and "at least 10" in results[0].message
        )

    def test_empty_windows_do_not_divide_by_zero(self):
        """Both windows empty: every rule reports not_enough_runs instead of failing."""
        results = evaluate([], [], [], [])
        assert len(results) == len(RULES) and not any(r.fired for r in results)


class TestRatioRules:
    @pytest.mark.parametrize(("cur_calls", "fires"), [(8, True), (9, True), (7, False)])
    def test_tool_calls_p95_fires_at_twice_the_baseline(self, cur_calls, fires):
        """tool_calls_p95 fires when the current p95 is at least 2x the baseline p95 (4 -> 8)."""
        cur = make_runs("c", 40, calls=cur_calls)
        r = by_rule(evaluate(cur, [], BASE, []))["tool_calls_p95"]
        assert r.fired is fires
        assert (r.current, r.baseline, r.threshold) == (cur_calls, 4, 8)

    def test_spend_fires_at_configured_ratio(self):
        """spend_per_run compares average spend per run against its configured ratio."""
        cur = make_runs("c", 40, cost=0.025)
        assert by_rule(evaluate(cur, [], BASE, []))["spend_per_run"].fired  # 2.5x >= 2x
        assert not by_rule(evaluate(cur, [], BASE, [], AlertRules(spend_ratio=3.0)))[
            "spend_per_run"
        ].fired

    def test_latency_p95_fires_and_names_the_slowest_runs(self):
        """latency_p95 fires at 2x and lists the slowest current runs first."""
        cur = make_runs("c", 40, latency=[4000] * 35 + [9000, 9500, 8000, 7000, 6000])
        r = by_rule(evaluate(cur, [], BASE, [], AlertRules(worst_runs=3)))["latency_p95"]
        assert r.fired and r.runs == ["c036", "c035", "c037"]

    def test_zero_baseline_fires_on_any_current_value(self):
        """A ratio rule with a baseline of 0 fires as soon as the current value is above 0."""
        base, cur = make_runs("b", 30, cost=0.0), make_runs("c", 30, cost=0.001)
        assert by_rule(evaluate(cur, [], base, []))["spend_per_run"].fired
        assert not by_rule(evaluate(base, [], base, []))["spend_per_run"].fired


class TestStopReasonRules:
    def test_loop_detected_fires_above_baseline_plus_minimum_increase(self):
        """loop_detected fires when its share rises more than the minimum increase over baseline."""
        base = make_runs("b", 100, reasons={"loop_detected": 2})  # 2%
        small = make_runs("c", 100, reasons={"loop_detected": 3})  # +1 point: noise
        big = make_runs("c", 100, calls=[4, 30], reasons={"loop_detected": 6})  # +4 points
        assert not by_rule(evaluate(small, [], base, []))["loop_detected"].fired
        r = by_rule(evaluate(big, [], base, []))["loop_detected"]
        assert r.fired and r.current == pytest.approx(0.06) and r.baseline == pytest.approx(0.02)
        assert r.threshold == pytest.approx(0.04)
        assert set(r.runs) <= {f"c{i:03d}" for i in range(6)} and len(r.runs) == 5
        assert r.runs[:3] == ["c005", "c003", "c001"]  # most tool calls (30), newest first

    def test_tool_timeout_spike_needs_ratio_and_absolute_increase(self):
        """tool_timeout fires only when its share doubles and rises by the minimum increase."""
        base = make_runs("b", 100, reasons={"tool_timeout": 1})
        assert not by_rule(
            evaluate(make_runs("c", 100, reasons={"tool_timeout": 2}), [], base, [])
        )["tool_timeout"].fired
        r = by_rule(evaluate(make_runs("c", 100, reasons={"tool_timeout": 8}), [], base, []))[
            "tool_timeout"
        ]
        assert r.fired and r.threshold == pytest.approx(0.03)


class TestRetries:
    def test_rare_to_constant_fires(self):
        """429/5xx retries rising from under 5% of tool calls to over 25% fire the retries rule."""
        cur = make_runs("c", 40)
        r = by_rule(evaluate(cur, make_steps(cur, 3, "HTTP503"), BASE, make_steps(BASE, 50)))[
            "retries"
        ]
        assert (
            r.fired
            and r.current == pytest.approx(53 / 160)
            and r.baseline == pytest.approx(3 / 160)
        )
        assert r.runs and all(x.startswith("c") for x in r.runs)

    def test_already_constant_baseline_does_not_fire(self):
        """Retries already frequent in the baseline are not a shift from rare to constant."""
        cur = make_runs("c", 40)
        r = by_rule(evaluate(cur, make_steps(cur, 2), BASE, make_steps(BASE, 4)))["retries"]
        assert not r.fired

    def test_other_errors_are_not_retries(self):
        """Errors outside the 429/5xx buckets (timeouts, ValueError) do not count as retries."""
        cur = make_runs("c", 40)
        r = by_rule(evaluate(cur, make_steps(cur, 2, "TimeoutError"), BASE, make_steps(BASE)))[
            "retries"
        ]
        assert r.current == 0 and not r.fired


class TestConfig:
    def test_disabled_rules_are_not_judged(self):
        """A rule whose threshold is None is left out of the results."""
        results = evaluate(
            BASE, [], BASE, [], AlertRules(spend_ratio=None, retry_baseline_max=None)
        )
        assert [r.rule for r in results] == [
            "tool_calls_p95",
            "latency_p95",
            "loop_detected",
            "tool_timeout",
        ]

    @pytest.mark.parametrize(
        ("kwargs", "text"),
        [
            ({"min_runs": 0}, "min_runs"),
            ({"tool_calls_p95_ratio": 0}, "tool_calls_p95_ratio"),
            ({"retry_current_min": 25}, "retry_current_min"),
        ],
    )
    def test_bad_thresholds_are_rejected_with_the_field_name(self, kwargs, text):
        """Invalid thresholds fail when AlertRules is built, naming the field and valid range."""
        with pytest.raises(ValueError, match=text):
            AlertRules(**kwargs)


def test_firing_line_names_current_baseline_threshold_and_runs():
    """A firing rule renders as one line with the current value, the baseline, and run ids."""
    cur = make_runs("c", 40, calls=12)
    r = by_rule(evaluate(cur, [], BASE, [], AlertRules(worst_runs=2)))["tool_calls_p95"]
    assert format_result(r) == (
        "FIRING tool_calls_p95: tool calls/run p95 12.0 (baseline 4.0, threshold 8.0: "
        "current >= 2x baseline); look at c039, c038"
    )


class TestRegistry:
    def test_a_rule_added_as_one_function_is_judged_and_can_be_disabled(self):
        """A rule registered with alert_rule is judged, printed and disabled like the built-ins."""

        @alert_rule("test_spend_total", label="spend total", unit="usd")
        def _spend_total(x):
            cur, base = x.current.spend_total_usd, x.baseline.spend_total_usd
            fired = cur >= 2 * base
            worst = x.worst.top("spend", 2) if fired else []
            return AlertResult(
                "test_spend_total", "fired" if fired else "ok", cur, base, 2 * base, "2x", worst
            )

        try:
            cur = make_runs("c", 40, cost=0.03)
            r = by_rule(evaluate(cur, [], BASE, []))["test_spend_total"]
            assert r.fired and r.runs == ["c039", "c038"]  # equal spend: newest first
            assert format_result(r).startswith("FIRING test_spend_total: spend total $1.2000")
            off = evaluate(cur, [], BASE, [], AlertRules(disabled=frozenset({"test_spend_total"})))
            assert "test_spend_total" not in by_rule(off) and len(off) == len(RULES)
        finally:
            REGISTRY.pop("test_spend_total")

    def test_names_are_unique_and_disabling_an_unknown_rule_is_refused(self):
        """Registering a taken name or disabling a missing rule fails, naming the rules."""
        with pytest.raises(ValueError, match="already registered"):
            alert_rule("retries", label="x", unit="share")(lambda x: None)
        with pytest.raises(ValueError, match="'retry'.*retries"):
            AlertRules(disabled=frozenset({"retry"}))
