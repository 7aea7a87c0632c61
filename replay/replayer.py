"""Replay: re-run an agent's code against a fixed tool layer that answers from a recording.

Every ``@rec.tool`` / ``@rec.model`` call during a replay is matched by (tool, args_sha) in order
of occurrence and answered with the recorded output, or the recorded error raised again. Real
tool bodies are never entered and sockets cannot connect. The replayed run is itself recorded
(into a temporary store, with ``replay_of`` set), so the diff compares two records of one schema.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import importlib
import inspect
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from replay.agents import check_explicit, resolve_agent
from replay.cassette import Cassette, load_cassette
from replay.context import _session, _step
from replay.diff import IgnoreRules, RunDiff, Trace, diff_traces
from replay.errors import EntrypointError, RecordedToolError, ReplayError, StopRun, UnrecordedCall
from replay.fidelity import rebuild_error, rebuild_value
from replay.hashing import sha_of_canonical, thaw
from replay.keys import ENV_VAR, RedactionKeyMismatchWarning, mismatch_message
from replay.models import Event, Run, Usage
from replay.network import sealed
from replay.processors import RedactionConfig, Redactor
from replay.writer import TRUNCATED_TAG

__all__ = [
    "ReplayResult",
    "ReplaySession",
    "Recording",
    "load_recording",
    "replay_run",
    "replay_run_async",
]

_ON_UNRECORDED = ("error", "none")
_CLOCKS = ("recorded", "real")


@dataclasses.dataclass
class Recording:
    """A recorded run from a store or a cassette: the run row, its events, its snapshots."""

    run: Run
    events: list[Event]
    snapshots: Mapping[str, tuple[Any, str | None, bool]]  # sha -> (value, type name, truncated)
    source: str  # "store:<path>" or the cassette path
    secret_key: bytes | None = None
    cassette: Cassette | None = None
    http: list[dict[str, Any]] = dataclasses.field(
        default_factory=list
    )  # recorded HTTP interactions
    #: steps whose output snapshot was pruned: (step_id, tool, expired_since_ms); replay refuses them
    expired: list[tuple[int, str, int]] = dataclasses.field(default_factory=list)

    @property
    def steps(self) -> list[Event]:
        """Top-level tool and model steps (calls made inside another tool are answered with it)."""
        return [
            e
            for e in self.events
            if e.kind in ("tool_result", "model_result") and e.parent_step_id is None
        ]

    def trace(self) -> Trace:
        return Trace(
            run=self.run,
            steps=self.steps,
            outputs=_Outputs(self.snapshots),
            http_attempts=self.http_attempts(),
        )

    def http_attempts(self) -> dict[int | None, int] | None:
        """HTTP attempts per top-level step id (None key: outside tool steps); None without step data."""
        if not self.http:
            return None
        from replay.http import attempts_by_step, rollup

        return rollup(attempts_by_step(self.http), self.events)


class _Outputs(Mapping[str, Any]):
    """sha -> redacted value, read lazily (a 10,000-step run need not decode every snapshot)."""

    def __init__(self, snapshots: Mapping[str, tuple[Any, str | None, bool]]) -> None:
        self._s = snapshots

    def __getitem__(self, sha: str) -> Any:
        return self._s[sha][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._s)

    def __len__(self) -> int:
        return len(self._s)


def _is_cassette_path(source: str) -> bool:
    return source.endswith(".json") or os.sep in source or Path(source).is_file()


def load_recording(
    source: str | os.PathLike[str] | Cassette, *, db: str | os.PathLike[str] | None = None
) -> Recording:
    """A recording by run id (from the store `db`, default ``$REPLAY_DB`` / ``./replay.db``) or cassette path.

    Raises:
        RunNotFoundError: no such run in the store.
        CassetteDecodeError: the cassette is missing or broken.
    """
    if isinstance(source, Cassette):
        return _from_cassette(source, "<cassette>")
    src = os.fspath(source)
    if _is_cassette_path(src):
        return _from_cassette(load_cassette(src), src)
    from replay.recorder import default_db
    from replay.store import Store

    path = os.fspath(db) if db is not None else default_db()
    if not Path(path).exists():
        from replay.errors import RunNotFoundError

        raise RunNotFoundError(src, f"{path} (no such file: record runs first or pass --db)", 0)
    store = Store(path)
    try:
        run = store.find_run(src) if hasattr(store, "find_run") else store.get_run(src)
        events = store.events(run.run_id)
        # Read every snapshot replay needs now, in a few queries: the store is closed after loading.
        shas = [e.output_sha for e in events if e.output_sha] + [
            run.input_sha or "",
            run.output_sha or "",
        ]
        found = store.snapshots(shas)
        snaps = {
            sha: (_thaw_snapshot(store, run, sha, body), type_name, truncated)
            for sha, (body, type_name, truncated) in found.items()
        }
        from replay.cassette import _stored_http

        run = _ordered_input(run, snaps)
        return Recording(
            run=run,
            events=events,
            snapshots=snaps,
            source=f"store:{path}",
            secret_key=store.secret_key,
            http=_stored_http(store, run.http_sha),
            expired=store.expired_steps(run, events),
        )
    finally:
        store.close()


def _thaw_snapshot(store: Any, run: Run, sha: str, body: bytes) -> Any:
    """A stored snapshot's value; a damaged one is named (store, run, sha), never a raw traceback."""
    try:
        return thaw(body)
    except (ValueError, RecursionError) as exc:
        from replay.errors import CorruptRowError

        why = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        raise CorruptRowError(
            str(store.path),
            "snapshots",
            run.run_id,
            f"body of snapshot {sha[:24]}",
            why,
            where=f"sha = '{sha[:24]}'",
        ) from None


