"""Expired snapshots (issue 11 item 6): replay, export and pin name the pruned steps and since when.

Between day 14 (snapshots pruned) and day 30 (events pruned) a run still lists its steps but not
what they returned. A real SQLite store is pruned with an explicit `now_ms`; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replay import Recorder, replay_run
from replay.cli import cli
from replay.errors import ExpiredSnapshotsError
from replay.store import Store

DAY = 86_400_000


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@pytest.fixture
def recorded(tmp_path: Path) -> dict[str, Any]:
    """One run of a two-tool agent in a real store; `calls` counts what the agent's body ran."""
    db = tmp_path / "replay.db"
    rec = Recorder(db)
    calls: list[str] = []

    @rec.tool("kb.search")
    def kb_search(q: str) -> list[str]:
        return [f"article {q}"]

    @rec.tool("email.send")
    def send(to: str) -> dict[str, bool]:
        return {"ok": True}

    @rec.agent("support-agent")
    def handle(q: str) -> str:
        calls.append("agent")
        hits = kb_search(q)
        send("ops")
        return hits[0].upper()

    handle("refund")
    rec.flush()
    rec.close()
    with Store(db) as s:
        run = s.runs()[0]
        steps = [e for e in s.events(run.run_id) if e.kind == "tool_result"]
    calls.clear()
    return {
        "db": db,
        "run_id": run.run_id,
        "agent": handle,
        "calls": calls,
        "steps": steps,
        "tmp": tmp_path,
    }


def _prune_snapshots(db: Path, days: float = 20) -> None:
    """Prune as it would run `days` after the recording: snapshots (14 d) go, events (30 d) stay."""
    with Store(db) as s:
        res = s.prune(
            now_ms=int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000) + int(days * DAY)
        )
    assert res.snapshots > 0 and res.events == 0


def test_replay_names_the_expired_steps_and_since_when_before_running_the_agent(
    recorded: dict[str, Any],
) -> None:
    """replay_run raises ExpiredSnapshotsError naming each step, its tool and the expiry date; the
    agent never runs.
    """
    _prune_snapshots(recorded["db"])
    with pytest.raises(ExpiredSnapshotsError) as info:
        replay_run(recorded["run_id"], agent=recorded["agent"], db=recorded["db"])
    msg = str(info.value)
    s1, s2 = recorded["steps"]
    assert f"step 1 kb.search (expired since {_when(s1.ts_ms + 14 * DAY)})" in msg
    assert f"step 2 email.send (expired since {_when(s2.ts_ms + 14 * DAY)})" in msg
    assert recorded["run_id"] in msg and "replay pin" in msg
    assert info.value.steps == [
        (1, "kb.search", s1.ts_ms + 14 * DAY),
        (2, "email.send", s2.ts_ms + 14 * DAY),
    ]
    assert recorded["calls"] == []


def test_stubs_for_the_expired_tools_let_the_replay_run(recorded: dict[str, Any]) -> None:
    """With every expired tool answered by a stub, the replay runs and matches the recording's step
    sequence.
    """
    _prune_snapshots(recorded["db"])
    result = replay_run(
        recorded["run_id"],
        agent=recorded["agent"],
        db=recorded["db"],
        stubs={"kb.search": lambda q: [f"article {q}"], "email.send": lambda to: {"ok": True}},
    )
    assert result.output == "ARTICLE REFUND"
    assert [s.tool for s in result.steps] == ["kb.search", "email.send"]
    with pytest.raises(ExpiredSnapshotsError, match="step 2 email.send"):
        replay_run(
            recorded["run_id"],
            agent=recorded["agent"],
            db=recorded["db"],
            stubs={"kb.search": lambda q: [f"article {q}"]},
        )


def test_a_run_pinned_before_the_prune_keeps_its_snapshots_and_replays(
    recorded: dict[str, Any],
) -> None:
    """Pinning keeps the run's snapshots through a prune at day 20, so it still replays and
    matches.
    """
    res = CliRunner().invoke(
        cli, ["pin", recorded["run_id"], "--db", str(recorded["db"])], catch_exceptions=False
    )
    assert res.exit_code == 0
    with Store(recorded["db"]) as s:
        assert (
            s.prune(
                now_ms=int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000) + 20 * DAY
            ).snapshots
            == 0
        )
    result = replay_run(recorded["run_id"], agent=recorded["agent"], db=recorded["db"])
    assert result.diff.is_empty and result.output == "ARTICLE REFUND"


