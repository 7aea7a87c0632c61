"""Step alignment and RunDiff semantics of `replay.diff` (renderings: test_diff_render.py)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay._align import align as _align
from replay._align import common_prefix as _common_prefix
from replay._align import common_suffix as _common_suffix
from replay._align import myers as _myers
from replay.diff import IgnoreRules, RunDiff, Trace, diff_traces
from replay.errors import InvalidIgnoreRuleError
from replay.hashing import sha
from replay.models import Event, Run, Usage

# -- builders ----------------------------------------------------------------------------------

Spec = tuple[Any, ...]  # (tool, args) or (tool, args, {status, error, out, kind})


def _out(tool: str, args: Any) -> dict[str, Any]:
    return {"tool": tool, "args": args, "status": "ok"}


def trace(
    specs: list[Spec],
    *,
    run_id: str = "r_rec",
    stop: str | None = "completed",
    usage: Usage | None = None,
    output: Any = None,
    tool_calls: int | None = None,
    snapshots: bool = True,
) -> Trace:
    """A trace whose volatile fields (ts, duration, run id) differ between recording and replay."""
    steps: list[Event] = []
    outputs: dict[str, Any] = {}
    skew = 0 if run_id == "r_rec" else 12_345
    for n, spec in enumerate(specs):
        tool, args, *rest = spec
        opts = dict(rest[0]) if rest else {}
        out = opts.pop("out", _out(tool, args))
        e = Event(
            run_id=run_id,
            kind=opts.pop("kind", "tool_result"),
            ts_ms=1_700_000_000_000 + 1000 * n + skew,
            step_id=n + 1,
            tool=tool,
            args_sha=sha({"args": args}),
            output_sha=sha(out),
            duration_ms=5 + skew % 7 + n,
            status=opts.pop("status", "ok"),
            error=opts.pop("error", None),
        )
        assert not opts, opts
        steps.append(e)
        if snapshots:
            outputs[e.output_sha] = out
    run = Run(
        run_id=run_id,
        agent="support-agent",
        started_ms=1_700_000_000_000 + skew,
        stop_reason=stop,
        usage=usage or Usage(),
        tool_calls=len(steps) if tool_calls is None else tool_calls,
        output=output,
    )
    return Trace(run=run, steps=steps, outputs=outputs)


def rep(specs: list[Spec], **kw: Any) -> Trace:
    return trace(specs, run_id="r_rep", **kw)


def a8(args: Any) -> str:
    return sha({"args": args})[:8]


BASE: list[Spec] = [
    ("crm.lookup", "c1"),
    ("kb.search", "refund"),
    ("openai.chat", "m1"),
    ("email.send", "cust"),
    ("crm.update", "c1"),
    ("openai.chat", "m2"),
]
ERR = {"status": "error", "error": "HTTPStatusError"}


def kinds(d: RunDiff) -> list[tuple[str, int | None, int | None]]:
    return [(c.kind, c.recorded_index, c.replayed_index) for c in d.changes]


# -- identical runs ----------------------------------------------------------------------------


def test_identical_runs_give_an_empty_diff() -> None:
    """Two runs with the same steps, stop reason and output are reported as matching."""
    d = diff_traces(trace(BASE, output={"r": 1}), rep(BASE, output={"r": 1}))
    assert d.is_empty
    assert d.changes == [] and d.first_divergence is None and d.output_diff is None
    assert d.recorded_id == "r_rec" and d.replayed_id == "r_rep"


def test_timings_timestamps_and_ids_never_count() -> None:
    """Different run ids, timestamps, durations and step ids alone do not make a difference."""
    a = trace(BASE)
    b = rep(BASE)
    b.steps = [
        e.model_copy(update={"step_id": (e.step_id or 0) + 100, "duration_ms": 9999})
        for e in b.steps
    ]
    assert diff_traces(a, b).is_empty


def test_empty_runs_match() -> None:
    """Two runs without steps match; one step on one side only is one extra call."""
    assert diff_traces(trace([]), rep([])).is_empty
    assert kinds(diff_traces(trace([]), rep(BASE[:1]))) == [("extra_call", None, 0)]


# -- one edit: exactly one change of the right kind ----------------------------------------


def _swap(specs: list[Spec], i: int) -> list[Spec]:
    out = list(specs)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


@pytest.mark.parametrize(
    ("replayed", "expected"),
    [
        pytest.param(
            BASE[:3] + [("http.get", "x")] + BASE[3:],
            [("extra_call", None, 3)],
            id="insertion in the middle",
        ),
        pytest.param([("http.get", "x")] + BASE, [("extra_call", None, 0)], id="insertion first"),
        pytest.param(BASE + [("http.get", "x")], [("extra_call", None, 6)], id="insertion last"),
        pytest.param(BASE[:2] + BASE[3:], [("missing_call", 2, None)], id="deletion"),
        pytest.param(
            BASE[:1] + [("kb.search", "refund policy")] + BASE[2:],
            [("args_changed", 1, 1)],
            id="args change",
        ),
        pytest.param(
            BASE[:1] + [("kb.search", "refund", ERR)] + BASE[2:],
            [("status_changed", 1, 1)],
            id="status change",
        ),
        pytest.param(_swap(BASE, 1), [("reordered", 1, 2)], id="reorder of two steps"),
        pytest.param(
            BASE[:3] + [("http.get", "x")] + BASE[3:5] + BASE[6:],
            [("extra_call", None, 3), ("missing_call", 5, None)],
            id="insertion and deletion",
        ),
    ],
)
def test_one_edit_is_one_change(replayed: list[Spec], expected: list[tuple[Any, ...]]) -> None:
    """Each edit of the step sequence is reported once, by kind, at its own step."""
    d = diff_traces(trace(BASE), rep(replayed))
    assert kinds(d) == expected
    assert not d.is_empty


def test_error_class_change() -> None:
    """The same failing call failing with another error class is an error change."""
    rec = BASE[:1] + [("kb.search", "refund", {"status": "error", "error": "TimeoutError"})]
    d = diff_traces(trace(rec), rep(BASE[:1] + [("kb.search", "refund", ERR)]))
    assert kinds(d) == [("error_changed", 1, 1)]
    assert d.changes[0].detail == "kb.search error TimeoutError -> HTTPStatusError"


def test_insertion_in_a_long_run_is_one_insertion() -> None:
    """One step inserted early in a 2,000-step run does not make every later step changed."""
    rnd = random.Random(3)
    specs: list[Spec] = [(rnd.choice(["a", "b", "c"]), rnd.randrange(50)) for _ in range(2000)]
    d = diff_traces(trace(specs), rep(specs[:10] + [("x", 0)] + specs[10:]))
    assert kinds(d) == [("extra_call", None, 10)]


def test_scattered_edits_in_a_long_run_are_each_reported_once() -> None:
    """Thirty scattered inserts, deletes and arg changes in 3,000 steps give thirty changes."""
    rnd = random.Random(5)
    specs: list[Spec] = [(rnd.choice(["a", "b", "c", "d"]), i) for i in range(3000)]
    replayed = list(specs)
    edits = {"extra_call": 0, "missing_call": 0, "args_changed": 0}
    for k, p in enumerate(sorted(rnd.sample(range(1, 2999), 30), reverse=True)):
        kind = ("extra_call", "missing_call", "args_changed")[k % 3]
        edits[kind] += 1
        if kind == "extra_call":
            replayed.insert(p, ("new", -k))
        elif kind == "missing_call":
            del replayed[p]
        else:
            replayed[p] = (replayed[p][0], -1000 - k)
    d = diff_traces(trace(specs), rep(replayed))
    assert {k: v for k, v in d.counts().items() if v} == edits


def test_repetitive_runs_without_unique_steps_still_align() -> None:
    """A polling loop (no step occurs once) with one extra poll is one extra call."""
    loop: list[Spec] = [("status.poll", "job"), ("sleep", 1)] * 200
    replayed = loop[:151] + [("status.poll", "job")] + loop[151:]
    d = diff_traces(trace(loop), rep(replayed))
    assert [c.kind for c in d.changes] == ["extra_call"]
    assert d.changes[0].replayed is not None and d.changes[0].replayed.tool == "status.poll"


# -- details: why a step did not match ---------------------------------------------------------


@pytest.mark.parametrize(
    ("replayed", "detail"),
    [
        pytest.param(
            BASE[:1] + [("kb.search", "refund policy")] + BASE[2:],
            f"kb.search args_sha {a8('refund')} -> {a8('refund policy')}",
            id="args",
        ),
        pytest.param(
            BASE[:1] + [("kb.search", "refund", ERR)] + BASE[2:],
            "kb.search status ok -> error (HTTPStatusError)",
            id="status",
        ),
        pytest.param(_swap(BASE, 1), "kb.search moved from step 2 to step 3", id="reordered"),
        pytest.param(
            BASE + [("sms.send", "cust")], "the recording never calls sms.send", id="new tool"
        ),
        pytest.param(
            BASE[:5] + [("crm.lookup", "c2")] + BASE[5:],
            f"no recorded crm.lookup call with args {a8('c2')}; nearest is step 1 "
            f"(args {a8('c1')})",
            id="new args",
        ),
        pytest.param(BASE[:4] + BASE[5:], "the replay never calls crm.update", id="tool gone"),
    ],
)
def test_change_detail_says_why_it_did_not_match(replayed: list[Spec], detail: str) -> None:
    """Each change carries a one-line reason naming the tool and what differs."""
    (change,) = diff_traces(trace(BASE), rep(replayed)).changes
    assert change.detail == detail


def test_extra_call_names_the_nearest_recorded_step_of_that_tool() -> None:
    """An extra call points at the recorded call of the same tool closest to where it sits."""
    specs = BASE + [("kb.search", "shipping"), ("openai.chat", "m3")]
    replayed = specs[:7] + [("kb.search", "returns")] + specs[7:]
    (c,) = diff_traces(trace(specs), rep(replayed)).changes
    assert c.kind == "extra_call" and c.replayed_index == 7
    assert c.nearest is not None and c.nearest_index == 6
    assert c.nearest.args_sha == sha({"args": "shipping"})


def test_missing_call_names_the_nearest_replayed_step_of_that_tool() -> None:
    """A missing call points at the closest replayed call of the same tool, if any."""
    specs = BASE + [("crm.lookup", "c9")]
    (c,) = diff_traces(trace(specs), rep(BASE)).changes
    assert c.kind == "missing_call" and c.recorded_index == 6
    assert c.nearest_index == 0 and c.nearest is not None and c.nearest.tool == "crm.lookup"


def test_duplicate_email_is_an_extra_call_with_the_same_args() -> None:
    """The incident: a second email.send with the same args says it repeats the earlier step."""
    replayed = BASE[:5] + [("email.send", "cust")] + BASE[5:]
    d = diff_traces(trace(BASE), rep(replayed))
    (c,) = d.changes
    assert (c.kind, c.replayed_index) == ("extra_call", 5)
    assert c.detail == "email.send called again with the same args (as step 4)"
    assert c.nearest_index == 3


def test_fixed_duplicate_email_is_a_missing_call_with_the_same_args() -> None:
    """Replaying the incident after the fix: the recording's repeated email is the missing call."""
    recorded = BASE[:5] + [("email.send", "cust")] + BASE[5:]
    (c,) = diff_traces(trace(recorded), rep(BASE)).changes
    assert (c.kind, c.recorded_index) == ("missing_call", 5)
    assert c.detail == (
        "the recording called email.send again with the same args (as step 4); the replay did not"
    )


