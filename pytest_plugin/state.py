"""The plugin's session state and the names `plugin.py` and `_engine.py` share.

Standard library and pytest only: imported whenever the plugin is, replay or not.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ReplayFailed", "Source", "State", "display", "is_cassette"]


class ReplayFailed(Exception):
    """A replay that diverged (or could not be blessed); its text is the item's failure report."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One ``--replay`` / ``--replay-all`` source: a run id in a store, or a cassette file."""

    given: str
    cassette: Path | None  # resolved, for a cassette
    db: Path | None  # resolved, for a run id


@dataclasses.dataclass
class State:
    """The plugin's state for one pytest session, kept in ``config.stash``."""

    sources: list[Source]
    update: bool
    report: Path | None
    max_token_delta_pct: float
    max_spend_delta_pct: float
    ignore: list[str]
    agents: list[str]  # --replay-agent, then ini replay_agents
    match: list[str]  # --replay-match TOOL=RULE
    live: list[str]  # --replay-live GLOB
    cassettes_dir: Path
    flag_db: Path | None  # --replay-db
    default_db: Path  # REPLAY_DB, else ini replay_db, else replay.db
    active: bool  # a --replay* option asked for replays or a report
    outcomes: dict[str, Any] = dataclasses.field(default_factory=dict)  # nodeid -> Outcome
    report_error: str | None = None
    #: --replay-update-force (or ini replay_update_force with --replay-update)
    update_force: bool = False


def is_cassette(source: str) -> bool:
    """A ``--replay`` / marker source names a cassette file (else it is a run id)."""
    return source.endswith(".json") or "/" in source or os.sep in source or Path(source).is_file()


def display(config: pytest.Config, path: Path) -> str:
    """`path` relative to the rootdir when inside it (node ids, messages), else absolute."""
    try:
        return path.relative_to(config.rootpath).as_posix()
    except ValueError:
        return str(path)
