"""agent-replay: record every run of a tool-calling agent, replay it, diff it.

Example::

    from replay import Recorder
    rec = Recorder("replay.db")

    @rec.tool("http.get")
    def http_get(url: str) -> dict: ...

    @rec.agent("support-agent", versions={"model": "m-2026-10"})
    def handle(ticket: dict) -> str: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from replay.context import current_run_id, propagate, stop
from replay.errors import (
    CassetteDecodeError,
    EntrypointError,
    InvalidStopReasonError,
    RecordedToolError,
    ReplayError,
    RunNotFoundError,
    SchemaVersionError,
    StopRun,
    StoreError,
    UnrecordedCall,
)
from replay.hashing import canonical_json, sha
from replay.models import STOP_REASONS, Event, Run, Usage

__all__ = [
    "STOP_REASONS",
    "CassetteDecodeError",
    "EntrypointError",
    "Event",
    "Guards",
    "InvalidStopReasonError",
    "Recorder",
    "RecordedToolError",
    "RedactionConfig",
    "ReplayError",
    "ReplayResult",
    "Run",
    "RunNotFoundError",
    "SchemaVersionError",
    "StopRun",
    "StoreError",
    "UnrecordedCall",
    "Usage",
    "canonical_json",
    "current_run_id",
    "propagate",
    "register_agent",
    "replay_run",
    "replay_run_async",
    "sha",
    "stop",
]

__version__ = "0.1.0"

if TYPE_CHECKING:  # the real types for type checkers; at run time they load lazily (below)
    from replay.agents import register_agent
    from replay.recorder import Guards, Recorder
    from replay.redaction import RedactionConfig
    from replay.replayer import ReplayResult, replay_run, replay_run_async

_LAZY = {
    "Recorder": "replay.recorder",
    "Guards": "replay.recorder",
    "RedactionConfig": "replay.redaction",
    "register_agent": "replay.agents",
    "replay_run": "replay.replayer",
    "replay_run_async": "replay.replayer",
    "ReplayResult": "replay.replayer",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import replay` (e.g. by the pytest plugin) stays cheap for users who do not record.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'replay' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
