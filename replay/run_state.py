"""The state of one run in progress and its step bookkeeping: enter, finish, budget, trip.

Both tool layers (`replay.tool_layer.LiveLayer` runs the real function, the replay layer answers
from a recording) drive a call through the same four operations on `RunState`: `enter` counts
the step, applies the step and repeat guards, freezes the args and notes the step in flight;
`finish_ok` / `finish_error` hand one `StepItem` to the writer (built by position on the hot
path); `check_budget` applies the token and spend guards after a model call. A guard `trip`s:
the run ends with its stop reason and `StopRun` is raised inside the agent.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from replay.binding import ToolSpec, error_detail, error_names, tool_calls_in
from replay.context import step_var
from replay.errors import StopRun
from replay.guards import Guards
from replay.hashing import freeze_lenient
from replay.models import Run, Usage
from replay.usage import extract_usage
from replay.writer import StepItem

if TYPE_CHECKING:
    from replay.recorder import Recorder
    from replay.tool_layer import ToolLayer

__all__ = ["RunState", "Step", "StepSink"]

# Bound once: `enter` and `finish_ok` run on every recorded call, on the agent's thread.
_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns


class StepSink(Protocol):
    """Where finished steps go: the recorder's writer (`replay.writer.Writer`)."""

    def submit(self, item: Any) -> None: ...


@dataclasses.dataclass(slots=True)
class Step:
    """One tool or model call in flight: entered, not finished yet."""

    spec: ToolSpec
    step_id: int
    parent: int | None  # the step this call runs inside (a tool calling a tool), None at top level
    args: bytes  # the bound arguments, frozen
    t0: int  # perf_counter_ns when the call started
    args_sha: str | None = None  # set by a layer that hashed the args itself (replay)


