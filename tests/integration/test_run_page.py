"""`replay view`: the run page through the CLI, served on 127.0.0.1, and in a real headless
chromium.

The browser tests need Debian's chromium (``.ci/run`` installs it) and the ``playwright`` package
(the ``test`` extra). They fail in CI when chromium is missing, and skip with a message only on a
machine that is not CI.
"""

from __future__ import annotations

import html
import importlib
import os
import re
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replay.cli import cli

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HOSTILE_TOOL = "<script>window.__pwned=1</script>"
HOSTILE_OUTPUT = '<img src=x onerror="window.__pwned=2"></pre><script>window.__pwned=3</script>'
HOSTILE_VERSION = "</title><script>window.__pwned=4</script>"

AGENT = f"""
import os
from replay import Recorder
rec = Recorder(os.environ["AGENT_DB"])
MODE = {{"emails": 1}}

@rec.tool("kb.search")
def kb_search(query: str) -> list:
    return [{{"title": "Where is my order", "id": "kb-1"}}]

@rec.tool({HOSTILE_TOOL!r})
def hostile(x: int) -> dict:
    return {{"html": {HOSTILE_OUTPUT!r}}}

@rec.tool("http.get")
def http_get(path: str) -> dict:
    if MODE.get("fail"):
        raise RuntimeError("503 from " + path)
    return {{"status": "shipped"}}

@rec.tool("email.send")
def send(to: str, body: str) -> dict:
    return {{"ok": True}}

@rec.agent("page-agent", versions={{"model": "m-1", "prompt": {HOSTILE_VERSION!r}}})
def handle(ticket: dict) -> str:
    kb_search(ticket["q"])
    hostile(1)
    try:
        http_get("/orders/1")
    except RuntimeError:
        pass
    for _ in range(MODE["emails"]):
        send(ticket["email"], "hello")
    return "ok"
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Two recorded runs of an agent with a hostile tool name, output and version: one emails
    twice.
    """
    name = f"page_agent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    db = tmp_path / "replay.db"
    monkeypatch.setenv("AGENT_DB", str(db))
    monkeypatch.setenv("REPLAY_DB", str(db))
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(name)
    mod.handle({"q": "order", "email": "ann@example.com"})
    first = mod.rec.last_run_id
    mod.MODE.update(emails=2, fail=True)
    mod.handle({"q": "order", "email": "ann@example.com"})
    second = mod.rec.last_run_id
    mod.MODE.update(emails=1, fail=False)
    mod.rec.flush()
    yield mod, db, first, second, name
    mod.rec.close()
    sys.modules.pop(name, None)


def _no_raw_markup(text: str) -> None:
    for raw in (HOSTILE_TOOL, HOSTILE_OUTPUT, HOSTILE_VERSION, "<script", "<img"):
        assert raw not in text, f"{raw!r} is in the page unescaped"


def test_view_writes_one_self_contained_escaped_page(env: Any, tmp_path: Path) -> None:
    """`replay view` writes a 0600 page with every step, the versions and usage, recorded markup
    escaped, nothing external.
    """
    _, _, first, second, _ = env
    # A unique prefix: ids made in one millisecond can share all but their last character.
    shared = len(os.path.commonprefix([first, second]))
    res = invoke("view", first[: max(shared + 1, 12)], "-o", "page.html")
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "wrote page.html (open it in a browser)"
    path = tmp_path / "page.html"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    _no_raw_markup(text)
    assert html.escape(HOSTILE_TOOL) in text
    assert (
        "&lt;img src=x onerror=" in text and "&lt;/pre&gt;&lt;script&gt;window.__pwned=3" in text
    )  # as text
    assert len(re.findall(r'<details class="step', text)) == 4
    for expected in (
        f"run {first}",
        "stop reason",
        "completed",
        "model=m-1",
        "4 tool calls",
        'data-status="ok"',
    ):
        assert expected in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), (
        "the page loads something external"
    )
    assert 'id="diff"' not in text


