"""Flakiness: replay one recording K times and say whether the step sequence is stable.

``replay_repeat(source, repeat=5)`` replays the run five times (`replay.replayer.replay_run`,
every other argument passed through) and counts the distinct step sequences
(`replay.diff.step_signature`: tool, args_sha, status, error per step; a concurrent group as a
multiset). More than one is a flaky run: the report names the first step where the replays
differ and, where it can be named, the likely cause, found by one more replay watched with a
profiler: the agent reading the clock (``time``), drawing random numbers (``random``), running
steps on several threads (``thread order``), or, when the replays made the same steps in another
order with none of those, ``set iteration`` (hash order of a set or dict of objects).

`gate` applies a policy to a flaky report: ``fail`` (the default), ``warn``, or a quarantine list
(a file of run ids or cassette names, one a line, ``#`` comments): a listed run only warns.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from replay.diff import step_signature
from replay.errors import ReplayError
from replay.report import Outcome

__all__ = [
    "POLICIES",
    "FlakyOutcome",
    "FlakyReport",
    "gate",
    "load_quarantine",
    "repeat_outcome",
    "replay_repeat",
]

POLICIES = ("fail", "warn")


@dataclasses.dataclass
class FlakyReport:
    """What K replays of one recording did.

    Attributes:
        run_id: the recorded run.
        repeat: how many replays ran.
        sequences: how many distinct step sequences came out (1: stable).
        first_difference: the first step number (from 1) where two sequences differ, or None.
        differing: at that step, what each distinct sequence did (``tool`` or ``(none)``).
        causes: the likely causes named (``time``, ``random``, ``thread order``, ``set iteration``).
        results: every replay's `ReplayResult`, in order.
    """

    run_id: str
    repeat: int
    sequences: int
    first_difference: int | None
    differing: list[str]
    causes: list[str]
    results: list[Any]

    @property
    def flaky(self) -> bool:
        return self.sequences > 1

    def summary(self) -> str:
        """One line: ``r_… stable over 5 replays`` or ``r_… flaky: 2 step sequences in 5 replays
        …``."""
        if not self.flaky:
            return f"{self.run_id} stable over {self.repeat} replays"
        cause = f"; likely cause: {', '.join(self.causes)}" if self.causes else ""
        return (
            f"{self.run_id} flaky: {self.sequences} step sequences in {self.repeat} replays, first "
            f"difference at step {self.first_difference} ({' vs '.join(self.differing)}){cause}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "repeat": self.repeat,
            "sequences": self.sequences,
            "flaky": self.flaky,
            "first_difference": self.first_difference,
            "differing": self.differing,
            "causes": self.causes,
        }


def _first_difference(seqs: list[tuple[Any, ...]]) -> tuple[int | None, list[str]]:
    length = max(len(s) for s in seqs)
    for i in range(length):
        at = {s[i] if i < len(s) else None for s in seqs}
        if len(at) > 1:
            shown = sorted({_label(s[i]) if i < len(s) else "(none)" for s in seqs})
            return i + 1, shown
    return None, []


def _label(item: Any) -> str:
    if isinstance(item, tuple) and item and item[0] == "group":
        return "{" + ", ".join(sorted(_label(m) for m in item[1])) + "}"
    if isinstance(item, tuple) and len(item) > 2:
        return f"{item[1]} args {str(item[2])[:8]}"  # (kind, tool, args_sha, status, error)
    return str(item)


def replay_repeat(source: Any, repeat: int = 2, **kwargs: Any) -> FlakyReport:
    """Replay `source` `repeat` times (`replay_run` arguments in `kwargs`) and compare the
    sequences.

    Raises:
        ValueError: `repeat` below 2.
    """
    from replay.replayer import load_recording, replay_run

    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 2:
        raise ReplayError(f"repeat={repeat!r}: replay at least 2 times to compare (e.g. repeat=5)")
    recording = (
        load_recording(source, db=kwargs.pop("db", None))
        if isinstance(source, str | os.PathLike)
        else source
    )
    results = [replay_run(recording, **kwargs) for _ in range(repeat)]
    seqs = [step_signature(r.steps) for r in results]
    distinct = list(dict.fromkeys(seqs))
    first, differing = _first_difference(distinct) if len(distinct) > 1 else (None, [])
    causes: list[str] = []
    if len(distinct) > 1:
        with _watch() as seen:
            replay_run(recording, **kwargs)
        causes = sorted(seen)
        if not causes and len({tuple(sorted(map(repr, s))) for s in distinct}) == 1:
            causes = ["set iteration"]
    return FlakyReport(
        run_id=results[0].recorded.run_id,
        repeat=repeat,
        sequences=len(distinct),
        first_difference=first,
        differing=differing,
        causes=causes,
        results=results,
    )


# ---- naming the cause -----------------------------------------------------------------------

_CLOCK = frozenset(
    {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "now",
        "today",
    }
)
_OURS = str(Path(__file__).resolve().parent)


def _agent_frame(frame: FrameType | None) -> bool:
    """Whether `frame` is the agent's code: not agent-replay's, the standard library's or a
    package's."""
    if frame is None:
        return False
    path = frame.f_code.co_filename
    return not (
        path.startswith((_OURS, _STDLIB, "<")) or "site-packages" in path or "dist-packages" in path
    )