def test_an_extra_call_repeated_more_often_counts_the_calls() -> None:
    """An extra call with recorded args but no earlier replayed twin gives both call counts."""
    recorded = [("kb.search", "q"), ("email.send", "cust")]
    (c,) = diff_traces(trace(recorded), rep([("email.send", "cust")] + recorded)).changes
    assert c.kind == "extra_call" and c.replayed_index == 0
    assert c.detail == "email.send called 2x with these args, recorded 1x (step 2)"


# -- first divergence and change lists -------------------------------------------------------


def test_first_divergence_is_the_earliest_change() -> None:
    """first_divergence is the change earliest in step order, whatever its kind."""
    replayed = BASE[:1] + [("kb.search", "other")] + BASE[2:4] + [("http.get", "x")] + BASE[4:]
    d = diff_traces(trace(BASE), rep(replayed))
    assert [c.kind for c in d.changes] == ["args_changed", "extra_call"]
    assert d.first_divergence is d.changes[0]
    assert d.first_divergence.step == 2


def test_added_removed_changed_partition_the_changes() -> None:
    """added are the extra calls, removed the missing calls, changed everything else."""
    replayed = [("new.tool", 1)] + BASE[:1] + [("kb.search", "x")] + BASE[2:5]
    d = diff_traces(trace(BASE), rep(replayed))
    assert [c.kind for c in d.added] == ["extra_call"]
    assert [c.kind for c in d.removed] == ["missing_call"]
    assert [c.kind for c in d.changed] == ["args_changed"]
    assert len(d.added) + len(d.removed) + len(d.changed) == len(d.changes)


