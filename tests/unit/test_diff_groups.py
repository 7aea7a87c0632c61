"""Concurrent groups (parallel tool calls) compare as multisets in `replay.diff`."""

from __future__ import annotations

import random
from typing import Any

from replay.diff import Trace, diff_traces
from replay.hashing import sha
from replay.models import Event, Run

# (tool, args) or (tool, args, group): group is the concurrent_group id the step carries.
Spec = tuple[Any, ...]


def trace(specs: list[Spec], *, run_id: str = "r_rec", group_base: int = 0) -> Trace:
    """A trace of tool steps; `group_base` shifts group ids as a replayed run numbers its own."""
    steps = []
    outputs: dict[str, Any] = {}
    for n, spec in enumerate(specs):
        tool, args, *rest = spec
        group = rest[0] + group_base if rest and rest[0] is not None else None
        out = {"tool": tool, "args": args}
        e = Event(
            run_id=run_id,
            kind="tool_result",
            ts_ms=1_700_000_000_000 + n,
            step_id=n + 1,
            tool=tool,
            args_sha=sha({"args": args}),
            output_sha=sha(out),
            duration_ms=1,
            status="ok",
            concurrent_group=group,
        )
        steps.append(e)
        outputs[e.output_sha] = out
    run = Run(
        run_id=run_id,
        agent="a",
        started_ms=1_700_000_000_000,
        stop_reason="completed",
        tool_calls=len(steps),
    )
    return Trace(run=run, steps=steps, outputs=outputs)


def kinds(d: Any) -> list[str]:
    return [c.kind for c in d.changes]


REC = [
    ("llm", 0),
    ("search", "a", 2),
    ("search", "b", 2),
    ("weather", "paris", 2),
    ("llm", 1),
    ("charge", 5),
]


def test_another_interleaving_inside_a_group_is_no_divergence() -> None:
    """The members of a recorded group replayed in any order give an empty diff."""
    rec = trace(REC)
    for order in ([1, 2, 3], [3, 2, 1], [2, 3, 1], [3, 1, 2]):
        specs = [REC[0], *[REC[i] for i in order], REC[4], REC[5]]
        d = diff_traces(rec, trace(specs, run_id="r_new", group_base=100))
        assert d.is_empty, d
        assert (d.groups_before, d.groups_after) == (1, 1)


def test_a_recorded_group_the_replay_ran_one_by_one_follows_the_replay() -> None:
    """A replay that ran a recorded group's calls one after another, in another order, matches."""
    rec = trace(REC)
    plain = [(t, a) for t, a, *_ in REC]
    specs = [plain[0], plain[3], plain[1], plain[2], plain[4], plain[5]]
    assert diff_traces(rec, trace(specs, run_id="r_new")).is_empty


def test_a_call_missing_from_a_group_is_a_missing_call() -> None:
    """Dropping one call of a parallel group is reported as that missing call."""
    specs = [REC[0], REC[3], REC[1], REC[4], REC[5]]
    d = diff_traces(trace(REC), trace(specs, run_id="r_new"))
    assert kinds(d) == ["missing_call"]
    assert d.changes[0].tool == "search" and d.changes[0].recorded_index == 2


def test_a_duplicated_call_in_a_group_is_an_extra_call() -> None:
    """A parallel call made twice is one extra call."""
    specs = [REC[0], REC[2], REC[1], REC[3], REC[2], REC[4], REC[5]]
    d = diff_traces(trace(REC), trace(specs, run_id="r_new"))
    assert kinds(d) == ["extra_call"]
    assert d.changes[0].tool == "search"


def test_changed_args_inside_a_group_are_one_changed_step() -> None:
    """A parallel call with new args is one args_changed step, wherever the replay ran it."""
    for pos in range(3):
        members = [REC[2], REC[3]]
        members.insert(pos, ("search", "z"))  # unrecorded: the replay does not group it
        specs = [REC[0], *members, REC[4], REC[5]]
        d = diff_traces(trace(REC), trace(specs, run_id="r_new"))
        assert kinds(d) == ["args_changed"], (pos, d)


def test_a_call_moved_to_the_next_turn_is_reported() -> None:
    """A call that moved from one model turn's group to the next turn diverges."""
    specs = [REC[0], REC[1], REC[3], REC[4], ("search", "b", 9), ("charge", 5, 9)]
    d = diff_traces(trace(REC), trace(specs, run_id="r_new"))
    assert not d.is_empty
    assert kinds(d) == ["reordered"] and d.changes[0].tool == "search"


