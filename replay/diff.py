"""The diff model: a recorded and a replayed run as `Trace`s, `IgnoreRules`, and the `RunDiff`
that `diff_traces` classifies out of their step alignment.

The alignment itself is `replay._align` (generic, on interned ints); the classification of the
aligned steps into `StepChange`s is `replay._classify` (re-exported here); the text, Markdown and
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
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from replay._classify import HttpAttemptsChange, StepChange, classify
from replay.errors import InvalidIgnoreRuleError
from replay.models import Event, Run, Usage, is_step
from replay.render import GROUP_MARK, render_markdown, render_text

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

#: Fields an ignore rule may name: compared step fields, the step output, the run's final output.
IGNORABLE_FIELDS: tuple[str, ...] = ("args_sha", "error", "kind", "output", "output_sha", "status")
# Never compared anyway; accepted in ignore rules so that naming them is not an error.
_NEVER_COMPARED = frozenset(
    {"ts_ms", "duration_ms", "run_id", "step_id", "parent_step_id", "usage", "concurrent_group"}
)
_USAGE_FIELDS = ("tokens_in", "tokens_out", "tokens", "cost_usd")


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
    steps: Sequence[Event]
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

    def tool_filter(self) -> Callable[[str | None], bool]:
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

    def deepdiff_kwargs(self) -> dict[str, Any]:
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
    return RunDiff(**classify(recorded, replayed, rules))


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
