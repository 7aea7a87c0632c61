"""Malformed stores, rows, cassettes and options: every verb exits 2 naming the file, row or field.

Table-driven through the real entry point (`replay.cli:cli` with CliRunner, exceptions not
caught), plus one subprocess run of the console script. Each case asserts exit code 2, that the
message names what was wrong, and that no traceback reached the user.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replay import Recorder
from replay.cassette import cassette_from_store, dump_cassette
from replay.cli import cli
from replay.store import Store


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with three recorded runs and the exported cassette of the last one (as JSON data)."""
    root = tmp_path_factory.mktemp("bad-input")
    db = root / "good.db"
    rec = Recorder(db)

    @rec.tool("kb.search")
    def kb_search(q: str) -> list[str]:
        return [q]

    @rec.agent("support-agent")
    def handle(q: str) -> str:
        kb_search(q)
        return "ok"

    for i in range(3):
        handle(f"q{i}")
    rec.flush()
    rec.close()
    with Store(db) as s:
        run_ids = [r.run_id for r in s.runs()]
        cas = json.loads(dump_cassette(cassette_from_store(s, run_ids[0])))
    return {"root": root, "db": db, "run_ids": run_ids, "cassette": cas}


def _cassette(ws: dict[str, Any], tmp: Path, mutate: Callable[[dict[str, Any]], None]) -> str:
    data = json.loads(json.dumps(ws["cassette"]))
    mutate(data)
    p = tmp / "bad.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    return str(p)


def _text(tmp: Path, text: str | bytes, name: str = "bad.json") -> str:
    p = tmp / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(p)


