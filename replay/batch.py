"""Replaying recordings as a gate: what `replay run` and the pytest plugin share.

One place for each part of a gate run, so the command line and the plugin cannot drift apart:

- `RunOptions`: how each recording is replayed, the one place where options are declared and
  handed to `replay_run` (a new replay mode adds a field here);
- `merge_ignore`: ignore rules from several places (ini, fixture, marker, flags) as one;
- `UsageGate` / `usage_gates` / `gate_failures`: tokens and spend that grew past a limit;
- `bless_reason` / `bless`: may a diverging replay be frozen into its cassette; freezing it;
- `judge`, `error_outcome`, `replay_batch`: the `Outcome` of each replay;
- `summary_line`: "3 runs replayed: 2 matched, 1 diverged, 0 blessed".

Example::

    opts = RunOptions(db="replay.db", agents=["my_agent"], project=".")
    outcomes = replay_batch(["r_01jd2k8...", "cassettes/x.json"], opts, usage_gates(20, 20))
    print(summary_line(outcomes))
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replay.diff import IgnoreRules, RunDiff
from replay.errors import ReplayError, StopRun, UnrecordedCall
from replay.report import Outcome, summary_line

if TYPE_CHECKING:
    from replay.replayer import Recording, ReplayResult

__all__ = [
    "DEFAULT_MAX_DELTA_PCT",
    "RunOptions",
    "UsageGate",
    "Verdict",
    "bless",
    "bless_problem",
    "bless_reason",
    "check_faults",
    "ensure_importable",
    "error_outcome",
    "fault_outcome",
    "failure_text",
    "gate_failures",
    "judge",
    "merge_ignore",
    "replay_batch",
    "replay_whatif",
    "summary_line",
    "usage_gates",
]

#: Default limit, in percent, on the growth of tokens and of spend before a replay fails.
DEFAULT_MAX_DELTA_PCT = 20.0

#: Errors that end one replay of a batch (named in its outcome) instead of the whole batch.
REPLAY_ERRORS: tuple[type[Exception], ...] = (ReplayError, ValueError, ImportError)


# ---- options ---------------------------------------------------------------------------------


@dataclasses.dataclass
class RunOptions:
    """How each recording of a batch is replayed: the arguments `replay_run` gets.

    Attributes:
        agent: the function to call (or ``"module:function"``); default: the agent the project
            registered under the recording's agent name (see `replay.agents`: a recording is data,
            its entrypoint is never imported unless the project lists its module).
        db: the store run ids are read from (None: ``$REPLAY_DB``, else ``./replay.db``).
        stubs: tool name -> function answering that tool instead of the recording.
        ignore: diff ignore rules: `IgnoreRules` or specs `merge_ignore` accepts (see
            `IgnoreRules.parse`).
        on_unrecorded: ``"error"`` raises `UnrecordedCall` in the agent; ``"none"`` answers None.
        ordered: False compares the steps as a multiset (for agents calling tools in parallel).
        agents: modules (``MODULE`` or ``MODULE:FN``) that register the agents replays may call,
            as ``--replay-agent``.
        project: the project folder whose pyproject.toml lists agent modules (default: the working
            folder).
        record_to: a store to record the replayed run into (``replay_of`` set), kept afterwards so
            ``replay show`` works on it; default: a temporary store, removed after the replay.
        clock: ``"recorded"`` (default) runs the agent at the recorded run's wall-clock time
            (``time.time()``, ``datetime.now()`` start at its start and tick on; time-machine),
            so "today" in a prompt replays identically; ``"real"`` leaves the clock alone.
        stub_mode: ``"always"`` (default): a stub answers every call of its tool; ``"miss"``: only
            the calls the recording has no answer for (new args after a fix), the rest replay.
        match: tool -> ``"sequence"`` (the n-th call takes the n-th recorded call whatever its
            args) or ``{"ignore": [ARG, ...]}``; such steps are marked in the diff (see
            `replay.replay_modes`). Default: exact (tool, args_sha).
        live: tool names or globs that run for real, recorded and marked ``live`` in the diff;
            with the HTTP layer their requests still answer from the recording.
        faults: replace chosen calls' answers with errors or bad answers (`replay.faults`):
            ``{"http.get": 503}``, ``"http.get=429:retry-after=2@first:2"``; in `replay_whatif`
            each spec of `replay.faults.expand` is one replay.
        repeat: what-if flakiness (`replay.flaky`): replay each recording this many times (not a
            `replay_run` argument).
    """

    agent: Callable[..., Any] | str | None = None
    db: str | None = None
    stubs: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    ignore: IgnoreRules | Sequence[Any] = ()
    on_unrecorded: str = "error"
    ordered: bool = True
    agents: list[str] = dataclasses.field(default_factory=list)
    project: str | os.PathLike[str] | None = None
    record_to: str | None = None
    clock: str = "recorded"
    stub_mode: str = "always"
    match: dict[str, Any] = dataclasses.field(default_factory=dict)
    live: list[str] = dataclasses.field(default_factory=list)
    faults: Any = None
    repeat: int = 1

    @property
    def whatif(self) -> bool:
        """Whether a replay runs under faults or repeated (`replay_whatif` judges it)."""
        return bool(self.faults) or self.repeat > 1

    @classmethod
    def from_fields(cls, source: object, **overrides: Any) -> RunOptions:
        """Options from any object with same-named attributes (the plugin's `ReplayOptions`)."""
        names = [f.name for f in dataclasses.fields(cls)]
        found = {n: getattr(source, n) for n in names if hasattr(source, n)}
        return cls(**{**found, **overrides})

    def rules(self) -> IgnoreRules:
        """The ignore rules as one `IgnoreRules`."""
        if isinstance(self.ignore, IgnoreRules):
            return self.ignore
        return merge_ignore(self.ignore)

    def replay(self, source: str | os.PathLike[str] | Recording) -> ReplayResult:
        """Replay `source`: a run id, a cassette path or a loaded `Recording`."""
        # The replayer (vcrpy, time-machine, the recorder) is imported when a replay starts, not
        # when `replay --help` loads the command line.
        from replay.replayer import replay_run

        return replay_run(source, **self.replay_kwargs(), faults=self.faults or None)

    def replay_kwargs(self) -> dict[str, Any]:
        """The `replay_run` keyword arguments of these options, but `faults` (what-if sets it)."""
        return {
            "agent": self.agent,
            "stubs": self.stubs,
            "on_unrecorded": self.on_unrecorded,
            "ignore": self.rules(),
            "db": self.db,
            "ordered": self.ordered,
            "record_to": self.record_to,
            "agents": list(self.agents),
            "project": self.project,
            "clock": self.clock,
            "stub_mode": self.stub_mode,
            "match": self.match or None,
            "live": self.live or None,
        }


def merge_ignore(specs: Iterable[Any]) -> IgnoreRules:
    """One `IgnoreRules` from several specs (strings, lists, mappings, rules; None skipped).

    Raises:
        InvalidIgnoreRuleError: a malformed rule, naming it.
    """
    rules = IgnoreRules()
    for spec in specs:
        if spec is not None:
            rules = rules.merge(spec)
    return rules


def ensure_importable(*folders: str | os.PathLike[str], first: bool = False) -> None:
    """Put the project's folders on ``sys.path`` so the agent modules it names can be imported.

    A console script (``replay``, ``pytest``) does not put the working folder on sys.path the
    way ``python -m`` does. ``first=True`` puts them in front, as ``python -m`` would.
    """
    for folder in folders:
        path = os.fspath(folder)
        if path in sys.path:
            continue
        if first:
            sys.path.insert(0, path)
        else:
            sys.path.append(path)


# ---- usage gates -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UsageGate:
    """A limit, in percent, on the growth of one usage figure; `where` names how it was set."""

    label: str  # "tokens" or "spend"
    field: str  # the RunDiff usage field: "tokens" or "cost_usd"
    limit: float | None  # None: no gate
    where: str  # e.g. "--max-token-delta-pct"


def usage_gates(
    max_token_delta_pct: float | None,
    max_spend_delta_pct: float | None,
    *,
    token_flag: str = "--max-token-delta-pct",
    spend_flag: str = "--max-spend-delta-pct",
) -> list[UsageGate]:
    """The token and spend gates, each naming the flag (or ini option) that sets it."""
    return [
        UsageGate("tokens", "tokens", max_token_delta_pct, token_flag),
        UsageGate("spend", "cost_usd", max_spend_delta_pct, spend_flag),
    ]


def _usage_text(diff: RunDiff, field: str, after: bool) -> str:
    u = diff.usage_after if after else diff.usage_before
    if field == "cost_usd":
        return f"${u.cost_usd:.4f}"
    return f"{u.tokens_in + u.tokens_out:,}"


def gate_failures(diff: RunDiff, gates: Sequence[UsageGate]) -> list[str]:
    """The gates this replay broke: growth above the limit (a decrease never fails)."""
    out = []
    for gate in gates:
        pct = diff.usage_delta_pct(gate.field)
        if gate.limit is None or pct is None or pct <= gate.limit:
            continue
        grew = "new, the recording had none" if math.isinf(pct) else f"{pct:+.1f}%"
        out.append(
            f"{gate.label} {_usage_text(diff, gate.field, False)} -> "
            f"{_usage_text(diff, gate.field, True)} ({grew}) is above the "
            f"{gate.limit:g}% limit ({gate.where})"
        )
    return out


# ---- bless -----------------------------------------------------------------------------------

#: Stop reasons that say the replay broke rather than behaved differently.
_BROKEN_STOPS = ("error", "killed")
_FORCE_HINT = "--replay-update-force blesses it anyway"


def _error_class(name: str | None) -> str:
    return (name or "").rsplit(".", 1)[-1].split("[", 1)[0]


def bless_reason(result: ReplayResult) -> str | None:
    """Why this replay must not be blessed, in a few words; None when blessing it is right.

    Refused: calls or HTTP requests the recording has no answer for, an agent that raised where
    the recording did not, a run that stopped with ``error`` or ``killed`` where the recording
    did not. A cassette is the reference of good behaviour: freezing a crash into it turns the
    gate green on a broken agent.
    """
    unrecorded = [s for s in result.steps if _error_class(s.error) == "UnrecordedCall"]
    exc = result.exception
    if unrecorded or isinstance(exc, UnrecordedCall):
        tools = sorted({s.tool for s in unrecorded if s.tool})
        if not tools:  # the agent raised the UnrecordedCall before any step was recorded
            tools = [exc.tool if isinstance(exc, UnrecordedCall) else "?"]
        return (
            f"the replay made {max(len(unrecorded), 1)} call(s) the recording has no answer for "
            f"({', '.join(tools)})"
        )
    if result.unrecorded_http:
        first = result.unrecorded_http[0]
        return (
            f"the replay made {len(result.unrecorded_http)} HTTP request(s) the recording has no "
            f"answer for (first: {first.method} {first.url})"
        )
    before, after = result.recorded.stop_reason, result.stop_reason
    if exc is not None and not isinstance(exc, StopRun) and before != "error":
        return (
            f"the agent raised {type(exc).__name__} where the recording did not "
            f"(it stopped {before})"
        )
    if after in _BROKEN_STOPS and after != before:
        return f"the replay stopped with {after} where the recording stopped {before}"
    return None


def bless_problem(reason: str) -> str:
    """The failure text's line for a bless refused for `reason`: why, the fix, the override."""
    if "call(s) the recording has no answer for" in reason:
        fix = (
            "a cassette must hold real answers: re-record the run with the new code and export it "
            "(`replay export RUN_ID`), or answer those tools with stubs "
            "(options.stubs in a pytest_replay_configure hook)"
        )
    elif "HTTP request(s)" in reason:
        fix = (
            "a cassette must hold real answers: re-record the run with the new code and export it "
            "(`replay export RUN_ID`), or loosen the run's HTTP matching (http_match=)"
        )
    else:
        fix = (
            "a cassette must hold behaviour worth keeping, not a crash: "
            "fix the agent and run the gate again"
        )
    return f"not blessed: {reason}, and {fix}; {_FORCE_HINT}"


def bless(result: ReplayResult, target: Path) -> Path:
    """Rewrite the cassette `target` with the replay's trace (0600, atomically); its path."""
    from replay.cassette import cassette_from_replay, write_cassette

    return write_cassette(cassette_from_replay(result), target, force=True)


# ---- outcomes --------------------------------------------------------------------------------


def failure_text(
    source: str, result: ReplayResult, gates: Sequence[str], *, width: int = 120
) -> str:
    """Why a replay failed: the RunDiff text, the broken gates, what the agent raised."""
    diff = result.diff
    text = diff.to_text(width=width, color=False)
    lines = []
    if diff.is_empty:  # only a usage gate failed: the diff's headline would say "matches"
        lines.append(
            f"replay of {diff.recorded_id} broke a usage gate (same steps, stop reason and output)"
        )
        text = text.split("\n", 1)[1] if "\n" in text else ""
    if text:
        lines.append(text)
    lines += [f"usage gate: {g}" for g in gates]
    exc = result.exception
    if exc is not None and not diff.is_empty:
        lines.append(f"the agent raised {type(exc).__name__}: {exc}")
    lines.append(f"recording: {source}")
    return "\n".join(lines)


@dataclasses.dataclass
class Verdict:
    """A judged replay: its `Outcome`, and the failure report when it failed (else None)."""

    outcome: Outcome
    failure: str | None = None


def judge(
    source: str,
    result: ReplayResult,
    gates: Sequence[UsageGate],
    *,
    seconds: float = 0.0,
    update: bool = False,
    force: bool = False,
    target: Path | None = None,
    show: Callable[[Path], str] = str,
    width: int = 120,
    write: Callable[[ReplayResult, Path], Path] | None = None,
) -> Verdict:
    """Matched, diverged, or (with `update`) blessed into `target`, with the failure report.

    A replay matches when its diff is empty and no usage gate broke. With `update`, a diverging
    replay is written to `target` unless `bless_reason` refuses it (``force`` overrides);
    `show` turns the written path into the text shown; `write` writes the bless (default
    `bless`; the plugin's review mode writes a pending change, `replay.review.write_pending`).
    """
    diff = result.diff
    rid = result.recorded.run_id
    failed = gate_failures(diff, gates)

    def outcome(status: str, **kw: Any) -> Outcome:
        return Outcome(source=source, run_id=rid, status=status, diff=diff, seconds=seconds, **kw)

    if diff.is_empty and not failed:
        return Verdict(outcome("matched"))
    text = failure_text(source, result, failed, width=width)
    reason = bless_reason(result)
    if update and target is not None:
        if reason is None or force:
            shown = show((write or bless)(result, target))
            forced = f" (forced: {reason})" if reason is not None else ""
            note = f"rewrote {shown}{forced}"
            return Verdict(outcome("blessed", note=note, blessed_path=shown, bless_problem=reason))
        assert reason is not None
        problem = bless_problem(reason)
        return Verdict(
            outcome("diverged", note=problem, bless_problem=reason), f"{text}\n{problem}"
        )
    gates_note = "; ".join(failed) or None
    return Verdict(outcome("diverged", note=gates_note, bless_problem=reason), text)


def error_text(exc: BaseException) -> str:
    """An error agent-replay raised on purpose reads as its message; others with their class."""
    return str(exc) if isinstance(exc, ReplayError) else f"{type(exc).__name__}: {exc}"


def error_outcome(
    source: str, run_id: str | None, exc: BaseException | str, *, seconds: float = 0.0
) -> Outcome:
    """The outcome of a recording that could not be replayed (`exc`, or its message)."""
    message = exc if isinstance(exc, str) else error_text(exc)
    return Outcome(source=source, run_id=run_id, status="error", error=message, seconds=seconds)


def replay_batch(
    sources: Iterable[str],
    options: RunOptions,
    gates: Sequence[UsageGate],
    *,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Replay each source (run id or cassette path) and judge it; one `Outcome` per source.

    A source that cannot be replayed (unknown run, broken cassette, agent not importable) is an
    ``error`` outcome naming why; the batch goes on. `on_done` is called after each replay.
    """
    outcomes: list[Outcome] = []
    for src in sources:
        t0 = time.perf_counter()
        try:
            result = options.replay(src)
        except REPLAY_ERRORS as exc:
            o = error_outcome(src, None, exc, seconds=time.perf_counter() - t0)
        else:
            o = judge(src, result, gates, seconds=time.perf_counter() - t0).outcome
        outcomes.append(o)
        if on_done is not None:
            on_done(o)
    return outcomes


# ---- what-if: faults and repeats (replay.faults, replay.flaky) -------------------------------


def check_faults(faults: Any) -> list[str]:
    """The one-replay specs of `faults` (`replay.faults.expand`), each checked.

    Raises:
        FaultSpecError: a spec that does not parse, quoting it (a `ValueError`).
    """
    if not faults:
        return []
    from replay.faults import expand, parse_faults

    specs = expand(list(faults) if isinstance(faults, tuple) else faults)
    for spec in specs:
        parse_faults(spec)
    return specs


def replay_whatif(
    sources: Iterable[str],
    options: RunOptions,
    *,
    policy: str = "fail",
    quarantine: set[str] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Replay each source once per fault spec (`check_faults`), `options.repeat` times each.

    A faulted replay matches when the agent copes (`replay.faults.judge`); a repeated one when
    its step sequence is stable or the flakiness `policy` (``fail`` / ``warn``, `quarantine`)
    lets it pass. `on_done` is called after each source.
    """
    from replay.flaky import repeat_outcome

    specs = check_faults(options.faults)
    kwargs = options.replay_kwargs()
    outcomes: list[Outcome] = []
    for src in sources:
        for spec in specs or [""]:
            if options.repeat > 1:
                one: Outcome = repeat_outcome(
                    src,
                    options.repeat,
                    policy=policy,
                    quarantine=quarantine,
                    faults=spec or None,
                    **kwargs,
                )
            else:
                one = fault_outcome(src, spec, **kwargs)
            outcomes.append(one)
        if on_done is not None:
            on_done(outcomes[-1])
    return outcomes


def fault_outcome(source: str, fault: str, **kwargs: Any) -> Outcome:
    """Replay `source` under `fault` (`replay_run` arguments in `kwargs`) and judge whether the
    agent coped (`replay.faults.judge`): a `replay.faults.FaultOutcome`."""
    from replay.faults import FaultOutcome
    from replay.faults import judge as coped
    from replay.replayer import replay_run

    t0 = time.perf_counter()
    try:
        result = replay_run(source, faults=fault, **kwargs)
    except REPLAY_ERRORS as exc:
        return FaultOutcome(str(source), None, "error", error=str(exc), fault=fault)
    problems = coped(result)
    return FaultOutcome(
        str(source),
        result.recorded.run_id,
        "diverged" if problems else "matched",
        result.diff,
        seconds=time.perf_counter() - t0,
        fault=fault,
        problems=problems,
        stop=result.stop_reason,
        tool_calls=result.replayed.tool_calls,
    )
