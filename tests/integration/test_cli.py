"""The `replay` CLI through its real entry point: runs, show, prune, pin, scan, export, import,
diff, run."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replay.cli import cli
from replay.store import Store
from replay.store_api import open_store, store_label

AGENT = """
import os
from replay import Recorder
rec = Recorder(os.environ["AGENT_DB"])
MODE = {"emails": 1}

@rec.tool("kb.search")
def kb_search(query: str) -> list:
    return ["a"]

@rec.tool("email.send")
def send(to: str, body: str) -> dict:
    return {"ok": True}

@rec.agent("support-agent", versions={"model": "m-1", "prompt": "p-2"})
def handle(ticket: dict) -> str:
    kb_search(ticket["q"])
    for _ in range(MODE["emails"]):
        send(ticket["email"], "hello")
    return "ok"

@rec.agent("other-agent")
def other() -> int:
    return 1
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Any:
    """An agent that recorded 4 runs into a new store, on each backend (SQLite, PostgreSQL)."""
    name = f"cli_agent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    db = store_url
    monkeypatch.setenv("AGENT_DB", str(db))
    monkeypatch.setenv("REPLAY_DB", str(db))
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(name)
    ids = []
    for i in range(3):
        mod.handle({"q": f"q{i}", "email": "ann@example.com"})
        ids.append(mod.rec.last_run_id)
    mod.other()
    mod.rec.flush()
    yield mod, db, ids
    mod.rec.close()
    sys.modules.pop(name, None)


def test_runs_lists_newest_first_with_filters(env: Any) -> None:
    """`replay runs` lists runs newest first and filters by agent and stop reason; --json gives the
    rows."""
    mod, db, ids = env
    res = invoke("runs", "--agent", "support-agent")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["run_id", "agent", "started", "(UTC)"]
    assert [ln.split()[0] for ln in lines[1:]] == list(reversed(ids))
    data = json.loads(invoke("runs", "--json").output)
    assert len(data) == 4 and {d["agent"] for d in data} == {"support-agent", "other-agent"}
    assert "no runs match" in invoke("runs", "--stop-reason", "loop_detected").output


def test_bad_since_exits_2_with_the_fix(env: Any) -> None:
    """An unparsable --since exits 2 and says what a duration looks like."""
    res = CliRunner().invoke(cli, ["runs", "--since", "yesterday"])
    assert res.exit_code == 2 and "--since" in res.output


def test_show_answers_the_five_questions(env: Any) -> None:
    """`replay show` prints tools in order with args and output hashes, versions and the stop
    reason."""
    mod, db, ids = env
    res = invoke("show", ids[0])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "versions    model=m-1 prompt=p-2" in out
    assert out.index("kb.search") < out.index("email.send")
    with open_store(db) as s:
        steps = [e for e in s.events(ids[0]) if e.tool]
    for e in steps:
        assert e.args_sha[:12] in out and e.output_sha[:12] in out
    assert out.rstrip().endswith("stop        completed")
    full = invoke("show", ids[0], "--full").output
    assert steps[0].args_sha in full
    data = json.loads(invoke("show", ids[0], "--json").output)
    assert data["run"]["run_id"] == ids[0] and [e["kind"] for e in data["events"]][0] == "run_start"


def test_show_accepts_a_unique_prefix_and_marks_repeats(env: Any) -> None:
    """`replay show` takes a unique id prefix and lists calls repeated with the same args."""
    mod, db, ids = env
    mod.MODE["emails"] = 2
    mod.handle({"q": "x", "email": "ann@example.com"})
    mod.rec.flush()
    rid = mod.rec.last_run_id
    res = invoke("show", rid[:-3])
    assert rid in res.output
    assert "repeated    email.send with the same args 2x (steps 2, 3)" in res.output


def test_unknown_run_exits_2_naming_the_store(env: Any) -> None:
    """An unknown run id exits 2 with the store, its run count and `replay runs`."""
    mod, db, ids = env
    res = CliRunner().invoke(cli, ["show", "r_x"])
    assert res.exit_code == 2
    name = "replay.db" if db.endswith(".db") else store_label(db)
    assert f"no run 'r_x' in {name} (4 runs; list them with `replay runs`)" in res.output


def test_missing_store_exits_2(tmp_path: Path) -> None:
    """A command on a store that does not exist exits 2 and creates nothing."""
    res = CliRunner().invoke(cli, ["runs", "--db", str(tmp_path / "nope.db")])
    assert res.exit_code == 2 and "no store at" in res.output
    assert not (tmp_path / "nope.db").exists()


