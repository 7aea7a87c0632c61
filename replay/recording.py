"""A recorded run: loaded from a store or a cassette, with THE one definition of its steps.

`Recording.steps` are the run's top-level tool and model calls (`replay.models.is_step`): a
call made inside another tool is answered with it in a replay; `Recording.all_steps` has those
too. A recording read from a store the caller trusts loads without validating every event again
(the store validated them when they were written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from replay.cassette import Cassette, load_cassette, stored_http
from replay.diff import Trace
from replay.errors import CorruptRowError, RunNotFoundError
from replay.event_table import steps_of
from replay.guards import default_db
from replay.hashing import thaw, thaw_all
from replay.models import Event, Run, is_step
from replay.store_api import is_server_url, open_store, store_label

__all__ = ["Outputs", "Recording", "gc_paused", "is_cassette_path", "load_recording"]


@dataclasses.dataclass
class Recording:
    """A recorded run from a store or a cassette: the run row, its events, its snapshots."""

    run: Run
    #: the run's events in store order (from a store: `EventTable`, made `Event`s when read)
    events: Sequence[Event]
    snapshots: Mapping[str, tuple[Any, str | None, bool]]  # sha -> (value, type name, truncated)
    source: str  # "store:<path>" or the cassette path
    secret_key: bytes | None = None
    cassette: Cassette | None = None
    http: list[dict[str, Any]] = dataclasses.field(
        default_factory=list
    )  # recorded HTTP interactions
    #: steps whose output snapshot was pruned: (step_id, tool, expired_since_ms); replay refuses
    # them
    expired: list[tuple[int, str, int]] = dataclasses.field(default_factory=list)

    #: `steps`, computed once per events list (a replay asks for it several times)
    _steps: tuple[Sequence[Event], int, Sequence[Event]] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def steps(self) -> Sequence[Event]:
        """The steps of the run: top-level tool and model calls (`replay.models.is_step`).

        Calls made inside another tool are answered with it; `all_steps` includes them.
        """
        events, cached = self.events, self._steps
        if cached is None or cached[0] is not events or cached[1] != len(events):
            cached = self._steps = (events, len(events), steps_of(events))
        return cached[2]

    @property
    def all_steps(self) -> list[Event]:
        """Every tool and model call, those made inside another tool included."""
        return [e for e in self.events if is_step(e, nested=True)]

    def trace(self) -> Trace:
        return Trace(
            run=self.run,
            steps=self.steps,
            outputs=Outputs(self.snapshots),
            http_attempts=self.http_attempts(),
        )

    def http_attempts(self) -> dict[int | None, int] | None:
        """HTTP attempts per top-level step id (None key: outside tool steps); None without step
        data."""
        if not self.http:
            return None
        from replay.http import attempts_by_step, rollup

        return rollup(attempts_by_step(self.http), self.events)


class Outputs(Mapping[str, Any]):
    """sha -> redacted value, read lazily (a 10,000-step run need not decode every snapshot)."""

    def __init__(self, snapshots: Mapping[str, tuple[Any, str | None, bool]]) -> None:
        self._s = snapshots

    def __getitem__(self, sha: str) -> Any:
        return self._s[sha][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._s)

    def __len__(self) -> int:
        return len(self._s)


def is_cassette_path(source: str) -> bool:
    return source.endswith(".json") or os.sep in source or Path(source).is_file()


def load_recording(
    source: str | os.PathLike[str] | Cassette, *, db: str | os.PathLike[str] | None = None
) -> Recording:
    """A recording by run id (from the store `db`, default ``$REPLAY_DB`` / ``./replay.db``) or
    cassette path.

    Raises:
        RunNotFoundError: no such run in the store.
        CassetteDecodeError: the cassette is missing or broken.
    """
    if isinstance(source, Cassette):
        return _from_cassette(source, "<cassette>")
    src = os.fspath(source)
    if is_cassette_path(src):
        return _from_cassette(load_cassette(src), src)
    path = os.fspath(db) if db is not None else default_db()
    if not is_server_url(path) and not Path(path).exists():
        raise RunNotFoundError(src, f"{path} (no such file: record runs first or pass --db)", 0)
    store = open_store(path)
    try:
        with gc_paused():
            return _from_store(store, src, path)
    finally:
        store.close()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a long recording is built (no cycles are made).

    Building 100,000 events and snapshots otherwise triggers collections that walk every object
    made so far, again and again. Only this library's own code runs in the block.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _from_store(store: Any, src: str, path: str) -> Recording:
    """The recording of run `src` (a unique id prefix) from an open store."""
    run = store.find_run(src)
    # Everything replay needs is read now (the store is closed after loading): the events with
    # their outputs' snapshots in one query, then the run's input and output.
    events, found, gone = store.replay_events(run.run_id)
    found.update(store.snapshots([run.input_sha or "", run.output_sha or ""]))
    values = thaw_all([body for body, _, _ in found.values()])
    if values is None:  # a value thaw reads another way, or a damaged one: each on its own
        values = [_thaw_snapshot(store, run, sha, body) for sha, (body, _, _) in found.items()]
    snaps = {
        sha: (value, type_name, truncated)
        for (sha, (_, type_name, truncated)), value in zip(found.items(), values, strict=True)
    }
    run = _ordered_input(run, snaps)
    return Recording(
        run=run,
        events=events,
        snapshots=snaps,
        source=f"store:{store_label(path)}",
        secret_key=store.secret_key,
        http=stored_http(store, run.http_sha),
        expired=store.expired_steps(run, events) if gone else [],
    )


def _thaw_snapshot(store: Any, run: Run, sha: str, body: bytes) -> Any:
    """A stored snapshot's value; a damaged one is named (store, run, sha), not a traceback."""
    try:
        return thaw(body)
    except (ValueError, RecursionError) as exc:
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
        if is_step(e) and e.output_sha and e.output_sha not in snaps
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
