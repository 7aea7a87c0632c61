"""replay.stats: percentiles, durations, error buckets and the figures `replay stats` prints."""

from __future__ import annotations

import json

import pytest

from replay.models import Event, Run, Usage
from replay.stats import (
    InvalidDurationError,
    StatsReport,
    UnknownAgentError,
    classify_error,
    compute_stats,
    compute_stats_by,
    format_duration,
    format_stats,
    format_stats_table,
    parse_duration,
    percentile,
)

HOUR = 3_600_000
T0 = 1_760_000_400_000 - 1_760_000_400_000 % HOUR  # the start of an hour


def run(
    rid: str,
    *,
    calls: int = 0,
    latency: int | None = 1000,
    reason: str | None = "completed",
    cost: float = 0.0,
    tokens: tuple[int, int] = (0, 0),
    start: int = T0,
    agent: str = "a",
    replay_of: str | None = None,
) -> Run:
    return Run(
        run_id=rid,
        agent=agent,
        started_ms=start,
        ended_ms=None if latency is None else start + latency,
        stop_reason=reason,
        tool_calls=calls,
        usage=Usage(tokens_in=tokens[0], tokens_out=tokens[1], cost_usd=cost, tool_calls=calls),
        replay_of=replay_of,
        host="h",
    )


def tool(rid: str, step: int, error: str | None = None) -> Event:
    return Event(
        run_id=rid,
        kind="tool_result",
        ts_ms=T0 + step,
        step_id=step,
        tool="http.get",
        status="error" if error else "ok",
        error=error,
    )


def model(rid: str, step: int, tin: int, tout: int) -> Event:
    return Event(
        run_id=rid,
        kind="model_result",
        ts_ms=T0 + step,
        step_id=step,
        tool="openai.chat",
        status="ok",
        usage=Usage(tokens_in=tin, tokens_out=tout),
    )


class TestPercentile:
    @pytest.mark.parametrize(
        ("values", "q", "expected"),
        [
            ([1, 2, 3, 4], 0.5, 2.5),  # h = 1.5 -> halfway between 2 and 3
            (list(range(1, 21)), 0.95, 19.05),  # h = 18.05 -> 19 + 0.05 * (20 - 19)
            ([10, 20], 0.95, 19.5),  # h = 0.95
            ([7], 0.95, 7.0),
            ([5, 1, 4, 2, 3], 0.5, 3.0),  # unsorted input, exact middle
            ([3, 1, 2], 0.0, 1.0),
            ([3, 1, 2], 1.0, 3.0),
            ([2, 4, 4, 4, 5, 5, 7, 9], 0.95, 8.3),  # h = 6.65 -> 7 + 0.65 * (9 - 7)
        ],
    )
    def test_linear_interpolation_matches_hand_computed_values(self, values, q, expected):
        """Percentiles interpolate linearly between closest ranks, like numpy's default method."""
        assert percentile(values, q) == pytest.approx(expected)

    def test_empty_input_has_no_percentile(self):
        """An empty sample gives None rather than raising or inventing a 0."""
        assert percentile([], 0.95) is None

    def test_q_outside_zero_one_is_rejected(self):
        """Asking for p95 as 95 instead of 0.95 fails with a message showing the right form."""
        with pytest.raises(ValueError, match="0.95"):
            percentile([1, 2], 95)


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "ms"),
        [
            ("90s", 90_000),
            ("10m", 600_000),
            ("24h", 86_400_000),
            ("7d", 604_800_000),
            ("2w", 1_209_600_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            (" 10M ", 600_000),
            ("1.5h", 5_400_000),
        ],
    )
    def test_parse(self, text, ms):
        """Durations like 10m, 24h, 7d, 90s (and combinations) parse to milliseconds."""
        assert parse_duration(text) == ms

    @pytest.mark.parametrize("text", ["", "10", "m", "10x", "-5m", "0m", "10m junk", "m10"])
    def test_bad_durations_name_the_input_and_the_format(self, text):
        """An unparsable or zero duration raises an error naming the input and showing examples."""
        with pytest.raises(InvalidDurationError) as exc:
            parse_duration(text, "--window")
        assert (
            repr(text) in str(exc.value)
            and "--window" in str(exc.value)
            and "10m" in str(exc.value)
        )

    @pytest.mark.parametrize(
        ("ms", "text"), [(600_000, "10m"), (604_800_000, "7d"), (90_000, "90s"), (1500, "1500ms")]
    )
    def test_format_duration_round_trips(self, ms, text):
        """Durations print in the largest exact unit and parse back to the same value."""
        assert format_duration(ms) == text
        assert parse_duration(text) == ms