# -- outputs ------------------------------------------------------------------------------------


def test_output_change_uses_deepdiff_and_names_the_path() -> None:
    """A step with the same call but another output reports the changed path and both values."""
    out_a = {"customer": "c1", "status": "open", "ts": 1}
    out_b = {"customer": "c1", "status": "closed", "ts": 1}
    d = diff_traces(
        trace([("crm.lookup", "c1", {"out": out_a})]), rep([("crm.lookup", "c1", {"out": out_b})])
    )
    (c,) = d.changes
    assert c.kind == "output_changed" and (c.recorded_index, c.replayed_index) == (0, 0)
    assert c.output_diff == {
        "values_changed": {"root['status']": {"new_value": "closed", "old_value": "open"}}
    }
    assert c.detail == "crm.lookup output changed: root['status']: 'open' -> 'closed'"
    json.dumps(c.output_diff)


def test_output_compared_by_sha_when_snapshots_are_missing() -> None:
    """Without snapshots a changed output_sha is still an output change, with no deepdiff."""
    d = diff_traces(
        trace([("crm.lookup", "c1", {"out": 1})], snapshots=False),
        rep([("crm.lookup", "c1", {"out": 2})], snapshots=False),
    )
    (c,) = d.changes
    assert c.kind == "output_changed" and c.output_diff is None
    assert c.detail == (
        f"crm.lookup output_sha {sha(1)[:8]} -> {sha(2)[:8]} (snapshots not available)"
    )


