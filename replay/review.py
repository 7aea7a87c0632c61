"""Review: what a bless changed per cassette, and pending changes to accept or skip one at a time.

``pytest --replay-all --replay-update`` rewrites each diverging cassette in place (as syrupy's
``--snapshot-update`` does); `change_line` is the one-line summary of what changed (steps added
and removed, stop reason, usage) the plugin prints per blessed cassette.
``pytest --replay-all --replay-review`` writes the new trace beside the blessed cassette instead,
as ``<cassette>.pending`` (insta's ``.snap.new``; ``--replay-all`` reads only ``*.json``), and
``replay review`` walks the pending files: accept (the pending file replaces the cassette), skip
(left for later) or reject (deleted). ``--accept-all`` / ``--reject-all`` / ``--json`` never read
stdin, and without a terminal ``replay review`` lists the changes and exits 1 instead of waiting.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from replay.diff import RunDiff, diff_traces

__all__ = [
    "PENDING_SUFFIX",
    "PendingChange",
    "accept",
    "change_line",
    "pending_changes",
    "pending_path",
    "reject",
    "review",
    "write_pending",
]

PENDING_SUFFIX = ".pending"


def _steps(n: Counter[str], sign: str) -> str:
    return ", ".join(f"{sign}{k}" if v == 1 else f"{sign}{v} {k}" for k, v in sorted(n.items()))


def change_line(diff: RunDiff) -> str:
    """What a new trace changes against its cassette, in one line.

    ``steps 17 -> 3 (+email.send, -6 kb.search, -6 http.get); stop reason completed -> escalated;
    tokens 10,800 -> 1,740; cost $0.0389 -> $0.0061``.
    """
    added: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    for c in diff.changes:
        if c.kind == "extra_call" and c.replayed is not None:
            added[c.replayed.tool or "?"] += 1
        elif c.kind == "missing_call" and c.recorded is not None:
            removed[c.recorded.tool or "?"] += 1
    parts = [f"steps {diff.steps_before} -> {diff.steps_after}"]
    detail = ", ".join(x for x in (_steps(added, "+"), _steps(removed, "-")) if x)
    if detail:
        parts[0] += f" ({detail})"
    if diff.stop_reason_before != diff.stop_reason_after:
        parts.append(f"stop reason {diff.stop_reason_before} -> {diff.stop_reason_after}")
    ub, ua = diff.usage_before, diff.usage_after
    tb, ta = ub.tokens_in + ub.tokens_out, ua.tokens_in + ua.tokens_out
    if tb != ta:
        parts.append(f"tokens {tb:,} -> {ta:,}")
    if round(ub.cost_usd, 4) != round(ua.cost_usd, 4):
        parts.append(f"cost ${ub.cost_usd:.4f} -> ${ua.cost_usd:.4f}")
    if diff.output_diff:
        parts.append("output changed")
    return "; ".join(parts)


def pending_path(cassette: str | os.PathLike[str]) -> Path:
    """Where the pending change of `cassette` is written: ``<cassette>.pending``."""
    return Path(os.fspath(cassette) + PENDING_SUFFIX)


def write_pending(result: Any, cassette: str | os.PathLike[str]) -> Path:
    """Write a replay's new trace beside `cassette` as its pending change (0600, atomic)."""
    from replay.cassette import cassette_from_replay, write_cassette

    return write_cassette(cassette_from_replay(result), pending_path(cassette), force=True)


@dataclasses.dataclass
class PendingChange:
    """One pending cassette: the blessed file, the pending one and what it changes."""

    cassette: Path
    pending: Path
    diff: RunDiff | None  # None: the cassette is new (nothing blessed yet)
    error: str | None = None

    def summary(self) -> str:
        if self.error is not None:
            return f"{self.cassette}: cannot read: {self.error}"
        if self.diff is None:
            return f"{self.cassette}: new cassette"
        return f"{self.cassette}: {change_line(self.diff)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "cassette": str(self.cassette),
            "pending": str(self.pending),
            "summary": None if self.diff is None else change_line(self.diff),
            "diff": None if self.diff is None else self.diff.to_json(),
            "error": self.error,
        }


def _change(pending: Path) -> PendingChange:
    from replay.errors import ReplayError
    from replay.replayer import load_recording

    cassette = Path(str(pending)[: -len(PENDING_SUFFIX)])
    try:
        new = load_recording(pending)
        if not cassette.exists():
            return PendingChange(cassette, pending, None)
        old = load_recording(cassette)
    except ReplayError as exc:
        return PendingChange(cassette, pending, None, error=str(exc))
    return PendingChange(cassette, pending, diff_traces(old.trace(), new.trace()))


def pending_changes(folder: str | os.PathLike[str]) -> list[PendingChange]:
    """Every pending change under `folder`, in path order."""
    root = Path(folder)
    return [_change(p) for p in sorted(root.rglob(f"*.json{PENDING_SUFFIX}")) if p.is_file()]


def accept(change: PendingChange) -> None:
    """The pending trace becomes the cassette (an atomic rename)."""
    os.replace(change.pending, change.cassette)


def reject(change: PendingChange) -> None:
    """Delete the pending trace; the cassette stays as it was."""
    change.pending.unlink(missing_ok=True)


_ACTIONS: dict[str, Callable[[PendingChange], None] | None] = {
    "accept": accept,
    "reject": reject,
    "skip": None,
}


def review(
    changes: list[PendingChange], decide: Callable[[PendingChange], str]
) -> dict[str, list[PendingChange]]:
    """Apply ``decide(change)`` (``accept``, ``skip``, ``reject`` or ``quit``) to each change in
    turn.

    Returns the changes by what was done; after ``quit`` the rest count as skipped.
    A change that cannot be read is never accepted.
    """
    done: dict[str, list[PendingChange]] = {"accept": [], "skip": [], "reject": []}
    stopped = False
    for change in changes:
        choice = "skip" if stopped else decide(change)
        if choice == "quit":
            stopped, choice = True, "skip"
        if change.error is not None and choice == "accept":
            choice = "skip"
        action = _ACTIONS.get(choice)
        if choice not in _ACTIONS:
            raise ValueError(f"review decision {choice!r}: use accept, skip, reject or quit")
        if action is not None:
            action(change)
        done[choice].append(change)
    return done
