"""A cassette is data, never code: hostile recordings are refused and nothing they name runs.

Each hostile cassette tries to make replay run something: `os:system` or `subprocess:call` as the
entrypoint with a shell command as input, a project-local module whose import writes a marker
file, a snapshot `type` naming such a module, a `\"\"\"` in the agent name for `export --test`.
Every path a user takes is tried (Python, `replay run` through CliRunner and as a subprocess,
`replay import` then `replay run`); the marker files must stay absent and each refusal says
which agent the cassette needs and how to register it. The pytest paths are in
tests/plugin/test_hostile_cassettes_pytest.py. Import tampering, path traversal, symlinks and the sealed
replay are here too.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replay import replay_run
from replay.cassette import (
    Cassette,
    Snapshot,
    cassette_from_store,
    dump_cassette,
    import_cassette,
    load_cassette,
    write_cassette,
)
from replay.cli import cli
from replay.errors import CassetteDecodeError, EntrypointError, StoreError
from replay.hashing import sha
from replay.models import Event, Run, new_run_id
from replay.network import DnsBlockedError, NetworkBlockedError, SubprocessBlockedError
from replay.store import Store

EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def handle(x):
    Path({marker!r}).write_text("called")

class Thing:
    pass
"""


def hostile_cassette(
    agent: str, entrypoint: str, value: Any, *, call_style: str = "value"
) -> Cassette:
    """A well-formed cassette (integrity holds) whose run asks replay to call `entrypoint` with `value`."""
    rid = new_run_id()
    run = Run(
        run_id=rid,
        agent=agent,
        entrypoint=entrypoint,
        input=value,
        started_ms=1_700_000_000_000,
        ended_ms=1_700_000_000_100,
        stop_reason="completed",
        call_style=call_style,
    )  # type: ignore[arg-type]
    events = [
        Event(run_id=rid, kind="run_start", ts_ms=1_700_000_000_000),
        Event(run_id=rid, kind="stop", ts_ms=1_700_000_000_100, stop_reason="completed"),
    ]
    return Cassette(run=run, events=events)