class RunState:
    """The mutable state of one run in progress, carried in the contextvar."""

    __slots__ = (
        "run",
        "recorder",
        "input",
        "steps",
        "tool_calls",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "stop_reason",
        "tripped",
        "guards",
        "repeats",
        "output",
        "output_type",
        "ended",
        "started_ns",
        "layer",
        "session",
        "http",
        "levels",
        "marks",
        "group_lock",
        "sink",
        "answered",
        "track_groups",
        "__weakref__",
    )

    def __init__(
        self,
        recorder: Recorder,
        run: Run,
        input_frozen: bytes | None,
        guards: Guards,
        *,
        layer: ToolLayer,
        sink: StepSink,
        track_groups: bool = True,
    ) -> None:
        self.run = run
        self.recorder = recorder
        self.input = input_frozen
        self.steps = itertools.count(1)
        self.tool_calls = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self.stop_reason: str | None = None
        self.tripped: StopRun | None = None
        self.guards = guards
        self.repeats: dict[tuple[str, int], int] = {}
        self.output: bytes | None = None
        self.output_type: str | None = None
        self.ended = False
        self.started_ns = time.perf_counter_ns()
        #: what answers this run's tool calls: the live layer, or a replay's layer
        self.layer = layer
        self.session: Any = None  # the `ReplaySession` when this run is a replay
        self.http: list[Any] | None = None  # the HTTP interactions of an http=True run, at its end
        self.sink = sink
        #: where a step answered from the recording goes without a `StepItem` (a replay's
        # `replay.replayed_run.AnsweredStepSink`), else None
        self.answered: Any = getattr(sink, "answered", None)
        # Concurrent groups (parallel tool calls), per parent step (None: top level):
        # [dict of the step ids in flight (an ordered set); model-announced calls still to come;
        #  their group id]. `marks`: step id -> group, set for the steps in flight when a sibling
        # finishes while they run. Entering and a lone step finishing use only atomic dict
        # operations; the lock is taken only when steps really overlap (or a model announced some).
        self.track_groups = track_groups
        self.levels: dict[int | None, list[Any]] = {}
        self.marks: dict[int, int] = {}
        self.group_lock = threading.Lock()  # tools in worker threads enter and finish at once

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def usage(self) -> Usage:
        return Usage.lenient(
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=round(self.cost_usd, 10) if math.isfinite(self.cost_usd) else 0.0,
            tool_calls=self.tool_calls,
        )

    # ---- guards -----------------------------------------------------------------------------

    def trip(self, reason: str, detail: str) -> NoReturn:
        """End the run with `reason`: `StopRun` is raised now and at every later call."""
        self.tripped = StopRun(reason, detail)
        self.stop_reason = reason
        raise self.tripped

    def check_budget(self) -> None:
        """Trip ``budget_exceeded`` when tokens or spend pass ``max_tokens`` / ``max_spend_usd``."""
        g = self.guards
        if g.max_tokens is not None and self.tokens_in + self.tokens_out > g.max_tokens:
            self.trip(
                "budget_exceeded",
                f"{self.tokens_in + self.tokens_out} tokens, max_tokens={g.max_tokens}",
            )
        if g.max_spend_usd is not None and self.cost_usd > g.max_spend_usd:
            self.trip(
                "budget_exceeded", f"${self.cost_usd:.4f} spent, max_spend_usd={g.max_spend_usd}"
            )

    # ---- steps ------------------------------------------------------------------------------

    def enter(self, spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Step:
        """Start a step: count it, apply max_steps and max_repeats, freeze its args."""
        if self.tripped is not None:
            raise self.tripped  # the run is over; a guard already ended it
        step_id = next(self.steps)
        g = self.guards
        if g.max_steps is not None and step_id > g.max_steps:
            self.trip("max_steps", f"{spec.name} would be step {step_id}, max_steps={g.max_steps}")
        frozen, problem = freeze_lenient(spec.bind(args, kwargs), "args", True)  # sorted keys
        if problem:
            self.recorder.warn_encode(f"the args of {spec.name}", problem)
        if g.max_repeats is not None:
            key = (spec.name, hash(frozen))
            n = self.repeats.get(key, 0) + 1
            self.repeats[key] = n
            if n > g.max_repeats:
                self.trip(
                    "loop_detected",
                    f"{spec.name} called {n} times with the same args, max_repeats={g.max_repeats}",
                )
        parent = step_var.get()
        if self.track_groups:
            # Concurrent groups: note the step in flight at its level (inline: this runs on every
            # call); its group is settled when steps finish (`_settle_group`).
            try:
                lv = self.levels[parent]
            except KeyError:  # the first step at this level
                lv = self.levels.setdefault(parent, [{}, 0, 0])
            lv[0][step_id] = None
            if lv[1]:
                self._announced(spec, lv, step_id)
        return Step(spec, step_id, parent, frozen, _perf_ns())

    def finish_ok(
        self,
        step: Step,
        result: Any,
        *,
        output_sha: str | None = None,
        group: int | None = None,
        usage: Usage | None = None,
    ) -> None:
        """Hand a call that returned `result` to the writer. Replay passes what the recording
        holds: `output_sha`, `group` (0: none) and a model's `usage` (see `StepItem`'s fields)."""
        spec = step.spec
        # Leave the in-flight steps (inline: this runs on every call); see `_leave`.
        own = None
        if self.track_groups and (lv := self.levels.get(step.parent)) is not None:
            if len(lv[0]) > 1 or spec.kind == "model_result":
                own = self._settle_group(spec, lv, step.step_id, result)
            else:
                if self.marks:
                    own = self.marks.pop(step.step_id, None)
                lv[0].pop(step.step_id, None)
        if spec.kind == "model_result":
            usage = (
                self._model_usage(spec, result)
                if usage is None
                else self._count_usage(spec, usage.tokens_in, usage.tokens_out, usage)
            )
        else:
            if spec.kind == "tool_result":
                self.tool_calls += 1
            usage = None
        if output_sha is not None and self.answered is not None and step.args_sha is not None:
            # Answered from the recording (replay): hashed already, nothing to freeze or redact.
            # Its time is the run's start plus the time since on the performance counter: the
            # wall clock travels to the recorded time in a replay (time-machine), at 10x the cost.
            now = _perf_ns()
            self.answered(
                (  # `Event`'s fields in order (`replay.replayed_run.AnsweredStep`)
                    self.run.run_id,
                    spec.kind,
                    self.run.started_ms + (now - self.started_ns) // 1_000_000,
                    step.step_id,
                    spec.name,
                    step.args_sha,
                    output_sha,
                    (now - step.t0) // 1_000_000,
                    "ok",
                    None,
                    None,
                    usage,
                    step.parent,
                    own if group is None else group or None,
                )
            )
            return
        out: bytes | None = None
        if output_sha is None:
            out, problem = freeze_lenient(result, "output")
            if problem:
                self.recorder.warn_encode(f"the output of {spec.name}", problem)
        # By position (keywords cost 0.7 us more per call); the fields are `StepItem`'s, in order.
        self.sink.submit(
            StepItem(
                self.run.run_id,  # run_id
                step.step_id,  # step_id
                step.parent,  # parent_step_id
                spec.kind,  # kind
                spec.name,  # tool
                step.args,  # args
                out,  # output
                None,  # error
                None,  # message
                _time_ns() // 1_000_000,  # ts_ms
                (_perf_ns() - step.t0) // 1_000_000,  # duration_ms
                usage,  # usage
                None,  # type_name
                step.args_sha,  # args_sha
                output_sha,  # output_sha
                own if group is None else group or None,  # concurrent_group
                None,  # error_detail
                None if out is None else result,  # output_ref
            )
        )

    def finish_error(
        self,
        step: Step,
        exc: BaseException,
        *,
        names: tuple[str, str, str] | None = None,
        message: str | None = None,
        output_sha: str | None = None,
        group: int | None = None,
    ) -> None:
        """Hand a call that raised `exc` to the writer (see `finish_ok` for `output_sha`, `group`).

        `names` and `message` record the step under a recorded error's names (replay).
        """
        spec = step.spec
        own = self._leave(step, None)
        if spec.kind == "tool_result":
            self.tool_calls += 1
        self.sink.submit(
            StepItem(
                run_id=self.run.run_id,
                step_id=step.step_id,
                parent_step_id=step.parent,
                kind=spec.kind,
                tool=spec.name,
                args=step.args,
                output=None,
                error=names or error_names(exc),
                message=str(exc) if message is None else message,
                ts_ms=time.time_ns() // 1_000_000,
                duration_ms=(time.perf_counter_ns() - step.t0) // 1_000_000,
                usage=None,
                type_name=None,
                args_sha=step.args_sha,
                output_sha=output_sha,
                concurrent_group=own if group is None else group or None,
                error_detail=None if output_sha is not None else error_detail(exc),
            )
        )

    def _model_usage(self, spec: ToolSpec, response: Any) -> Usage | None:
        found = extract_usage(response)
        if found is None:
            return None
        return self._count_usage(spec, *found)

    def _count_usage(
        self, spec: ToolSpec, tin: int, tout: int, known: Usage | None = None
    ) -> Usage:
        """Price a model call's tokens, add them to the run's; `known` when it says the same."""
        cost = 0.0
        if spec.price_in is not None or spec.price_out is not None:
            cost = round(tin * (spec.price_in or 0) / 1e6 + tout * (spec.price_out or 0) / 1e6, 10)
        self.tokens_in += tin
        self.tokens_out += tout
        self.cost_usd += cost
        if known is not None and known.cost_usd == cost and not known.tool_calls:
            return known
        return Usage.lenient(tokens_in=tin, tokens_out=tout, cost_usd=cost)

    # ---- concurrent groups ------------------------------------------------------------------

    def _leave(self, step: Step, result: Any) -> int | None:
        """Take the step out of those in flight at its level; its concurrent group, if any.

        A step that ran alone and is no model call costs a few dict operations and no lock; the
        rest is `_settle_group`. (`finish_ok` does this inline: it runs on every call.)
        """
        if not self.track_groups:
            return None
        lv = self.levels.get(step.parent)
        if lv is None:  # never entered at this level (a parent reset elsewhere)
            return None
        q = lv[0]
        if len(q) > 1 or step.spec.kind == "model_result":
            return self._settle_group(step.spec, lv, step.step_id, result)
        group = self.marks.pop(step.step_id, None) if self.marks else None
        q.pop(
            step.step_id, None
        )  # absent: counted at another level (it entered under another parent)
        return group

    def _announced(self, spec: ToolSpec, lv: list[Any], step_id: int) -> None:
        """A step entering after a model response announced tool calls: those join one group."""
        with self.group_lock:
            if spec.kind != "tool_result":
                lv[1] = 0  # a model call ends what the previous response announced
            elif lv[1]:
                lv[1] -= 1
                if not lv[2]:
                    lv[2] = step_id
                self.marks[step_id] = lv[2]

    def _settle_group(self, spec: ToolSpec, lv: list[Any], step_id: int, result: Any) -> int | None:
        """A step finishing while siblings are in flight puts them all in one group: its own
        (from an earlier overlap), one of theirs, else the earliest one's step id. A step that
        finishes alone is grouped only if one of those marked it. Groups are thus the connected
        runs of overlapping siblings, named by their first step. A model response that announces
        several tool calls makes them one group (see `_announced`)."""
        marks = self.marks
        q = lv[0]
        if len(q) == 1 and step_id in q:  # a model call alone at its level: no siblings to group
            group = marks.pop(step_id, None) if marks else None
            q.pop(step_id, None)
            if (
                spec.kind == "model_result"
                and result is not None
                and (n := tool_calls_in(result)) > 1
            ):
                with self.group_lock:
                    lv[1], lv[2] = n, 0
            return group
        with self.group_lock:
            flying = list(q)  # one C-level copy: others may enter meanwhile
            group = marks.pop(step_id, None)
            others = [j for j in flying if j != step_id]
            if others:
                if group is None:
                    group = next((marks[j] for j in others if j in marks), None) or min(flying)
                for j in others:
                    marks[j] = group
            q.pop(step_id, None)
            if spec.kind == "model_result" and result is not None:
                n = tool_calls_in(result)
                if n > 1:  # the next n tool calls at this level are one group, named by the first
                    lv[1], lv[2] = n, 0
        return group
