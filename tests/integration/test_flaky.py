"""``repeat``: a run replayed K times whose step sequence is not stable is reported flaky, with a
cause."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from replay import Recorder
from replay.errors import ReplayError
from replay.flaky import gate, load_quarantine, replay_repeat

TOOLS = ["crm", "billing", "shipping", "kb"]


@pytest.fixture
def agents(tmp_path: Path) -> Any:
    """Three agents over the same four tools, each recorded once: deterministic, random order, clock
    order."""
    rec = Recorder(tmp_path / "rec.db")

    @rec.tool("fetch")
    def fetch(source: str) -> dict[str, str]:
        return {"source": source}

    @rec.agent("steady")
    def steady(ticket: str) -> str:
        for t in TOOLS:
            fetch(t)
        return "ok"

    @rec.agent("shuffled")
    def shuffled(ticket: str) -> str:
        order = list(TOOLS)
        random.shuffle(order)  # the bug: the tool order depends on a random draw
        for t in order:
            fetch(t)
        return "ok"

    @rec.agent("clocked")
    def clocked(ticket: str) -> str:
        k = time.perf_counter_ns() // 1000 % len(TOOLS)  # the bug: the order depends on the clock
        for t in TOOLS[k:] + TOOLS[:k]:
            fetch(t)
        return "ok"

    runs = {}
    for fn in (steady, shuffled, clocked):
        fn("T-1")
        runs[fn.__name__] = (rec.last_run_id, fn)
    rec.flush()
    rec.close()
    return tmp_path / "rec.db", runs


def _repeat(agents: Any, name: str, k: int = 8) -> Any:
    db, runs = agents
    rid, fn = runs[name]
    return replay_repeat(rid, repeat=k, db=db, agent=fn, ordered=False)


def test_deterministic_agent_is_stable(agents: Any) -> None:
    """The steady agent gives one step sequence over 8 replays and passes every policy."""
    report = _repeat(agents, "steady")
    assert (report.flaky, report.sequences, report.repeat) == (False, 1, 8)
    assert report.first_difference is None and report.causes == []
    assert gate(report, "fail") == ("ok", None)
    assert "stable over 8 replays" in report.summary()


def test_random_tool_order_is_caught_and_random_named(agents: Any) -> None:
    """A random tool order gives several sequences; the report names step 1..4, and 'random' as the
    cause."""
    report = _repeat(agents, "shuffled")
    assert report.flaky and 2 <= report.sequences <= 8
    assert report.first_difference is not None and 1 <= report.first_difference <= 3
    assert len(report.differing) >= 2
    assert all(d.startswith("fetch args ") for d in report.differing), report.differing
    assert "random" in report.causes
    status, message = gate(report, "fail")
    assert status == "fail"
    assert message is not None and "flaky: " in message and "likely cause: random" in message


def test_clock_dependent_order_names_time(agents: Any) -> None:
    """An order derived from the clock is flaky with 'time' as the likely cause."""
    report = _repeat(agents, "clocked")
    assert report.flaky
    assert "time" in report.causes and "random" not in report.causes


def test_policies_and_quarantine(agents: Any, tmp_path: Path) -> None:
    """warn turns a flaky run into a warning; a quarantine list (ids, # comments) does so for listed
    runs only."""
    report = _repeat(agents, "shuffled")
    assert gate(report, "warn")[0] == "warn"
    listed = tmp_path / "quarantine.txt"
    listed.write_text(f"# known flaky, JIRA-12\n{report.run_id}  # random order\n")
    assert load_quarantine(listed) == {report.run_id}
    status, message = gate(report, "fail", load_quarantine(listed))
    assert status == "warn" and message is not None and message.endswith("(quarantined)")
    assert gate(report, "fail", {"r_someone_else"})[0] == "fail"


def test_bad_policy_repeat_and_quarantine_file_are_named(agents: Any, tmp_path: Path) -> None:
    """An unknown policy, repeat below 2 and a missing quarantine file raise errors saying what to
    do."""
    report = _repeat(agents, "steady", k=2)
    with pytest.raises(ReplayError, match="flaky policy 'ignore': use one of fail, warn"):
        gate(report, "ignore")
    with pytest.raises(ReplayError, match="repeat=1: replay at least 2 times"):
        _repeat(agents, "steady", k=1)
    with pytest.raises(ReplayError, match="quarantine list .*missing.txt"):
        load_quarantine(tmp_path / "missing.txt")