def test_view_default_file_name_and_bad_input(env: Any, tmp_path: Path) -> None:
    """Without -o the page is RUN_ID.html; an unknown run, --serve with -o and --replay-agent alone
    exit 2 naming the problem.
    """
    _, _, first, _, _ = env
    assert invoke("view", first).exit_code == 0
    assert (tmp_path / f"{first}.html").is_file()
    res = CliRunner().invoke(cli, ["view", "r_nosuchrun"])
    assert res.exit_code == 2 and "r_nosuchrun" in res.output
    res = CliRunner().invoke(cli, ["view", first, "--serve", "-o", "x.html"])
    assert res.exit_code == 2 and "--serve and -o exclude each other" in res.output
    res = CliRunner().invoke(cli, ["view", first, "--replay-agent", "x.y:handle"])
    assert res.exit_code == 2 and "add --against replay" in res.output
    res = CliRunner().invoke(cli, ["view", first, "-o", str(tmp_path / "nope" / "p.html")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_view_against_another_run_and_against_a_replay(env: Any, tmp_path: Path) -> None:
    """--against RUN shows the diff side by side by change kind; --against replay replays the run
    now and shows it matches.
    """
    _, _, first, second, name = env
    assert invoke("view", first, "--against", second, "-o", "diff.html").exit_code == 0
    text = (tmp_path / "diff.html").read_text()
    _no_raw_markup(text)
    assert 'data-verdict="diverged"' in text
    assert 'data-kind="extra_call"' in text and 'data-kind="status_changed"' in text
    assert "completed -&gt; completed" in text and "4 -&gt; 5" in text  # stop reason, tool calls
    assert 'id="other-waterfall"' in text

    res = invoke(
        "view",
        first,
        "--against",
        "replay",
        "--replay-agent",
        f"{name}:handle",
        "-o",
        "replayed.html",
    )
    assert res.exit_code == 0, res.output
    text = (tmp_path / "replayed.html").read_text()
    _no_raw_markup(text)
    assert 'data-verdict="match"' in text and f"replay matches recording {first}" in text
    assert "replay (now)" in text


def test_view_of_a_cassette_and_of_a_run_without_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cassette file is a valid RUN_ID (every step in the waterfall); a run that made no call
    says so.
    """
    from replay.models import Run
    from replay.store import Store

    monkeypatch.chdir(tmp_path)
    cassette = (
        Path(__file__).resolve().parents[2]
        / "cassettes"
        / "incidents"
        / "r_01m80g7tce74qmb7zv96pmd1t5.json"
    )
    assert invoke("view", str(cassette), "--db", "none.db", "-o", "cassette.html").exit_code == 0
    text = (tmp_path / "cassette.html").read_text()
    assert len(re.findall(r'<details class="step', text)) == 17
    assert len(re.findall(r'data-status="error"', text)) == 7 and "support-v3" in text
    with Store(tmp_path / "replay.db") as store:
        store.write_batch(
            runs=[
                Run(
                    run_id="r_01m8empty000000000000000000",
                    agent="idle",
                    started_ms=1780000000000,
                    ended_ms=1780000000005,
                    stop_reason="completed",
                )
            ],
            events=[],
            snapshots=[],
        )
    assert invoke("view", "r_01m8empty", "--db", "replay.db", "-o", "empty.html").exit_code == 0
    assert (
        '<p class="note" id="waterfall-empty">(no tool or model calls)</p>'
        in (tmp_path / "empty.html").read_text()
    )


def test_view_serves_the_page_on_localhost(env: Any, tmp_path: Path) -> None:
    """`replay view --serve --port 0` serves the same page on 127.0.0.1 (404 elsewhere) until
    stopped.
    """
    _, db, first, _, _ = env
    exe = shutil.which("replay")
    if exe is None:
        pytest.fail("the `replay` console script is not on PATH: pip install -e .")
    assert invoke("view", first, "-o", "file.html").exit_code == 0
    proc = subprocess.Popen(
        [exe, "view", first, "--db", str(db), "--serve", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        with urllib.request.urlopen(m.group(0), timeout=10) as resp:
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            served = resp.read().decode()
        strip = re.compile(r"written \S+Z")  # the generation time differs
        assert strip.sub("", served) == strip.sub("", (tmp_path / "file.html").read_text())
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(m.group(0) + "etc/passwd", timeout=10)
        assert err.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_stats_html_links_to_run_pages(env: Any, tmp_path: Path) -> None:
    """`replay stats --html` writes run pages next to the dashboard and links to each from its run
    table.
    """
    _, _, first, second, _ = env
    res = invoke("stats", "--since", "1h", "--html", "dash.html")
    assert res.exit_code == 0, res.output
    text = (tmp_path / "dash.html").read_text()
    links = re.findall(r'href="([^"]+)"', text)
    assert f"dash-runs/{first}.html" in links and f"dash-runs/{second}.html" in links
    for link in links:
        page = (tmp_path / link).read_text()
        assert "<h1>run r_" in page
        _no_raw_markup(page)


# ---- in a real browser --------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Any:
    """Debian's chromium driven by playwright: required in CI, skipped with a message elsewhere."""
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    if missing:
        message = "the run page browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs both")
        pytest.skip(message + " (required when CI is set)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_run_page_in_chromium(env: Any, tmp_path: Path, browser: Any) -> None:
    """In chromium the page loads without console errors, draws the waterfall and the diff, and a
    click opens a step as text.
    """
    _, _, first, second, _ = env
    assert invoke("view", second, "--against", first, "-o", "page.html").exit_code == 0
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "request",
        lambda r: problems.append(f"request: {r.url}") if not r.url.startswith("file:") else None,
    )
    page.goto((tmp_path / "page.html").as_uri())
    page.wait_for_load_state("load")

    rows = page.locator("#waterfall details.step")
    assert rows.count() == 5
    bars = page.locator("#waterfall .bar")
    assert all(bars.nth(i).bounding_box()["width"] >= 1 for i in range(5))  # drawn, not collapsed
    assert page.locator("#waterfall details.step[data-status=error]").count() == 1
    assert page.locator("#diff").is_visible()
    assert (
        page.locator("#diff td[data-kind=missing_call]").count() == 1
    )  # the second email, missing on the right
    assert page.locator("#diff td[data-kind=status_changed]").count() == 2

    hostile = page.locator("#waterfall details.step", has_text=HOSTILE_TOOL)
    assert hostile.locator(".output").is_visible() is False
    hostile.locator("summary").click()
    output = hostile.locator("pre.output")
    assert output.is_visible()
    assert HOSTILE_OUTPUT.replace('"', '\\"') in output.inner_text()  # shown as JSON text
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("script").count() == 0 and page.locator("img").count() == 0
    assert page.title() == f"run {second} - agent-replay"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "run-page.png"
    page.screenshot(path=str(shot), full_page=True)
    (tmp_path / "run-page.png").write_bytes(shot.read_bytes())
    assert shot.stat().st_size > 10_000
    assert problems == []
    page.close()