def test_pin_and_prune(env: Any) -> None:
    """A pinned run survives prune; --dry-run counts without deleting."""
    mod, db, ids = env
    assert invoke("pin", ids[0]).output.strip() == f"pinned {ids[0]}"
    with open_store(db) as s:
        assert s.get_run(ids[0]).pinned
        s.prune(now_ms=10**15, dry_run=False)  # far future: everything unpinned expired
        assert [r.run_id for r in s.runs()] == [ids[0]]
    res = invoke("prune", "--dry-run", "--json")
    assert json.loads(res.output)["dry_run"] is True


def test_export_import_round_trip(env: Any, tmp_path: Path) -> None:
    """export writes a cassette and pins the run; import loads it once; a second import adds
    nothing."""
    mod, db, ids = env
    res = invoke("export", ids[1], "-o", str(tmp_path / "cas"))
    path = tmp_path / "cas" / f"{ids[1]}.json"
    assert res.exit_code == 0 and path.exists()
    with open_store(db) as s:
        assert s.get_run(ids[1]).pinned
    assert (
        CliRunner().invoke(cli, ["export", ids[1], "-o", str(tmp_path / "cas")]).exit_code == 0
    )  # identical: fine
    other = tmp_path / "other.db"
    assert "imported 1 run(s)" in invoke("import", str(path), "--db", str(other)).output
    assert "imported 0 run(s)" in invoke("import", str(path), "--db", str(other)).output


def test_import_of_a_broken_cassette_changes_nothing(env: Any, tmp_path: Path) -> None:
    """A broken file among the inputs exits 2 naming it, and nothing is imported."""
    mod, db, ids = env
    invoke("export", ids[0], "-o", str(tmp_path / "cas"))
    bad = tmp_path / "cas" / "bad.json"
    bad.write_text('{"format": "agent-replay-cassette", "version": 1}')
    other = tmp_path / "other.db"
    res = CliRunner().invoke(
        cli, ["import", str(tmp_path / "cas" / f"{ids[0]}.json"), str(bad), "--db", str(other)]
    )
    assert res.exit_code == 2 and "bad.json: run: Field required" in res.output
    assert not other.exists()


def test_diff_of_two_runs(env: Any) -> None:
    """`replay diff A B` exits 0 for equal step sequences and 1, with the report, when they
    differ."""
    mod, db, ids = env
    assert invoke("diff", ids[0], ids[0]).exit_code == 0
    mod.MODE["emails"] = 2
    mod.handle({"q": "q0", "email": "ann@example.com"})
    mod.rec.flush()
    res = invoke("diff", ids[0], mod.rec.last_run_id)
    assert res.exit_code == 1 and "email.send" in res.output
    md = invoke("diff", ids[0], mod.rec.last_run_id, "--markdown")
    assert md.output.startswith("#") or "|" in md.output
    assert json.loads(invoke("diff", ids[0], mod.rec.last_run_id, "--json").output)


def test_run_exit_codes_and_reports(env: Any, tmp_path: Path) -> None:
    """`replay run` exits 0 when replays match, 1 when one diverges, and writes the report by
    suffix."""
    mod, db, ids = env
    ok = invoke("run", ids[0])
    assert ok.exit_code == 0, ok.output
    mod.MODE["emails"] = 2
    res = invoke("run", *ids, "--report", str(tmp_path / "r.json"))
    assert res.exit_code == 1
    assert "3 runs replayed: 0 matched, 3 diverged, 0 blessed" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["diverged"] == 3
    invoke("run", ids[0], "--report", str(tmp_path / "r.xml"))
    assert "<testsuite" in (tmp_path / "r.xml").read_text()
    invoke("run", ids[0], "--report", str(tmp_path / "r.md"))
    assert "agent-replay" in (tmp_path / "r.md").read_text()