def _ordered_input(run: Run, snaps: Mapping[str, tuple[Any, str | None, bool]]) -> Run:
    """The run with its input as its snapshot keeps it: in the caller's key order.

    The run row stores the input canonical (sorted); the agent is called with the order it got.
    """
    snap = snaps.get(run.input_sha) if run.input_sha else None
    if snap is None or snap[2] or snap[0] != run.input:
        return run  # truncated, or not the same value: keep the row's
    return run.model_copy(update={"input": snap[0]})


def _from_cassette(cas: Cassette, path: str) -> Recording:
    snaps = {sha: (s.body, s.type, s.truncated) for sha, s in cas.snapshots.items()}
    # A cassette exported with --allow-expired lacks some outputs: the same refusal as from a store.
    expired = [
        (e.step_id or 0, e.tool or "?", e.ts_ms + 14 * 86_400_000)
        for e in cas.events
        if e.kind in ("tool_result", "model_result")
        and e.parent_step_id is None
        and e.output_sha
        and e.output_sha not in snaps
    ]
    return Recording(
        run=_ordered_input(cas.run, snaps),
        events=cas.events,
        snapshots=snaps,
        source=path,
        cassette=cas,
        http=list(cas.http),
        expired=expired,
    )


# ---- rebuilding recorded values -------------------------------------------------------------


def _rebuild_value(value: Any, type_name: str | None) -> Any:
    """The recorded value as the tool returned it: its types (`replay.fidelity`) and key order.

    Always a fresh object: the agent may mutate what a tool returned without changing the recording.
    """
    if isinstance(value, dict) and value.get(TRUNCATED_TAG) is True:
        warnings.warn(
            f"the recorded output {value.get('sha')} was truncated at record time "
            f"({value.get('size')} bytes); replay returns the truncation marker",
            stacklevel=3,
        )
        return value
    return rebuild_value(value, type_name)


def _rebuild_error(body: Any) -> BaseException:
    """The recorded error as the client's own class (`replay.fidelity.rebuild_error`).

    Only classes from modules the agent has already imported; else `RecordedToolError` naming it.
    """
    if not isinstance(body, dict):
        return RecordedToolError("UnknownError", str(body))
    display = str(body.get("error", "Error"))
    message = str(body.get("message", ""))
    try:
        exc = rebuild_error(body)
    except Exception:  # noqa: BLE001 - cannot rebuild: fall back to RecordedToolError
        exc = None
    return exc if exc is not None else RecordedToolError(display, message)


# ---- the session: the fixed tool layer ------------------------------------------------------


