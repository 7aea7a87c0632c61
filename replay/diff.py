"""The diff model: a recorded and a replayed run as `Trace`s, `IgnoreRules`, and the `RunDiff`
that `diff_traces` classifies out of their step alignment.

The alignment itself is `replay._align` (generic, on interned ints); the text, Markdown and
colour renderings are `replay.render` (`RunDiff.to_text` / `to_markdown` delegate to it).

The two step sequences are aligned on the key (kind, tool, args_sha, status, error), minus ignored
fields, with a real sequence alignment: one inserted step is one insertion, not every later step
changed. Timings, timestamps, run ids, step ids and durations never count.

How it stays fast on 10,000-step runs: keys are interned to ints before `replay._align.align`
(prefix/suffix trimming, patience anchors, Myers in the gaps); only aligned pairs whose
output_sha differs go through deepdiff.

Concurrent steps (parallel tool calls, ``Event.concurrent_group``) compare as a multiset: before
aligning, the members of each replayed group are put in the order of their counterparts in the
recording (the k-th call with a key on one side pairs with the k-th on the other), so a different
interleaving inside a group is no change, while a call missing from, added to or changed in a
group, or moved across groups, still is. A recorded group the other side ran one after another
takes that side's order instead. Steps of other levels keep their places.

Then each gap between aligned runs is classified: a removed and an added step of the same tool
in the same gap are one changed step (args, status or error); the identical step removed in one
place and added in another is a reordered step; the rest are extra and missing calls, each with
the nearest step of the same tool on the other side and, for a repeated call, the step it repeats.

Example::

    d = diff_traces(recorded, replayed, ignore=["tool:clock.now", "output:root['ts']"])
    d.is_empty, d.first_divergence
    print(d)                  # the text report; d.to_json(), d.to_markdown()
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from bisect import bisect_left
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, count, repeat
from operator import attrgetter, eq, itemgetter
from typing import Any

from replay._align import Block, align
from replay.errors import InvalidIgnoreRuleError
from replay.models import Event, Run, Usage, is_step
from replay.render import GROUP_MARK, ddiff_lines, render_markdown, render_text, short_sha

__all__ = [
    "CHANGE_KINDS",
    "GROUP_MARK",
    "HttpAttemptsChange",
    "IgnoreRules",
    "RunDiff",
    "StepChange",
    "Trace",
    "diff_traces",
    "step_signature",
]

#: Every `StepChange.kind`, in the order reports count them.
CHANGE_KINDS: tuple[str, ...] = (
    "extra_call",
    "missing_call",
    "reordered",
    "args_changed",
    "status_changed",
    "error_changed",
    "output_changed",
)

_KEY_FIELDS = ("kind", "tool", "args_sha", "status", "error")
#: Fields an ignore rule may name: compared step fields, the step output, the run's final output.
IGNORABLE_FIELDS: tuple[str, ...] = ("args_sha", "error", "kind", "output", "output_sha", "status")
# Never compared anyway; accepted in ignore rules so that naming them is not an error.
_NEVER_COMPARED = frozenset(
    {"ts_ms", "duration_ms", "run_id", "step_id", "parent_step_id", "usage", "concurrent_group"}
)
_USAGE_FIELDS = ("tokens_in", "tokens_out", "tokens", "cost_usd")
# How far `nearest` scans outward for a tool before indexing all its steps.
_SCAN = 64


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass
class Trace:
    """One recorded or replayed run: the run row, its steps in order, and their output snapshots.

    Args:
        run: the run row (stop_reason, usage, tool_calls, redacted final output, run_id).
        steps: tool_result / model_result events in step order (no run_start / stop).
        outputs: output_sha -> redacted output value; a missing entry is compared by sha only.
        http_attempts: HTTP requests per step_id of `steps` (None: outside any tool step), for a
            run recorded with ``http=True``; None when unknown (then never compared).
        http_unrecorded: of those, the requests a replay had no recorded answer for.
    """

    run: Run
    steps: list[Event]
    outputs: Mapping[str, Any] = field(default_factory=dict)
    http_attempts: Mapping[int | None, int] | None = None
    http_unrecorded: Mapping[int | None, int] = field(default_factory=dict)

    @classmethod
    def from_events(
        cls,
        run: Run,
        events: Iterable[Event],
        outputs: Mapping[str, Any] | None = None,
        *,
        include_nested: bool = True,
    ) -> Trace:
        """Build a trace from a run's events (as `Store.events` returns them).

        Keeps tool_result / model_result events, sorted by step_id. With ``include_nested=False``
        steps that ran inside another tool (``parent_step_id`` set) are left out: a replay answers
        the outer tool from the recording, so its inner calls never happen.
        """
        steps = [e for e in events if is_step(e, nested=include_nested)]
        steps.sort(key=lambda e: (e.step_id is None, e.step_id or 0))
        return cls(run=run, steps=steps, outputs=dict(outputs or {}))


@dataclass(frozen=True)
class IgnoreRules:
    """What the diff leaves out.

    Args:
        tools: steps of these tools are dropped on both sides before aligning; shell-style
            wildcards work (``clock.*``).
        fields: fields not compared: ``args_sha``, ``status``, ``error``, ``kind`` (step key),
            ``output_sha`` (step outputs) or ``output`` (the run's final output).
        output_paths: deepdiff paths excluded from output comparisons (step outputs and the final
            output), e.g. ``root['ts']``, ``root['items'][*]['id']`` (wildcards) or a bare key
            ``ts``; a regex when prefixed with ``re:`` (``re:\\['request_id'\\]$``).
    """

    tools: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()
    output_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept any iterable (or one string) for convenience, store the declared types.
        for name, kind in (("tools", frozenset), ("fields", frozenset), ("output_paths", tuple)):
            value = getattr(self, name)
            object.__setattr__(self, name, kind([value] if isinstance(value, str) else value))
        for name in self.fields:
            if name not in IGNORABLE_FIELDS and name not in _NEVER_COMPARED:
                hint = " (to drop a tool's steps use tool:NAME)" if name == "tool" else ""
                raise InvalidIgnoreRuleError(
                    f"field:{name}", f"unknown field {name!r}{hint}", IGNORABLE_FIELDS
                )

    @classmethod
    def parse(
        cls, spec: Sequence[str] | Mapping[str, Any] | IgnoreRules | str | None
    ) -> IgnoreRules:
        """Build rules from CLI strings, a mapping, or pass existing rules through.

        Strings: ``tool:NAME``, ``field:NAME``, ``output:PATH``; ``tool:`` and ``field:`` take
        comma-separated lists. A mapping has the keys ``tools``, ``fields``, ``output_paths``.

        Raises:
            InvalidIgnoreRuleError: an unknown prefix, key or field, naming the valid ones.
        """
        if spec is None:
            return cls()
        if isinstance(spec, IgnoreRules):
            return spec
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"tools", "fields", "output_paths"}
            if unknown:
                bad = sorted(map(str, unknown))[0]
                raise InvalidIgnoreRuleError(
                    bad, f"unknown key {bad!r}; use tools, fields, output_paths", IGNORABLE_FIELDS
                )

            def _seq(v: Any) -> list[str]:
                return [v] if isinstance(v, str) else list(v or ())

            return cls(
                tools=frozenset(_seq(spec.get("tools"))),
                fields=frozenset(_seq(spec.get("fields"))),
                output_paths=tuple(_seq(spec.get("output_paths"))),
            )
        items = [spec] if isinstance(spec, str) else list(spec)
        tools: set[str] = set()
        fields: set[str] = set()
        paths: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise InvalidIgnoreRuleError(repr(item), "not a string", IGNORABLE_FIELDS)
            prefix, sep, rest = item.partition(":")
            prefix = prefix.strip().lower()
            if not sep or not rest.strip():
                raise InvalidIgnoreRuleError(item, "expected PREFIX:VALUE", IGNORABLE_FIELDS)
            if prefix in ("tool", "tools"):
                tools.update(t.strip() for t in rest.split(",") if t.strip())
            elif prefix in ("field", "fields"):
                fields.update(f.strip() for f in rest.split(",") if f.strip())
            elif prefix in ("output", "path"):
                paths.append(rest.strip())
            else:
                raise InvalidIgnoreRuleError(item, f"unknown prefix {prefix!r}", IGNORABLE_FIELDS)
        return cls(tools=frozenset(tools), fields=frozenset(fields), output_paths=tuple(paths))

    def merge(self, other: IgnoreRules | Sequence[str] | Mapping[str, Any] | None) -> IgnoreRules:
        """The union of both rule sets (e.g. ini options plus a marker's ``ignore=``)."""
        o = IgnoreRules.parse(other)
        paths = self.output_paths + tuple(p for p in o.output_paths if p not in self.output_paths)
        return IgnoreRules(self.tools | o.tools, self.fields | o.fields, paths)

    def to_strings(self) -> list[str]:
        """The rules as CLI strings (``tool:…``, ``field:…``, ``output:…``), sorted."""
        return (
            [f"tool:{t}" for t in sorted(self.tools)]
            + [f"field:{f}" for f in sorted(self.fields)]
            + [f"output:{p}" for p in self.output_paths]
        )

    def __bool__(self) -> bool:
        return bool(self.tools or self.fields or self.output_paths)

    # -- helpers used by the differ ---------------------------------------------------------

    def _tool_filter(self) -> Callable[[str | None], bool]:
        """A predicate `tool name -> dropped?`, cached per distinct name."""
        exact = {t for t in self.tools if not any(c in t for c in "*?[")}
        patterns = [t for t in self.tools if t not in exact]
        cache: dict[str | None, bool] = {}

        def dropped(name: str | None) -> bool:
            hit = cache.get(name)
            if hit is None:
                hit = name in exact or (
                    name is not None and any(fnmatch.fnmatchcase(name, p) for p in patterns)
                )
                cache[name] = hit
            return hit

        return dropped

    def _deepdiff_kwargs(self) -> dict[str, Any]:
        exact: list[str] = []
        regex: list[str] = []
        for p in self.output_paths:
            if p.startswith("re:"):
                regex.append(p[3:])
            elif "\\" in p or p.startswith("^") or p.endswith("$") or ".*" in p:
                regex.append(p)  # clearly a regex even without the prefix
            else:
                exact.append(p)
        kw: dict[str, Any] = {}
        if exact:
            kw["exclude_paths"] = exact
        if regex:
            kw["exclude_regex_paths"] = [re.compile(r) for r in regex]
        return kw


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class StepChange:
    """One difference between the step sequences.

    ``kind`` is one of `CHANGE_KINDS`. Indexes are 0-based positions in the traces' step lists
    (shown as 1-based step numbers). ``nearest`` is, for an extra (missing) call, the closest
    step of the same tool on the recorded (replayed) side: the call it did not match.
    """

    kind: str
    recorded: Event | None
    replayed: Event | None
    recorded_index: int | None
    replayed_index: int | None
    nearest: Event | None = None
    detail: str = ""
    output_diff: dict[str, Any] | None = None
    nearest_index: int | None = None
    #: short text for the one-line rendering, e.g. "same args as step 4"
    note: str = ""

    @property
    def step(self) -> int:
        """The 1-based step number shown for this change (recorded side when it has one)."""
        if self.recorded_index is not None:
            return self.recorded_index + 1
        return (self.replayed_index or 0) + 1

    @property
    def tool(self) -> str | None:
        ev = self.recorded if self.recorded is not None else self.replayed
        return ev.tool if ev is not None else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; events as dicts, step numbers 1-based."""
        return {
            "kind": self.kind,
            "tool": self.tool,
            "recorded_step": None if self.recorded_index is None else self.recorded_index + 1,
            "replayed_step": None if self.replayed_index is None else self.replayed_index + 1,
            "recorded_index": self.recorded_index,
            "replayed_index": self.replayed_index,
            "recorded": _event_json(self.recorded),
            "replayed": _event_json(self.replayed),
            "nearest": _event_json(self.nearest),
            "nearest_step": None if self.nearest_index is None else self.nearest_index + 1,
            "detail": self.detail,
            "output_diff": self.output_diff,
        }


@dataclass(frozen=True)
class HttpAttemptsChange:
    """An aligned step (``step`` None: outside tool steps) whose HTTP attempts changed."""

    step: int | None  # the 1-based recorded step number
    tool: str | None
    before: int
    after: int
    unrecorded: int = 0  # of `after`, requests the recording had no answer for

    def text(self) -> str:
        where = f"step {self.step}  {self.tool}" if self.step is not None else "outside tool steps"
        extra = f" ({self.unrecorded} unrecorded)" if self.unrecorded else ""
        return f"{where}  {self.before} → {self.after} HTTP attempts{extra}"


@dataclass
class RunDiff:
    """The difference between a recorded run and its replay (or any two runs).

    Empty when the steps align with no change, the stop reason is the same and the final output
    is the same. Usage deltas never make it non-empty; gate on `usage_delta_pct` for that.
    """

    recorded_id: str
    replayed_id: str
    changes: list[StepChange]
    stop_reason_before: str | None
    stop_reason_after: str | None
    tool_calls_before: int
    tool_calls_after: int
    usage_before: Usage
    usage_after: Usage
    output_diff: dict[str, Any] | None = None
    steps_before: int = 0
    steps_after: int = 0
    ignore: IgnoreRules = field(default_factory=IgnoreRules)
    http_attempts: list[HttpAttemptsChange] = field(default_factory=list)
    #: concurrent groups (of two steps or more) on each side, compared as multisets
    groups_before: int = 0
    groups_after: int = 0

    # -- verdict ------------------------------------------------------------------------------

    @property
    def stop_reason_changed(self) -> bool:
        return self.stop_reason_before != self.stop_reason_after

    @property
    def is_empty(self) -> bool:
        """No step change, the same stop reason and the same final output."""
        return (
            not self.changes
            and not self.stop_reason_changed
            and not self.output_diff
            and not self.http_attempts
        )

    @property
    def first_divergence(self) -> StepChange | None:
        """The earliest change in step order, or None."""
        return self.changes[0] if self.changes else None

    @property
    def added(self) -> list[StepChange]:
        """Extra calls: steps only the replay made."""
        return [c for c in self.changes if c.kind == "extra_call"]

    @property
    def removed(self) -> list[StepChange]:
        """Missing calls: steps only the recording has."""
        return [c for c in self.changes if c.kind == "missing_call"]

    @property
    def changed(self) -> list[StepChange]:
        """Aligned steps that differ (args, status, error, output) and reordered steps."""
        return [c for c in self.changes if c.kind not in ("extra_call", "missing_call")]

    def counts(self) -> dict[str, int]:
        """Number of changes per kind (every kind present, zeros included)."""
        out = dict.fromkeys(CHANGE_KINDS, 0)
        for c in self.changes:
            out[c.kind] = out.get(c.kind, 0) + 1
        return out

    def usage_delta_pct(self, field: str) -> float | None:
        """Relative change of a usage figure in percent (replay vs recording).

        ``field`` is ``tokens_in``, ``tokens_out``, ``tokens`` (both) or ``cost_usd``. 0.0 when
        both are 0; ``math.inf`` when the recording had 0 and the replay did not, so a gate such
        as ``pct > 20`` fires.

        Raises:
            ValueError: an unknown field, listing the valid ones.
        """
        before = _usage_value(self.usage_before, field)
        after = _usage_value(self.usage_after, field)
        if before == after:
            return 0.0
        if before == 0:
            return math.inf
        return (after - before) / before * 100.0

    # -- renderings ---------------------------------------------------------------------------

    def headline(self) -> str:
        """The verdict line, e.g. ``replay diverged from recording r_… at step 7``."""
        if self.is_empty:
            return f"replay matches recording {self.recorded_id} ({self.steps_before} steps)"
        first = self.first_divergence
        if first is not None:
            return f"replay diverged from recording {self.recorded_id} at step {first.step}"
        if self.stop_reason_changed:
            return (
                f"replay diverged from recording {self.recorded_id}: stop reason "
                f"{self.stop_reason_before} -> {self.stop_reason_after}"
            )
        if self.output_diff:
            return f"replay diverged from recording {self.recorded_id}: final output changed"
        if any(h.before != h.after for h in self.http_attempts):
            return f"replay diverged from recording {self.recorded_id}: HTTP attempts changed"
        return (
            f"replay diverged from recording {self.recorded_id}: "
            "an HTTP request had no recorded answer"
        )

    def to_text(self, *, width: int = 80, color: bool | None = None, max_changes: int = 20) -> str:
        """A report for terminals and pytest failures, every line at most ``width`` characters.

        ``color=None`` colours only when stdout is a tty and NO_COLOR is unset
        (`replay.render.render_text`).
        """
        return render_text(self, width=width, color=color, max_changes=max_changes)

    def __str__(self) -> str:
        return self.to_text(color=False)

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-able values (events as dicts, usage deltas in percent or null)."""
        deltas: dict[str, float | None] = {}
        for f in _USAGE_FIELDS:
            pct = self.usage_delta_pct(f)
            deltas[f] = None if pct is None or math.isinf(pct) else round(pct, 4)
        first = self.first_divergence
        return {
            "verdict": "match" if self.is_empty else "diverged",
            "is_empty": self.is_empty,
            "headline": self.headline(),
            "recorded_id": self.recorded_id,
            "replayed_id": self.replayed_id,
            "steps": {"before": self.steps_before, "after": self.steps_after},
            "first_divergence": first.to_json() if first is not None else None,
            "counts": self.counts(),
            "changes": [c.to_json() for c in self.changes],
            "stop_reason": {
                "before": self.stop_reason_before,
                "after": self.stop_reason_after,
                "changed": self.stop_reason_changed,
            },
            "tool_calls": {
                "before": self.tool_calls_before,
                "after": self.tool_calls_after,
                "delta": self.tool_calls_after - self.tool_calls_before,
            },
            "usage": {
                "before": self.usage_before.model_dump(mode="json"),
                "after": self.usage_after.model_dump(mode="json"),
                "delta_pct": deltas,
            },
            "output_diff": self.output_diff,
            "ignore": self.ignore.to_strings(),
            "http_attempts": [vars(h) for h in self.http_attempts],
            "concurrent_groups": {"before": self.groups_before, "after": self.groups_after},
        }

    def to_markdown(self, *, max_changes: int = 50) -> str:
        """A Markdown report for a CI comment: verdict heading, table of changes, run figures."""
        return render_markdown(self, max_changes=max_changes)


def _usage_value(u: Usage, field: str) -> float:
    if field == "tokens":
        return float(u.tokens_in + u.tokens_out)
    if field in ("tokens_in", "tokens_out", "cost_usd"):
        return float(getattr(u, field))
    raise ValueError(f"unknown usage field {field!r}: use one of {', '.join(_USAGE_FIELDS)}")


def _event_json(e: Event | None) -> dict[str, Any] | None:
    return None if e is None else e.model_dump(mode="json")


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def diff_traces(
    recorded: Trace,
    replayed: Trace,
    *,
    ignore: IgnoreRules | Sequence[str] | Mapping[str, Any] | None = None,
) -> RunDiff:
    """Align the steps of two runs and report what differs.

    Args:
        recorded: the recording (the reference).
        replayed: the replay (or any other run).
        ignore: `IgnoreRules`, or what `IgnoreRules.parse` accepts.

    Raises:
        InvalidIgnoreRuleError: a malformed ignore rule.
    """
    rules = IgnoreRules.parse(ignore)
    return _Differ(recorded, replayed, rules).run()


class _Side:
    """One trace's kept steps and the lookups the classification needs (built lazily)."""

    def __init__(self, trace: Trace, rules: IgnoreRules) -> None:
        self.trace = trace
        steps = trace.steps
        if rules.tools:
            dropped = rules._tool_filter()
            self.pos: list[int] | None = [i for i, e in enumerate(steps) if not dropped(e.tool)]
            self.steps = [steps[i] for i in self.pos]
        else:
            self.pos = None
            self.steps = list(steps)
        self._by_call: dict[tuple[str | None, str | None], list[int]] = {}
        self._by_tool: dict[str | None, list[int]] = {}
        try:  # pydantic keeps fields in __dict__: item lookups there beat getattr by ~2x
            self._dicts: list[dict[str, Any]] | None = list(map(vars, self.steps))
        except TypeError:
            self._dicts = None

    def column(self, *names: str) -> list[Any]:
        """The value of field `names` (a tuple of values for several) of every kept step."""
        if self._dicts is not None:
            try:
                return list(map(itemgetter(*names), self._dicts))
            except KeyError:
                self._dicts = None
        return list(map(attrgetter(*names), self.steps))

    def orig(self, i: int) -> int:
        return i if self.pos is None else self.pos[i]

    def permute(self, perm: list[int]) -> None:
        """Put the kept steps in the order `perm` (positions in the current order)."""
        base = self.pos if self.pos is not None else range(len(self.steps))
        self.pos = [base[p] for p in perm]
        self.steps = [self.steps[p] for p in perm]
        if self._dicts is not None:
            self._dicts = [self._dicts[p] for p in perm]

    def groups(self) -> dict[int, list[int]]:
        """Concurrent group id -> positions of its members (groups of two steps or more)."""
        col = self.column("concurrent_group")
        if not any(col):
            return {}
        out: dict[int, list[int]] = {}
        for i in compress(range(len(col)), col):
            out.setdefault(col[i], []).append(i)
        return {g: m for g, m in out.items() if len(m) > 1}

    def prepare(self, events: Iterable[Event]) -> None:
        """Index the (tool, args_sha) calls that the extra / missing calls `events` make.

        One pass in C (map / compress): a Python loop over 10,000 steps would cost more than the
        whole alignment.
        """
        calls = {(e.tool, e.args_sha) for e in events}
        steps = self.steps
        wanted = {s for _, s in calls}
        args = self.column("args_sha")
        by_call: dict[tuple[str | None, str | None], list[int]] = {c: [] for c in calls}
        for i in compress(range(len(args)), map(wanted.__contains__, args)):
            hits = by_call.get((steps[i].tool, args[i]))
            if hits is not None:
                hits.append(i)
        self._by_call = by_call

    def calls(self, e: Event) -> list[int]:
        """Positions of the steps with the same tool and args_sha as `e` (after `prepare`)."""
        return self._by_call.get((e.tool, e.args_sha), [])

    def previous_call(self, e: Event, pos: int) -> int | None:
        """The last step before `pos` with the same tool and args_sha as `e`, if any."""
        idx = self.calls(e)
        k = bisect_left(idx, pos)
        return idx[k - 1] if k else None

    def nearest(self, tool: str | None, pos: int) -> int | None:
        """The position of the step of `tool` closest to `pos`, the earlier on a tie."""
        steps, n = self.steps, len(self.steps)
        idx = self._by_tool.get(tool)
        if idx is None:
            # A frequent tool is a few steps away: scan outward before indexing it (one pass).
            for d in range(_SCAN):
                if 0 <= pos - d < n and steps[pos - d].tool == tool:
                    return pos - d
                if pos + d < n and steps[pos + d].tool == tool:
                    return pos + d
            tools = self.column("tool")
            idx = self._by_tool[tool] = list(compress(range(n), map(eq, tools, repeat(tool))))
        if not idx:
            return None
        k = bisect_left(idx, pos)
        cands = [idx[c] for c in (k - 1, k) if 0 <= c < len(idx)]
        return min(cands, key=lambda i: (abs(i - pos), i))


class _Differ:
    def __init__(self, recorded: Trace, replayed: Trace, rules: IgnoreRules) -> None:
        self.rules = rules
        self.ra = _Side(recorded, rules)
        self.rb = _Side(replayed, rules)
        self.key_fields = tuple(f for f in _KEY_FIELDS if f not in rules.fields)
        self._ddkw = rules._deepdiff_kwargs()
        self.groups_a = self.ra.groups()
        self.groups_b = self.rb.groups()
        if self.groups_a or self.groups_b:
            self._order_groups()

    def _order_groups(self) -> None:
        """Order the members of concurrent groups so that both sides agree where they can.

        When both sides have groups (a replay keeps the recorded ones), each group's members are
        sorted by their key: the same multiset gives the same block, and a missing or extra
        member only leaves or joins its own block. When only one side has groups (a run recorded
        without them, or one whose calls happened not to overlap), its groups take the other
        side's order: each step pairs with the k-th step of the same key there. Only members
        move, into the positions their group occupies.
        """
        ra, rb = self.ra, self.rb
        if self.groups_a and self.groups_b:
            for side, groups in ((ra, self.groups_a), (rb, self.groups_b)):
                steps = side.steps
                perm = list(range(len(steps)))
                moved = False
                for members in groups.values():
                    # (tool, args_sha, output_sha) orders any multiset the same way on both sides;
                    # steps equal on all three are interchangeable.
                    ordered = sorted(members, key=lambda i: _member_key(steps[i]))
                    if ordered != members:
                        moved = True
                        for slot, i in zip(members, ordered, strict=True):
                            perm[slot] = i
                if moved:
                    side.permute(perm)
            return
        lead, follow, groups = (rb, ra, self.groups_a) if self.groups_a else (ra, rb, self.groups_b)
        kf = self.key_fields if len(self.key_fields) > 1 else (*self.key_fields, "kind")
        where: dict[Any, deque[int]] = defaultdict(deque)
        for j, k in enumerate(lead.column(*kf)):
            where[k].append(j)
        keys = follow.column(*kf)
        big = len(keys) + len(where)
        perm = list(range(len(keys)))
        for members in groups.values():
            partner = {i: (q.popleft() if (q := where.get(keys[i])) else big) for i in members}
            ordered = sorted(members, key=lambda i: (partner[i], i))
            for slot, i in zip(members, ordered, strict=True):
                perm[slot] = i
        follow.permute(perm)

    def run(self) -> RunDiff:
        ra, rb, rules = self.ra, self.rb, self.rules
        # Keys interned to ints: the aligner hashes and compares each many times.
        ids: dict[Any, int] = {}
        serial = count()
        a = list(map(ids.setdefault, ra.column(*self.key_fields), serial))
        b = list(map(ids.setdefault, rb.column(*self.key_fields), serial))
        blocks = align(a, b)

        found: list[tuple[int, StepChange]] = []  # (i + j along the alignment path, change)
        if "output_sha" not in rules.fields:
            self._output_changes(blocks, found)
        self._edit_changes(blocks, a, b, found)
        found.sort(key=lambda t: t[0])
        http = _http_attempts(ra, rb, blocks, found)

        run_a, run_b = ra.trace.run, rb.trace.run
        out_diff = None
        if "output" not in rules.fields and not (
            run_a.output_sha is not None and run_a.output_sha == run_b.output_sha
        ):
            out_diff = self._ddiff(run_a.output, run_b.output)
        return RunDiff(
            recorded_id=run_a.run_id,
            replayed_id=run_b.run_id,
            changes=[c for _, c in found],
            stop_reason_before=run_a.stop_reason,
            stop_reason_after=run_b.stop_reason,
            tool_calls_before=run_a.tool_calls,
            tool_calls_after=run_b.tool_calls,
            usage_before=run_a.usage.model_copy(),
            usage_after=run_b.usage.model_copy(),
            output_diff=out_diff,
            steps_before=len(ra.trace.steps),
            steps_after=len(rb.trace.steps),
            ignore=rules,
            http_attempts=http,
            groups_before=len(self.groups_a),
            groups_after=len(self.groups_b),
        )

    # -- deepdiff --------------------------------------------------------------------------

    def _ddiff(self, old: Any, new: Any) -> dict[str, Any] | None:
        if old == new:
            return None
        from deepdiff import DeepDiff  # heavy import, only when outputs differ

        dd = DeepDiff(old, new, verbose_level=2, **self._ddkw)
        if not dd:
            return None
        result: dict[str, Any] = json.loads(dd.to_json())
        return result

    def _output_changes(self, blocks: list[Block], found: list[tuple[int, StepChange]]) -> None:
        sa, sb = self.ra.steps, self.rb.steps
        oa = self.ra.column("output_sha")
        ob = self.rb.column("output_sha")
        outs_a, outs_b = self.ra.trace.outputs, self.rb.trace.outputs
        for i0, j0, n in blocks:
            if oa[i0 : i0 + n] == ob[j0 : j0 + n]:
                continue
            for k in range(n):
                i, j = i0 + k, j0 + k
                if oa[i] == ob[j]:
                    continue
                ea, eb = sa[i], sb[j]
                short = f"{short_sha(oa[i])} -> {short_sha(ob[j])}"
                if oa[i] in outs_a and ob[j] in outs_b:
                    dd = self._ddiff(outs_a[oa[i]], outs_b[ob[j]])
                    if dd is None:
                        continue  # differs only under excluded paths
                    lines = ddiff_lines(dd)
                    more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
                    detail = f"{ea.tool} output changed: {lines[0]}{more}"
                    note = f"output {lines[0]}{more}"
                else:
                    dd = None
                    detail = f"{ea.tool} output_sha {short} (snapshots not available)"
                    note = f"output {short}"
                ch = StepChange(
                    "output_changed",
                    ea,
                    eb,
                    self.ra.orig(i),
                    self.rb.orig(j),
                    detail=detail,
                    output_diff=dd,
                    note=note,
                )
                found.append((i + j, ch))

    # -- insertions, deletions and their pairings ------------------------------------------

    def _edit_changes(
        self, blocks: list[Block], a: list[int], b: list[int], found: list[tuple[int, StepChange]]
    ) -> None:
        sa, sb = self.ra.steps, self.rb.steps
        regions: list[tuple[int, int, int, int]] = []
        pi = pj = 0
        for i, j, n in [*blocks, (len(a), len(b), 0)]:
            if i > pi or j > pj:
                regions.append((pi, i, pj, j))
            pi, pj = i + n, j + n
        if not regions:
            return

        left_a: list[tuple[int, int]] = []  # (position, path coordinate) not yet explained
        left_b: list[tuple[int, int]] = []
        for alo, ahi, blo, bhi in regions:
            # Same place, same (kind, tool): one step changed rather than one removed + one added.
            by_tool: dict[tuple[str, str | None], deque[int]] = defaultdict(deque)
            for j in range(blo, bhi):
                by_tool[(sb[j].kind, sb[j].tool)].append(j)
            used_b: set[int] = set()
            last_j = blo - 1
            for i in range(alo, ahi):
                q = by_tool.get((sa[i].kind, sa[i].tool))
                while q and q[0] <= last_j:
                    q.popleft()
                if q:
                    j = q.popleft()
                    used_b.add(j)
                    last_j = j
                    found.append((i + j, self._paired(i, j, a[i] == b[j])))
                else:
                    left_a.append((i, i + blo))
            left_b.extend((j, alo + j) for j in range(blo, bhi) if j not in used_b)

        # The identical step elsewhere: reordered.
        waiting: dict[int, deque[tuple[int, int]]] = defaultdict(deque)
        for j, coord in left_b:
            waiting[b[j]].append((j, coord))
        moved_b: set[int] = set()
        missing: list[tuple[int, int]] = []
        for i, coord_a in left_a:
            w = waiting.get(a[i])
            if w:
                j, coord_b = w.popleft()
                moved_b.add(j)
                found.append((min(coord_a, coord_b), self._reordered(i, j)))
            else:
                missing.append((i, coord_a))
        extra = [(j, c) for j, c in left_b if j not in moved_b]
        if missing and extra and self.groups_a:
            missing, extra = self._pair_in_groups(blocks, missing, extra, found)
        if not (missing or extra):
            return
        unmatched = [sa[i] for i, _ in missing] + [sb[j] for j, _ in extra]
        self.ra.prepare(unmatched)
        self.rb.prepare(unmatched)
        found.extend((coord, self._missing(i, coord)) for i, coord in missing)
        found.extend((coord, self._extra(j, coord)) for j, coord in extra)

    def _pair_in_groups(
        self,
        blocks: list[Block],
        missing: list[tuple[int, int]],
        extra: list[tuple[int, int]],
        found: list[tuple[int, StepChange]],
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """A recorded group member missing and a call of the same tool next to where the rest of
        its group landed in the replay are one changed step (the replay may have run the changed
        call outside the group: a call the recording cannot answer keeps no recorded group)."""
        sa, sb = self.ra.steps, self.rb.steps
        ga = self.ra.column("concurrent_group")
        wanted = {ga[i] for i, _ in missing if ga[i] in self.groups_a}
        if not wanted:
            return missing, extra
        members: dict[int, list[int]] = defaultdict(list)
        for k in compress(range(len(ga)), map(wanted.__contains__, ga)):
            members[ga[k]].append(k)
        starts = [i for i, _, _ in blocks]

        def aligned(k: int) -> int | None:
            t = bisect_left(starts, k + 1) - 1
            if t >= 0:
                i0, j0, n = blocks[t]
                if k < i0 + n:
                    return j0 + (k - i0)
            return None

        free = {j: c for j, c in extra}
        still: list[tuple[int, int]] = []
        for i, coord in missing:
            g = ga[i]
            span = [b for k in members.get(g, ()) if k != i and (b := aligned(k)) is not None]
            match = None
            if span:
                lo, hi = min(span) - 1, max(span) + 1
                want = (sa[i].kind, sa[i].tool)
                match = next(
                    (j for j in sorted(free) if lo <= j <= hi and (sb[j].kind, sb[j].tool) == want),
                    None,
                )
            if match is None:
                still.append((i, coord))
                continue
            found.append((min(coord, free.pop(match)), self._paired(i, match, False)))
        return still, [(j, c) for j, c in extra if j in free]

    def _paired(self, i: int, j: int, same_key: bool) -> StepChange:
        if same_key:
            return self._reordered(i, j)
        ea, eb = self.ra.steps[i], self.rb.steps[j]
        tool = ea.tool
        parts: list[str] = []
        kind = ""
        if "args_sha" in self.key_fields and ea.args_sha != eb.args_sha:
            kind = "args_changed"
            parts.append(f"args {short_sha(ea.args_sha)} -> {short_sha(eb.args_sha)}")
        if "status" in self.key_fields and ea.status != eb.status:
            kind = kind or "status_changed"
            parts.append(f"status {ea.status} -> {eb.status}" + _err_suffix(ea, eb))
        elif "error" in self.key_fields and ea.error != eb.error:
            kind = kind or "error_changed"
            parts.append(f"error {ea.error or '-'} -> {eb.error or '-'}")
        if not kind:  # only `kind` differs (a model call where a tool call was), or nothing
            kind = "args_changed"
            parts.append(f"kind {ea.kind} -> {eb.kind}")
        note = "; ".join(parts)
        detail = f"{tool} " + note.replace("args ", "args_sha ", 1)
        return StepChange(kind, ea, eb, self.ra.orig(i), self.rb.orig(j), detail=detail, note=note)

    def _reordered(self, i: int, j: int) -> StepChange:
        ea, eb = self.ra.steps[i], self.rb.steps[j]
        oi, oj = self.ra.orig(i), self.rb.orig(j)
        return StepChange(
            "reordered",
            ea,
            eb,
            oi,
            oj,
            detail=f"{ea.tool} moved from step {oi + 1} to step {oj + 1}",
            note="reordered",
        )

    def _extra(self, j: int, coord: int) -> StepChange:
        e = self.rb.steps[j]
        oj = self.rb.orig(j)
        # Where in the recording this call would sit: its place along the alignment path.
        at = min(max(coord - j, 0), max(len(self.ra.steps) - 1, 0))
        near = self.ra.nearest(e.tool, at)
        near_ev = self.ra.steps[near] if near is not None else None
        near_orig = self.ra.orig(near) if near is not None else None
        earlier = self.rb.previous_call(e, j)
        same_there = self.ra.calls(e)
        if earlier is not None:
            k = self.rb.orig(earlier) + 1
            detail = f"{e.tool} called again with the same args (as step {k})"
            note = f"extra call; same args as step {k}"
        elif same_there:
            n_after, n_before = len(self.rb.calls(e)), len(same_there)
            detail = (
                f"{e.tool} called {n_after}x with these args, recorded {n_before}x "
                f"(step {self.ra.orig(same_there[0]) + 1})"
            )
            note = f"extra call; {n_after}x, recorded {n_before}x"
        elif near_ev is not None and near_orig is not None:
            detail = (
                f"no recorded {e.tool} call with args {short_sha(e.args_sha)}; nearest is "
                f"step {near_orig + 1} (args {short_sha(near_ev.args_sha)})"
            )
            note = f"extra call; nearest: step {near_orig + 1} args {short_sha(near_ev.args_sha)}"
        else:
            detail = f"the recording never calls {e.tool}"
            note = "extra call; new tool"
        return StepChange(
            "extra_call",
            None,
            e,
            None,
            oj,
            nearest=near_ev,
            nearest_index=near_orig,
            detail=detail,
            note=note,
        )

    def _missing(self, i: int, coord: int) -> StepChange:
        e = self.ra.steps[i]
        oi = self.ra.orig(i)
        at = min(max(coord - i, 0), max(len(self.rb.steps) - 1, 0))
        near = self.rb.nearest(e.tool, at)
        near_ev = self.rb.steps[near] if near is not None else None
        near_orig = self.rb.orig(near) if near is not None else None
        earlier = self.ra.previous_call(e, i)
        same_there = self.rb.calls(e)
        if earlier is not None:
            k = self.ra.orig(earlier) + 1
            detail = (
                f"the recording called {e.tool} again with the same args (as step {k}); "
                "the replay did not"
            )
            note = f"missing call; same args as step {k}"
        elif same_there:
            n_after, n_before = len(same_there), len(self.ra.calls(e))
            detail = f"{e.tool} called {n_after}x with these args, recorded {n_before}x"
            note = f"missing call; {n_after}x, recorded {n_before}x"
        elif near_ev is not None and near_orig is not None:
            detail = (
                f"the replay made no {e.tool} call with args {short_sha(e.args_sha)}; nearest is "
                f"step {near_orig + 1} (args {short_sha(near_ev.args_sha)})"
            )
            note = f"missing call; nearest: step {near_orig + 1} args {short_sha(near_ev.args_sha)}"
        else:
            detail = f"the replay never calls {e.tool}"
            note = "missing call; tool not called"
        return StepChange(
            "missing_call",
            e,
            None,
            oi,
            None,
            nearest=near_ev,
            nearest_index=near_orig,
            detail=detail,
            note=note,
        )


def _http_attempts(
    ra: _Side, rb: _Side, blocks: list[Block], found: list[tuple[int, StepChange]]
) -> list[HttpAttemptsChange]:
    """Aligned steps whose HTTP attempt counts differ (both traces must carry the counts)."""
    ha, hb = ra.trace.http_attempts, rb.trace.http_attempts
    if ha is None or hb is None or not (ha or hb):
        return []
    ub = rb.trace.http_unrecorded
    # Per block, the counts of both sides as two lists compared in C; only differing steps are
    # visited.
    ca = list(map(ha.get, ra.column("step_id"), repeat(0)))
    cb = list(map(hb.get, rb.column("step_id"), repeat(0)))
    # A request the replay had no answer for is reported even when the count stayed the same.
    cu = list(map(ub.get, rb.column("step_id"), repeat(0))) if ub else None
    pairs: list[tuple[int, int]] = []
    for i, j, n in blocks:
        if ca[i : i + n] != cb[j : j + n] or (cu is not None and any(cu[j : j + n])):
            pairs.extend(
                (i + k, j + k) for k in range(n) if ca[i + k] != cb[j + k] or (cu and cu[j + k])
            )
    out: list[tuple[int, HttpAttemptsChange]] = []
    for i, j in pairs:
        ea, eb = ra.steps[i], rb.steps[j]
        out.append(
            (
                ra.orig(i) + 1,
                HttpAttemptsChange(ra.orig(i) + 1, ea.tool, ca[i], cb[j], ub.get(eb.step_id, 0)),
            )
        )
    for _, c in found:  # steps paired as changed (args, status, ...) or reordered
        xa, xb = c.recorded, c.replayed
        if xa is None or xb is None or c.kind == "output_changed":  # an output change is in a block
            continue
        before, after = ha.get(xa.step_id, 0), hb.get(xb.step_id, 0)
        if before != after or ub.get(xb.step_id):
            out.append(
                (c.step, HttpAttemptsChange(c.step, xa.tool, before, after, ub.get(xb.step_id, 0)))
            )
    out.sort(key=itemgetter(0))
    result = [h for _, h in out]
    before, after = ha.get(None, 0), hb.get(None, 0)
    if before != after or ub.get(None):
        result.append(HttpAttemptsChange(None, None, before, after, ub.get(None, 0)))
    return result


def step_signature(steps: Iterable[Event]) -> tuple[Any, ...]:
    """A hashable summary of a step sequence in which each concurrent group is a multiset.

    Each step is its (kind, tool, args_sha, status, error); the steps of a concurrent group of
    two or more become one sorted tuple at the place of the group's first step. Runs whose only
    differences are the order inside concurrent groups (and group numbering) get equal
    signatures: what a flakiness check counts as one distinct step sequence.
    """
    items = list(steps)
    sizes = Counter(e.concurrent_group for e in items if e.concurrent_group is not None)
    out: list[Any] = []
    slot: dict[int, list[tuple[str, ...]]] = {}
    for e in items:
        key = (e.kind, e.tool or "", e.args_sha or "", e.status or "", e.error or "")
        g = e.concurrent_group
        if g is None or sizes[g] < 2:
            out.append(key)
        elif g in slot:
            slot[g].append(key)
        else:
            slot[g] = [key]
            out.append(slot[g])
    return tuple(("group", tuple(sorted(x))) if isinstance(x, list) else x for x in out)


def _member_key(e: Event) -> tuple[str, str, str]:
    """How members of a concurrent group are sorted (None as the empty string)."""
    return (e.tool or "", e.args_sha or "", e.output_sha or "")


def _err_suffix(ea: Event, eb: Event) -> str:
    err = eb.error if eb.status == "error" else ea.error
    return f" ({err})" if err else ""