def test_run_last_replays_recent_runs_of_an_agent(env: Any) -> None:
    """`replay run --last N --agent NAME` replays the N newest runs of that agent."""
    res = invoke("run", "--last", "2", "--agent", "support-agent", "--json")
    data = json.loads(res.output)
    assert (
        res.exit_code == 0 and data["summary"]["replayed"] == 2 and data["summary"]["matched"] == 2
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], "use --last N"),
        (["run", "r_nope"], "no run 'r_nope'"),
        (["run", "x", "--json", "--markdown"], "exclude each other"),
        (["run", "--last", "2", "--agent", "nobody"], "no agent 'nobody'"),
        (["run", "x", "--report", "r.txt"], "use a .json, .md or .xml file"),
    ],
)
def test_run_bad_input_exits_2(env: Any, args: list[str], message: str) -> None:
    """Bad `replay run` input exits 2 with a message that names the problem."""
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_scan_finds_planted_pii_without_printing_it(tmp_path: Path) -> None:
    """`replay scan` exits 1 with the file and JSON path of each hit and never prints the value."""
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps({"a": "nothing here"}))
    assert invoke("scan", str(clean)).exit_code == 0
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps({"customer": {"email": "leaky.person@example.com"}}))
    res = CliRunner().invoke(cli, ["scan", str(tmp_path)])
    assert res.exit_code == 1
    assert "leaky.json" in res.output and "customer" in res.output and "email" in res.output
    assert "leaky.person@example.com" not in res.output


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # scan reads files
def test_scan_of_a_recorded_store_is_clean(env: Any) -> None:
    """A store written by the recorder has nothing the redaction rules would catch."""
    mod, db, ids = env
    res = invoke("scan", str(db))
    assert res.exit_code == 0, res.output


def test_every_command_has_help() -> None:
    """Every command answers --help with a description and an example."""
    for name, cmd in cli.commands.items():
        res = invoke(name, "--help")
        assert res.exit_code == 0
        assert (cmd.help or "").strip(), name
        assert "Example" in res.output, name


# The console script installed beside this interpreter (its venv's bin/), not whatever is on PATH.
REPLAY_EXE = Path(sys.executable).parent / "replay"


def test_console_script_runs() -> None:
    """The installed `replay` console script runs and lists its commands."""
    if not REPLAY_EXE.exists():
        pytest.fail(
            f"the `replay` console script is not installed beside {sys.executable}: pip install -e "
            "."
        )
    out = subprocess.run(
        [str(REPLAY_EXE), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in (
        "runs",
        "show",
        "export",
        "import",
        "diff",
        "run",
        "stats",
        "alerts",
        "prune",
        "pin",
        "scan",
    ):
        assert name in out


def test_python_dash_m_replay_is_the_same_cli(tmp_path: Path) -> None:
    """`python -m replay` runs the CLI: the same help as the console script, and commands work."""
    by_module = subprocess.run(
        [sys.executable, "-m", "replay", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    by_script = subprocess.run(
        [str(REPLAY_EXE), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert by_module == by_script and "Usage: replay" in by_module
    runs = subprocess.run(
        [sys.executable, "-m", "replay", "runs", "--db", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert runs.returncode == 2 and "no store at" in runs.stderr


def test_every_command_and_plugin_flag_is_in_the_readme() -> None:
    """The README's CLI reference names every command, and it documents every --replay flag."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for name in cli.commands:
        assert f"replay {name}" in readme, f"`replay {name}` is missing from the README"
    for flag in (
        "--replay ",
        "--replay-all",
        "--replay-cassettes",
        "--replay-update",
        "--replay-report",
        "--replay-db",
        "--replay-max-token-delta-pct",
        "--replay-max-spend-delta-pct",
        "--replay-update-force",
    ):
        assert flag in readme, f"{flag} is missing from the README"


def test_run_record_to_keeps_the_replay_for_show(env: Any, tmp_path: Path) -> None:
    """`replay run --record-to` keeps the replayed run (replay_of set) so `replay show` works on
    it."""
    mod, db, ids = env
    kept = tmp_path / "replays.db"
    assert invoke("run", ids[0], ids[1], "--record-to", str(kept)).exit_code == 0
    with Store(kept) as s:
        replays = s.runs(include_replays=True)
    assert sorted(r.replay_of for r in replays) == sorted(ids[:2])
    shown = invoke("show", replays[0].run_id, "--db", str(kept))
    assert f"(replay of {replays[0].replay_of})" in shown.output
    same = CliRunner().invoke(cli, ["run", ids[0], "--record-to", str(db)])
    assert same.exit_code == 2 and "is the store being replayed" in same.output


def test_replay_run_imports_entrypoints_from_the_working_folder(env: Any, tmp_path: Path) -> None:
    """The `replay` script imports the agent modules the project's pyproject.toml lists, from the
    folder it runs in."""
    assert REPLAY_EXE.exists(), (
        f"the `replay` console script is not installed beside {sys.executable}"
    )
    mod = env[0]
    (tmp_path / "pyproject.toml").write_text(f'[tool.agent-replay]\nagents = ["{mod.__name__}"]\n')
    proc = subprocess.run(
        [str(REPLAY_EXE), "run", "--last", "1", "--agent", "support-agent"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replay matches recording" in proc.stdout
