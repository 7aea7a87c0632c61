"""`replay demo` from a wheel, in an empty folder: the demo and each "next:" command it prints work.

The package is built as a wheel from a copy of the sources and installed (not editable) into a
fresh virtualenv; its dependencies come from the environment running the tests (a ``.pth`` line
in the new virtualenv), so the test needs no network beyond building the wheel. Nothing of the
source checkout is importable from the empty folder: the test checks that `replay` is the
installed copy.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A virtualenv with agent-replay installed from a freshly built wheel: (bin folder,
    environment)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("replay", "pytest_plugin"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "REPLAY_DB", "SUPPORT_AGENT_VERSION")
    }
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(base / "dist"),
            str(src),
        ],
        base,
        env,
    )
    assert built.returncode == 0, built.stderr
    wheel = next((base / "dist").glob("agent_replay-*.whl"))
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, env)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    inst = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        base,
        env,
    )
    assert inst.returncode == 0, inst.stderr
    purelib = _run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base, env
    ).stdout.strip()
    # The dependencies (click, pydantic, pytest...) of the environment running this test.
    Path(purelib, "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    where = _run(
        [
            str(py),
            "-c",
            "import replay, pytest_plugin; print(replay.__file__, pytest_plugin.__file__)",
        ],
        tmp_path_factory.mktemp("elsewhere"),
        env,
    )
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(purelib) for p in where.stdout.split()), (
        f"not the installed copy: {where.stdout}"
    )
    return venv / "bin", env


def test_demo_and_its_next_commands_work_in_an_empty_folder(installed: Any, tmp_path: Path) -> None:
    """From a wheel, `replay demo` in an empty folder succeeds and each printed next command runs
    there as described."""
    bindir, env = installed
    folder = tmp_path / "empty"
    folder.mkdir()
    demo = _run([str(bindir / "replay"), "demo"], folder, env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()
    block = lines[lines.index("next:") + 1 :]
    commands = [ln.strip() for ln in block if ln.startswith("  ") and not ln.startswith("   ")]
    assert [c.split()[:2] for c in commands] == [
        ["replay", "show"],
        ["pytest", "--replay"],
        ["replay", "view"],
    ]
    run_id = re.search(r"r_[0-9a-z]{26}", commands[0]).group(0)

    show = _run(shlex.split(commands[0]), folder, env)
    assert show.returncode == 0, show.stderr
    assert f"run {run_id}  agent support-agent" in show.stdout
    assert "entrypoint  replay.demo_agent.agent:handle" in show.stdout

    # Against the installed code (v2) the incident replay diverges, as the demo says; against v1
    # it matches.
    fixed = _run(shlex.split(commands[1]), folder, env)
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr
    assert "1 run replayed: 0 matched, 1 diverged" in fixed.stdout
    assert "stop reason: completed -> escalated" in fixed.stdout
    assert "No module named" not in fixed.stdout + fixed.stderr
    same = _run(shlex.split(commands[1]), folder, {**env, "SUPPORT_AGENT_VERSION": "v1"})
    assert same.returncode == 0, same.stdout + same.stderr
    assert "1 run replayed: 1 matched, 0 diverged" in same.stdout

    view = _run(shlex.split(commands[2]), folder, env)
    assert view.returncode == 0, view.stdout + view.stderr
    page = (folder / f"{run_id}.html").read_text()
    assert 'data-verdict="diverged"' in page and "completed -&gt; escalated" in page
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        [
            "replay.db",
            "replay.db.key",
            "cassettes",
            f"{run_id}.html",
            *[p.name for p in folder.glob("replay.db-*")],
        ]
    )
