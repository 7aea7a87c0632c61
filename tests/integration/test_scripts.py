"""Agents in scripts (`python my_agent.py`): recorded under the script's module name, replayed
within the trust model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from replay.store import Store

SCRIPT = """
from replay import Recorder

rec = Recorder("replay.db")


@rec.tool("kb.get")
def kb_get(q: str) -> dict:
    return {"q": q}


@rec.agent("script-agent")
def handle(q: str) -> dict:
    return kb_get(q)


if __name__ == "__main__":
    handle("first")
    handle("second")
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REPLAY_DB", "PYTHONWARNINGS")}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _replay_exe() -> str:
    exe = Path(sys.executable).parent / "replay"
    assert exe.exists(), (
        "the `replay` console script is not installed beside the interpreter: pip install -e ."
    )
    return str(exe)


def test_script_records_its_module_path_and_warns_once(tmp_path: Path) -> None:
    """A run recorded from `python my_agent.py` stores my_agent:handle (not __main__) and warns
    once how to replay it.
    """
    (tmp_path / "my_agent.py").write_text(SCRIPT)
    proc = _run([sys.executable, "my_agent.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("agent 'script-agent' is defined in a script") == 1, proc.stderr
    assert "--replay-agent my_agent:handle" in proc.stderr
    with Store(tmp_path / "replay.db") as s:
        runs = s.runs()
    assert [r.entrypoint for r in runs] == ["my_agent:handle", "my_agent:handle"]
    refused = _run([_replay_exe(), "run", "--last", "1"], tmp_path)
    assert refused.returncode == 2 and "it needs agent 'script-agent'" in refused.stdout, (
        refused.stdout
    )
    replayed = _run(
        [_replay_exe(), "run", "--last", "2", "--replay-agent", "my_agent:handle"], tmp_path
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "2 matched" in replayed.stdout


def test_listed_script_replays_without_flags_or_warning(tmp_path: Path) -> None:
    """With the script's module in [tool.agent-replay] agents, recording does not warn and `replay
    run` finds it.
    """
    (tmp_path / "my_agent.py").write_text(SCRIPT)
    (tmp_path / "pyproject.toml").write_text('[tool.agent-replay]\nagents = ["my_agent"]\n')
    proc = _run([sys.executable, "my_agent.py"], tmp_path)
    assert proc.returncode == 0 and "defined in a script" not in proc.stderr, proc.stderr
    replayed = _run([_replay_exe(), "run", "--last", "1"], tmp_path)
    assert replayed.returncode == 0 and "replay matches recording" in replayed.stdout, (
        replayed.stdout + replayed.stderr
    )


def test_script_outside_the_project_keeps_main_and_says_so(tmp_path: Path) -> None:
    """A script run from outside the working folder keeps __main__:handle and the warning names
    --replay-agent.
    """
    scripts = tmp_path / "elsewhere"
    scripts.mkdir()
    (scripts / "my_agent.py").write_text(SCRIPT)
    work = tmp_path / "work"
    work.mkdir()
    proc = _run([sys.executable, str(scripts / "my_agent.py")], work)
    assert proc.returncode == 0, proc.stderr
    assert "runs as __main__ from outside the working folder" in proc.stderr
    with Store(work / "replay.db") as s:
        assert {r.entrypoint for r in s.runs()} == {"__main__:handle"}