def test_a_reordering_across_groups_is_still_reported() -> None:
    """Charging before the parallel searches (order between groups) is a reordered step."""
    specs = [REC[0], REC[5], REC[1], REC[2], REC[3], REC[4]]
    d = diff_traces(trace(REC), trace(specs, run_id="r_new"))
    assert kinds(d) == ["reordered"]


def test_step_numbers_stay_the_recorded_and_replayed_ones() -> None:
    """Changes name the steps as they were numbered, not as the diff reordered them."""
    specs = [REC[0], REC[3], REC[2], ("search", "z"), REC[4], REC[5]]
    d = diff_traces(trace(REC), trace(specs, run_id="r_new"))
    (c,) = d.changes
    assert c.kind == "args_changed"
    assert (c.recorded_index, c.replayed_index) == (1, 3)
    assert c.recorded is not None and c.recorded.step_id == 2
    assert c.replayed is not None and c.replayed.step_id == 4


def test_random_runs_with_shuffled_groups_never_diverge_and_a_mutation_always_does() -> None:
    """Over random runs, shuffling inside groups never diverges; dropping one grouped call always
    does."""
    rnd = random.Random(7)
    for _ in range(100):
        specs: list[Spec] = []
        n = 1
        while len(specs) < 40:
            size = rnd.choice([1, 1, 2, 3, 4])
            tools = [(rnd.choice("abc"), rnd.randint(0, 3)) for _ in range(size)]
            specs += [(t, a, n if size > 1 else None) for t, a in tools]
            n += size
        rec = trace(specs)
        shuffled: list[Spec] = []
        i = 0
        while i < len(specs):
            g = specs[i][2]
            j = i + 1
            while g is not None and j < len(specs) and specs[j][2] == g:
                j += 1
            block = specs[i:j]
            rnd.shuffle(block)
            shuffled += block
            i = j
        assert diff_traces(rec, trace(shuffled, run_id="r_new", group_base=1000)).is_empty
        grouped = [k for k, s in enumerate(shuffled) if s[2] is not None]
        drop = rnd.choice(grouped)
        d = diff_traces(
            rec, trace(shuffled[:drop] + shuffled[drop + 1 :], run_id="r_new", group_base=1000)
        )
        assert kinds(d) == ["missing_call"], d


def test_without_groups_the_order_counts_as_before() -> None:
    """Runs without concurrent groups are compared in order: a swap is a reordered step."""
    plain = [(t, a) for t, a, *_ in REC]
    d = diff_traces(trace(plain), trace([plain[0], plain[2], plain[1], *plain[3:]], run_id="r_new"))
    assert kinds(d) == ["reordered"]
    assert (d.groups_before, d.groups_after) == (0, 0)


def test_step_signature_treats_a_group_as_a_set() -> None:
    """Two runs that differ only inside a concurrent group share a signature; a reordering across
    groups does not."""
    from replay.diff import step_signature

    base = step_signature(trace(REC).steps)
    swapped = [REC[0], REC[3], REC[1], REC[2], REC[4], REC[5]]
    assert step_signature(trace(swapped, run_id="r_new", group_base=40).steps) == base
    across = [REC[0], REC[5], REC[1], REC[2], REC[3], REC[4]]
    assert step_signature(trace(across, run_id="r_new").steps) != base
    dropped = [REC[0], REC[1], REC[3], REC[4], REC[5]]
    assert step_signature(trace(dropped, run_id="r_new").steps) != base
    assert (
        len({base, step_signature(trace(swapped, run_id="r_new").steps)}) == 1
    )  # hashable: countable


def test_text_and_markdown_mark_grouped_steps_and_count_groups() -> None:
    """The text and Markdown reports mark a change inside a group with ∥ and say groups compare as
    sets."""
    from replay.diff import GROUP_MARK

    specs = [REC[0], REC[3], REC[1], REC[4], REC[5]]  # one search dropped from the group
    d = diff_traces(trace(REC), trace(specs, run_id="r_new", group_base=50))
    text = d.to_text(color=False)
    assert f"- step 3 {GROUP_MARK}  search" in text
    assert "concurrent groups: 1 recorded, 1 replayed, each compared as a set" in text
    md = d.to_markdown()
    assert f"| 3 {GROUP_MARK} |" in md and "Concurrent groups: 1 recorded" in md
    assert d.to_json()["concurrent_groups"] == {"before": 1, "after": 1}
    plain = diff_traces(
        trace([(t, a) for t, a, *_ in REC]), trace([(t, a) for t, a, *_ in REC], run_id="r_new")
    )
    assert GROUP_MARK not in plain.to_text(color=False) and "concurrent" not in plain.to_markdown()
