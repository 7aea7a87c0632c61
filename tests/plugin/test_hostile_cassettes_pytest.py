"""Hostile cassettes through pytest: `--replay FILE` and `--replay-all` run nothing they name.

The library and CLI paths are in tests/integration/test_hostile_cassettes.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replay.cassette import Cassette, dump_cassette
from replay.models import Event, Run, new_run_id

EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def handle(x):
    Path({marker!r}).write_text("called")
"""


def _cassette(folder: Path, entrypoint: str, value: Any) -> str:
    rid = new_run_id()
    run = Run(
        run_id=rid,
        agent="evil-agent",
        entrypoint=entrypoint,
        input=value,
        started_ms=1,
        ended_ms=2,
        stop_reason="completed",
        call_style="value",
    )
    cas = Cassette(
        run=run,
        events=[
            Event(run_id=rid, kind="run_start", ts_ms=1),
            Event(run_id=rid, kind="stop", ts_ms=2, stop_reason="completed"),
        ],
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{rid}.json").write_text(dump_cassette(cas))
    return rid


@pytest.fixture
def hostile(pytester: pytest.Pytester) -> tuple[pytest.Pytester, Path, list[str]]:
    """A pytest project with a side-effect module and three hostile cassettes: (pytester, markers
    folder, run ids)."""
    markers = pytester.path / "markers"
    markers.mkdir()
    pytester.makepyfile(evil_mod=EVIL_MODULE.format(marker=str(markers / "imported")))
    pytester.syspathinsert()
    folder = pytester.path / "cassettes"
    ids = [
        _cassette(folder, "os:system", f"touch {markers / 'system'}"),
        _cassette(folder, "subprocess:call", ["touch", str(markers / "call")]),
        _cassette(folder, "evil_mod:handle", {}),
    ]
    return pytester, markers, ids


def _assert_refused(result: pytest.RunResult, ids: list[str], markers: Path) -> None:
    out = result.stdout.str()
    for rid in ids:
        assert (
            f"cassettes/{rid}.json: cannot replay run {rid}: it needs agent 'evil-agent'" in out
        ), out
    assert "Traceback" not in out
    assert list(markers.iterdir()) == [], "a hostile cassette ran something"


def test_replay_all_refuses_hostile_cassettes(hostile: Any) -> None:
    """`pytest --replay-all` over cassettes naming os:system, subprocess:call and a side-effect
    module fails collection; nothing runs."""
    pytester, markers, ids = hostile
    result = pytester.runpytest("--replay-all")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*3 runs replayed: 0 matched, 0 diverged, 0 blessed, 3 errors*"])
    _assert_refused(result, ids, markers)


def test_replay_file_refuses_hostile_cassettes(hostile: Any) -> None:
    """`pytest --replay cassettes/X.json` for each hostile cassette is a collection error with the
    fix; nothing runs."""
    pytester, markers, ids = hostile
    args = [a for rid in ids for a in ("--replay", f"cassettes/{rid}.json")]
    result = pytester.runpytest(*args, "--continue-on-collection-errors")
    result.stdout.fnmatch_lines(
        ["*Register it one of these ways*--replay-agent your.module:handle*"]
    )
    _assert_refused(result, ids, markers)


def test_replay_all_in_a_subprocess_runs_nothing(hostile: Any) -> None:
    """The same refusal through a real `pytest` process (no in-process state helps it)."""
    pytester, markers, ids = hostile
    result = pytester.runpytest_subprocess("--replay-all")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    _assert_refused(result, ids, markers)
