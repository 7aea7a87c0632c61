"""`ReplayOptions`: the settings of one replay, as `pytest_replay_configure` gets them.

Standard library only: this module is imported whenever the plugin is, replay or not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["MARKER_KWARGS", "ON_UNRECORDED", "ReplayOptions"]

#: The keyword arguments ``@pytest.mark.replay(...)`` and the ``replay_config`` fixture accept.
MARKER_KWARGS: tuple[str, ...] = (
    "agent",
    "db",
    "ignore",
    "on_unrecorded",
    "ordered",
    "stubs",
    "stub_mode",
    "match",
    "live",
    # what-if (replay.faults, replay.flaky)
    "faults",
    "repeat",
)
ON_UNRECORDED: tuple[str, ...] = ("error", "none")


@dataclasses.dataclass
class ReplayOptions:
    """How one recorded run is replayed; a `pytest_replay_configure` hook may change any field.

    Attributes:
        source: the run id or the cassette path being replayed.
        db: the store a run id is looked up in (a cassette ignores it).
        agent: the function to call (or ``"module:function"``); None calls the agent the project
            registered under the recording's agent name (see `replay.agents`).
        agents: modules (``MODULE`` or ``MODULE:FN``) that register agents: ``--replay-agent`` and
            the ini option ``replay_agents``.
        stubs: tool name -> function answering that tool instead of the recording.
        stub_mode: ``"always"``, or ``"miss"``: stubs answer only what the recording cannot.
        match: tool -> ``"sequence"`` or ``{"ignore": [ARG]}`` (``--replay-match``).
        live: tools or globs that run for real (``--replay-live``).
        ignore: diff ignore rules (``tool:NAME``, ``field:NAME``, ``output:PATH``).
        on_unrecorded: ``"error"`` raises `UnrecordedCall` in the agent; ``"none"`` answers None.
        ordered: False compares the steps as a multiset (agents calling tools in parallel).
        max_token_delta_pct: fail when tokens grow by more than this percentage (None: no gate).
        max_spend_delta_pct: fail when spend grows by more than this percentage (None: no gate).
        faults: the faults of this replay (`replay.faults` spec), None: none.
        repeat: replay this many times and check the step sequence is stable (`replay.flaky`).
    """

    source: str
    db: str | None = None
    agent: Callable[..., Any] | str | None = None
    agents: list[str] = dataclasses.field(default_factory=list)
    stubs: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    stub_mode: str = "always"
    match: dict[str, Any] = dataclasses.field(default_factory=dict)
    live: list[str] = dataclasses.field(default_factory=list)
    ignore: list[Any] = dataclasses.field(default_factory=list)
    on_unrecorded: str = "error"
    ordered: bool = True
    max_token_delta_pct: float | None = None
    max_spend_delta_pct: float | None = None
    faults: Any = None
    repeat: int = 1