def _nan_cost(ws: dict[str, Any], tmp: Path) -> str:
    text = json.dumps(ws["cassette"]).replace('"cost_usd": 0.0', '"cost_usd": NaN', 1)
    assert "NaN" in text
    return _text(tmp, text)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _bad_row_store(ws: dict[str, Any], tmp: Path, sql: str) -> str:
    p = tmp / "badrow.db"
    shutil.copy(ws["db"], p)
    conn = sqlite3.connect(p)
    conn.execute(sql, (ws["run_ids"][0],))
    conn.commit()
    conn.close()
    return str(p)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``a.b[1].c`` in the cassette data."""

    def mutate(data: dict[str, Any]) -> None:
        parts = path.replace("]", "").replace("[", ".").split(".")
        obj: Any = data
        for p in parts[:-1]:
            obj = obj[int(p)] if p.lstrip("-").isdigit() else obj[p]
        last = parts[-1]
        if last.lstrip("-").isdigit():
            obj[int(last)] = value
        else:
            obj[last] = value

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


def _import(
    path_fn: Callable[[dict[str, Any], Path], str],
) -> Callable[[dict[str, Any], Path], list[str]]:
    return lambda ws, tmp: ["import", path_fn(ws, tmp), "--db", str(tmp / "new.db")]


def _imp_set(path: str, value: Any) -> Callable[[dict[str, Any], Path], list[str]]:
    return _import(lambda ws, tmp: _cassette(ws, tmp, _set(path, value)))


def _on_bad_row(verb: list[str], sql: str) -> Callable[[dict[str, Any], Path], list[str]]:
    def build(ws: dict[str, Any], tmp: Path) -> list[str]:
        db = _bad_row_store(ws, tmp, sql)
        return [a.replace("RUN", ws["run_ids"][0]) for a in verb] + ["--db", db]

    return build


def _good(*args: str) -> Callable[[dict[str, Any], Path], list[str]]:
    return lambda ws, tmp: (
        [a.replace("RUN", ws["run_ids"][0]) for a in args] + ["--db", str(ws["db"])]
    )


BAD_USAGE = "UPDATE runs SET usage = 'not json' WHERE run_id = ?"
BAD_DURATION = "UPDATE events SET duration_ms = 'abc' WHERE run_id = ? AND kind = 'tool_result'"
NUL_TOOL = (
    "UPDATE events SET tool = 'kb' || char(0) || 'x' WHERE run_id = ? AND kind = 'tool_result'"
)
BIG_TOKENS = "UPDATE runs SET usage = '{\"tokens_in\": -5}' WHERE run_id = ?"

# (id, argv builder, what the message must name)
CASES: list[tuple[str, Callable[[dict[str, Any], Path], list[str]], list[str]]] = [
    # cassettes, through `replay import`
    ("cassette-version-negative", _imp_set("version", -1), ["bad.json", "version", "-1"]),
    ("cassette-version-zero", _imp_set("version", 0), ["bad.json", "version"]),
    ("cassette-version-future", _imp_set("version", 99), ["bad.json", "version 99", "upgrade"]),
    ("cassette-version-string", _imp_set("version", "1"), ["bad.json", "version"]),
    ("cassette-version-bool", _imp_set("version", True), ["bad.json", "version"]),
    ("cassette-format-unknown", _imp_set("format", "vcr"), ["bad.json", "format"]),
    (
        "cassette-tokens-2^63",
        _imp_set("run.usage.tokens_in", 2**63),
        ["bad.json", "run.usage.tokens_in"],
    ),
    (
        "cassette-duration-2^64",
        _imp_set("events[1].duration_ms", 2**64 + 1),
        ["bad.json", "events[1].duration_ms"],
    ),
    (
        "cassette-tool-calls-negative",
        _imp_set("run.tool_calls", -5),
        ["bad.json", "run.tool_calls"],
    ),
    (
        "cassette-usage-tool-calls-negative",
        _imp_set("run.usage.tool_calls", -5),
        ["bad.json", "run.usage.tool_calls"],
    ),
    (
        "cassette-cost-negative",
        _imp_set("run.usage.cost_usd", -0.5),
        ["bad.json", "run.usage.cost_usd"],
    ),
    ("cassette-cost-nan", _import(_nan_cost), ["bad.json", "cost_usd", "finite"]),
    (
        "cassette-tool-name-nul",
        _imp_set("events[1].tool", "kb\x00search"),
        ["bad.json", "events[1].tool", "NUL"],
    ),
    (
        "cassette-agent-name-nul",
        _imp_set("run.agent", "support\x00agent"),
        ["bad.json", "run.agent", "NUL"],
    ),
    ("cassette-started-negative", _imp_set("run.started_ms", -1), ["bad.json", "run.started_ms"]),
    (
        "cassette-step-id-negative",
        _imp_set("events[1].step_id", -3),
        ["bad.json", "events[1].step_id"],
    ),
    ("cassette-kind-unknown", _imp_set("events[1].kind", "bogus"), ["bad.json", "events[1].kind"]),
    (
        "cassette-stop-reason-invalid",
        _imp_set("run.stop_reason", "Not A Reason"),
        ["bad.json", "run.stop_reason"],
    ),
    (
        "cassette-run-missing",
        _import(lambda ws, tmp: _cassette(ws, tmp, _drop("run"))),
        ["bad.json", "run"],
    ),
    (
        "cassette-not-json",
        _import(lambda ws, tmp: _text(tmp, "{not json")),
        ["bad.json", "not valid JSON"],
    ),
    (
        "cassette-empty-file",
        _import(lambda ws, tmp: _text(tmp, "")),
        ["bad.json", "not valid JSON"],
    ),
    ("cassette-binary", _import(lambda ws, tmp: _text(tmp, b"\xff\xfe\x00garbage")), ["bad.json"]),
    (
        "cassette-top-level-list",
        _import(lambda ws, tmp: _text(tmp, "[1, 2]")),
        ["bad.json", "top level"],
    ),
    (
        "cassette-missing-file",
        lambda ws, tmp: ["import", str(tmp / "nope.json"), "--db", str(tmp / "n.db")],
        ["nope.json", "no such cassette file"],
    ),
    (
        "cassette-nested-100000",
        _import(
            lambda ws, tmp: _text(
                tmp, '{"format":"agent-replay-cassette","version":1,"run":' + _deep(100_000) + "}"
            )
        ),
        ["bad.json", "nested too deeply"],
    ),
    (
        "cassette-body-nested-100000",
        _import(
            lambda ws, tmp: _text(
                tmp, json.dumps(ws["cassette"])[:-1] + ', "http": [' + _deep(100_000) + "]}"
            )
        ),
        ["bad.json", "nested too deeply"],
    ),
    (
        "run-nested-cassette",
        lambda ws, tmp: ["run", _text(tmp, _deep(100_000))],
        ["bad.json", "nested too deeply"],
    ),
    (
        "diff-nested-cassette",
        lambda ws, tmp: ["diff", _text(tmp, _deep(100_000)), _text(tmp, "{}", "b.json")],
        ["bad.json", "nested too deeply"],
    ),
    # stores and rows
    (
        "store-not-sqlite",
        lambda ws, tmp: ["runs", "--db", _text(tmp, b"x" * 4096, "x.db")],
        ["x.db", "not an SQLite database"],
    ),
    ("store-is-a-folder", lambda ws, tmp: ["runs", "--db", str(tmp)], ["is a folder"]),
    (
        "show-row-usage-not-json",
        _on_bad_row(["show", "RUN"], BAD_USAGE),
        ["badrow.db", "RUN", "usage", "not valid JSON"],
    ),
    (
        "show-row-negative-tokens",
        _on_bad_row(["show", "RUN"], BIG_TOKENS),
        ["badrow.db", "RUN", "usage.tokens_in"],
    ),
    (
        "show-event-duration-text",
        _on_bad_row(["show", "RUN"], BAD_DURATION),
        ["badrow.db", "RUN", "duration_ms"],
    ),
    (
        "show-event-tool-nul",
        _on_bad_row(["show", "RUN"], NUL_TOOL),
        ["badrow.db", "RUN", "tool", "NUL"],
    ),
    (
        "export-bad-row",
        _on_bad_row(["export", "RUN", "-o", "out"], BAD_USAGE),
        ["badrow.db", "RUN", "usage"],
    ),
    ("run-bad-row", _on_bad_row(["run", "RUN"], BAD_USAGE), ["badrow.db", "RUN", "usage"]),
    ("pin-bad-row", _on_bad_row(["pin", "RUN"], BAD_USAGE), ["badrow.db", "RUN", "usage"]),
    # options
    ("show-empty-run-id", _good("show", ""), ["empty run id"]),
    ("show-unknown-run", _good("show", "r_nope"), ["r_nope", "good.db"]),
    ("runs-since-huge", _good("runs", "--since", "99999999999d"), ["--since", "99999999999d"]),
    ("runs-since-overflow", _good("runs", "--since", "9" * 400 + "d"), ["--since"]),
    ("runs-since-garbage", _good("runs", "--since", "soon"), ["--since", "soon"]),
    ("stats-since-huge", _good("stats", "--since", "99999999999d"), ["--since", "99999999999d"]),
    ("alerts-window-huge", _good("alerts", "--window", "99999999999d"), ["--window"]),
    ("metrics-since-huge", _good("metrics", "--once", "--since", "99999999999d"), ["--since"]),
    (
        "stats-html-missing-folder",
        _good("stats", "--since", "all", "--html", "no/such/dir/x.html"),
        ["no/such/dir/x.html", "No such file"],
    ),
    ("runs-limit-negative", _good("runs", "--limit", "-1"), ["--limit", "-1"]),
    ("runs-limit-zero", _good("runs", "--limit", "0"), ["--limit"]),
    ("run-last-negative", _good("run", "--last", "-1"), ["--last"]),
    # scan: "could not read" is 2, not 1 ("secrets found")
    (
        "scan-corrupt-store",
        lambda ws, tmp: ["scan", _text(tmp, b"SQLite format 3\x00" + b"\xff" * 4000, "c.db")],
        ["c.db", "could not read"],
    ),
    (
        "scan-corrupt-json",
        lambda ws, tmp: ["scan", _text(tmp, b"\xff{nope", "c.json")],
        ["c.json", "could not read"],
    ),
    ("scan-missing-path", lambda ws, tmp: ["scan", str(tmp / "absent.db")], ["absent.db"]),
]


@pytest.mark.parametrize(
    ("build", "names"), [(b, n) for _, b, n in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_exits_2_naming_what_was_wrong(
    ws: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    build: Any,
    names: list[str],
) -> None:
    """The verb exits 2 with an error that names the file, row or field, and prints no traceback."""
    monkeypatch.chdir(tmp_path)
    args = build(ws, tmp_path)
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out
    assert "Error" in out
    for name in names:
        assert name.replace("RUN", ws["run_ids"][0]) in out, (name, out)


def test_there_are_at_least_30_bad_input_cases() -> None:
    """The table covers the malformed inputs the issue lists (30 or more cases)."""
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_a_bad_value_is_not_echoed_back(ws: dict[str, Any], tmp_path: Path) -> None:
    """The error names the field, not the value in it: a secret-looking bad value stays off the
    terminal.
    """
    secret = "sk-live-" + "A" * 30
    path = _cassette(ws, tmp_path, _set("run.tool_calls", secret))
    res = CliRunner().invoke(
        cli, ["import", path, "--db", str(tmp_path / "n.db")], catch_exceptions=False
    )
    assert res.exit_code == 2
    assert "run.tool_calls" in res.output and secret not in res.output


@pytest.mark.parametrize("verb", [["runs"], ["stats", "--since", "all"], ["alerts"]])
def test_listings_skip_one_bad_row_with_one_warning_naming_it(
    ws: dict[str, Any], tmp_path: Path, verb: list[str]
) -> None:
    """runs/stats/alerts skip an unreadable run row with one warning naming its run id, and show
    the rest.
    """
    db = _bad_row_store(ws, tmp_path, BAD_USAGE)
    bad, others = ws["run_ids"][0], ws["run_ids"][1:]
    res = CliRunner().invoke(
        cli,
        [*verb, "--db", db, "--json"] if verb[0] == "runs" else [*verb, "--db", db],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("Warning:")]
    assert len(warnings) == 1 and bad in warnings[0] and "usage" in warnings[0]
    assert "Warning" not in res.stdout
    if verb[0] == "runs":
        assert [r["run_id"] for r in json.loads(res.stdout)] == others


def test_scan_keeps_exit_1_for_secrets_and_0_for_clean(tmp_path: Path) -> None:
    """scan exits 1 when it finds a secret and 0 when the files are clean: 2 is only for unreadable
    files.
    """
    dirty = _text(tmp_path, json.dumps({"note": "mail ann@example.com"}), "dirty.json")
    clean = _text(tmp_path, json.dumps({"note": "nothing here"}), "clean.json")
    assert CliRunner().invoke(cli, ["scan", dirty], catch_exceptions=False).exit_code == 1
    assert CliRunner().invoke(cli, ["scan", clean], catch_exceptions=False).exit_code == 0
    broken = _text(tmp_path, b"\xff{", "broken.json")
    res = CliRunner().invoke(cli, ["scan", dirty, broken], catch_exceptions=False)
    assert res.exit_code == 2  # the scan is incomplete: the hit is still listed
    assert "dirty.json" in res.output and "broken.json: could not read" in res.output


def test_console_script_answers_a_deep_cassette_with_exit_2(tmp_path: Path) -> None:
    """The installed `replay` command exits 2 on a cassette nested 100,000 deep, naming it, with no
    traceback.
    """
    exe = shutil.which("replay")
    if exe is None:
        pytest.fail("the `replay` console script is not installed: pip install -e .")
    path = _text(
        tmp_path,
        '{"format":"agent-replay-cassette","version":1,"run":' + _deep(100_000) + "}",
        "deep.json",
    )
    proc = subprocess.run(
        [exe, "import", path, "--db", str(tmp_path / "n.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "deep.json" in proc.stderr and "nested too deeply" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_a_damaged_snapshot_is_named_by_replay_and_diff(ws: dict[str, Any], tmp_path: Path) -> None:
    """A snapshot body that is not JSON makes `run` and `diff` exit 2 naming the store, the run and
    the snapshot.
    """
    db = tmp_path / "snap.db"
    shutil.copy(ws["db"], db)
    rid = ws["run_ids"][0]
    with Store(db) as s:
        sha = next(e.output_sha for e in s.events(rid) if e.kind == "tool_result")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE snapshots SET body = ? WHERE sha = ?", (b"{broken", sha))
    conn.commit()
    conn.close()
    for args in (["diff", rid, rid, "--db", str(db)], ["run", rid, "--db", str(db)]):
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert res.exit_code == 2, res.output
        assert f"snapshot {sha}" in res.output and "snap.db" in res.output and rid in res.output
        assert "Traceback" not in res.output