def test_export_refuses_an_expired_run_naming_steps_and_pins_nothing(
    recorded: dict[str, Any],
) -> None:
    """`replay export` exits 2 naming the expired steps and since when; no cassette is written and
    the run stays unpinned.
    """
    _prune_snapshots(recorded["db"])
    out = recorded["tmp"] / "cassettes"
    res = CliRunner().invoke(
        cli,
        ["export", recorded["run_id"], "--db", str(recorded["db"]), "-o", str(out)],
        catch_exceptions=False,
    )
    assert res.exit_code == 2
    assert "step 1 kb.search (expired since" in res.output and "--allow-expired" in res.output
    assert not out.exists()
    with Store(recorded["db"]) as s:
        assert not s.get_run(recorded["run_id"]).pinned


def test_export_with_allow_expired_writes_and_warns_and_the_cassette_refuses_replay(
    recorded: dict[str, Any],
) -> None:
    """--allow-expired writes and pins with a warning naming the steps; replaying that cassette is
    refused the same way.
    """
    _prune_snapshots(recorded["db"])
    out = recorded["tmp"] / "cassettes"
    res = CliRunner().invoke(
        cli,
        [
            "export",
            recorded["run_id"],
            "--db",
            str(recorded["db"]),
            "-o",
            str(out),
            "--allow-expired",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "Warning" in res.stderr and "step(s) 1, 2 expired" in res.stderr
    path = out / f"{recorded['run_id']}.json"
    assert json.loads(path.read_text())["events"]
    with Store(recorded["db"]) as s:
        assert s.get_run(recorded["run_id"]).pinned
    with pytest.raises(ExpiredSnapshotsError, match="step 1 kb.search"):
        replay_run(str(path), agent=recorded["agent"])


def test_pin_refuses_an_expired_run_unless_allowed(recorded: dict[str, Any]) -> None:
    """`replay pin` exits 2 saying which outputs are gone; --allow-expired pins it anyway."""
    _prune_snapshots(recorded["db"])
    db = str(recorded["db"])
    res = CliRunner().invoke(cli, ["pin", recorded["run_id"], "--db", db], catch_exceptions=False)
    assert (
        res.exit_code == 2 and "cannot pin run" in res.output and "step 2 email.send" in res.output
    )
    res = CliRunner().invoke(
        cli, ["pin", recorded["run_id"], "--db", db, "--allow-expired"], catch_exceptions=False
    )
    assert res.exit_code == 0
    with Store(recorded["db"]) as s:
        assert s.get_run(recorded["run_id"]).pinned


AGENT_MODULE = """
from replay import Recorder
rec = Recorder(":memory:")

@rec.tool("kb.search")
def kb_search(q):
    return ["article " + q]

@rec.tool("email.send")
def send(to):
    return {"ok": True}

@rec.agent("support-agent")
def handle(q):
    hits = kb_search(q)
    send("ops")
    return hits[0].upper()
"""


def test_replay_run_cli_reports_the_expired_steps_with_exit_2(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replay run RUN_ID` on an expired run exits 2 (an error, not a divergence) naming the
    steps."""
    name = f"expired_agent_{recorded['run_id'][-8:]}"
    (recorded["tmp"] / f"{name}.py").write_text(AGENT_MODULE)
    monkeypatch.syspath_prepend(str(recorded["tmp"]))
    monkeypatch.chdir(recorded["tmp"])
    _prune_snapshots(recorded["db"])
    res = CliRunner().invoke(
        cli,
        ["run", recorded["run_id"], "--db", str(recorded["db"]), "--agent", f"{name}:handle"],
        catch_exceptions=False,
    )
    assert res.exit_code == 2
    assert "step 1 kb.search (expired since" in res.output


def test_snapshots_not_yet_expired_change_nothing(recorded: dict[str, Any]) -> None:
    """A prune at day 10 removes nothing a replay needs: it runs and matches."""
    with Store(recorded["db"]) as s:
        assert (
            s.prune(
                now_ms=int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000) + 10 * DAY
            ).snapshots
            == 0
        )
        assert s.expired_steps(s.get_run(recorded["run_id"])) == []
    assert replay_run(recorded["run_id"], agent=recorded["agent"], db=recorded["db"]).diff.is_empty
