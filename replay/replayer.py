"""Replay: re-run an agent's code against a fixed tool layer that answers from a recording.

`replay_run` loads a `Recording` (`replay.recording`), resolves the agent under the trust model
(`replay.agents`), rebuilds its call, installs a `ReplaySession` (the replay layer,
`replay.replay_layer`) and seals the network while the agent runs, then diffs the replayed run
with the recording. Real tool bodies are never entered (unless a replay mode says so) and sockets
cannot connect. The replayed run is itself recorded (``replay_of`` set), so the diff compares two
records of one schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import importlib
import inspect
import os
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, cast

from replay.agents import check_explicit, resolve_agent
from replay.cassette import Cassette
from replay.context import session_var
from replay.diff import IgnoreRules, RunDiff, Trace, diff_traces
from replay.errors import EntrypointError, ExpiredSnapshotsError, StopRun
from replay.event_table import column_of, steps_of
from replay.models import Event, Run, Usage
from replay.network import sealed
from replay.processors import RedactionConfig
from replay.recording import Outputs, Recording, gc_paused, load_recording
from replay.replay_layer import ReplaySession

__all__ = [
    "ReplayResult",
    "ReplaySession",
    "Recording",
    "load_recording",
    "replay_run",
    "replay_run_async",
]

_CLOCKS = ("recorded", "real")

# ---- entrypoints ----------------------------------------------------------------------------


def resolve_entrypoint(entrypoint: str | None, *, agent_name: str = "?") -> Callable[..., Any]:
    """Import ``module:qualname`` that the *caller* named (``agent="app.agent:handle"``,
    ``--agent``).

    Never call this with an entrypoint read from a recording: that is data, see `resolve_agent`.

    Raises:
        EntrypointError: no entrypoint recorded, module not importable, attribute missing, not
        callable.
    """
    if not entrypoint:
        raise EntrypointError(
            f"run of agent {agent_name!r} has no recorded entrypoint (it was recorded with "
            "rec.run()): "
            "pass agent=your_function (CLI: --agent module:function)"
        )
    if ":" not in entrypoint:
        raise EntrypointError(
            f"entrypoint {entrypoint!r} is not of the form module:function (e.g. app.agent:handle)"
        )
    module, qualname = entrypoint.split(":", 1)
    if "<locals>" in qualname:
        raise EntrypointError(
            f"entrypoint {entrypoint} is a function defined inside another function and cannot be "
            "imported: "
            "pass agent= (CLI: --agent module:function) with the function to replay"
        )
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure, named with its cause
        raise EntrypointError(
            f"entrypoint {entrypoint}: module {module!r} cannot be imported "
            f"({type(exc).__name__}: {exc}); "
            "run from the project root, fix the import, or pass agent= (CLI: --agent "
            "module:function)"
        ) from exc
    obj: Any = mod
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise EntrypointError(
                f"entrypoint {entrypoint}: {getattr(obj, '__name__', module)!s} has no attribute "
                f"{part!r} "
                "(renamed or moved since the recording?); pass agent= (CLI: --agent "
                "module:function)"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise EntrypointError(
            f"entrypoint {entrypoint} is a {type(obj).__name__}, not a function: pass agent="
        )
    if "." in qualname and inspect.isfunction(obj):
        params = list(inspect.signature(obj).parameters)
        if params and params[0] == "self":
            raise EntrypointError(
                f"entrypoint {entrypoint} is a method and replay cannot build its instance: "
                f"pass agent=instance.{qualname.rsplit('.', 1)[1]}"
            )
    return cast(Callable[..., Any], obj)


def _call_args(fn: Callable[..., Any], run: Run) -> tuple[list[Any], dict[str, Any]]:
    """Rebuild the recorded call: bound arguments -> (args, kwargs) for `fn`'s signature.

    Raises:
        EntrypointError: the signature changed so the recorded input no longer fits.
    """
    if run.call_style == "value":
        return [run.input], {}
    recorded = dict(run.input or {}) if isinstance(run.input, dict) else {}
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], recorded
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    name = getattr(fn, "__name__", repr(fn))
    missing: list[str] = []
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            args.extend(recorded.pop(p.name, []) or [])
        elif p.kind == p.VAR_KEYWORD:
            kwargs.update(recorded.pop(p.name, {}) or {})
        elif p.name in recorded:
            if p.kind == p.POSITIONAL_ONLY:
                args.append(recorded.pop(p.name))
            else:
                kwargs[p.name] = recorded.pop(p.name)
        elif p.default is p.empty:
            missing.append(p.name)
    recorded.pop("*args", None)
    if recorded and any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        kwargs.update(recorded)
        recorded = {}
    if missing or recorded:
        problems = []
        if recorded:
            problems.append(
                f"the recorded input has parameter(s) {', '.join(map(repr, recorded))} "
                f"that {name}() no longer accepts"
            )
        if missing:
            problems.append(
                f"{name}() requires parameter(s) {', '.join(map(repr, missing))} "
                "that the recorded input does not have"
            )
        raise EntrypointError(
            f"cannot replay run {run.run_id}: {'; '.join(problems)} (the agent's signature "
            "changed since "
            "the recording): give new parameters a default, or pass agent= a wrapper that maps "
            "the old input"
        )
    return args, kwargs


# ---- the result -----------------------------------------------------------------------------


@dataclasses.dataclass
class ReplayResult:
    """What a replay did, next to what was recorded.

    Attributes:
        stop_reason: the replayed run's stop reason.
        steps: the replayed top-level steps (Events) in order.
        output: what the agent returned in the replay (the live Python value), None if it raised.
        exception: the exception the agent raised in the replay, if any.
        usage: the replayed run's usage.
        recorded: the original run row; `recording` has its events and snapshots.
        replayed: the replayed run row (``replay_of`` = the original's id).
        diff: the `RunDiff` of recorded vs replayed.
    """

    stop_reason: str | None
    #: the replayed steps as the diff read them (`steps` makes them `Event`s when read)
    step_rows: Sequence[Event]
    output: Any
    exception: BaseException | None
    usage: Usage
    recorded: Run
    replayed: Run
    recording: Recording
    diff: RunDiff
    replayed_snapshots: Mapping[str, tuple[Any, str | None, bool]] = dataclasses.field(
        default_factory=dict
    )
    #: the replayed run's events (run_start, steps, stop), made `Event`s when read
    event_rows: Sequence[Event] = dataclasses.field(default_factory=list)
    #: the HTTP requests the recording had no answer for (`replay.errors.UnrecordedRequest`), in
    # order
    unrecorded_http: list[Any] = dataclasses.field(default_factory=list)
    #: (recording's, replay's) redaction key fingerprints when they differ (see `replay.keys`)
    key_mismatch: tuple[str, str] | None = None
    #: replayed step id -> "live" (ran for real) or "args changed, answered from recording"
    marks: dict[int, str] = dataclasses.field(default_factory=dict, repr=False)

    @functools.cached_property
    def steps(self) -> list[Event]:
        """The replayed top-level steps (Events) in order."""
        return list(self.step_rows)

    @functools.cached_property
    def replayed_events(self) -> list[Event]:
        """The replayed run's events in store order: run_start, the steps, stop."""
        return list(self.event_rows)

    def __repr__(self) -> str:
        """The dataclass's repr, with the rows shown as the `steps` and `replayed_events` they
        make."""
        parts = []
        for f in dataclasses.fields(self):
            if f.repr:
                name = _SHOWN_AS.get(f.name, f.name)
                parts.append(f"{name}={getattr(self, name)!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def calls(self, tool: str) -> list[Event]:
        """The replayed steps that called `tool`, in order."""
        return [s for s in self.steps if s.tool == tool]

    @property
    def matched(self) -> bool:
        return self.diff.is_empty


_SHOWN_AS = {"step_rows": "steps", "event_rows": "replayed_events"}


def _prepare(
    source: Any,
    agent: Callable[..., Any] | str | None,
    db: Any,
    *,
    agents: Sequence[str] = (),
    project: str | os.PathLike[str] | None = None,
) -> tuple[Recording, Callable[..., Any], tuple[list[Any], dict[str, Any]]]:
    """Load the recording, resolve the agent, rebuild its call: every error before anything runs."""
    recording = source if isinstance(source, Recording) else load_recording(source, db=db)
    fn = resolve_replay_agent(recording.run, agent, agents=agents, project=project)
    return recording, fn, _call_args(fn, recording.run)


def resolve_replay_agent(
    run: Run,
    agent: Callable[..., Any] | str | None = None,
    *,
    agents: Sequence[str] = (),
    project: str | os.PathLike[str] | None = None,
) -> Callable[..., Any]:
    """The function a replay of `run` calls, under the trust model (see `replay.agents`).

    `agent` is the caller's choice (a function, or ``"module:function"`` the caller typed); without
    it, only an agent the project registered under the run's agent name is called.

    Raises:
        EntrypointError: nothing the project registered may be called; the message says how to
        register it.
    """
    if agent is None:
        return resolve_agent(
            run.agent, run.entrypoint, agents=agents, project=project, run_id=run.run_id
        )
    fn = resolve_entrypoint(agent, agent_name=run.agent) if isinstance(agent, str) else agent
    return check_explicit(fn, run.agent, run.run_id)


def _check_expired(recording: Recording, session: ReplaySession) -> None:
    """Refuse, before the agent runs, a replay that would hand it None for a pruned output.

    Steps of a tool that a stub always answers, or that runs live, need no snapshot.

    Raises:
        ExpiredSnapshotsError: naming each such step and since when its snapshot expired.
    """
    stubs = session.stubs if session.stub_mode == "always" else {}
    missing = [s for s in recording.expired if s[1] not in stubs and not session.live.covers(s[1])]
    if missing:
        tools = sorted({tool for _, tool, _ in missing})
        raise ExpiredSnapshotsError(
            recording.run.run_id,
            missing,
            fix="To replay it anyway, answer those tools with stubs "
            f"({', '.join(map(repr, tools))})",
        )


def _invoke(
    session: ReplaySession,
    fn: Callable[..., Any],
    recording: Recording,
    call: tuple[list[Any], dict[str, Any]],
) -> Any:
    """Call the agent inside the session; a plain function gets a run opened around it."""
    args, kwargs = call
    if _is_recorded_agent(fn):
        return fn(*args, **kwargs)
    run = recording.run
    handle = session.recorder.run(
        run.agent,
        input=run.input,
        versions=run.versions,
        labels=run.labels,
        entrypoint=run.entrypoint,
    )
    handle.input = (run.call_style, run.input)
    # rec.run() records an output only when the code set one: compare like with like.
    keep_output = run.output_sha is not None
    if inspect.iscoroutinefunction(fn):

        async def inner() -> Any:
            async with handle:
                out = await fn(*args, **kwargs)
                if keep_output:
                    handle.set_output(out)
                return out

        return inner()
    with handle:
        out = fn(*args, **kwargs)
        if keep_output:
            handle.set_output(out)
        return out


def _is_recorded_agent(fn: Any) -> bool:
    return bool(getattr(fn, "__replay_agent__", False))


def _finish(
    session: ReplaySession,
    recording: Recording,
    output: Any,
    exception: BaseException | None,
    ignore: Any,
    ordered: bool,
) -> ReplayResult:
    replayed, events, snaps = session.replayed()
    steps = steps_of(events)
    rules = IgnoreRules.parse(ignore)
    rec_trace = recording.trace()
    new_trace = Trace(run=replayed, steps=steps, outputs=Outputs(snaps))
    if rec_trace.http_attempts is not None:
        from replay.http import replayed_attempts

        new_trace.http_attempts, new_trace.http_unrecorded = replayed_attempts(
            session.http_playback, session.answered, rec_trace.http_attempts, events
        )
    if not ordered:
        rec_trace = dataclasses.replace(rec_trace, steps=sorted(rec_trace.steps, key=_order_key))
        new_trace = dataclasses.replace(new_trace, steps=sorted(new_trace.steps, key=_order_key))
    diff = diff_traces(rec_trace, new_trace, ignore=rules)
    _mark(diff, session.marks, new_trace.steps)
    return ReplayResult(
        stop_reason=replayed.stop_reason,
        step_rows=steps,
        output=output,
        exception=exception,
        usage=replayed.usage,
        recorded=recording.run,
        replayed=replayed,
        recording=recording,
        diff=diff,
        replayed_snapshots=snaps,
        event_rows=events,
        unrecorded_http=list(getattr(session.http_playback, "unrecorded", [])),
        marks=dict(session.marks),
    )


def _mark(diff: RunDiff, marks: Mapping[int, str], steps: Sequence[Event]) -> None:
    """Note on each change of a live or loosely matched step what answered it.

    `steps` are the replayed steps the diff indexes (their step ids read as a column: a change's
    events are not made for this).
    """
    if not marks:
        return
    ids = column_of(steps, "step_id")
    for change in diff.changes:
        step_id = ids[change.replayed_index] if change.replayed_index is not None else None
        note = marks.get(step_id) if step_id is not None else None
        if note and note not in change.note:
            change.note = f"{change.note}; {note}" if change.note else note
            change.detail = f"{change.detail} ({note})" if change.detail else note


def _order_key(e: Event) -> tuple[str, str, str, str]:
    return (e.kind, e.tool or "", e.args_sha or "", e.status or "")


def replay_run(
    source: str | os.PathLike[str] | Cassette | Recording,
    agent: Callable[..., Any] | str | None = None,
    stubs: Mapping[str, Callable[..., Any]] | None = None,
    on_unrecorded: str = "error",
    ignore: Any = None,
    *,
    db: str | os.PathLike[str] | None = None,
    ordered: bool = True,
    redaction: RedactionConfig | None = None,
    record_to: str | os.PathLike[str] | None = None,
    agents: Sequence[str] = (),
    project: str | os.PathLike[str] | None = None,
    allow_network: bool = False,
    allow_subprocess: bool = False,
    clock: str = "recorded",
    stub_mode: str = "always",
    match: Mapping[str, Any] | None = None,
    live: Iterable[str] | None = None,
    faults: Any = None,
) -> ReplayResult:
    """Replay a recorded run against the code checked out now and diff it with the recording.

    `source` is a run id in the store `db` or a cassette path; the other arguments are
    `replay.batch.RunOptions`' attributes (documented there), plus `redaction` (the replayed
    run's redaction) and `allow_network` / `allow_subprocess` (let the agent open sockets and
    resolve names / start processes; both sealed by default).

    Raises:
        RunNotFoundError, CassetteDecodeError, EntrypointError, ExpiredSnapshotsError: before
            anything runs (the last when outputs the replay needs were pruned; stubs cover them).
        replay.faults.FaultSpecError: a bad `faults` spec, before the agent runs.
    """
    replay = _Replay(**locals()).start()
    try:
        with replay.running() as out:
            out.value = replay.invoke()
            if inspect.isawaitable(out.value):
                out.value = asyncio.run(_await(out.value))
        return replay.conclude(out)
    finally:
        replay.release()


@dataclasses.dataclass
class _Outcome:
    """What the agent returned in the replay, or what it raised."""

    value: Any = None
    exception: BaseException | None = None


@dataclasses.dataclass
class _Replay:
    """One replay: the options `replay_run` / `replay_run_async` took (passed on once, here),
    then what `start` prepared (the session, the recording, the agent and its call)."""

    source: Any
    agent: Callable[..., Any] | str | None
    stubs: Mapping[str, Callable[..., Any]] | None
    on_unrecorded: str
    ignore: Any
    db: str | os.PathLike[str] | None
    ordered: bool
    redaction: RedactionConfig | None
    record_to: str | os.PathLike[str] | None
    agents: Sequence[str]
    project: str | os.PathLike[str] | None
    allow_network: bool
    allow_subprocess: bool
    clock: str
    stub_mode: str
    match: Mapping[str, Any] | None
    live: Iterable[str] | None
    faults: Any
    session: ReplaySession = dataclasses.field(init=False)
    recording: Recording = dataclasses.field(init=False)
    fn: Callable[..., Any] = dataclasses.field(init=False)
    call: tuple[list[Any], dict[str, Any]] = dataclasses.field(init=False)
    gc_frozen: bool = dataclasses.field(default=False, init=False)

    def start(self) -> _Replay:
        """Everything the replay needs before the agent runs; every error is raised here.

        A long recording is then kept out of the garbage collector's scans until `release`
        (`gc.freeze`; `replay_run` releases it however the replay ends): it lives until the
        replay ends, and at 100,000 steps the collector otherwise walks it several times, from
        the first allocation after it is loaded on.
        """
        _check_clock(self.clock)
        collecting = gc.isenabled() and gc.get_freeze_count() == 0
        # Loading and indexing a long recording (resolving the agent may import its module).
        with gc_paused():
            self.recording, self.fn, self.call = _prepare(
                self.source, self.agent, self.db, agents=self.agents, project=self.project
            )
            self.session = _new_session(
                self.recording,
                stubs=self.stubs,
                stub_mode=self.stub_mode,
                match=self.match,
                live=self.live,
                faults=self.faults,
                on_unrecorded=self.on_unrecorded,
                redaction=self.redaction,
                record_to=self.record_to,
            )
            if collecting and len(self.recording.events) >= GC_FREEZE_EVENTS:
                gc.freeze()  # before the collector runs again: nothing scanned the recording
                self.gc_frozen = True
        return self

    def release(self) -> None:
        """Hand what `start` froze back to the garbage collector (its oldest generation)."""
        if self.gc_frozen:
            self.gc_frozen = False
            gc.unfreeze()

    def running(self) -> contextlib.AbstractContextManager[_Outcome]:
        """The block the agent runs in (`_agent_running`)."""
        return _agent_running(self.session, self.clock, self.allow_network, self.allow_subprocess)

    def invoke(self) -> Any:
        """Call the agent (an awaitable for an async one)."""
        return _invoke(self.session, self.fn, self.recording, self.call)

    def conclude(self, out: _Outcome) -> ReplayResult:
        """The replayed run diffed with the recording; the session closed."""
        try:
            with gc_paused():  # the replayed run's events and the diff: this library's code only
                result = _finish(
                    self.session,
                    self.recording,
                    out.value,
                    out.exception,
                    self.ignore,
                    self.ordered,
                )
                if self.gc_frozen:
                    # What the replay built goes with the recording: `release` hands all of it to
                    # the oldest generation, unscanned (young, it would be scanned at once).
                    gc.freeze()
            result.key_mismatch = self.session.key_mismatch
            return result
        finally:
            self.session.close()


@contextlib.contextmanager
def _agent_running(
    session: ReplaySession, clock: str, allow_network: bool, allow_subprocess: bool
) -> Iterator[_Outcome]:
    """The replay layer installed, the process sealed and the clock set while the agent runs.

    What the agent raises is kept in the outcome, not raised: ``sys.exit()`` in the agent ends
    it, not the replay.
    """
    out = _Outcome()
    with (
        _installed(session, allow_network=allow_network, allow_subprocess=allow_subprocess),
        _recorded_clock(session.recording, clock),
    ):
        try:
            yield out
        except (Exception, StopRun, SystemExit) as exc:
            out.exception = exc


#: From this many events on, a replay keeps the loaded recording out of the garbage collector's
#: scans until it ends (`gc.freeze`, see `_Replay.start`).
GC_FREEZE_EVENTS = 5_000


def _new_session(recording: Recording, **options: Any) -> ReplaySession:
    """The replay layer for `recording`; refuses pruned outputs nothing else answers."""
    session = ReplaySession(recording, **options)
    try:
        _check_expired(recording, session)
    except BaseException:
        session.close()
        raise
    return session


def _check_clock(clock: str) -> None:
    if clock not in _CLOCKS:
        raise ValueError(
            f"clock={clock!r}: use 'recorded' (the run's own wall-clock time, the default) or "
            "'real'"
        )


@contextlib.contextmanager
def _recorded_clock(recording: Recording, clock: str) -> Iterator[None]:
    """The wall clock set to the recorded run's start, ticking on (time-machine), for the block.

    Only wall-clock time travels (``time.time``, ``datetime.now``, ``date.today``, ...):
    ``time.perf_counter`` and ``time.monotonic`` do not, so recorded durations and timeouts stay
    real.
    """
    started = recording.run.started_ms
    if clock == "real" or not started:
        yield
        return
    import time_machine

    with time_machine.travel(started / 1000, tick=True):
        yield


@contextlib.contextmanager
def _installed(
    session: ReplaySession, *, allow_network: bool = False, allow_subprocess: bool = False
) -> Iterator[None]:
    """The fixed tool layer in place and the replay sealed (`replay.network.sealed`) for the block.

    A recording with HTTP interactions (``http=True``) also has them played back by vcrpy (record
    mode none, see `replay.http`): an HTTP call with no recorded answer raises `UnrecordedRequest`
    inside the agent, naming the nearest recorded request.
    """
    token = session_var.set(session)
    try:
        with (
            sealed(allow_network=allow_network, allow_subprocess=allow_subprocess),
            contextlib.ExitStack() as http,
        ):
            if session.recording.http:
                from replay.http import http_playback

                session.http_playback = http.enter_context(
                    http_playback(
                        session.recording.http,
                        session.redactor,
                        session.source_run_id,
                        loose=session.http_loose,
                    )
                )
                if session.faults is not None and session.faults.http_targets:
                    session.http_playback.faults = session.faults
                    session.http_playback.marks = session.marks
            yield
    finally:
        session_var.reset(token)


_P = ParamSpec("_P")


def _signature_of(
    sync: Callable[_P, ReplayResult],
) -> Callable[
    [Callable[..., Coroutine[Any, Any, ReplayResult]]],
    Callable[_P, Coroutine[Any, Any, ReplayResult]],
]:
    """Give an ``async def f(*args, **kwargs)`` the parameters of `sync`: for mypy (ParamSpec)
    and for `inspect.signature` / `help` (``__signature__``), so they are declared once."""

    def give(
        fn: Callable[..., Coroutine[Any, Any, ReplayResult]],
    ) -> Callable[_P, Coroutine[Any, Any, ReplayResult]]:
        # Callable declares no __signature__; a function takes it and inspect reads it
        fn.__signature__ = inspect.signature(sync)  # type: ignore[attr-defined]
        return fn

    return give


def _bind(
    sync: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """`args`/`kwargs` as `sync` would take them, defaults filled (TypeError as a call would)."""
    bound = inspect.signature(sync).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


async def _await(aw: Any) -> Any:
    return await aw


@_signature_of(replay_run)
async def replay_run_async(*args: Any, **kwargs: Any) -> ReplayResult:
    """`replay_run` for async agents inside a running event loop.

    With ``clock="recorded"`` the whole process sees the recorded time while the agent runs
    (other tasks of the loop included); pass ``clock="real"`` where that matters.
    """
    replay = _Replay(**_bind(replay_run, args, kwargs)).start()
    try:
        with replay.running() as out:
            out.value = replay.invoke()
            if inspect.isawaitable(out.value):
                out.value = await out.value
        return replay.conclude(out)
    finally:
        replay.release()
