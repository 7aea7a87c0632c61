"""`replay demo`: through the CLI entry point, twice on one store, and as the installed command."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from replay.cassette import load_cassette
from replay.cli import cli
from replay.store import Store

RUN_ID = re.compile(r"replay show (r_[0-9a-z]{26})")


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_records_finds_exports_and_replays_the_incident(tmp_path, monkeypatch):
    """The demo records 25 runs, shows the worst one's five answers, exports it and diffs the fix
    against it."""
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    out = _invoke(["demo", "--db", str(tmp_path / "demo.db")])
    assert time.perf_counter() - t0 < 10

    run_id = RUN_ID.search(out).group(1)
    for expected in [
        "[1/6] recording 20 healthy runs",
        "every run 'completed': the success rate hides the incident.",
        "5 of 5 emailed twice; healthy batch: 0 of 20.",
        f"[3/6] the worst run, {run_id}, from the recording alone (replay show):",
        "repeated    email.send with the same args 2x",
        "4. which versions    app=support-agent-v1 model=scripted-policy-2026-01 prompt=support-v3",
        "5. why it stopped    completed",
        f"[4/6] exported cassettes/incidents/{run_id}.json (new; run pinned in the store)",
        f"replay matches recording {run_id}",
        "stop reason: completed -> escalated",
        "email.send 2 calls -> 1 (the fake outbox delivered 1 email)",
        f"  pytest --replay cassettes/incidents/{run_id}.json --replay-agent "
        "replay.demo_agent:handle",
    ]:
        assert expected in out, f"{expected!r} not in:\n{out}"
    assert re.search(r"healthy +20 +4\.0 ", out), out  # tool calls per run
    assert re.search(r"incident +5 +1[0-4]\.\d ", out), out

    cassette = load_cassette(tmp_path / "cassettes" / "incidents" / f"{run_id}.json")
    assert [e.tool for e in cassette.steps].count("email.send") == 2
    with Store(tmp_path / "demo.db") as store:
        assert store.count_runs() == 25
        assert store.get_run(run_id).pinned


def test_demo_twice_on_one_store_adds_runs(tmp_path, monkeypatch):
    """Running the demo again on the same store adds 25 runs and exports the new worst run next to
    the first."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPPORT_AGENT_TIME_SCALE", "0")
    first = RUN_ID.search(_invoke(["demo", "--db", "demo.db", "--cassettes", "out"])).group(1)
    out = _invoke(["demo", "--db", "demo.db", "--cassettes", "out"])
    second = RUN_ID.search(out).group(1)
    assert "(50 runs in the store, 25 new)" in out
    assert first != second
    assert sorted(p.name for p in (tmp_path / "out" / "incidents").iterdir()) == sorted(
        [f"{first}.json", f"{second}.json"]
    )
    # The worst runs of both batches play out the same way: the same steps, hashes included.
    a, b = (load_cassette(tmp_path / "out" / "incidents" / f"{r}.json") for r in (first, second))
    assert [(e.tool, e.status) for e in a.steps] == [(e.tool, e.status) for e in b.steps]


def test_demo_rejects_a_store_in_a_missing_folder(tmp_path):
    """A --db in a folder that does not exist exits 2 naming the folder, before recording
    anything."""
    result = CliRunner().invoke(cli, ["demo", "--db", str(tmp_path / "nope" / "demo.db")])
    assert result.exit_code == 2
    assert f"the folder {tmp_path / 'nope'} does not exist" in result.output


def test_replay_demo_runs_as_the_installed_command(tmp_path):
    """The installed `replay demo` finishes in under 10 seconds and ends with the next commands to
    run."""
    exe = Path(sys.executable).parent / "replay"  # beside the interpreter, not whatever PATH finds
    if not exe.exists():
        pytest.fail(
            f"the `replay` console script is not installed beside {sys.executable}: pip install -e "
            "."
        )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(exe), "demo", "--db", "demo.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 10, f"replay demo took {elapsed:.1f}s"
    run_id = RUN_ID.search(proc.stdout).group(1)
    tail = proc.stdout.splitlines()[-8:]
    assert tail[0] == "next:"
    assert tail[1] == f"  replay show {run_id} --db demo.db"
    assert (
        tail[2] == f"  pytest --replay cassettes/incidents/{run_id}.json --replay-agent "
        "replay.demo_agent:handle"
    )
    assert (tmp_path / "cassettes" / "incidents" / f"{run_id}.json").is_file()
