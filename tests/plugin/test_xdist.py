"""pytest-xdist: ``-n 2 --replay-all`` spreads the replays; the controller counts and reports them
all."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("xdist")


@pytest.fixture
def gate(project: Any) -> dict[str, str]:
    """Four cassettes: three the current agent matches, one recorded by the old two-email code."""
    stale = project.record(project.TWO_EMAILS)
    project.export(stale)
    for customer in ("c-1", "c-2", "c-3"):
        project.export(project.record(project.ONE_EMAIL, customer_id=customer))
    project.write_agent(project.ONE_EMAIL)
    return {"stale": stale}


def test_replay_all_under_xdist_counts_on_the_controller(
    project: Any, gate: dict[str, str]
) -> None:
    """With two workers the outcomes, the summary line and the report are those of the whole
    gate."""
    result = project.pytester.runpytest("-n", "2", "--replay-all", "--replay-report", "gate.json")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*replay diverged from recording * at step 3*",
            "*= 4 runs replayed: 3 matched, 1 diverged, 0 blessed =*",
            "bless the new behaviour with: pytest -n 2 --replay-all --replay-report gate.json * "
            "--replay-update",
        ]
    )
    data = json.loads((project.path / "gate.json").read_text())
    assert data["summary"]["replayed"] == 4
    assert [r["status"] for r in data["runs"] if r["run_id"] == gate["stale"]] == ["diverged"]


def test_bless_under_xdist(project: Any, gate: dict[str, str]) -> None:
    """Workers rewrite the diverging cassette and the controller reports the bless."""
    result = project.pytester.runpytest("-n", "2", "--replay-all", "--replay-update")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*= 4 runs replayed: 3 matched, 0 diverged, 1 blessed =*",
            f"blessed {gate['stale']}: rewrote cassettes/*",
        ]
    )