def test_final_output_change_makes_the_diff_non_empty() -> None:
    """A different final run output is reported with deepdiff even when every step matches."""
    d = diff_traces(trace(BASE, output={"reply": "sent"}), rep(BASE, output={"reply": "failed"}))
    assert not d.is_empty and d.changes == []
    assert d.output_diff == {
        "values_changed": {"root['reply']": {"new_value": "failed", "old_value": "sent"}}
    }


# -- ignore rules -------------------------------------------------------------------------------

CLOCK_A: list[Spec] = [BASE[0], ("clock.now", 1), BASE[1], ("clock.now", 2), BASE[2]]
CLOCK_B: list[Spec] = [BASE[0], ("clock.now", 7), BASE[1], BASE[2], ("clock.now", 8)]


@pytest.mark.parametrize(
    ("recorded", "replayed", "ignore"),
    [
        pytest.param(CLOCK_A, CLOCK_B, ["tool:clock.now"], id="tool"),
        pytest.param(CLOCK_A, CLOCK_B, ["tool:clock.*"], id="tool wildcard"),
        pytest.param(CLOCK_A, CLOCK_B, {"tools": ["clock.now"]}, id="tool mapping"),
        pytest.param(
            [("kb.search", "q", {"status": "error", "error": "TimeoutError"})],
            [("kb.search", "q", {"status": "error", "error": "ConnectError"})],
            ["field:error"],
            id="field error",
        ),
        pytest.param(
            [("kb.search", "q", {"out": 1})],
            [("kb.search", "q2", {"out": 1})],
            ["field:args_sha"],
            id="field args_sha",
        ),
        pytest.param(
            [("kb.search", "q", {"out": {"a": 1}})],
            [("kb.search", "q", {"out": {"a": 2}})],
            ["field:output_sha"],
            id="field output_sha",
        ),
        pytest.param(
            [("kb.search", "q", {"out": {"a": 1, "ts": 1}})],
            [("kb.search", "q", {"out": {"a": 1, "ts": 2}})],
            ["output:root['ts']"],
            id="output path",
        ),
        pytest.param(
            [("kb.search", "q", {"out": {"a": 1, "ts": 1}})],
            [("kb.search", "q", {"out": {"a": 1, "ts": 2}})],
            ["output:ts"],
            id="output bare key",
        ),
        pytest.param(
            [("kb.search", "q", {"out": {"hits": [{"id": 1, "t": "x"}, {"id": 2}]}})],
            [("kb.search", "q", {"out": {"hits": [{"id": 8, "t": "x"}, {"id": 9}]}})],
            ["output:root['hits'][*]['id']"],
            id="output path wildcard",
        ),
        pytest.param(
            [("kb.search", "q", {"out": {"request_id": "a", "v": 1}})],
            [("kb.search", "q", {"out": {"request_id": "b", "v": 1}})],
            ["output:re:\\['request_id'\\]$"],
            id="output regex",
        ),
    ],
)
def test_ignore_rules_hide_what_they_name(
    recorded: list[Spec], replayed: list[Spec], ignore: Any
) -> None:
    """With the rule the runs match; without it they differ (so the rule did the work)."""
    assert not diff_traces(trace(recorded), rep(replayed)).is_empty
    assert diff_traces(trace(recorded), rep(replayed), ignore=ignore).is_empty


