"""A run's events held as tuples of their fields, made `Event` objects only when read.

A replay of a long run answers most of its steps from the recording, and the diff of a healthy
replay only compares columns of their fields (tool, args_sha, status, ...). Making an `Event`
per step (a field dict and a model instance) cost about a microsecond a step, more than the
comparison; `EventTable` keeps the tuples and makes an `Event` when one is read (a changed step
the diff reports, `ReplayResult.steps`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import compress, repeat
from operator import and_, is_, itemgetter
from typing import Any, overload

from replay.models import STEP_KINDS, Event, is_step, trusted_event, trusted_events

__all__ = [
    "ARGS_SHA",
    "EVENT_FIELDS",
    "OUTPUT_SHA",
    "EventTable",
    "column_of",
    "event_fields",
    "steps_of",
]

#: `Event`'s fields in declaration order: the order of the values in each row.
EVENT_FIELDS: tuple[str, ...] = tuple(Event.model_fields)
_AT = {name: k for k, name in enumerate(EVENT_FIELDS)}
#: where a row holds its args_sha and output_sha
ARGS_SHA, OUTPUT_SHA = _AT["args_sha"], _AT["output_sha"]
_KIND, _PARENT = itemgetter(_AT["kind"]), itemgetter(_AT["parent_step_id"])


def event_fields(row: Sequence[Any]) -> dict[str, Any]:
    """The field dict of the event a row holds (`EVENT_FIELDS` order, each value of its type)."""
    (run_id, kind, ts_ms, step_id, tool, args_sha, output_sha, duration_ms, status, error, stop,
     usage, parent, group) = row  # fmt: skip
    return {  # a literal from the unpacked tuple: twice as fast as dict(zip(...))
        "run_id": run_id,
        "kind": kind,
        "ts_ms": ts_ms,
        "step_id": step_id,
        "tool": tool,
        "args_sha": args_sha,
        "output_sha": output_sha,
        "duration_ms": duration_ms,
        "status": status,
        "error": error,
        "stop_reason": stop,
        "usage": usage,
        "parent_step_id": parent,
        "concurrent_group": group,
    }


class EventTable(Sequence[Event]):
    """Events as rows: tuples of `Event`'s fields in `EVENT_FIELDS` order, each value already of
    its field's type (``usage`` a `Usage` or None), written by this library (never checked).

    Reading an item makes its `Event` once (the same object each time); iterating makes all.
    `column` reads field values straight from the rows.
    """

    __slots__ = ("_made", "rows")

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self._made: list[Event | None] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> Event: ...

    @overload
    def __getitem__(self, i: slice) -> list[Event]: ...

    def __getitem__(self, i: int | slice) -> Event | list[Event]:
        made = self._made
        if made is None:
            made = self._made = [None] * len(self.rows)
        if isinstance(i, slice):
            at = range(*i.indices(len(self.rows)))
            missing = [k for k in at if made[k] is None]
            if missing:  # made in one loop (`trusted_events`)
                rows = self.rows
                fresh = trusted_events(event_fields(rows[k]) for k in missing)
                for k, fresh_event in zip(missing, fresh, strict=True):
                    made[k] = fresh_event
            return [made[k] for k in at]  # type: ignore[misc]  # every one made above
        event = made[i]
        if event is None:
            event = made[i] = trusted_event(event_fields(self.rows[i]))
        return event

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of the same events (another table, a list): as a list would be."""
        if isinstance(other, EventTable):
            return self.rows == other.rows or self.events() == other.events()
        if isinstance(other, list):
            return self.events() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return repr(self.events())

    def events(self) -> list[Event]:
        """Every event, made now if not yet (each once), as a new list."""
        return self[:]

    def column(self, *names: str, start: int = 0, stop: int | None = None) -> list[Any]:
        """The value of field `names` (a tuple of values for several) of every event (of those
        from `start` to `stop`)."""
        rows = self.rows if start == 0 and stop is None else self.rows[start:stop]
        return list(map(itemgetter(*(_AT[n] for n in names)), rows))

    def steps(self) -> EventTable:
        """The steps among these events (`replay.models.is_step`): top-level tool and model
        calls, in order."""
        rows = self.rows
        kinds = map(STEP_KINDS.__contains__, map(_KIND, rows))
        top = map(is_, map(_PARENT, rows), repeat(None))
        return EventTable(list(compress(rows, map(and_, kinds, top))))

    def subset(self, positions: Iterable[int]) -> EventTable:
        """The events at `positions`, in that order."""
        rows = self.rows
        return EventTable([rows[k] for k in positions])


def steps_of(events: Sequence[Event]) -> Sequence[Event]:
    """The steps among `events` (`replay.models.is_step`): a table's as a table, without making
    its events."""
    if isinstance(events, EventTable):
        return events.steps()
    return [e for e in events if is_step(e)]


def column_of(events: Sequence[Event], name: str) -> list[Any]:
    """The value of field `name` of each of `events` (a table's read from its rows)."""
    if isinstance(events, EventTable):
        return events.column(name)
    return [getattr(e, name) for e in events]