class TestClassifyError:
    @pytest.mark.parametrize(
        ("error", "bucket"),
        [
            ("HTTP429", "429"),
            ("HTTP503", "5xx"),
            ("HTTPStatusError[502]", "5xx"),
            ("http_error_500", "5xx"),
            ("HTTP404", "other"),
            ("openai.RateLimitError", "429"),
            ("TooManyRequests", "429"),
            ("ServiceUnavailable", "5xx"),
            ("GatewayTimeout", "5xx"),  # a 504 is a server error, not a client-side timeout
            ("TimeoutError", "timeout"),
            ("httpx.ReadTimeout", "timeout"),
            ("asyncio.TimeoutError", "timeout"),
            ("httpx.HTTPStatusError", "other"),  # no code in the name: nothing to go on
            ("ValueError", "other"),
            (None, None),
        ],
    )
    def test_buckets(self, error, bucket):
        """Error class names sort into 429 / 5xx / timeout / other by code suffix, then by name."""
        assert classify_error(error) == bucket


class TestComputeStats:
    def runs_and_steps(self):
        runs = [
            run("r1", calls=2, latency=1000, cost=0.01, tokens=(100, 10)),
            run("r2", calls=4, latency=2000, cost=0.03, tokens=(200, 20), reason="loop_detected"),
            run("r3", calls=6, latency=3000, cost=0.02, tokens=(300, 30)),
            run("r4", calls=0, latency=None, reason=None),  # still running
        ]
        steps = [
            tool("r1", 1),
            tool("r1", 2, "HTTP429"),
            tool("r2", 1, "HTTP503"),
            tool("r2", 2),
            tool("r2", 3, "TimeoutError"),
            tool("r2", 4),
            *[tool("r3", i) for i in range(1, 6)],
            tool("r3", 6, "ValueError"),
            model("r1", 3, 100, 50),
            model("r3", 7, 300, 100),
            tool("other-run", 1, "HTTP429"),  # not one of these runs: ignored
        ]
        return runs, steps

    def test_figures_match_hand_computed_values(self):
        """Every figure of `replay stats` matches a hand computation over four runs."""
        s = compute_stats(*self.runs_and_steps())
        assert s.runs == 4 and s.finished_runs == 3
        assert s.tool_calls_avg == pytest.approx(3.0)  # (2 + 4 + 6 + 0) / 4
        assert s.tool_calls_p95 == pytest.approx(5.7)  # [0,2,4,6]: h = 2.85 -> 4 + 0.85 * 2
        assert s.latency_p95_ms == pytest.approx(2900.0)  # [1000,2000,3000]: h = 1.9
        assert s.latency_avg_ms == pytest.approx(2000.0)
        assert s.tokens_basis == "model_result" and s.model_requests == 2
        assert s.tokens_per_request_avg == pytest.approx(275.0)  # (150 + 400) / 2
        assert s.tokens_per_request_p95 == pytest.approx(387.5)  # [150, 400]: h = 0.95
        assert s.spend_avg_usd == pytest.approx(0.015) and s.spend_total_usd == pytest.approx(0.06)
        assert s.tool_results == 12 and s.tool_errors == 4
        assert s.tool_error_rate == pytest.approx(4 / 12)
        assert s.errors_by_bucket == {"429": 1, "5xx": 1, "timeout": 1, "other": 1}
        assert s.errors_by_class == {"HTTP429": 1, "HTTP503": 1, "TimeoutError": 1, "ValueError": 1}
        assert s.retry_rate == pytest.approx(2 / 12)
        assert s.stop_reasons == {"completed": 2, "loop_detected": 1}
        assert s.stop_reason_shares == pytest.approx({"completed": 2 / 3, "loop_detected": 1 / 3})
        assert s.success_rate == pytest.approx(2 / 3)

    def test_tokens_fall_back_to_per_run_without_model_steps(self):
        """Without model_result steps, tokens per request are the runs' token totals."""
        runs, steps = self.runs_and_steps()
        s = compute_stats(runs, [e for e in steps if e.kind != "model_result"])
        assert s.tokens_basis == "run"
        assert s.tokens_per_request_avg == pytest.approx((110 + 220 + 330 + 0) / 4)

    def test_replayed_runs_are_not_production_traffic(self):
        """Runs written by replay (replay_of set) are left out of the figures."""
        runs, steps = self.runs_and_steps()
        s = compute_stats(
            [*runs, run("rr", calls=50, replay_of="r1")], [*steps, tool("rr", 1, "HTTP429")]
        )
        assert s.runs == 4 and s.tool_errors == 4

    def test_empty_input_gives_no_figures_and_no_division_by_zero(self):
        """No runs: runs is 0, every average/percentile/rate is None, and it still serializes."""
        s = compute_stats([], [tool("x", 1)])
        assert s.runs == 0
        assert s.tool_calls_avg is None and s.latency_p95_ms is None and s.success_rate is None
        assert s.tool_error_rate is None and s.retry_rate is None and s.stop_reason_shares == {}
        assert json.loads(s.to_json())["runs"] == 0
        assert format_stats(s).split() == ["runs", "0"]

    def test_runs_without_tool_calls_or_stop_have_no_rates(self):
        """Runs with no tool calls and no stop reason give None rates instead of 0/0."""
        s = compute_stats([run("r1", reason=None, latency=None)], [])
        assert s.tool_error_rate is None and s.success_rate is None and s.latency_p95_ms is None
        assert "success rate" in format_stats(s)

    def test_json_carries_counts_and_shares(self):
        """The JSON form has stop reasons and error buckets as counts with shares/rates."""
        d = json.loads(compute_stats(*self.runs_and_steps()).to_json())
        assert d["stop_reasons"]["loop_detected"] == {"count": 1, "share": pytest.approx(1 / 3)}
        assert d["errors_by_bucket"]["429"] == {"count": 1, "rate": pytest.approx(1 / 12)}
        assert d["retry_rate"] == pytest.approx(2 / 12)

    def test_text_lists_every_figure(self):
        """The text form names each figure `replay stats` promises."""
        text = format_stats(compute_stats(*self.runs_and_steps()))
        for label in (
            "tool calls / run",
            "run latency",
            "tokens / request",
            "spend / run",
            "tool-call errors",
            "429: 8.3%",
            "success rate",
            "loop_detected 1 (33.3%)",
        ):
            assert label in text