def test_ignored_tool_keeps_original_step_numbers() -> None:
    """With a tool ignored, changes still carry their positions in the unfiltered step lists."""
    replayed = CLOCK_B[:3] + [("http.get", "x")] + CLOCK_B[3:]
    d = diff_traces(trace(CLOCK_A), rep(replayed), ignore=["tool:clock.now"])
    assert kinds(d) == [("extra_call", None, 3)]


def test_ignored_output_path_applies_to_the_final_output() -> None:
    """output: rules also exclude paths of the run's final output; field:output skips it."""
    a, b = trace(BASE, output={"reply": "ok", "ts": 1}), rep(BASE, output={"reply": "ok", "ts": 2})
    assert not diff_traces(a, b).is_empty
    assert diff_traces(a, b, ignore=["output:root['ts']"]).is_empty
    assert diff_traces(a, b, ignore=["field:output"]).is_empty


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, IgnoreRules()),
        ([], IgnoreRules()),
        ("tool:clock.now", IgnoreRules(tools=frozenset({"clock.now"}))),
        (
            ["tool:clock.now,uuid.new", "field:error"],
            IgnoreRules(tools=frozenset({"clock.now", "uuid.new"}), fields=frozenset({"error"})),
        ),
        (
            ["output:root['ts']", "output:root['id']"],
            IgnoreRules(output_paths=("root['ts']", "root['id']")),
        ),
        (
            {"fields": "status", "output_paths": ["ts"]},
            IgnoreRules(fields=frozenset({"status"}), output_paths=("ts",)),
        ),
        (["field:duration_ms"], IgnoreRules(fields=frozenset({"duration_ms"}))),
    ],
)
def test_ignore_rules_parse(spec: Any, expected: IgnoreRules) -> None:
    """CLI strings, mappings and None parse into the same rules."""
    assert IgnoreRules.parse(spec) == expected
    assert IgnoreRules.parse(expected) is expected


@pytest.mark.parametrize(
    "spec",
    [
        ["clock.now"],
        ["tools=clock.now"],
        ["field:tool"],
        ["field:colour"],
        ["tool:"],
        {"tool": "x"},
    ],
)
def test_invalid_ignore_rule_is_rejected(spec: Any) -> None:
    """A malformed rule raises InvalidIgnoreRuleError that lists the valid forms."""
    with pytest.raises(InvalidIgnoreRuleError, match=r"use tool:NAME .* field:NAME .* output:PATH"):
        IgnoreRules.parse(spec)


def test_invalid_ignore_rule_message() -> None:
    """The error names the rule, what is wrong with it, and the valid field names."""
    with pytest.raises(InvalidIgnoreRuleError) as exc:
        IgnoreRules.parse(["field:tool"])
    assert str(exc.value) == (
        "invalid ignore rule 'field:tool': unknown field 'tool' (to drop a tool's steps use "
        "tool:NAME); use tool:NAME (e.g. tool:clock.now), field:NAME (args_sha, error, kind, "
        "output, output_sha, status) or output:PATH (e.g. output:root['ts'])"
    )
    assert isinstance(exc.value, ValueError)


