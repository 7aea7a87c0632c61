"""`replay scan` with detect-secrets' provider plugins (the `scan` extra): more found, nothing false."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from replay import Recorder
from replay.cli import cli
from replay.processors import Redactor, heavy_detector

# A SendGrid API key: no default redaction rule knows its shape, detect-secrets does.
SENDGRID = "SG." + "aB3dE5fG7hJ9kL1mN3pQ5r" + "." + "sT7uV9wX1yZ3aB5cD7eF9gH1jK3lM5nP7qR9sT1uV3w"


def test_deep_scan_finds_what_only_detect_secrets_knows(tmp_path: Path) -> None:
    """A cassette holding a SendGrid key: --deep names the detector (not the value) and exits 1; --no-deep exits 0."""
    assert Redactor(b"k").scan({"note": SENDGRID}) == []
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"run": {"note": f"sendgrid key {SENDGRID}"}}))
    deep = CliRunner().invoke(cli, ["scan", "--deep", str(path)])
    assert deep.exit_code == 1
    assert "detect-secrets:SendGrid API Key" in deep.output and SENDGRID not in deep.output
    plain = CliRunner().invoke(cli, ["scan", "--no-deep", str(path)])
    assert plain.exit_code == 0, plain.output


def test_deep_scan_of_a_redacted_store_is_clean(tmp_path: Path) -> None:
    """A store of redacted runs (placeholders, pseudonyms, shas, documentation IPs) gives no deep-scan hit."""
    db = tmp_path / "replay.db"
    rec = Recorder(db, store_args="redacted")

    @rec.tool("crm.lookup")
    def lookup(q: dict) -> dict:
        return {
            "email": "jane.doe@example.com",
            "ip": "81.2.69.160",
            "token": "ghp_" + "a1B2" * 9,
            "v6": "2a00:1450:4001:829::200e",
            "note": "password=hunter2secret",
        }

    with rec.run("agent", input={"api_key": "sk-" + "x9" * 24}):
        lookup({"q": "Authorization: Bearer abcdefghijklmnop123456"})
    rec.close()
    out = CliRunner().invoke(cli, ["scan", "--deep", "--json", str(db)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == []


def test_deep_needs_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without detect-secrets, --deep is a clear error naming the extra to install (exit 2)."""
    monkeypatch.setattr("replay.scan.heavy_detector", lambda: None)
    path = tmp_path / "c.json"
    path.write_text("{}")
    out = CliRunner().invoke(cli, ["scan", "--deep", str(path)])
    assert out.exit_code == 2 and "agent-replay[scan]" in out.output


def test_heavy_detector_reports_types_never_values() -> None:
    """The detector returns detect-secrets type names only."""
    from replay.processors import heavy_settings

    detect = heavy_detector()
    assert detect is not None
    with heavy_settings():
        found = detect(f"key {SENDGRID}\nother line ghp_{'a1B2' * 9}")
    assert "detect-secrets:SendGrid API Key" in found and all(SENDGRID not in f for f in found)