class TestComputeStatsBy:
    def test_hour_buckets_include_empty_gaps(self):
        """Runs are bucketed by start hour, oldest first, with empty hours present as runs == 0."""
        runs = [
            run("a", calls=2, start=T0 + 5),
            run("b", calls=4, start=T0 + 10),
            run("c", calls=9, start=T0 + 2 * HOUR + 1),
        ]
        steps = [tool("a", 1), tool("c", 1, "HTTP429")]
        buckets = compute_stats_by(runs, steps, "hour")
        assert [b.start_ms for b in buckets] == [T0, T0 + HOUR, T0 + 2 * HOUR]
        assert [b.stats.runs for b in buckets] == [2, 0, 1]
        assert buckets[0].stats.tool_calls_avg == 3.0 and buckets[0].stats.tool_errors == 0
        assert buckets[1].stats.tool_calls_avg is None
        assert buckets[2].stats.tool_errors == 1
        assert "-" in format_stats_table(buckets, "hour").splitlines()[2]

    def test_day_buckets_span_the_requested_window(self):
        """With since/until given, the day buckets cover the whole window, not just the data."""
        day = 86_400_000
        start = T0 - T0 % day
        buckets = compute_stats_by(
            [run("a", start=start + day + 5)], [], "day", since_ms=start, until_ms=start + 3 * day
        )
        assert [b.stats.runs for b in buckets] == [0, 1, 0]

    def test_unknown_bucket_size_is_rejected(self):
        """Bucketing by anything but hour or day fails, naming the valid choices."""
        with pytest.raises(ValueError, match="'hour' or 'day'"):
            compute_stats_by([run("a")], [], "week")  # type: ignore[arg-type]


class TestMessages:
    def test_empty_window_message(self):
        """An empty window says so, naming the window, the agent and the store's run count."""
        rep = StatsReport(compute_stats([], []), [], 0, 1, "x", 0, "in the last 7d")
        assert rep.message is not None
        assert rep.message.startswith("no runs in the last 7d for agent 'x' (store has 0 runs")

    def test_unknown_agent_lists_known_agents(self):
        """An unknown agent error lists the agents the store knows and how to fix the call."""
        err = UnknownAgentError("x", ["billing", "support-agent"], "replay.db")
        assert (
            "'x'" in str(err) and "'billing', 'support-agent'" in str(err) and "--agent" in str(err)
        )


def test_percentile_never_returns_nan_for_identical_values():
    """A sample of identical values has that value at every quantile (no 0/0 in interpolation)."""
    assert [percentile([4, 4, 4], q) for q in (0, 0.5, 0.95, 1)] == [4, 4, 4, 4]


def test_percentile_q_finer_than_three_decimals_is_rejected():
    """q is read to three decimals (p99.9); a finer q fails naming the accepted form."""
    assert percentile(range(1, 1001), 0.999) == pytest.approx(999.001)
    with pytest.raises(ValueError, match="three decimals"):
        percentile([1, 2], 1 / 3)