def test_ignore_rules_merge_and_round_trip() -> None:
    """Merged rules hold both sets, and to_strings parses back to the same rules."""
    merged = IgnoreRules.parse(["tool:a"]).merge(["field:error", "output:root['x']"])
    assert merged.to_strings() == ["tool:a", "field:error", "output:root['x']"]
    assert IgnoreRules.parse(merged.to_strings()) == merged


# -- stop reason, tool calls, usage -------------------------------------------------------------


def test_stop_reason_change_alone_makes_the_diff_non_empty() -> None:
    """Same steps but another stop reason is a divergence, with both reasons kept."""
    d = diff_traces(trace(BASE, stop="loop_detected"), rep(BASE, stop="completed"))
    assert not d.is_empty and d.changes == [] and d.first_divergence is None
    assert (d.stop_reason_before, d.stop_reason_after) == ("loop_detected", "completed")
    assert d.headline() == (
        "replay diverged from recording r_rec: stop reason loop_detected -> completed"
    )


def test_tool_call_counts_come_from_the_runs() -> None:
    """tool_calls before/after are the run rows' counts."""
    d = diff_traces(trace(BASE, tool_calls=12), rep(BASE[:4], tool_calls=4))
    assert (d.tool_calls_before, d.tool_calls_after) == (12, 4)


U = Usage(tokens_in=1000, tokens_out=200, cost_usd=0.02)


@pytest.mark.parametrize(
    ("before", "after", "field", "pct"),
    [
        (U, U, "tokens", 0.0),
        (U, Usage(tokens_in=2000, tokens_out=400, cost_usd=0.02), "tokens", 100.0),
        (U, Usage(tokens_in=500, tokens_out=200, cost_usd=0.02), "tokens_in", -50.0),
        (U, Usage(tokens_in=1000, tokens_out=300, cost_usd=0.02), "tokens_out", 50.0),
        (U, Usage(tokens_in=1000, tokens_out=200, cost_usd=0.05), "cost_usd", 150.0),
        (Usage(), Usage(), "cost_usd", 0.0),
        (Usage(), U, "tokens", math.inf),
    ],
)
def test_usage_delta_pct(before: Usage, after: Usage, field: str, pct: float) -> None:
    """usage_delta_pct is the relative change in percent; inf when the recording had none."""
    d = diff_traces(trace(BASE, usage=before), rep(BASE, usage=after))
    assert d.usage_delta_pct(field) == pytest.approx(pct)


def test_usage_change_alone_keeps_the_diff_empty() -> None:
    """Doubled spend with identical steps is not a divergence; gates read usage_delta_pct."""
    d = diff_traces(trace(BASE, usage=U), rep(BASE, usage=Usage(tokens_in=2000, cost_usd=0.04)))
    assert d.is_empty
    assert d.usage_delta_pct("cost_usd") == pytest.approx(100.0)


def test_usage_delta_pct_rejects_unknown_fields() -> None:
    """An unknown usage field raises ValueError naming the valid ones."""
    d = diff_traces(trace(BASE), rep(BASE))
    with pytest.raises(ValueError, match="use one of tokens_in, tokens_out, tokens, cost_usd"):
        d.usage_delta_pct("dollars")


# -- Trace.from_events -------------------------------------------------------------------------


def test_trace_from_events_keeps_steps_in_step_order() -> None:
    """run_start / stop events are dropped and steps sorted by step_id; nested ones optional."""
    t = trace(BASE[:3])
    start = Event(run_id="r_rec", kind="run_start", ts_ms=0)
    stop = Event(run_id="r_rec", kind="stop", ts_ms=9, stop_reason="completed")
    nested = t.steps[2].model_copy(update={"step_id": 4, "parent_step_id": 3})
    events = [start, t.steps[1], nested, t.steps[0], t.steps[2], stop]
    full = Trace.from_events(t.run, events, t.outputs)
    assert [e.step_id for e in full.steps] == [1, 2, 3, 4]
    top = Trace.from_events(t.run, events, include_nested=False)
    assert [e.step_id for e in top.steps] == [1, 2, 3] and top.outputs == {}


# -- properties --------------------------------------------------------------------------------

