"""The classification behind `replay.diff.diff_traces`: what changed between two aligned runs.

`classify` takes the recorded and replayed `Trace` and the `IgnoreRules`, aligns their step keys
with `replay._align.align`, and turns the alignment into `StepChange`s (extra, missing,
reordered, args / status / error / output changed) and `HttpAttemptsChange`s: the fields of a
`replay.diff.RunDiff`, which `diff_traces` builds. See `replay.diff` for the rules (concurrent
groups as multisets, a removed and an added call of one tool in a gap as one changed step, ...).

`StepChange` and `HttpAttemptsChange` are defined here, with the classification that makes them;
`replay.diff` re-exports them (import them from there).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, count, repeat
from operator import attrgetter, eq, itemgetter
from typing import TYPE_CHECKING, Any

from replay._align import Block, align
from replay.event_table import EventTable, column_of
from replay.models import Event
from replay.render import ddiff_lines, short_sha

if TYPE_CHECKING:  # types only: replay.diff imports this module to classify
    from replay.diff import IgnoreRules, Trace

__all__ = ["KEY_FIELDS", "HttpAttemptsChange", "StepChange", "classify"]

#: The fields a step is aligned on (minus the ignored ones).
KEY_FIELDS = ("kind", "tool", "args_sha", "status", "error")
# How far `nearest` scans outward for a tool before indexing all its steps.
_SCAN = 64


@dataclass(slots=True)
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


# `StepChange`'s own slots for its events, which `_TableStepChange` fills when they are read.
_RECORDED_SLOT, _REPLAYED_SLOT = StepChange.__dict__["recorded"], StepChange.__dict__["replayed"]


def _lazy_event(slot: Any, side: int) -> property:
    """`_TableStepChange`'s property for the event in `StepChange`'s `slot`: made from its row
    (``_at[side]``: table, position) when first read; one set replaces it."""
    return property(lambda self: self._made(slot, side), lambda self, e: slot.__set__(self, e))


class _TableStepChange(StepChange):
    """A `StepChange` between steps of two `EventTable`s whose events are made when first read.

    A changed prompt makes one change per step of a long run; the diff decides and describes each
    from the tables' columns, and most are only counted.
    """

    __slots__ = ("_at",)
    _at: tuple[tuple[EventTable, int], tuple[EventTable, int]]

    @classmethod
    def between(
        cls,
        at: tuple[tuple[EventTable, int], tuple[EventTable, int]],
        i: int,
        j: int,
        detail: str,
        note: str,
    ) -> StepChange:
        """The args_changed change between the recorded row ``at[0]`` (table, position; step `i`)
        and the replayed row ``at[1]`` (step `j`)."""
        change = object.__new__(cls)
        change._at = at
        change.kind, change.recorded_index, change.replayed_index = "args_changed", i, j
        change.nearest, change.nearest_index, change.output_diff = None, None, None
        change.detail, change.note = detail, note
        return change

    def _made(self, slot: Any, side: int) -> Event:
        try:
            return slot.__get__(self, StepChange)  # type: ignore[no-any-return]
        except AttributeError:  # not read yet
            table, k = self._at[side]
            event = table[k]
            slot.__set__(self, event)
            return event

    recorded = _lazy_event(_RECORDED_SLOT, 0)
    replayed = _lazy_event(_REPLAYED_SLOT, 1)


def _event_json(e: Event | None) -> dict[str, Any] | None:
    return None if e is None else e.model_dump(mode="json")


def classify(recorded: Trace, replayed: Trace, rules: IgnoreRules) -> dict[str, Any]:
    """Align the steps of two runs and classify the differences: the fields of their `RunDiff`."""
    return _Differ(recorded, replayed, rules).run()


class _Side:
    """One trace's kept steps and the lookups the classification needs (built lazily)."""

    def __init__(self, trace: Trace, rules: IgnoreRules) -> None:
        self.trace = trace
        steps = trace.steps
        self.pos: list[int] | None = None
        if rules.tools:
            dropped = rules.tool_filter()
            self.pos = [i for i, tool in enumerate(column_of(steps, "tool")) if not dropped(tool)]
        # Rows (a replay's steps answered from the recording): columns straight from the tuples,
        # an `Event` made only for a step a change names.
        self._rows: EventTable | None = None
        if isinstance(steps, EventTable):
            self._rows = steps if self.pos is None else steps.subset(self.pos)
            self.steps: Sequence[Event] = self._rows
        else:
            self.steps = list(steps) if self.pos is None else [steps[i] for i in self.pos]
        self._by_call: dict[tuple[str | None, str | None], list[int]] = {}
        self._by_tool: dict[str | None, list[int]] = {}
        self._dicts: list[dict[str, Any]] | None = None
        if self._rows is None:
            try:  # pydantic keeps fields in __dict__: item lookups there beat getattr by ~2x
                self._dicts = list(map(vars, self.steps))
            except TypeError:
                pass

    def column(self, *names: str, start: int = 0, stop: int | None = None) -> list[Any]:
        """The value of field `names` (a tuple of values for several) of every kept step (of
        those from `start` to `stop`)."""
        if self._rows is not None:
            return self._rows.column(*names, start=start, stop=stop)
        whole = start == 0 and stop is None
        if self._dicts is not None:
            try:
                dicts = self._dicts if whole else self._dicts[start:stop]
                return list(map(itemgetter(*names), dicts))
            except KeyError:
                self._dicts = None
        return list(map(attrgetter(*names), self.steps if whole else self.steps[start:stop]))

    @property
    def table(self) -> EventTable | None:
        """The kept steps as an `EventTable` (a replay's steps), else None (a list of events)."""
        return self._rows

    def orig(self, i: int) -> int:
        return i if self.pos is None else self.pos[i]

    def permute(self, perm: list[int]) -> None:
        """Put the kept steps in the order `perm` (positions in the current order)."""
        base = self.pos if self.pos is not None else range(len(self.steps))
        self.pos = [base[p] for p in perm]
        if self._rows is not None:
            self._rows = self._rows.subset(perm)
            self.steps = self._rows
            return
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