def _write(cas: Cassette, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_cassette(cas), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (the working folder) holding a module whose import writes a marker file."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "evil_mod.py").write_text(EVIL_MODULE.format(marker=str(tmp_path / "imported.marker")))
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv("REPLAY_DB", raising=False)
    yield root
    sys.modules.pop("evil_mod", None)


def _cases(tmp_path: Path) -> list[tuple[str, Cassette, Path]]:
    marker = tmp_path / "ran.marker"
    return [
        ("os:system", hostile_cassette("evil-agent", "os:system", f"touch {marker}"), marker),
        (
            "subprocess:call",
            hostile_cassette("evil-agent", "subprocess:call", ["touch", str(marker)]),
            marker,
        ),
        (
            "evil_mod:handle",
            hostile_cassette("evil-agent", "evil_mod:handle", {}),
            tmp_path / "imported.marker",
        ),
    ]


def _assert_refused(text: str) -> None:
    assert "it needs agent 'evil-agent'" in text, text
    assert (
        "@rec.agent('evil-agent')" in text
        and "--replay-agent" in text
        and "[tool.agent-replay] agents" in text
    )


def test_python_replay_refuses_each_hostile_entrypoint(project: Path, tmp_path: Path) -> None:
    """replay_run on a cassette naming os:system, subprocess:call or a side-effect module runs nothing and says why."""
    for name, cas, marker in _cases(tmp_path):
        path = _write(cas, project / "cassettes" / f"{cas.run.run_id}.json")
        with pytest.raises(EntrypointError) as info:
            replay_run(str(path))
        _assert_refused(str(info.value))
        assert not marker.exists(), f"{name} ran"
        assert "evil_mod" not in sys.modules


def test_refusal_names_why_the_entrypoint_is_not_imported(project: Path, tmp_path: Path) -> None:
    """The refusal says the stdlib is never imported, and a project module only when the project lists it."""
    os_case, _, local_case = _cases(tmp_path)
    with pytest.raises(EntrypointError, match="its module is loaded but holds no agent"):
        replay_run(str(_write(os_case[1], project / "a.json")))
    with pytest.raises(
        EntrypointError, match="never imports a module only because a recording names it"
    ):
        replay_run(str(_write(local_case[1], project / "b.json")))
    std = hostile_cassette("evil-agent", "smtplib:SMTP", "x")
    with pytest.raises(EntrypointError, match="standard library or an installed package"):
        replay_run(str(_write(std, project / "c.json")))


def test_listed_package_does_not_license_a_module_outside_it(project: Path, tmp_path: Path) -> None:
    """A pyproject listing the package `app` does not let a cassette import the project's evil_mod."""
    (project / "app").mkdir()
    (project / "app" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text('[tool.agent-replay]\nagents = ["app"]\n')
    cas = hostile_cassette("evil-agent", "evil_mod:handle", {})
    with pytest.raises(EntrypointError, match="the project does not list it"):
        replay_run(str(_write(cas, project / "x.json")))
    assert not (tmp_path / "imported.marker").exists()
    sys.modules.pop("app", None)


def test_listed_package_lets_replay_import_the_recorded_submodule(project: Path) -> None:
    """With `agents = ["shop"]`, a run recorded at shop.agents:handle replays by importing that project module."""
    pkg = project / "shop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "agents.py").write_text(
        textwrap.dedent(f"""
        from replay import Recorder
        rec = Recorder({str(project / "replay.db")!r})

        @rec.tool("kb.get")
        def kb_get(q: str) -> dict:
            return {{"q": q}}

        @rec.agent("shop-agent")
        def handle(q: str) -> dict:
            return kb_get(q)
    """)
    )
    (project / "pyproject.toml").write_text('[tool.agent-replay]\nagents = ["shop"]\n')
    mod = importlib.import_module("shop.agents")
    mod.handle("x")
    mod.rec.flush()
    mod.rec.close()
    with Store(project / "replay.db") as s:
        path = write_cassette(cassette_from_store(s, mod.rec.last_run_id), project / "shop.json")
    for name in ("shop.agents", "shop"):
        sys.modules.pop(name)  # a fresh process: nothing registered until replay imports it
    try:
        res = replay_run(str(path))
        assert res.diff.is_empty and res.output == {"q": "x"}
        assert "shop.agents" in sys.modules
    finally:
        for name in ("shop.agents", "shop"):
            sys.modules.pop(name, None)


def test_cli_run_refuses_hostile_cassettes(project: Path, tmp_path: Path) -> None:
    """`replay run X.json` (CliRunner) exits 2 with the refusal for each hostile cassette; nothing runs."""
    for name, cas, marker in _cases(tmp_path):
        path = _write(cas, project / "cassettes" / f"{cas.run.run_id}.json")
        res = CliRunner().invoke(cli, ["run", str(path)])
        assert res.exit_code == 2, (name, res.output)
        _assert_refused(res.output)
        assert not marker.exists(), f"{name} ran"


def _replay_exe() -> str:
    exe = Path(sys.executable).parent / "replay"
    assert exe.exists(), (
        "the `replay` console script is not installed beside the interpreter: pip install -e ."
    )
    return str(exe)


def test_cli_run_subprocess_refuses_hostile_cassettes(project: Path, tmp_path: Path) -> None:
    """The `replay` script, run in the project folder, refuses every hostile cassette in one call; nothing runs."""
    paths = [
        str(_write(cas, project / "cassettes" / f"{cas.run.run_id}.json"))
        for _, cas, _ in _cases(tmp_path)
    ]
    env = {k: v for k, v in os.environ.items() if k != "REPLAY_DB"}
    proc = subprocess.run(
        [_replay_exe(), "run", *paths],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.count("it needs agent 'evil-agent'") == 3, proc.stdout
    assert "0 matched, 0 diverged, 0 blessed, 3 errors" in proc.stdout
    assert not (tmp_path / "ran.marker").exists() and not (tmp_path / "imported.marker").exists()


def test_import_then_run_refuses_hostile_runs(project: Path, tmp_path: Path) -> None:
    """`replay import` stores a hostile run as data; `replay run RUN_ID` from the store then refuses it."""
    db = project / "incidents.db"
    for name, cas, marker in _cases(tmp_path):
        path = _write(cas, project / f"{name.replace(':', '_')}.json")
        imported = CliRunner().invoke(cli, ["import", str(path), "--db", str(db)])
        assert imported.exit_code == 0, imported.output
        res = CliRunner().invoke(cli, ["run", cas.run.run_id, "--db", str(db)])
        assert res.exit_code == 2, (name, res.output)
        _assert_refused(res.output)
        assert not marker.exists(), f"{name} ran"


def test_snapshot_type_never_imports_the_module_it_names(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot whose `type` names a project module with import side effects is replayed as plain JSON."""
    name = f"agent_{uuid.uuid4().hex[:8]}"
    (project / f"{name}.py").write_text(
        textwrap.dedent(f"""
        from replay import Recorder
        rec = Recorder({str(project / "replay.db")!r})

        @rec.tool("kb.get")
        def kb_get(q: str) -> dict:
            return {{"q": q}}

        @rec.agent("kb-agent")
        def handle(q: str) -> dict:
            return kb_get(q)
    """)
    )
    mod = importlib.import_module(name)
    try:
        mod.handle("x")
        mod.rec.flush()
        with Store(project / "replay.db") as s:
            cas = cassette_from_store(s, mod.rec.last_run_id)
        step = next(e for e in cas.events if e.tool == "kb.get")
        assert step.output_sha is not None
        cas.snapshots[step.output_sha] = cas.snapshots[step.output_sha].model_copy(
            update={"type": "evil_mod:Thing"}
        )
        path = _write(cas, project / "typed.json")  # the type is not hashed: integrity holds
        res = replay_run(str(path))
        assert res.output == {"q": "x"} and res.exception is None
        assert not (tmp_path / "imported.marker").exists()
        assert "evil_mod" not in sys.modules
    finally:
        mod.rec.close()
        sys.modules.pop(name, None)


def test_error_module_in_a_snapshot_is_never_imported(project: Path, tmp_path: Path) -> None:
    """A recorded error naming a project module with import side effects comes back as RecordedToolError; nothing imported."""
    name = f"agent_{uuid.uuid4().hex[:8]}"
    (project / f"{name}.py").write_text(
        textwrap.dedent(f"""
        from replay import Recorder
        rec = Recorder({str(project / "replay.db")!r})

        @rec.tool("kb.get")
        def kb_get(q: str) -> dict:
            raise KeyError(q)

        @rec.agent("kb-agent")
        def handle(q: str) -> str:
            try:
                kb_get(q)
            except Exception as exc:
                return type(exc).__name__
            return "no error"
    """)
    )
    mod = importlib.import_module(name)
    try:
        mod.handle("x")
        mod.rec.flush()
        with Store(project / "replay.db") as s:
            cas = cassette_from_store(s, mod.rec.last_run_id)
        i, step = next((i, e) for i, e in enumerate(cas.events) if e.tool == "kb.get")
        body = {"error": "Thing", "module": "evil_mod", "qualname": "Thing", "message": "x"}
        forged = sha(body)  # a consistent forgery: integrity holds, the data still names a module
        cas.snapshots[forged] = Snapshot(body=body, type="$error")
        cas.events[i] = step.model_copy(update={"output_sha": forged})
        res = replay_run(str(_write(cas, project / "err.json")))
        assert res.output == "RecordedToolError"
        assert not (tmp_path / "imported.marker").exists() and "evil_mod" not in sys.modules
    finally:
        mod.rec.close()
        sys.modules.pop(name, None)


def test_agent_registered_under_another_name_is_refused(project: Path) -> None:
    """agent= naming a registered agent of another name is refused before anything runs."""
    from replay import register_agent

    def other(x: Any) -> None:
        raise AssertionError("must not run")

    register_agent("other-agent", other)
    cas = hostile_cassette("evil-agent", "os:system", "true")
    with pytest.raises(EntrypointError, match="is registered as agent 'other-agent'"):
        replay_run(str(_write(cas, project / "o.json")), agent=other)


def test_export_test_escapes_triple_quotes_in_the_agent_name(tmp_path: Path) -> None:
    """`replay export --test` writes a `\"\"\"` or a newline of a recorded name as text: the test file runs no injected code."""
    marker = tmp_path / "injected.marker"
    evil = f'x"""\nimport pathlib; pathlib.Path({str(marker)!r}).write_text("pwned")\n"""'
    cas = hostile_cassette(evil, f"m:{evil}", None)
    rid = cas.run.run_id
    step = Event(
        run_id=rid,
        kind="tool_result",
        ts_ms=1_700_000_000_050,
        step_id=1,
        tool=f"t\nimport os; os.system('touch {marker}')",
        args_sha="a" * 24,
        status="ok",
    )
    cas = cas.model_copy(
        update={
            "events": [cas.events[0], step, step.model_copy(update={"step_id": 2}), cas.events[1]]
        }
    )
    db = tmp_path / "replay.db"
    with Store(db) as s:
        assert import_cassette(s, cas)
    res = CliRunner().invoke(
        cli,
        ["export", rid, "--db", str(db), "-o", str(tmp_path / "c"), "--test", str(tmp_path / "t")],
    )
    assert res.exit_code == 0, res.output
    test_file = tmp_path / "t" / f"test_incident_{rid}.py"
    text = test_file.read_text()
    tree = ast.parse(text)
    assert [type(n).__name__ for n in tree.body] == [
        "Expr",
        "ImportFrom",
        "Import",
        "Assign",
        "FunctionDef",
    ]
    docstring = tree.body[0].value.value  # type: ignore[attr-defined]
    assert (
        f"agent: {evil} (m:{evil})" in docstring
    )  # the recorded text, intact, inside the docstring
    exec(
        compile(tree, str(test_file), "exec"), {"__file__": str(test_file), "__name__": "incident"}
    )
    assert not marker.exists()
    for f in (test_file, tmp_path / "c" / f"{rid}.json"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


# ---- import integrity -------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path, str]:
    """A store with one real run of a registered agent, and its cassette: (db, cassette, run id)."""
    name = f"agent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(f"""
        from replay import Recorder
        rec = Recorder({str(tmp_path / "replay.db")!r})

        @rec.tool("kb.get")
        def kb_get(q: str) -> dict:
            return {{"q": q, "n": 1}}

        @rec.agent("kb-agent")
        def handle(q: str) -> dict:
            return kb_get(q)
    """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(name)
        mod.handle("x")
        mod.rec.flush()
        rid = mod.rec.last_run_id
        mod.rec.close()
    finally:
        sys.path.remove(str(tmp_path))
    with Store(tmp_path / "replay.db") as s:
        path = write_cassette(cassette_from_store(s, rid), tmp_path / "c" / f"{rid}.json")
    return tmp_path / "replay.db", path, rid


def _tamper(path: Path, edit: Any) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    out = path.with_name("tampered.json")
    out.write_text(json.dumps(data))
    return out


def test_import_refuses_tampered_cassettes_and_changes_nothing(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """Events of another run, a body that does not hash to its sha, a malformed run id: each refused, store unchanged."""
    _, path, rid = exported
    other = new_run_id()

    def foreign_event(d: dict) -> None:
        d["events"][1]["run_id"] = other

    def edited_body(d: dict) -> None:
        sha_key = next(
            k for k, v in d["snapshots"].items() if isinstance(v["body"], dict) and "q" in v["body"]
        )
        d["snapshots"][sha_key]["body"]["q"] = "forged"

    def traversal(d: dict) -> None:
        d["run"]["run_id"] = "../../x"
        for e in d["events"]:
            e["run_id"] = "../../x"

    target = tmp_path / "target.db"
    expected = {
        foreign_event: "is not the cassette's run",
        edited_body: "the body does not hash to its sha",
        traversal: "'../../x' is not a well-formed run id",
    }
    for edit, message in expected.items():
        bad = _tamper(path, edit)
        res = CliRunner().invoke(cli, ["import", str(bad), "--db", str(target)])
        assert res.exit_code == 2 and message in res.output, res.output
    assert not target.exists() or Store(target).count_runs() == 0


def test_import_accepts_key_order_and_truncation_markers(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A body stored in another key order still matches its sha (checked on the canonical form); so does a truncation marker."""
    _, path, rid = exported
    data = json.loads(path.read_text())
    for snap in data["snapshots"].values():
        if isinstance(snap["body"], dict):
            snap["body"] = dict(reversed(list(snap["body"].items())))
    marker_sha = sha({"big": "x" * 10})
    data["snapshots"][marker_sha] = {
        "body": {"$truncated": True, "sha": marker_sha, "size": 99, "head": "{"},
        "truncated": True,
        "type": None,
    }
    p = tmp_path / "reordered.json"
    p.write_text(json.dumps(data))
    with Store(tmp_path / "t.db") as s:
        assert import_cassette(s, p) is True
    data["snapshots"][marker_sha]["body"]["sha"] = "0" * 24
    p.write_text(json.dumps(data))
    with pytest.raises(CassetteDecodeError, match="does not hash to its sha"):
        load_cassette(p)


def test_import_never_overwrites_another_run(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A cassette reusing a stored run's id with other content adds nothing and leaves the stored run as it was."""
    db, path, rid = exported
    with Store(db) as s:
        before = (s.get_run(rid), s.events(rid))
    data = json.loads(path.read_text())
    data["run"]["agent"] = "hijacked"
    data["run"]["stop_reason"] = "error"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    res = CliRunner().invoke(cli, ["import", str(forged), "--db", str(db)])
    assert res.exit_code == 0 and "1 already there" in res.output
    with Store(db) as s:
        assert (s.get_run(rid), s.events(rid)) == before


# ---- export: traversal, symlinks, modes ---------------------------------------------------------


def test_export_refuses_a_run_id_that_would_leave_the_folder(tmp_path: Path) -> None:
    """A stored run id like ../../x (written around import) cannot make `replay export` write outside -o."""
    db = tmp_path / "replay.db"
    run = Run(run_id="../../x", agent="a", started_ms=1, ended_ms=2, stop_reason="completed")
    with Store(db) as s:
        s.write_batch(
            runs=[run],
            events=[Event(run_id="../../x", kind="stop", ts_ms=2, stop_reason="completed")],
        )
    out = tmp_path / "a" / "b" / "cassettes"
    res = CliRunner().invoke(cli, ["export", "../../x", "--db", str(db), "-o", str(out)])
    assert res.exit_code == 2 and "is not a well-formed run id" in res.output, res.output
    assert not (tmp_path / "a" / "x.json").exists() and not list(tmp_path.rglob("x.json"))


def test_export_never_writes_through_a_symlink(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A symlink planted at the cassette's path or its old temp path is replaced or ignored, never written through."""
    db, _, rid = exported
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / f"{rid}.json").symlink_to(victim)
    (out / f"{rid}.json.tmp").symlink_to(victim)
    refused = CliRunner().invoke(cli, ["export", rid, "--db", str(db), "-o", str(out)])
    assert refused.exit_code == 2 and "exists and differs" in refused.output
    res = CliRunner().invoke(cli, ["export", rid, "--db", str(db), "-o", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert victim.read_text() == "keep me"
    written = out / f"{rid}.json"
    assert not written.is_symlink() and load_cassette(written).run.run_id == rid
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{rid}.json", f"{rid}.json.tmp"])


# ---- the store path -----------------------------------------------------------------------------


def test_store_refuses_links_and_files_that_are_not_stores(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A symlink, a dangling link, an empty file or a text file at the store path is refused and left as it was."""
    db, _, _ = exported
    link = tmp_path / "link.db"
    link.symlink_to(db)
    dangling = tmp_path / "dangling.db"
    dangling.symlink_to(tmp_path / "nowhere.db")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    text = tmp_path / "notes.db"
    text.write_text("my notes")
    for path, message in (
        (link, "is a symbolic link"),
        (dangling, "is a symbolic link"),
        (empty, "is an empty file"),
        (text, "is not an SQLite database"),
    ):
        with pytest.raises(StoreError, match=message):
            Store(path)
        res = CliRunner().invoke(cli, ["runs", "--db", str(path)])
        assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "nowhere.db").exists()
    assert empty.read_bytes() == b"" and text.read_text() == "my notes"


# ---- the sealed replay --------------------------------------------------------------------------


SEALED_AGENT = """
import os, socket, subprocess
from replay import Recorder
rec = Recorder({db!r})
MODE = {{"what": None}}

@rec.agent("sealed-agent")
def handle(ticket: str) -> str:
    what = MODE["what"]
    if what == "subprocess":
        subprocess.run(["touch", {marker!r}], check=True)
    elif what == "system":
        os.system("touch " + {marker!r} + " --token=s3cret")
    elif what == "udp":
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 9))
    elif what == "dns":
        socket.getaddrinfo("api.example.com", 443)
    elif what == "tcp":
        socket.create_connection(("127.0.0.1", 9), 3)
    elif what == "exec":
        os.execv("/bin/touch", ["touch", {marker!r}])
    return "done"
"""


@pytest.fixture
def sealed_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"sealed_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        SEALED_AGENT.format(db=str(tmp_path / "replay.db"), marker=str(tmp_path / "proc.marker"))
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    yield mod
    mod.rec.close()
    sys.modules.pop(name, None)


def _record(mod: Any) -> str:
    """Record a run that reached nothing; the replay then tries to reach out (MODE)."""
    mod.handle("t-1")
    mod.rec.flush()
    return str(mod.rec.last_run_id)


@pytest.mark.parametrize(
    ("what", "error", "message"),
    [
        (
            "subprocess",
            SubprocessBlockedError,
            "blocked starting a process (subprocess) of 'touch'",
        ),
        ("system", SubprocessBlockedError, "blocked os.system of 'touch'"),
        ("exec", SubprocessBlockedError, "blocked os.execv of 'touch'"),
        ("udp", NetworkBlockedError, "blocked a datagram to 127.0.0.1:9"),
        ("dns", DnsBlockedError, "blocked a DNS lookup of api.example.com:443"),
        ("tcp", NetworkBlockedError, "blocked a connection to 127.0.0.1:9 "),
    ],
)
def test_replay_is_sealed(
    sealed_agent: Any, tmp_path: Path, what: str, error: type, message: str
) -> None:
    """During a replay processes, UDP, DNS and TCP are refused with an error naming the program or host:port."""
    rid = _record(sealed_agent)
    sealed_agent.MODE["what"] = what
    res = replay_run(rid, db=sealed_agent.rec.db)
    assert isinstance(res.exception, error), res.exception
    assert message in str(res.exception)
    assert "s3cret" not in str(res.exception)
    assert not (tmp_path / "proc.marker").exists()
    # Sealing ends with the replay.
    assert socket.socket.connect is not None and "connect" not in socket.socket.__dict__


def test_tests_can_opt_out_of_the_seal(sealed_agent: Any, tmp_path: Path) -> None:
    """allow_subprocess=True lets a replayed agent start a process (for a test that needs one)."""
    rid = _record(sealed_agent)
    sealed_agent.MODE["what"] = "subprocess"
    res = replay_run(rid, db=sealed_agent.rec.db, allow_subprocess=True)
    assert res.exception is None and (tmp_path / "proc.marker").exists()
