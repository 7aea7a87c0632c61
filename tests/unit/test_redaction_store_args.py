"""RedactionConfig.store_args: "redacted" stores a step's redacted args, "hash" (default) only
their hash.
"""

from __future__ import annotations

from pathlib import Path

from replay import Recorder
from replay.hashing import sha, thaw
from replay.redaction import RedactionConfig
from replay.store import Store


def _record(db: Path, config: RedactionConfig) -> tuple[str, bytes | None]:
    rec = Recorder(db, redaction=config)

    @rec.tool("email.send")
    def send(to: str, body: str) -> str:
        return "sent"

    with rec.run("agent"):
        send("jane.doe@example.com", "your refund is on its way")
    rec.flush()
    rec.close()
    with Store(db) as s:
        step = [e for e in s.events(rec.last_run_id or "") if e.kind == "tool_result"][0]
        snap = s.snapshot(step.args_sha or "")
    return step.args_sha or "", None if snap is None else snap[0]


def test_store_args_redacted_in_the_config_stores_the_redacted_args(tmp_path: Path) -> None:
    """With RedactionConfig(store_args="redacted") the args snapshot is stored, redacted, and
    hashes to args_sha.
    """
    args_sha, body = _record(tmp_path / "r.db", RedactionConfig(store_args="redacted"))
    assert body is not None
    stored = thaw(body)
    assert stored["body"] == "your refund is on its way"
    assert stored["to"].endswith("@redacted.invalid") and "jane" not in stored["to"]
    assert sha(stored) == args_sha
    assert b"jane.doe" not in (tmp_path / "r.db").read_bytes()


def test_store_args_hash_keeps_only_the_hash(tmp_path: Path) -> None:
    """By default (store_args="hash") a step's args are recorded as args_sha only, with no
    snapshot.
    """
    args_sha, body = _record(tmp_path / "r.db", RedactionConfig())
    assert len(args_sha) == 24
    assert body is None