def _new_args(ea: Event, eb: Event, i: int, j: int) -> StepChange:
    """The change of a step whose args changed and nothing else the diff keys on."""
    detail, note = _new_args_texts(ea.tool, ea.args_sha, eb.args_sha)
    return StepChange("args_changed", ea, eb, i, j, detail=detail, note=note)


def _new_args_texts(tool: str | None, sha_a: str | None, sha_b: str | None) -> tuple[str, str]:
    """The detail and the note of `_new_args`."""
    shas = f"{short_sha(sha_a)} -> {short_sha(sha_b)}"
    return f"{tool} args_sha {shas}", f"args {shas}"


class _Differ:
    def __init__(self, recorded: Trace, replayed: Trace, rules: IgnoreRules) -> None:
        self.rules = rules
        self.ra = _Side(recorded, rules)
        self.rb = _Side(replayed, rules)
        self.key_fields = tuple(f for f in KEY_FIELDS if f not in rules.fields)
        self._ddkw = rules.deepdiff_kwargs()
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

    def run(self) -> dict[str, Any]:
        """The fields of the `RunDiff` (keyword arguments)."""
        ra, rb, rules = self.ra, self.rb, self.rules
        # Keys interned to ints: the aligner hashes and compares each many times.
        ka, kb = ra.column(*self.key_fields), rb.column(*self.key_fields)
        if ka == kb:  # the same calls in the same order (a healthy replay): one block
            a, b = ka, kb
            blocks: list[Block] = [(0, 0, len(ka))] if ka else []
        else:
            ids: dict[Any, int] = {}
            serial = count()
            a = list(map(ids.setdefault, ka, serial))
            b = list(map(ids.setdefault, kb, serial))
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
        return dict(
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
        ra, rb = self.ra, self.rb
        for alo, ahi, blo, bhi in regions:
            if ahi - alo == bhi - blo and ra.column("kind", "tool", start=alo, stop=ahi) == (
                rb.column("kind", "tool", start=blo, stop=bhi)
            ):
                # The same (kind, tool) step for step (new args throughout, say): what the
                # pairing below finds, without its queues.
                self._pair_in_place(alo, blo, ahi - alo, a, b, found)
                continue
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

    def _pair_in_place(
        self, alo: int, blo: int, n: int, a: list[int], b: list[int], found: list[Any]
    ) -> None:
        """`_paired` of the steps ``alo + k`` and ``blo + k`` for k < n, onto `found`; a step with
        new args only (a changed prompt: every step of the region) is built here at once, from
        the sides' columns (between two event tables, its events are made when read)."""
        ra, rb = self.ra, self.rb
        pa, pb = ra.pos, rb.pos
        by_args = "args_sha" in self.key_fields
        fields = ("tool", "args_sha", "status", "error")
        cols = zip(
            ra.column(*fields, start=alo, stop=alo + n),
            rb.column(*fields, start=blo, stop=blo + n),
            strict=True,
        )
        ta, tb = ra.table, rb.table
        append = found.append
        for k, ((tool, sha_a, status_a, error_a), (_, sha_b, status_b, error_b)) in enumerate(cols):
            i, j = alo + k, blo + k
            same_outcome = status_a == status_b and error_a == error_b
            if a[i] != b[j] and by_args and sha_a != sha_b and same_outcome:
                oi, oj = i if pa is None else pa[i], j if pb is None else pb[j]
                detail, note = _new_args_texts(tool, sha_a, sha_b)
                if ta is not None and tb is not None:
                    change = _TableStepChange.between(((ta, i), (tb, j)), oi, oj, detail, note)
                else:
                    change = StepChange(
                        "args_changed", ra.steps[i], rb.steps[j], oi, oj, detail=detail, note=note
                    )
                append((i + j, change))
            else:
                append((i + j, self._paired(i, j, a[i] == b[j])))

    def _paired(self, i: int, j: int, same_key: bool) -> StepChange:
        if same_key:
            return self._reordered(i, j)
        ea, eb = self.ra.steps[i], self.rb.steps[j]
        tool = ea.tool
        parts: list[str] = []
        kind = ""
        if "args_sha" in self.key_fields and ea.args_sha != eb.args_sha:
            if ea.status == eb.status and ea.error == eb.error:  # new args only (most): at once
                return _new_args(ea, eb, self.ra.orig(i), self.rb.orig(j))
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
        return self._unmatched_change("extra_call", self.rb, self.ra, j, coord)

    def _missing(self, i: int, coord: int) -> StepChange:
        return self._unmatched_change("missing_call", self.ra, self.rb, i, coord)

    def _unmatched_change(
        self, kind: str, side: _Side, other: _Side, i: int, coord: int
    ) -> StepChange:
        """An extra (replayed side) or missing (recorded side) call, worded by what it repeats:
        the same call earlier on its side, the same call a different number of times, the
        nearest call of its tool on the other side, or a tool the other side never calls.
        """
        e, o, near_ev, near_orig, earlier, same_there = self._unmatched(side, other, i, coord)
        words = _UNMATCHED_WORDS[kind]
        fields: dict[str, Any]
        if earlier is not None:
            case, fields = "again", {"k": side.orig(earlier) + 1}
        elif same_there:
            case, fields = "count", {"first": other.orig(same_there[0]) + 1}
        elif near_ev is not None and near_orig is not None:
            near_args = short_sha(near_ev.args_sha)
            case, fields = "nearest", {"near": near_orig + 1, "near_args": near_args}
        else:
            case, fields = "none", {}
        fields.update(
            tool=e.tool,
            args=short_sha(e.args_sha),
            n_after=len(self.rb.calls(e)),
            n_before=len(self.ra.calls(e)),
        )
        detail, note = (text.format(**fields) for text in words[case])
        recorded, replayed = (None, e) if kind == "extra_call" else (e, None)
        rec_i, rep_i = (None, o) if kind == "extra_call" else (o, None)
        return StepChange(
            kind, recorded, replayed, rec_i, rep_i, near_ev, detail, None, near_orig, note=note
        )

    @staticmethod
    def _unmatched(
        side: _Side, other: _Side, i: int, coord: int
    ) -> tuple[Event, int, Event | None, int | None, int | None, list[int]]:
        """What an extra (missing) step `i` of `side` is compared with on the `other` side: the
        step, its original index, the nearest step of its tool over there (and its index), the
        same call earlier on this side, the same calls over there.
        """
        e = side.steps[i]
        # Where on the other side this call would sit: its place along the alignment path.
        at = min(max(coord - i, 0), max(len(other.steps) - 1, 0))
        near = other.nearest(e.tool, at)
        near_ev = other.steps[near] if near is not None else None
        near_orig = other.orig(near) if near is not None else None
        return e, side.orig(i), near_ev, near_orig, side.previous_call(e, i), other.calls(e)


#: How an extra or missing call is described: (detail, note) templates per case (see
#: `_Differ._unmatched_change`).
_UNMATCHED_WORDS: dict[str, dict[str, tuple[str, str]]] = {
    "extra_call": {
        "again": (
            "{tool} called again with the same args (as step {k})",
            "extra call; same args as step {k}",
        ),
        "count": (
            "{tool} called {n_after}x with these args, recorded {n_before}x (step {first})",
            "extra call; {n_after}x, recorded {n_before}x",
        ),
        "nearest": (
            "no recorded {tool} call with args {args}; nearest is step {near} (args {near_args})",
            "extra call; nearest: step {near} args {near_args}",
        ),
        "none": ("the recording never calls {tool}", "extra call; new tool"),
    },
    "missing_call": {
        "again": (
            "the recording called {tool} again with the same args (as step {k}); the replay did "
            "not",
            "missing call; same args as step {k}",
        ),
        "count": (
            "{tool} called {n_after}x with these args, recorded {n_before}x",
            "missing call; {n_after}x, recorded {n_before}x",
        ),
        "nearest": (
            "the replay made no {tool} call with args {args}; nearest is step {near} (args "
            "{near_args})",
            "missing call; nearest: step {near} args {near_args}",
        ),
        "none": ("the replay never calls {tool}", "missing call; tool not called"),
    },
}


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


def _member_key(e: Event) -> tuple[str, str, str]:
    """How members of a concurrent group are sorted (None as the empty string)."""
    return (e.tool or "", e.args_sha or "", e.output_sha or "")


def _err_suffix(ea: Event, eb: Event) -> str:
    err = eb.error if eb.status == "error" else ea.error
    return f" ({err})" if err else ""
