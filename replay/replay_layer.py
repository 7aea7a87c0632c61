"""The replay layer: answers a replayed run's tool and model calls from a recording.

`ReplaySession` implements the tool-layer seam (`replay.tool_layer.ToolLayer`) for one replay.
Every ``@rec.tool`` / ``@rec.model`` call is matched by (tool, args_sha) in order of occurrence
and answered with the recorded output (`replay.fidelity.rebuild_value`: same types, same key
order) or the recorded error raised again as the client's own class. A stub answers its tool
instead (always, or with ``stub_mode="miss"`` only where the recording has no answer). An
unrecorded call raises `UnrecordedCall` inside the agent (or returns None).
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from hashlib import blake2b, sha256
from itertools import compress, repeat
from operator import eq
from typing import Any

from replay.binding import ToolSpec
from replay.context import step_var
from replay.errors import RecordedToolError, ReplayError, UnrecordedCall
from replay.event_table import ARGS_SHA, OUTPUT_SHA, EventTable, column_of
from replay.faults import Fault, FaultPlan
from replay.fidelity import plain_copy, rebuild_error, rebuild_value
from replay.guards import default_db, shared_redaction_key
from replay.hashing import sha_of_canonical, thaw
from replay.keys import ENV_VAR, RedactionKeyMismatchWarning, key_file_path, mismatch_message
from replay.keys import fingerprint as fingerprint_of
from replay.models import Event, Run, Usage
from replay.processors import RedactionConfig, Redactor
from replay.recorder import Recorder
from replay.recording import Recording
from replay.replay_modes import LIVE_NOTE, LOOSE_NOTE, LiveTools, parse_match
from replay.replayed_run import AnsweredStepSink, MemorySink
from replay.run_state import RunState, Step, StepSink
from replay.store_api import open_store
from replay.tool_layer import LIVE
from replay.writer import TRUNCATED_TAG

__all__ = ["ON_UNRECORDED", "STUB_MODES", "ReplaySession"]

#: What an unrecorded call does: raise `UnrecordedCall` inside the agent, or return None.
ON_UNRECORDED = ("error", "none")
#: When a stub answers its tool: on every call, or only where the recording has no answer.
STUB_MODES = ("always", "miss")
#: The most memory one replay spends remembering args_sha per distinct args (`args_sha`).
ARGS_MEMO_BYTES = 1 << 20
_MEMO_ENTRY_BYTES = 200  # a dict slot, the 16-byte digest key, the sha string
#: The most args `ReplaySession.settle_args` checks in one detector pass.
_SETTLE_BATCH = 32


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


def _local_key_for(fingerprint: str | None) -> bytes | None:
    """The key of the default store (``$REPLAY_DB`` / ``./replay.db``) when a cassette was made with
    it.

    A developer who exports a run and replays the cassette on the same machine gets the same
    pseudonyms without setting ``$REPLAY_REDACTION_KEY``. Never creates a key file.
    """
    if not fingerprint:
        return None
    from replay.keys import read_key_file

    try:
        key = read_key_file(key_file_path(default_db()))
    except Exception:  # noqa: BLE001 - an unreadable key file only means: no local key
        return None
    return key if key is not None and fingerprint_of(key) == fingerprint else None


def _replay_key(recording: Recording) -> tuple[bytes, str]:
    """The key pseudonyms use in the replay and where it came from (for the mismatch warning).

    The recording store's key, so values the agent builds itself pseudonymise as they did then.
    """
    env = shared_redaction_key()
    if env:
        return env, "$REPLAY_REDACTION_KEY"
    if recording.secret_key:
        return recording.secret_key, "the store's key"
    local = _local_key_for(recording.run.key_fingerprint)
    if local:
        return local, "the key file of the default store"
    return os.urandom(32), f"a random key: ${ENV_VAR} is not set"


def _check_modes(on_unrecorded: str, stub_mode: str) -> None:
    if on_unrecorded not in ON_UNRECORDED:
        raise ValueError(f"on_unrecorded={on_unrecorded!r}: use one of {', '.join(ON_UNRECORDED)}")
    if stub_mode not in STUB_MODES:
        raise ValueError(
            f"stub_mode={stub_mode!r}: use 'always' (a stub answers every call of its tool) "
            "or 'miss' (only calls the recording has no answer for)"
        )


class ReplaySession:
    """The replay layer of one replay (a `ToolLayer`); installed in a contextvar while the agent
    runs.

    The replayed run is recorded like any run (``replay_of`` set) by `recorder`, into `record_to`
    when given (so ``replay show`` works on it afterwards), else in memory (`MemorySink`).
    """

    def __init__(
        self,
        recording: Recording,
        *,
        stubs: Mapping[str, Callable[..., Any]] | None = None,
        on_unrecorded: str = "error",
        redaction: RedactionConfig | None = None,
        record_to: str | os.PathLike[str] | None = None,
        stub_mode: str = "always",
        match: Mapping[str, Any] | None = None,
        live: Iterable[str] | None = None,
        faults: Any = None,
    ) -> None:
        _check_modes(on_unrecorded, stub_mode)
        #: what-if faults (`replay.faults`): parsed first, so a bad spec leaves nothing to close
        self.faults = FaultPlan.parse(faults, recording) if faults else None
        self.recording = recording
        self.source_run_id = recording.run.run_id
        self.stubs = dict(stubs or {})
        self.stub_mode = stub_mode
        self.on_unrecorded = on_unrecorded
        self.rules = parse_match(match)
        self.live = LiveTools(live)
        self.any_live = bool(self.live)  # `call`: per call, without `LiveTools.__bool__`
        #: replayed step id -> what the diff notes on it (a live step, a loosely matched one)
        self.marks: dict[int, str] = {}
        key, source = _replay_key(recording)
        self.redactor = Redactor(key, redaction or RedactionConfig())
        #: (recorded fingerprint, this replay's fingerprint) when they differ, else None
        self.key_mismatch: tuple[str, str] | None = None
        recorded_fp = recording.run.key_fingerprint
        if recorded_fp and recorded_fp != self.redactor.key_fingerprint:
            self.key_mismatch = (recorded_fp, self.redactor.key_fingerprint)
            warnings.warn(
                mismatch_message(
                    recording.run.run_id, recorded_fp, self.redactor.key_fingerprint, source
                ),
                RedactionKeyMismatchWarning,
                stacklevel=3,
            )
        #: where the replayed run is read back from: `record_to`, else held in memory
        self.store_path: str | None = None if record_to is None else os.fspath(record_to)
        self.sink: MemorySink | None = (
            None if record_to is not None else MemorySink(key, self.redactor.redact_name)
        )
        self.recorder = Recorder(
            self.sink if self.sink is not None else self.store_path,
            redaction=redaction,
            redaction_key=key,
        )
        self.replayed_run_id: str | None = None  # set by the recorder when the agent's run begins
        # HTTP: the playback cassette (replay.http.HttpPlayback) while the recording has HTTP, and
        # replayed step id -> the recorded step id that answered it (for HTTP attempts per step).
        self.http_playback: Any = None
        self.answered: dict[int, int] = {}
        self.http_loose = recording.secret_key is None or key != recording.secret_key
        #: no live tools, faults, always-stubs or match rules: `call` takes its shortest path
        self.exact_only = (
            not self.live
            and self.faults is None
            and not (self.stubs and stub_mode == "always")
            and not self.rules
        )
        self._sha_memo: dict[bytes, str] = {}  # frozen args -> args_sha (`args_sha`)
        self._memo_room = ARGS_MEMO_BYTES
        #: tools a ``sequence`` rule answers by position (`answer_by_position`): the replayed run
        #: is held in memory, no fault or stub answers them
        self.by_position = (
            frozenset(tool for tool, rule in self.rules.items() if rule.sequence) - set(self.stubs)
            if self.sink is not None and self.faults is None
            else frozenset()
        )
        #: their answered steps whose args_sha waits for `settle_args`: (step id, frozen args,
        #: args_sha as they are, the recorded step's args_sha)
        self._unsettled: list[tuple[int, bytes, str, str]] = []
        self._index_recording()

    def _index_recording(self) -> None:
        # tool -> args_sha -> the position in `_steps` of the recorded step with those args
        # (`take_position`); args that recur map to a list of their positions, last first (popped
        # from the end). Most args occur once: positions are a third cheaper to build than lists.
        # Per tool, so that a call looks its args up once: the answer and, found, the proof that
        # its args had nothing to redact (`args_sha`).
        steps = self._steps = self.recording.steps
        #: the recorded steps' rows when the recording came from a store (`answer_at`)
        self._rows = steps.rows if isinstance(steps, EventTable) else None
        #: the output snapshot of each of those rows, by position (`answer_at`)
        snapshots = self.recording.snapshots
        outputs = column_of(steps, "output_sha") if self._rows is not None else []
        self._snap_at = list(map(snapshots.get, outputs))
        tools, shas = column_of(steps, "tool"), column_of(steps, "args_sha")
        index: dict[str, dict[str, int | list[int]]] = {}
        everything = range(len(tools))
        unhashed = None in shas  # a step without an args_sha is never looked up
        for tool in set(tools) - {None}:
            # One pass in C per tool (a run calls a few): a Python loop costs more per step.
            mine = list(compress(everything, map(eq, tools, repeat(tool))))
            if unhashed:
                mine = [k for k in mine if shas[k] is not None]
            their_shas: list[str] = list(map(shas.__getitem__, mine))
            by_sha: dict[str, int | list[int]] = dict(zip(their_shas, mine, strict=True))
            if len(by_sha) < len(mine):  # args that recur
                recurring: dict[str, list[int]] = {}
                for sha, k in zip(their_shas, mine, strict=True):
                    recurring.setdefault(sha, []).append(k)
                by_sha.update((sha, same[::-1]) for sha, same in recurring.items() if len(same) > 1)
            index[tool] = by_sha
        self.index = index
        # recorded concurrent group -> its id in the replayed run (the first replayed member's step)
        self.groups: dict[int, int] = {}
        # Tools with a loose match rule: their recorded steps in order, a cursor, and the steps
        # already answered (by an exact or a loose match), so none answers twice.
        # Positions in `_steps`, as in the index.
        self.by_tool: dict[str, list[int]] = {}
        self.cursor: dict[str, int] = {}
        self.taken: set[int] = set()
        if self.rules:
            for name in {self.redactor.redact_name(tool) for tool in self.rules}:
                self.by_tool[name] = list(compress(everything, map(eq, tools, repeat(name))))

    @functools.cached_property
    def recorded_args(self) -> frozenset[str]:
        """Every recorded args_sha (`args_sha`'s shortcut for args recorded as they are)."""
        return frozenset(sha for by_sha in self.index.values() for sha in by_sha)

    @functools.cached_property
    def recorded_tools(self) -> dict[str, list[str]]:
        """tool -> the args_sha of its recorded steps in order (for `UnrecordedCall`'s message)."""
        out: dict[str, list[str]] = {}
        for e in self.recording.steps:
            if e.tool is not None and e.args_sha is not None:
                out.setdefault(e.tool, []).append(e.args_sha)
        return out

    # ---- the seam ---------------------------------------------------------------------------

    def call(
        self, st: RunState, spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self.exact_only:  # the common replay: each call answered by its (tool, args_sha)
            step = st.enter(spec, args, kwargs)
            name = self.redactor.redact_name(spec.name)
            # Args the tool was recorded with as they are: one lookup finds the answer and shows
            # there was nothing to redact (see `args_sha`). Other args go through the redactor.
            as_is = sha256(step.args).hexdigest()[:24]  # `sha_of_canonical`, inline
            by_sha = self.index.get(name)
            if by_sha is not None and as_is in by_sha:
                step.args_sha = as_is
                k = _take(by_sha, as_is)
            else:
                sha = step.args_sha = self.args_sha(step.args)
                k = self.take_position((name, sha))
            if k is None:
                return self.miss(st, step, args, kwargs)
            return self.answer_at(st, step, k)
        if self.any_live and self.live.covers(spec.name):
            return LIVE.call(st, spec, args, kwargs, self.enter_live(st, spec, args, kwargs))
        if spec.name in self.by_position and st.answered is not None:
            return self.answer_by_position(st, spec, args, kwargs)
        step = self.enter(st, spec, args, kwargs)
        fault = self.faults.pick(spec.name) if self.faults is not None else None
        if fault is not None:
            return self.inject(st, step, fault, args, kwargs)
        return self.respond(st, step, args, kwargs)

    async def acall(
        self, st: RunState, spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self.any_live and self.live.covers(spec.name):
            return await LIVE.acall(st, spec, args, kwargs, self.enter_live(st, spec, args, kwargs))
        if spec.name in self.by_position and st.answered is not None:
            return self.answer_by_position(st, spec, args, kwargs)
        step = self.enter(st, spec, args, kwargs)
        fault = self.faults.pick(spec.name) if self.faults is not None else None
        if fault is not None and fault.kind == "slow" and self.faults is not None:
            self.marks[step.step_id] = f"fault: {fault.label}"
            await self.faults.adelay(fault)  # with clock="real", the loop runs on meanwhile
            fault = None
        stub = self.stubs.get(spec.name)
        if stub is None or not inspect.iscoroutinefunction(stub):
            if fault is not None:
                return self.inject(st, step, fault, args, kwargs)
            return self.respond(st, step, args, kwargs)
        if fault is not None and fault.kind != "drift":
            return self.inject(st, step, fault, args, kwargs)
        if fault is not None:
            self.marks[step.step_id] = f"fault: {fault.label}"
        if self.stub_mode == "miss":
            recorded = self.find(step)
            if recorded is not None:
                return self.answer(st, step, recorded)
        try:
            result = await stub(*args, **kwargs)
            if fault is not None and fault.kind == "drift":
                result = FaultPlan.drift(fault, result)
        except BaseException as exc:
            st.finish_error(step, exc)
            raise
        st.finish_ok(step, result)
        return result

    def respond(
        self, st: RunState, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Answer an entered step: its stub (``stub_mode="always"``), else the recording."""
        stub = self.stubs.get(step.spec.name) if self.stub_mode == "always" else None
        if stub is not None:
            return self.run_stub(st, step, stub, args, kwargs)
        recorded = self.find(step)
        if recorded is None:
            return self.miss(st, step, args, kwargs)
        return self.answer(st, step, recorded)

    # ---- what-if: faults (replay.faults) ----------------------------------------------------

    def inject(
        self,
        st: RunState,
        step: Step,
        fault: Fault,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Answer an entered step under `fault`: raise its error, drift its answer, or answer late.

        An error does not use up the recorded answer (a retry with the same args gets it).
        """
        plan = self.faults
        assert plan is not None  # a fault comes from the plan
        self.marks[step.step_id] = f"fault: {fault.label}"
        if fault.kind == "slow":
            plan.delay(fault)
            return self.respond(st, step, args, kwargs)
        if fault.kind != "drift":
            err = plan.error(fault, args, kwargs)
            st.finish_error(step, err)
            raise err
        try:
            value = plan.drift(fault, self.unfinished_answer(step, args, kwargs))
        except BaseException as exc:
            st.finish_error(step, exc)
            raise
        st.finish_ok(step, value)
        return value

    def unfinished_answer(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What would answer `step` (stub or recording; its error raised), leaving it unfinished."""
        stub = self.stubs.get(step.spec.name) if self.stub_mode == "always" else None
        recorded = None if stub is not None else self.find(step)
        if recorded is None:
            stub = stub or self.stubs.get(step.spec.name)
            if stub is None:
                raise self.unrecorded(step.spec, step.args_sha or "")
            return stub(*args, **kwargs)
        snap = self.recording.snapshots.get(recorded.output_sha) if recorded.output_sha else None
        if recorded.status == "error":
            raise _rebuild_error(snap[0] if snap else {"error": recorded.error or "Error"})
        return None if snap is None else _rebuild_value(snap[0], snap[1])

    # ---- the steps of the layer (a mode built on this layer uses these) ---------------------

    def enter(
        self, st: RunState, spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Step:
        """Enter the step on the run state and hash its args as the recorder did (`args_sha`)."""
        step = st.enter(spec, args, kwargs)
        step.args_sha = self.args_sha(step.args)
        return step

    def args_sha(self, frozen_args: bytes) -> str:
        """args_sha of frozen args: redacted with the recording's key, canonical, hashed.

        Args the recording holds as they are (nothing in them to redact: most) are known without
        the redactor: their canonical bytes hash to a recorded args_sha, so they equal that
        step's redacted canonical args, which redaction (idempotent) leaves as they are. Others
        are remembered per distinct frozen args (the same bytes always redact and hash the same
        way under one key), so a call repeating earlier args is not redacted again; the memo uses
        at most `ARGS_MEMO_BYTES`.
        """
        # Frozen args have their keys sorted (`RunState.enter`): they are their canonical form.
        as_is = sha256(frozen_args).hexdigest()[:24]  # `sha_of_canonical`, inline: every call
        if as_is in self.recorded_args:
            return as_is
        # Keyed by a digest, so the memo's size does not depend on the args' size.
        key = blake2b(frozen_args, digest_size=16).digest()
        sha = self._sha_memo.get(key)
        if sha is None:
            canonical = self.redactor.canonical_frozen(frozen_args)
            sha = as_is if canonical is frozen_args else sha_of_canonical(canonical)
            if self._memo_room >= _MEMO_ENTRY_BYTES:
                self._memo_room -= _MEMO_ENTRY_BYTES
                self._sha_memo[key] = sha
        return sha

    def answer_by_position(
        self, st: RunState, spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A call of a tool that a ``sequence`` rule answers: by its n-th recorded call.

        The answer does not depend on the args, so their redaction check (for the args_sha the
        replayed step keeps, and for the mark that they changed) waits for `settle_args`, which
        checks many calls' args in one detector pass; until then the step, held in memory only,
        has the sha of its args as they are. A call the recording cannot answer, or whose
        answer goes through the writer (no output snapshot), is hashed at once.
        """
        step = st.enter(spec, args, kwargs)
        k = self._next_of(self.redactor.redact_name(spec.name))
        if k is None:
            step.args_sha = self.args_sha(step.args)
            return self.miss(st, step, args, kwargs)
        self.taken.add(k)
        recorded_sha, output_sha = self._shas_at(k)
        frozen = step.args
        sha = sha256(frozen).hexdigest()[:24]  # `sha_of_canonical`, inline
        if sha != recorded_sha:
            self.marks[step.step_id] = LOOSE_NOTE
        # Args some step was recorded with as they are have nothing to redact (`args_sha`).
        if sha != recorded_sha and sha not in self.recorded_args:
            if output_sha is None:  # hashed now: the writer records this step
                sha = self.args_sha(frozen)
                if sha == recorded_sha:
                    del self.marks[step.step_id]
            else:  # an exact-size copy: orjson's bytes keep a 4 KB buffer
                self._unsettled.append(
                    (step.step_id, bytes(memoryview(frozen)), sha, recorded_sha or "")
                )
        step.args_sha = sha
        return self.answer_at(st, step, k)

    def _shas_at(self, k: int) -> tuple[str | None, str | None]:
        """(args_sha, output_sha) of the recorded step at position `k`."""
        if self._rows is not None:
            row = self._rows[k]
            return row[ARGS_SHA], row[OUTPUT_SHA]
        recorded = self._steps[k]
        return recorded.args_sha, recorded.output_sha

    def settle_args(self) -> dict[int, str]:
        """The final args_sha of the steps `answer_by_position` left unsettled, where it is not
        the sha of their args as they are: step id -> args_sha. Their marks are set right.

        Their args are checked for redaction a batch at a time, in one detector pass each
        (`Redactor.all_as_they_are`); a batch with something to redact has each of its args
        hashed alone (`args_sha`), and the next batch is half as large; a clean one doubles it,
        up to `_SETTLE_BATCH`. Where most args hold something to redact this costs what hashing
        each alone costs, plus at most one joined pass per two args.
        """
        pending, self._unsettled = self._unsettled, []
        final: dict[int, str] = {}
        size, i = _SETTLE_BATCH, 0
        while i < len(pending):
            batch = pending[i : i + size]
            i += len(batch)
            if size > 1 and self.redactor.all_as_they_are([p[1] for p in batch]):
                size = min(size * 2, _SETTLE_BATCH)
                continue
            clean = True
            for step_id, frozen, as_is, recorded_sha in batch:
                sha = self.args_sha(frozen)
                if sha != as_is:
                    final[step_id] = sha
                    clean = False
                if sha == recorded_sha:
                    self.marks.pop(step_id, None)
            size = min(size * 2, _SETTLE_BATCH) if clean else max(size // 2, 1)
        return final

    def enter_live(
        self, st: RunState, spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Step:
        """Enter a step that runs for real (``live=``): the writer hashes it; the diff marks it."""
        step = st.enter(spec, args, kwargs)
        self.marks[step.step_id] = LIVE_NOTE
        return step

    def find(self, step: Step) -> Event | None:
        """The recorded step that answers `step`: exact (tool, args_sha), or per a match rule."""
        spec, sha = step.spec, step.args_sha or ""
        rule = self.rules.get(spec.name) if self.rules else None
        if rule is None:
            return self.lookup(spec, sha)
        name = self.redactor.redact_name(spec.name)
        k = None if rule.sequence else self._untaken(name, sha)
        if k is None:
            k = self._next_of(name)
        if k is None:
            return None
        self.taken.add(k)
        recorded = self._steps[k]
        if recorded.args_sha != sha:
            self.marks[step.step_id] = LOOSE_NOTE
        return recorded

    def _untaken(self, name: str, sha: str) -> int | None:
        while (k := self.take_position((name, sha))) is not None:
            if k not in self.taken:
                return k
        return None

    def take(self, key: tuple[str, str]) -> Event | None:
        """Take the next recorded step with this (tool, args_sha) out of the index, if any."""
        k = self.take_position(key)
        return None if k is None else self._steps[k]

    def take_position(self, key: tuple[str, str]) -> int | None:
        """`take`, as the step's position in the recording's steps."""
        by_sha = self.index.get(key[0])
        return None if by_sha is None else _take(by_sha, key[1])

    def _next_of(self, name: str) -> int | None:
        """The position of the tool's next recorded step not answered yet, in recorded order."""
        steps = self.by_tool.get(name, [])
        i = self.cursor.get(name, 0)
        while i < len(steps) and steps[i] in self.taken:
            i += 1
        self.cursor[name] = i + 1
        return steps[i] if i < len(steps) else None

    def lookup(self, spec: ToolSpec, args_sha: str) -> Event | None:
        """Take the next recorded step of this tool with these args, None when there is none."""
        # Recorded tool names passed the redactor: look the live name up the same way.
        return self.take((self.redactor.redact_name(spec.name), args_sha))

    def answer(self, st: RunState, step: Step, recorded: Event) -> Any:
        """Finish `step` with the recorded answer: its value returned, or its error raised."""
        if self.http_playback is not None and recorded.step_id is not None:
            self.answered[step.step_id] = recorded.step_id  # for its HTTP attempts
        snap = self.recording.snapshots.get(recorded.output_sha) if recorded.output_sha else None
        if recorded.status == "error":
            body = snap[0] if snap else {"error": recorded.error or "Error"}
            names, message = _recorded_error_names(recorded, body)
            error = _rebuild_error(body)
            st.finish_error(
                step,
                error,
                names=names,
                message=message,
                output_sha=recorded.output_sha,
                group=self._group(step, recorded.concurrent_group),
            )
            raise error
        return self._finish_answer(
            st, step, snap, recorded.output_sha, recorded.concurrent_group, recorded.usage
        )

    def answer_at(self, st: RunState, step: Step, k: int) -> Any:
        """`answer` with the recording's step at position `k`; from a store, read from its row: no
        `Event` is made for a step answered with its value (most)."""
        if self._rows is None:  # a cassette's steps: events already
            return self.answer(st, step, self._steps[k])
        (_, _, _, _, _, _, output_sha, _, status, _, _, usage, _, group) = self._rows[k]
        if status == "error" or self.http_playback is not None:
            return self.answer(st, step, self._steps[k])
        return self._finish_answer(st, step, self._snap_at[k], output_sha, group, usage)

    def _group(self, step: Step, recorded_group: int | None) -> int:
        # Answers are instant, so parallel calls may not overlap in the replay (and sequential ones
        # may): a step answered from the recording takes the recorded step's group (0: none), in
        # the replayed run's numbering, and a bless keeps the recording's groups.
        if recorded_group is None:
            return 0
        return self.groups.setdefault(recorded_group, step.step_id)

    def _finish_answer(
        self,
        st: RunState,
        step: Step,
        snap: tuple[Any, str | None, bool] | None,
        output_sha: str | None,
        recorded_group: int | None,
        usage: Usage | None,
    ) -> Any:
        """Finish `step` with the value of the recorded output `snap`, and return it."""
        if snap is None:
            value = None
        else:
            value, type_name, _ = snap
            # A plain JSON answer (most) copied here; anything else rebuilt (`_rebuild_value`).
            if type_name is None and not (type(value) is dict and TRUNCATED_TAG in value):
                value = plain_copy(value)
            else:
                value = _rebuild_value(value, type_name)
        group = self._group(step, recorded_group)
        st.finish_ok(step, value, output_sha=output_sha, group=group, usage=usage)
        if step.spec.kind == "model_result":
            st.check_budget()
        return value

    def miss(self, st: RunState, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call the recording has no answer for: a ``stub_mode="miss"`` stub, else unrecorded."""
        stub = self.stubs.get(step.spec.name)
        if stub is not None:
            return self.run_stub(st, step, stub, args, kwargs)
        if self.on_unrecorded == "none":
            st.finish_ok(step, None)
            return None
        missing = self.unrecorded(step.spec, step.args_sha or "")
        st.finish_error(step, missing)
        raise missing

    def run_stub(
        self,
        st: RunState,
        step: Step,
        stub: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Finish `step` with what `stub` returns (or raises); tools it calls nest in this step."""
        token = step_var.set(step.step_id)
        try:
            result = stub(*args, **kwargs)
        except BaseException as exc:
            st.finish_error(step, exc)
            raise
        finally:
            step_var.reset(token)
        if inspect.isawaitable(result):
            raise ReplayError(
                f"stub for {step.spec.name} returned an awaitable: the tool is sync, "
                "so the stub must be too"
            )
        st.finish_ok(step, result)
        return result

    def unrecorded(self, spec: ToolSpec, args_sha: str) -> UnrecordedCall:
        return UnrecordedCall(
            spec.name,
            args_sha,
            self.recorded_tools.get(spec.name, []),
            recorded_tools=list(self.recorded_tools),
        )

    def step_sink(self, writer: StepSink) -> StepSink:
        """Where the replayed run's steps go: answers from the recording straight into memory."""
        if self.sink is None:
            return writer
        return AnsweredStepSink(writer, self.redactor, self.sink)

    def replayed(
        self,
    ) -> tuple[Run, Sequence[Event], Mapping[str, tuple[Any, str | None, bool]]]:
        """The replayed run as recorded: its row, its events, the snapshots of its outputs.

        Raises:
            ReplayError: the agent never started a run (not decorated, or not called).
        """
        self.recorder.flush()
        if self.replayed_run_id is None:
            raise ReplayError(
                f"the replay of {self.source_run_id} recorded no run: is the agent decorated "
                "with @rec.agent, and was it called?"
            )
        if self.sink is not None:
            final = self.settle_args()  # before anything reads the steps' args_sha
            if final:
                self.sink.set_args_sha(self.replayed_run_id, final)
            run, events = (
                self.sink.get_run(self.replayed_run_id),
                self.sink.events(self.replayed_run_id),
            )
            # The sink holds the snapshots the writer made: of this run's input, output and steps
            # not answered from the recording (those point at the recording's snapshots).
            return run, events, self.sink.snapshot_values()
        assert self.store_path is not None  # no sink: record_to was given
        with open_store(self.store_path) as store:
            run = store.get_run(self.replayed_run_id)
            events = store.events(run.run_id)
            found = store.snapshots(
                [e.output_sha for e in events if e.output_sha]
                + [sha for sha in (run.input_sha, run.output_sha) if sha]
            )
        snaps = {
            sha: (thaw(body), type_name, trunc) for sha, (body, type_name, trunc) in found.items()
        }
        return run, events, snaps

    def close(self) -> None:
        self.recorder.close()


def _take(by_sha: dict[str, int | list[int]], sha: str) -> int | None:
    """The position of the next recorded step with args `sha` in a tool's index, taken out of it
    (None: none left).

    Each step is taken once, also by parallel calls: a list pop and a dict pop are atomic.
    """
    found = by_sha.get(sha)
    if found is None:
        return None
    if type(found) is list:
        try:
            return found.pop()
        except IndexError:  # emptied (by a parallel call)
            return None
    return by_sha.pop(sha, None)  # type: ignore[return-value]


def _recorded_error_names(recorded: Event, body: Any) -> tuple[tuple[str, str, str], str]:
    """The recorded error's (display name, module, qualname) and message to record it under.

    A rebuilt exception may lack what made the name (an HTTP status), and RecordedToolError
    stands in for the original: the replayed step keeps the recorded names.
    """
    display = recorded.error or "Error"
    if not isinstance(body, dict):
        return (display, "", ""), str(body)
    names = (display, str(body.get("module", "")), str(body.get("qualname", "")))
    return names, str(body.get("message", ""))
