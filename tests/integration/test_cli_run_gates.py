"""`replay run --max-token-delta-pct / --max-spend-delta-pct`: the plugin's usage gates."""

from __future__ import annotations

import importlib
import json
import pathlib
import uuid
from typing import Any

import pytest
from click.testing import CliRunner

from replay.cli import cli

AGENT = """
import os
from replay import Recorder

rec = Recorder(os.environ["GATE_DB"])

@rec.tool("crm.lookup")
def lookup(customer_id: str) -> dict:
    return {"id": customer_id, "plan": "pro"}

@rec.agent("gate-agent")
def handle(ticket: dict) -> str:
    lookup(ticket["customer_id"])
    # The same steps; the tokens and spend the model used scale with GATE_FACTOR.
    f = float(os.environ.get("GATE_FACTOR", "1"))
    rec.usage(tokens_in=int(100 * f), tokens_out=int(50 * f), cost_usd=0.01 * f)
    return "done"
"""


@pytest.fixture
def recorded(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One recorded run of 150 tokens and one cent; replays run with GATE_FACTOR set."""
    name = f"gate_agent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GATE_DB", str(tmp_path / "rec.db"))
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(name)
    mod.handle({"customer_id": "c1"})
    rid = mod.rec.last_run_id
    mod.rec.close()
    args = ["run", rid, "--db", str(tmp_path / "rec.db"), "--agent", f"{name}:handle"]
    return {"args": args, "run_id": rid, "tmp": tmp_path}


def _run(monkeypatch: pytest.MonkeyPatch, factor: str, *args: str) -> Any:
    monkeypatch.setenv("GATE_FACTOR", factor)
    return CliRunner().invoke(cli, list(args))


def _limits(tokens: str, spend: str) -> list[str]:
    return ["--max-token-delta-pct", tokens, "--max-spend-delta-pct", spend]


def test_same_usage_matches(recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same steps and the same usage: exit 0, the replay matches."""
    res = _run(monkeypatch, "1", *recorded["args"])
    assert res.exit_code == 0, res.output
    assert "replay matches recording" in res.output


def test_doubled_tokens_diverge_by_default_and_name_the_flag(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twice the tokens and spend: the default 20% gates fail the replay (exit 1), naming flags."""
    res = _run(monkeypatch, "2", *recorded["args"])
    assert res.exit_code == 1, res.output
    assert "broke a usage gate (same steps, stop reason and output)" in res.output
    assert (
        "tokens 150 -> 300 (+100.0%) is above the 20% limit (--max-token-delta-pct)" in res.output
    )
    assert "spend $0.0100 -> $0.0200 (+100.0%) is above the 20% limit (--max-spend-delta-pct)" in (
        res.output
    )


def test_limits_at_the_growth_let_it_pass(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both limits at the growth exactly: the replay passes, only growth above a limit fails."""
    res = _run(monkeypatch, "2", *recorded["args"], *_limits("100", "100"))
    assert res.exit_code == 0, res.output


def test_one_gate_alone_fails_and_the_report_says_why(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the spend gate broken: exit 1 and the JSON report names the spend limit in its note."""
    report = recorded["tmp"] / "r.json"
    res = _run(
        monkeypatch,
        "2",
        *recorded["args"],
        "--max-token-delta-pct",
        "150",
        "--report",
        str(report),
    )
    assert res.exit_code == 1, res.output
    (run,) = json.loads(report.read_text())["runs"]
    assert run["status"] == "diverged"
    assert "spend" in run["note"] and "--max-spend-delta-pct" in run["note"]
    assert "tokens" not in run["note"]


def test_a_decrease_never_fails(recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Half the tokens and spend, limits at 0: a decrease is not growth, the replay matches."""
    res = _run(monkeypatch, "0.5", *recorded["args"], *_limits("0", "0"))
    assert res.exit_code == 0, res.output


def test_a_negative_limit_is_bad_input(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A negative percentage is refused before anything is replayed (exit 2, naming the flag)."""
    res = _run(monkeypatch, "1", *recorded["args"], "--max-token-delta-pct", "-5")
    assert res.exit_code == 2
    assert "--max-token-delta-pct" in res.output
