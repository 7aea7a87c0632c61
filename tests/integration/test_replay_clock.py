"""A replay runs at the recorded wall-clock time; random ids are left out of args_sha with
ignore_args.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import time
import uuid
from typing import Any

import pytest
import time_machine

from replay import Recorder, UnrecordedCall, replay_run

RECORDED_AT = dt.datetime(2024, 2, 29, 10, 0, tzinfo=dt.timezone.utc)


def _record_dated_run(tmp_path: pathlib.Path) -> tuple[Any, str, list[Any]]:
    """A run recorded on 2024-02-29 whose prompt says what day it is."""
    rec = Recorder(tmp_path / "rec.db")
    seen: list[Any] = []

    @rec.model("llm")
    def llm(prompt: str) -> str:
        return "ok"

    @rec.agent("dated")
    def agent(question: str) -> str:
        now = time.time()
        seen.append((now, dt.datetime.now(dt.timezone.utc)))
        return llm(f"Today is {dt.date.today().isoformat()}. {question}")

    with time_machine.travel(RECORDED_AT, tick=True):
        agent("Is the order late?")
    rid = rec.last_run_id
    rec.close()
    return agent, rid, seen


def test_today_in_a_prompt_replays_identically(tmp_path: pathlib.Path) -> None:
    """An agent that puts today's date in its prompt replays with an empty diff, years later."""
    agent, rid, seen = _record_dated_run(tmp_path)
    res = replay_run(rid, db=tmp_path / "rec.db", agent=agent)
    assert res.exception is None and res.diff.is_empty, str(res.diff)
    replayed_now, replayed_dt = seen[-1]
    started = res.recorded.started_ms / 1000
    assert started <= replayed_now < started + 30, (
        "the clock starts at the recorded start and ticks on"
    )
    assert replayed_dt.date() == RECORDED_AT.date()


def test_clock_real_leaves_the_clock_alone(tmp_path: pathlib.Path) -> None:
    """With clock="real" the agent sees today's date, so the dated prompt is an unrecorded call."""
    agent, rid, seen = _record_dated_run(tmp_path)
    res = replay_run(rid, db=tmp_path / "rec.db", agent=agent, clock="real")
    assert isinstance(res.exception, UnrecordedCall)
    assert seen[-1][1].date() == dt.datetime.now(dt.timezone.utc).date()


def test_recorder_timestamps_and_durations_stay_sane_under_the_recorded_clock(
    tmp_path: pathlib.Path,
) -> None:
    """The replayed run is stamped at the recorded time and its step durations are real
    (perf_counter does not travel).
    """
    agent, rid, _ = _record_dated_run(tmp_path)
    res = replay_run(rid, db=tmp_path / "rec.db", agent=agent)
    assert abs(res.replayed.started_ms - res.recorded.started_ms) < 30_000
    assert all(0 <= (s.duration_ms or 0) < 10_000 for s in res.steps)
    assert time.time() > RECORDED_AT.timestamp() + 86400, "the clock is back after the replay"


def test_an_unknown_clock_is_refused_before_anything_runs(tmp_path: pathlib.Path) -> None:
    """clock= accepts 'recorded' or 'real'; anything else is a ValueError naming both."""
    with pytest.raises(ValueError, match="'recorded'.*'real'"):
        replay_run("r_nothing", db=tmp_path / "none.db", clock="yesterday")


def test_ignore_args_leaves_random_ids_out_of_args_sha(tmp_path: pathlib.Path) -> None:
    """A tool declared with ignore_args matches in replay although its idempotency key is new each
    run.
    """
    rec = Recorder(tmp_path / "rec.db")

    @rec.tool("payments.charge", ignore_args=["idempotency_key", "meta.request_id"])
    def charge(amount: int, idempotency_key: str, meta: dict) -> dict:
        return {"charged": amount}

    @rec.tool("audit.log")
    def audit(event: str, request_id: str) -> None:
        return None

    calls: list[dict] = []

    @rec.agent("payer")
    def agent(amount: int, log: bool) -> dict:
        meta = {"request_id": uuid.uuid4().hex, "source": "web"}
        out = charge(amount, idempotency_key=str(uuid.uuid4()), meta=meta)
        calls.append(meta)
        if log:
            audit("charged", request_id=uuid.uuid4().hex)
        return out

    agent(5, False)
    rid = rec.last_run_id
    agent(6, True)
    rid_logged = rec.last_run_id
    rec.close()
    res = replay_run(rid, db=tmp_path / "rec.db", agent=agent)
    assert res.exception is None and res.diff.is_empty, str(res.diff)
    assert set(calls[-1]) == {"request_id", "source"}, "the agent's own dict is not modified"
    logged = replay_run(rid_logged, db=tmp_path / "rec.db", agent=agent)
    assert isinstance(logged.exception, UnrecordedCall), (
        "without ignore_args a random id does not match"
    )


def test_ignore_args_must_be_names(tmp_path: pathlib.Path) -> None:
    """ignore_args given as one string (not a list) is a TypeError that shows the expected form."""
    rec = Recorder(tmp_path / "rec.db")
    with pytest.raises(TypeError, match="list of argument names"):
        rec.tool("t", ignore_args="idempotency_key")(lambda idempotency_key: None)
    rec.close()


DATED_AGENT = """
import datetime as dt, os
from replay import Recorder

rec = Recorder(os.environ["CLOCK_DB"])

@rec.model("llm")
def llm(prompt: str) -> str:
    return "ok"

@rec.agent("dated-cli")
def handle(question: str) -> str:
    return llm(f"Today is {dt.date.today().isoformat()}. {question}")
"""


def test_cli_run_replays_at_the_recorded_time_and_clock_real_opts_out(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replay run` matches a dated run at the recorded time; `--clock real` shows the divergence
    (exit 1).
    """
    from click.testing import CliRunner

    from replay.cli import cli

    name = f"clock_agent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(DATED_AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLOCK_DB", str(tmp_path / "rec.db"))
    import importlib

    mod = importlib.import_module(name)
    with time_machine.travel(RECORDED_AT, tick=True):
        mod.handle("Late?")
    rid = mod.rec.last_run_id
    mod.rec.close()
    args = ["run", rid, "--db", str(tmp_path / "rec.db"), "--agent", f"{name}:handle"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    real = CliRunner().invoke(cli, [*args, "--clock", "real"])
    assert real.exit_code == 1, real.output
    bad = CliRunner().invoke(cli, [*args, "--clock", "tomorrow"])
    assert bad.exit_code == 2 and "'recorded'" in bad.output


def test_async_replay_runs_at_the_recorded_time(tmp_path: pathlib.Path) -> None:
    """replay_run_async inside a running loop also replays a dated async agent with an empty
    diff."""
    import asyncio

    from replay import replay_run_async

    rec = Recorder(tmp_path / "rec.db")

    @rec.model("llm")
    async def llm(prompt: str) -> str:
        return "ok"

    @rec.agent("dated-async")
    async def agent(question: str) -> str:
        return await llm(f"Today is {dt.date.today().isoformat()}. {question}")

    ids: list[str | None] = []

    async def record() -> None:
        with time_machine.travel(RECORDED_AT, tick=True):
            await agent("Late?")
        ids.append(rec.last_run_id)

    asyncio.run(record())
    rec.close()

    async def replay() -> Any:
        return await replay_run_async(ids[0], db=tmp_path / "rec.db", agent=agent)

    res = asyncio.run(replay())
    assert res.exception is None and res.diff.is_empty, str(res.diff)