def _local_key_for(fingerprint: str | None) -> bytes | None:
    """The key of the default store (``$REPLAY_DB`` / ``./replay.db``) when a cassette was made with it.

    A developer who exports a run and replays the cassette on the same machine gets the same
    pseudonyms without setting ``$REPLAY_REDACTION_KEY``. Never creates a key file.
    """
    if not fingerprint:
        return None
    from replay.keys import _read_key_file, key_file_path
    from replay.keys import fingerprint as fp
    from replay.recorder import default_db

    try:
        key = _read_key_file(key_file_path(default_db()))
    except Exception:  # noqa: BLE001 - an unreadable key file only means: no local key
        return None
    return key if key is not None and fp(key) == fingerprint else None


class ReplaySession:
    """The fixed tool layer for one replay; installed in a contextvar while the agent runs."""

    def __init__(
        self,
        recording: Recording,
        *,
        stubs: Mapping[str, Callable[..., Any]] | None = None,
        on_unrecorded: str = "error",
        redaction: RedactionConfig | None = None,
        record_to: str | os.PathLike[str] | None = None,
    ) -> None:
        from replay.recorder import Recorder, shared_redaction_key

        if on_unrecorded not in _ON_UNRECORDED:
            raise ValueError(
                f"on_unrecorded={on_unrecorded!r}: use one of {', '.join(_ON_UNRECORDED)}"
            )
        self.recording = recording
        self.source_run_id = recording.run.run_id
        self.stubs = dict(stubs or {})
        self.faults: Any = None  # a replay.faults.FaultPlan, set by replay_run(faults=...)
        self.on_unrecorded = on_unrecorded
        # The recording store's key, so values the agent builds itself pseudonymise as they did then.
        env = shared_redaction_key()
        local = (
            None
            if env or recording.secret_key
            else _local_key_for(getattr(recording.run, "key_fingerprint", None))
        )
        key = env or recording.secret_key or local or os.urandom(32)
        source = (
            "$REPLAY_REDACTION_KEY"
            if env
            else "the store's key"
            if recording.secret_key
            else (
                "the key file of the default store"
                if local
                else f"a random key: ${ENV_VAR} is not set"
            )
        )
        self.redactor = Redactor(key, redaction or RedactionConfig())
        #: (recorded fingerprint, this replay's fingerprint) when they differ, else None
        self.key_mismatch: tuple[str, str] | None = None
        recorded_fp = getattr(recording.run, "key_fingerprint", None)
        if recorded_fp and recorded_fp != self.redactor.key_fingerprint:
            self.key_mismatch = (recorded_fp, self.redactor.key_fingerprint)
            warnings.warn(
                mismatch_message(
                    recording.run.run_id, recorded_fp, self.redactor.key_fingerprint, source
                ),
                RedactionKeyMismatchWarning,
                stacklevel=3,
            )
        # The replayed run is recorded like any run: into `record_to` when given (so `replay show`
        # works on it afterwards), else into a temporary store removed after the replay.
        self.store_dir: str | None = None
        if record_to is not None:
            self.store_path = os.fspath(record_to)
        else:
            self.store_dir = tempfile.mkdtemp(prefix="agent-replay-")
            self.store_path = os.path.join(self.store_dir, "replay.db")
        self.recorder = Recorder(self.store_path, redaction=redaction, redaction_key=key)
        self.replayed_run_id: str | None = None  # set by the recorder when the agent's run begins
        # HTTP: the playback cassette (replay.http.HttpPlayback) while the recording has HTTP, and
        # replayed step id -> the recorded step id that answered it (for HTTP attempts per step).
        self.http_playback: Any = None
        self.answered: dict[int, int] = {}
        self.http_loose = recording.secret_key is None or key != recording.secret_key
        self.index: dict[tuple[str, str], collections.deque[Event]] = collections.defaultdict(
            collections.deque
        )
        self.recorded_tools: dict[str, list[str]] = collections.defaultdict(list)
        # recorded concurrent group -> its id in the replayed run (the first replayed member's step)
        self.groups: dict[int, int] = {}
        for e in recording.steps:
            if e.tool is not None and e.args_sha is not None:
                self.index[(e.tool, e.args_sha)].append(e)
                self.recorded_tools[e.tool].append(e.args_sha)

    def args_sha(self, spec: Any, frozen_args: bytes) -> str:
        return sha_of_canonical(self.redactor.canonical(thaw(frozen_args)))

    def _lookup(self, spec: Any, args_sha: str) -> Event | None:
        # Recorded tool names passed the redactor: look the live name up the same way.
        queue = self.index.get((self.redactor.redact_name(spec.name), args_sha))
        if queue:
            try:
                return queue.popleft()
            except IndexError:  # emptied by a parallel call between the check and the pop
                return None
        return None

    def _unrecorded(self, spec: Any, args_sha: str) -> UnrecordedCall:
        return UnrecordedCall(
            spec.name,
            args_sha,
            self.recorded_tools.get(spec.name, []),
            recorded_tools=list(self.recorded_tools),
        )

    def _answer(
        self, recorded: Event
    ) -> tuple[Any, BaseException | None, tuple[str, str, str] | None, str | None]:
        """(value, error to raise, the recorded error's names and message to record it under)."""
        snap = self.recording.snapshots.get(recorded.output_sha) if recorded.output_sha else None
        if recorded.status == "error":
            body = snap[0] if snap else {"error": recorded.error or "Error"}
            names = (
                (
                    recorded.error or "Error",
                    str(body.get("module", "")),
                    str(body.get("qualname", "")),
                )
                if isinstance(body, dict)
                else (recorded.error or "Error", "", "")
            )
            # Record the replayed step under the recorded name: a rebuilt exception may lack what
            # made the name (an HTTP status), and RecordedToolError stands in for the original.
            message = str(body.get("message", "")) if isinstance(body, dict) else str(body)
            return None, _rebuild_error(body), names, message
        if snap is None:
            return None, None, None, None
        return _rebuild_value(snap[0], snap[1]), None, None, None

    def answer(self, st: Any, spec: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        rec = st.recorder
        step_id, frozen = rec._enter_step(st, spec, args, kwargs)
        t0 = time.perf_counter_ns()
        sha = self.args_sha(spec, frozen)
        parent = _step.get()
        stub = self._stub_for(spec, sha)
        if stub is not None:
            token = _step.set(step_id)  # tools the stub calls are recorded as nested in this step
            try:
                result = stub(*args, **kwargs)
            except BaseException as exc:
                rec._finish_step(st, spec, step_id, parent, frozen, t0, exc=exc, args_sha=sha)
                raise
            finally:
                _step.reset(token)
            if inspect.isawaitable(result):
                raise ReplayError(
                    f"stub for {spec.name} returned an awaitable: the tool is sync, so the stub must be too"
                )
            rec._finish_step(st, spec, step_id, parent, frozen, t0, result=result, args_sha=sha)
            return result
        recorded = self._lookup(spec, sha)
        if recorded is None:
            if self.on_unrecorded == "none":
                rec._finish_step(st, spec, step_id, parent, frozen, t0, result=None, args_sha=sha)
                return None
            missing = self._unrecorded(spec, sha)
            rec._finish_step(st, spec, step_id, parent, frozen, t0, exc=missing, args_sha=sha)
            raise missing
        if recorded.step_id is not None:
            self.answered[step_id] = recorded.step_id
        value, error, names, message = self._answer(recorded)
        # Answers are instant, so parallel calls may not overlap in the replay (and sequential ones
        # may): a step answered from the recording takes the recorded step's group (0: none), in
        # the replayed run's numbering, and a bless keeps the recording's groups.
        group = (
            0
            if recorded.concurrent_group is None
            else self.groups.setdefault(recorded.concurrent_group, step_id)
        )
        if error is not None:
            rec._finish_step(
                st,
                spec,
                step_id,
                parent,
                frozen,
                t0,
                exc=error,
                args_sha=sha,
                error_names=names,
                error_message=message,
                output_sha=recorded.output_sha,
                concurrent_group=group,
            )
            raise error
        rec._finish_step(
            st,
            spec,
            step_id,
            parent,
            frozen,
            t0,
            result=value,
            args_sha=sha,
            output_sha=recorded.output_sha,
            concurrent_group=group,
        )
        if spec.kind == "model_result":
            rec._check_budget(st)
        return value

    # ---- what-if hook: faults (replay.faults); to move onto the tool-layer seam ----------------

    def _stub_for(self, spec: Any, args_sha: str) -> Callable[..., Any] | None:
        """What answers this call instead of the recording: a planned fault, else its stub."""
        stub = self.stubs.get(spec.name)
        if self.faults is None:
            return stub
        return self.faults.stub_for(  # type: ignore[no-any-return]
            spec.name, stub, lambda: self._recorded_value(spec, args_sha)
        )

    def _recorded_value(self, spec: Any, args_sha: str) -> Any:
        """The recorded answer to this call (used up), its error raised; else `UnrecordedCall`."""
        recorded = self._lookup(spec, args_sha)
        if recorded is None:
            raise self._unrecorded(spec, args_sha)
        value, error, _, _ = self._answer(recorded)
        if error is not None:
            raise error
        return value

    # ---- end of the what-if hook ---------------------------------------------------------------

    async def answer_async(
        self, st: Any, spec: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        stub = self.stubs.get(spec.name)
        if stub is not None and inspect.iscoroutinefunction(stub):
            rec = st.recorder
            step_id, frozen = rec._enter_step(st, spec, args, kwargs)
            t0 = time.perf_counter_ns()
            sha = self.args_sha(spec, frozen)
            try:
                result = await stub(*args, **kwargs)
            except BaseException as exc:
                rec._finish_step(st, spec, step_id, _step.get(), frozen, t0, exc=exc, args_sha=sha)
                raise
            rec._finish_step(
                st, spec, step_id, _step.get(), frozen, t0, result=result, args_sha=sha
            )
            return result
        return self.answer(st, spec, args, kwargs)

    def close(self) -> None:
        self.recorder.close()
        if self.store_dir is not None:
            shutil.rmtree(self.store_dir, ignore_errors=True)


# ---- entrypoints ----------------------------------------------------------------------------


def resolve_entrypoint(entrypoint: str | None, *, agent_name: str = "?") -> Callable[..., Any]:
    """Import ``module:qualname`` that the *caller* named (``agent="app.agent:handle"``, ``--agent``).

    Never call this with an entrypoint read from a recording: that is data, see `resolve_agent`.

    Raises:
        EntrypointError: no entrypoint recorded, module not importable, attribute missing, not callable.
    """
    if not entrypoint:
        raise EntrypointError(
            f"run of agent {agent_name!r} has no recorded entrypoint (it was recorded with rec.run()): "
            "pass agent=your_function (CLI: --agent module:function)"
        )
    if ":" not in entrypoint:
        raise EntrypointError(
            f"entrypoint {entrypoint!r} is not of the form module:function (e.g. app.agent:handle)"
        )
    module, qualname = entrypoint.split(":", 1)
    if "<locals>" in qualname:
        raise EntrypointError(
            f"entrypoint {entrypoint} is a function defined inside another function and cannot be imported: "
            "pass agent= (CLI: --agent module:function) with the function to replay"
        )
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure, named with its cause
        raise EntrypointError(
            f"entrypoint {entrypoint}: module {module!r} cannot be imported ({type(exc).__name__}: {exc}); "
            "run from the project root, fix the import, or pass agent= (CLI: --agent module:function)"
        ) from exc
    obj: Any = mod
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise EntrypointError(
                f"entrypoint {entrypoint}: {getattr(obj, '__name__', module)!s} has no attribute {part!r} "
                "(renamed or moved since the recording?); pass agent= (CLI: --agent module:function)"
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
    return obj


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
            f"cannot replay run {run.run_id}: {'; '.join(problems)} (the agent's signature changed since "
            "the recording): give new parameters a default, or pass agent= a wrapper that maps the old input"
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
    steps: list[Event]
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
    replayed_events: list[Event] = dataclasses.field(default_factory=list)
    #: the HTTP requests the recording had no answer for (`replay.errors.UnrecordedRequest`), in order
    unrecorded_http: list[Any] = dataclasses.field(default_factory=list)
    #: (recording's, replay's) redaction key fingerprints when they differ (see `replay.keys`)
    key_mismatch: tuple[str, str] | None = None

    def calls(self, tool: str) -> list[Event]:
        """The replayed steps that called `tool`, in order."""
        return [s for s in self.steps if s.tool == tool]

    @property
    def matched(self) -> bool:
        return self.diff.is_empty


def _prepare(
    source: Any,
    agent: Callable[..., Any] | str | None,
    db: Any,
    *,
    agents: Sequence[str] = (),
    project: str | os.PathLike[str] | None = None,
) -> tuple[Recording, Callable[..., Any], tuple[list[Any], dict[str, Any]]]:
    """Load the recording, resolve the agent and rebuild its call: every error before anything runs."""
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
        EntrypointError: nothing the project registered may be called; the message says how to register it.
    """
    if agent is None:
        return resolve_agent(
            run.agent, run.entrypoint, agents=agents, project=project, run_id=run.run_id
        )
    fn = resolve_entrypoint(agent, agent_name=run.agent) if isinstance(agent, str) else agent
    return check_explicit(fn, run.agent, run.run_id)


def _check_expired(recording: Recording, stubs: Mapping[str, Any] | None) -> None:
    """Refuse, before the agent runs, a replay that would hand it None for a pruned output.

    Steps of a tool answered by a stub need no snapshot.

    Raises:
        ExpiredSnapshotsError: naming each such step and since when its snapshot expired.
    """
    missing = [s for s in recording.expired if not stubs or s[1] not in stubs]
    if missing:
        from replay.errors import ExpiredSnapshotsError

        tools = sorted({tool for _, tool, _ in missing})
        raise ExpiredSnapshotsError(
            recording.run.run_id,
            missing,
            fix=f"To replay it anyway, answer those tools with stubs ({', '.join(map(repr, tools))})",
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
    from replay.store import Store

    session.recorder.flush()
    store = Store(session.store_path)
    try:
        if session.replayed_run_id is None:
            raise ReplayError(
                f"the replay of {recording.run.run_id} recorded no run: is the agent decorated with @rec.agent, "
                "and was it called?"
            )
        replayed = store.get_run(session.replayed_run_id)
        events = store.events(replayed.run_id)
        found = store.snapshots(
            [e.output_sha for e in events if e.output_sha]
            + [replayed.input_sha, replayed.output_sha]
        )  # type: ignore[list-item]
        snaps = {
            sha: (thaw(body), type_name, truncated)
            for sha, (body, type_name, truncated) in found.items()
        }
    finally:
        store.close()
    steps = [
        e for e in events if e.kind in ("tool_result", "model_result") and e.parent_step_id is None
    ]
    rules = IgnoreRules.parse(ignore)
    rec_trace = recording.trace()
    new_trace = Trace(run=replayed, steps=steps, outputs=_Outputs(snaps))
    if rec_trace.http_attempts is not None:
        from replay.http import replayed_attempts

        new_trace.http_attempts, new_trace.http_unrecorded = replayed_attempts(
            session.http_playback, session.answered, rec_trace.http_attempts, events
        )
    if not ordered:
        rec_trace = dataclasses.replace(rec_trace, steps=sorted(rec_trace.steps, key=_order_key))
        new_trace = dataclasses.replace(new_trace, steps=sorted(new_trace.steps, key=_order_key))
    diff = diff_traces(rec_trace, new_trace, ignore=rules)
    return ReplayResult(
        stop_reason=replayed.stop_reason,
        steps=steps,
        output=output,
        exception=exception,
        usage=replayed.usage,
        recorded=recording.run,
        replayed=replayed,
        recording=recording,
        diff=diff,
        replayed_snapshots=snaps,
        replayed_events=events,
        unrecorded_http=list(getattr(session.http_playback, "unrecorded", [])),
    )


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
    faults: Any = None,
) -> ReplayResult:
    """Replay a recorded run against the code checked out now and diff it with the recording.

    Args:
        source: a run id in the store `db` (default ``$REPLAY_DB``, else ``./replay.db``) or a cassette path.
        agent: the function to call (or ``"module:function"``); default: the agent the project
            registered under the recording's agent name (see `replay.agents`: a recording is data,
            its entrypoint is never imported unless the project lists its module).
        stubs: tool name -> function answering that tool instead of the recording.
        on_unrecorded: ``"error"`` raises `UnrecordedCall` inside the agent; ``"none"`` returns None.
        ignore: ignore rules for the diff (see `IgnoreRules.parse`).
        ordered: False compares the steps as a multiset (for agents calling tools in parallel).
        record_to: a store to record the replayed run into (``replay_of`` set), kept afterwards so
            ``replay show`` works on it; default: a temporary store, removed after the replay.
        agents: modules (``MODULE`` or ``MODULE:FN``) that register agents, as ``--replay-agent``.
        project: the project folder whose pyproject.toml lists agent modules (default: the working folder).
        allow_network: let the agent open sockets and resolve names (sealed by default).
        allow_subprocess: let the agent start processes (sealed by default).
        clock: ``"recorded"`` (default) runs the agent at the recorded run's wall-clock time
            (``time.time()``, ``datetime.now()`` start at its start and tick on; time-machine),
            so "today" in a prompt replays identically; ``"real"`` leaves the clock alone.
        faults: replace chosen calls' answers with errors or bad answers (`replay.faults`):
            ``{"http.get": 503}``, ``"http.get=429:retry-after=2@first:2"``.

    Raises:
        RunNotFoundError, CassetteDecodeError, EntrypointError, ExpiredSnapshotsError: before
            anything runs (the last when outputs the replay needs were pruned; stubs cover them).
    """
    _check_clock(clock)
    recording, fn, call = _prepare(source, agent, db, agents=agents, project=project)
    _check_expired(recording, stubs)
    session = ReplaySession(
        recording,
        stubs=stubs,
        on_unrecorded=on_unrecorded,
        redaction=redaction,
        record_to=record_to,
    )
    _plan_faults(session, faults)  # what-if hook (replay.faults)
    output: Any = None
    exception: BaseException | None = None
    with (
        _installed(session, allow_network=allow_network, allow_subprocess=allow_subprocess),
        _recorded_clock(recording, clock),
    ):
        try:
            output = _invoke(session, fn, recording, call)
            if inspect.isawaitable(output):
                output = asyncio.run(_await(output))
        except (
            Exception,
            StopRun,
            SystemExit,
        ) as exc:  # sys.exit() in the agent ends it, not the replay
            exception = exc
    return _conclude(session, recording, output, exception, ignore, ordered)


def _plan_faults(session: ReplaySession, faults: Any) -> None:
    """Bind `faults` to the session (what-if hook; a bad spec raises before the agent runs)."""
    if faults:
        from replay.faults import FaultPlan

        try:
            session.faults = FaultPlan.parse(faults, session.recording)
        except BaseException:
            session.close()
            raise


def _check_clock(clock: str) -> None:
    if clock not in _CLOCKS:
        raise ValueError(
            f"clock={clock!r}: use 'recorded' (the run's own wall-clock time, the default) or 'real'"
        )


@contextlib.contextmanager
def _recorded_clock(recording: Recording, clock: str) -> Iterator[None]:
    """The wall clock set to the recorded run's start, ticking on (time-machine), for the block.

    Only wall-clock time travels (``time.time``, ``datetime.now``, ``date.today``, ...):
    ``time.perf_counter`` and ``time.monotonic`` do not, so recorded durations and timeouts stay real.
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
    token = _session.set(session)
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
            yield
    finally:
        _session.reset(token)


def _conclude(
    session: ReplaySession,
    recording: Recording,
    output: Any,
    exception: BaseException | None,
    ignore: Any,
    ordered: bool,
) -> ReplayResult:
    try:
        result = _finish(session, recording, output, exception, ignore, ordered)
        result.key_mismatch = session.key_mismatch
        return result
    finally:
        session.close()


async def _await(aw: Any) -> Any:
    return await aw


async def replay_run_async(
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
    faults: Any = None,
) -> ReplayResult:
    """`replay_run` for async agents inside a running event loop.

    With ``clock="recorded"`` the whole process sees the recorded time while the agent runs
    (other tasks of the loop included); pass ``clock="real"`` where that matters.
    """
    _check_clock(clock)
    recording, fn, call = _prepare(source, agent, db, agents=agents, project=project)
    _check_expired(recording, stubs)
    session = ReplaySession(
        recording,
        stubs=stubs,
        on_unrecorded=on_unrecorded,
        redaction=redaction,
        record_to=record_to,
    )
    _plan_faults(session, faults)  # what-if hook (replay.faults)
    output: Any = None
    exception: BaseException | None = None
    with (
        _installed(session, allow_network=allow_network, allow_subprocess=allow_subprocess),
        _recorded_clock(recording, clock),
    ):
        try:
            output = _invoke(session, fn, recording, call)
            if inspect.isawaitable(output):
                output = await output
        except (
            Exception,
            StopRun,
            SystemExit,
        ) as exc:  # sys.exit() in the agent ends it, not the replay
            exception = exc
    return _conclude(session, recording, output, exception, ignore, ordered)