def _stdlib() -> str:
    import sysconfig

    return str(Path(sysconfig.get_paths()["stdlib"]).resolve())


_STDLIB = _stdlib()


@contextmanager
def _watch() -> Iterator[set[str]]:
    """Profile the block: which non-deterministic sources the agent's own code used."""
    seen: set[str] = set()
    threads: set[int] = set()
    random_file = getattr(sys.modules.get("random"), "__file__", None)

    def profiler(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            name = getattr(arg, "__name__", "")
            owner = getattr(arg, "__self__", None)
            module = getattr(arg, "__module__", None) or (
                owner.__module__ if isinstance(owner, type) else type(owner).__module__
            )
            if _agent_frame(frame):
                threads.add(threading.get_ident())
                if name in _CLOCK and module in ("time", "datetime"):
                    seen.add("time")
                elif module in ("_random", "random") or name in ("urandom", "uuid4"):
                    seen.add("random")
        elif event == "call":
            if (
                random_file
                and frame.f_code.co_filename == random_file
                and _agent_frame(frame.f_back)
            ):
                seen.add("random")
            elif _agent_frame(frame):
                threads.add(threading.get_ident())

    threading.setprofile(profiler)
    sys.setprofile(profiler)
    try:
        yield seen
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        if len(threads) > 1:
            seen.add("thread order")


# ---- the gate -------------------------------------------------------------------------------


def load_quarantine(path: str | os.PathLike[str]) -> set[str]:
    """The run ids and cassette names a quarantine file lists (one a line, ``#`` comments).

    Raises:
        ReplayError: the file cannot be read (naming it and the fix).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ReplayError(
            f"quarantine list {os.fspath(path)}: {exc.strerror or exc}; give a text file of run "
            "ids, one a line"
        ) from None
    out = set()
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.add(entry)
    return out


def gate(
    report: FlakyReport,
    policy: str = "fail",
    quarantine: set[str] | None = None,
    source: str | None = None,
) -> tuple[str, str | None]:
    """(``"ok"`` | ``"warn"`` | ``"fail"``, the message) for `report` under `policy`.

    A run listed in `quarantine` (by run id, cassette path or file name) only warns.

    Raises:
        ReplayError: an unknown policy.
    """
    if policy not in POLICIES:
        raise ReplayError(f"flaky policy {policy!r}: use one of {', '.join(POLICIES)}")
    if not report.flaky:
        return "ok", None
    names = {report.run_id}
    if source:
        names |= {source, os.path.basename(source), Path(source).stem}
    if quarantine and names & quarantine:
        return "warn", f"{report.summary()} (quarantined)"
    return ("warn" if policy == "warn" else "fail"), report.summary()


# ---- K replays as a report outcome (``replay run --repeat``) --------------------------------


@dataclasses.dataclass
class FlakyOutcome(Outcome):
    """K replays of one run: ``matched`` when stable (or only warned), else ``diverged``."""

    report: FlakyReport | None = None
    verdict: str = "ok"
    message: str | None = None

    def summary(self) -> str:
        if self.status == "error" or self.report is None:
            return super().summary()
        line = self.report.summary()
        if self.verdict == "warn":
            return f"{line} (warning only)"
        if self.report.flaky or self.diff is None or self.diff.is_empty:
            return line
        return f"{line}, but {super().summary()}"

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["flaky"] = None if self.report is None else self.report.to_json()
        data["verdict"] = self.verdict
        return data


def repeat_outcome(
    source: Any,
    repeat: int,
    *,
    policy: str = "fail",
    quarantine: set[str] | None = None,
    **kwargs: Any,
) -> FlakyOutcome:
    """Replay `source` `repeat` times and judge it: flaky per `policy`, else by its diff."""
    t0 = time.perf_counter()
    try:
        report = replay_repeat(source, repeat=repeat, **kwargs)
        verdict, message = gate(report, policy, quarantine, source=str(source))
    except (ReplayError, ValueError, ImportError) as exc:
        return FlakyOutcome(str(source), None, "error", error=str(exc))
    first = report.results[0]
    if kwargs.get("faults"):
        from replay.faults import judge

        bad = verdict == "fail" or bool(judge(first))
    else:
        bad = verdict == "fail" or (not report.flaky and not first.diff.is_empty)
    return FlakyOutcome(
        str(source),
        report.run_id,
        "diverged" if bad else "matched",
        first.diff,
        seconds=time.perf_counter() - t0,
        report=report,
        verdict=verdict,
        message=message,
    )