step_specs = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(step_specs)
def test_property_a_run_matches_itself(specs: list[Spec]) -> None:
    """diff(a, a) is empty for any step sequence."""
    assert diff_traces(trace(specs), rep(specs)).is_empty


@settings(max_examples=200, deadline=None)
@given(step_specs, st.data())
def test_property_one_insertion_is_one_extra_call(specs: list[Spec], data: st.DataObject) -> None:
    """Inserting any step anywhere gives exactly one change: one extra call of that step."""
    pos = data.draw(st.integers(0, len(specs)))
    new = data.draw(st.tuples(st.sampled_from(["a", "b", "x"]), st.integers(0, 3)))
    d = diff_traces(trace(specs), rep(specs[:pos] + [new] + specs[pos:]))
    assert [c.kind for c in d.changes] == ["extra_call"]
    c = d.changes[0]
    assert c.replayed is not None and c.replayed.tool == new[0]
    assert c.replayed.args_sha == sha({"args": new[1]})


@settings(max_examples=150, deadline=None)
@given(step_specs.filter(bool), st.data())
def test_property_one_deletion_is_one_missing_call(specs: list[Spec], data: st.DataObject) -> None:
    """Deleting any one step gives exactly one change: one missing call of that step."""
    pos = data.draw(st.integers(0, len(specs) - 1))
    d = diff_traces(trace(specs), rep(specs[:pos] + specs[pos + 1 :]))
    assert [c.kind for c in d.changes] == ["missing_call"]
    assert d.changes[0].recorded is not None and d.changes[0].recorded.tool == specs[pos][0]


small_seqs = st.lists(st.integers(0, 4), max_size=30)


@settings(max_examples=300, deadline=None)
@given(small_seqs, small_seqs)
def test_property_alignment_blocks_are_valid(a: list[int], b: list[int]) -> None:
    """Aligned blocks are increasing on both sides and pair only equal elements."""
    pi = pj = 0
    for i, j, n in _align(a, b):
        assert n > 0 and i >= pi and j >= pj
        assert a[i : i + n] == b[j : j + n]
        pi, pj = i + n, j + n


def _lcs(a: list[int], b: list[int]) -> int:
    row = [0] * (len(b) + 1)
    for x in reversed(a):
        new = [0] * (len(b) + 1)
        for j in range(len(b) - 1, -1, -1):
            new[j] = row[j + 1] + 1 if x == b[j] else max(row[j], new[j + 1])
        row = new
    return row[0]


@settings(max_examples=300, deadline=None)
@given(small_seqs, small_seqs)
def test_property_myers_finds_a_longest_common_subsequence(a: list[int], b: list[int]) -> None:
    """The gap aligner (Myers) pairs equal elements in order and as many as an LCS has."""
    pairs = _myers(a, b, 1000)
    assert pairs is not None
    assert all(a[i] == b[j] for i, j in pairs)
    assert all(i1 < i2 and j1 < j2 for (i1, j1), (i2, j2) in zip(pairs, pairs[1:], strict=False))
    assert len(pairs) == _lcs(a, b)


def test_myers_gives_up_beyond_its_edit_limit() -> None:
    """Myers returns None past max_d so the caller can fall back to difflib."""
    assert _myers(list(range(50)), list(range(50, 100)), 10) is None


@pytest.mark.parametrize("edit_at", [0, 1, 7, 31, 32, 255, 256, 257, 600, 1199])
def test_prefix_and_suffix_trimming_stop_at_the_first_difference(edit_at: int) -> None:
    """The chunked prefix / suffix scans agree with a plain element-by-element loop."""
    rnd = random.Random(edit_at)
    a = [rnd.randrange(3) for _ in range(1200)]
    b = list(a)
    b[edit_at] = 9
    assert _common_prefix(a, b, 0, 1200, 0, 1200) == edit_at
    assert _common_suffix(a, b, 0, 1200, 0, 1200) == 1199 - edit_at
    assert _common_prefix(a, a[:edit_at], 0, 1200, 0, edit_at) == edit_at
    assert _common_suffix(a, a[edit_at:], 0, 1200, 0, 1200 - edit_at) == 1200 - edit_at
    blocks = _align(a, a[:edit_at] + [9] + a[edit_at:])
    assert sum(n for _, _, n in blocks) == 1200
