"""The pseudonym key lives outside the store: env var or a 0600 key file; the store keeps a
fingerprint."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from replay import Recorder, replay_run
from replay.cassette import cassette_from_store, write_cassette
from replay.errors import StoreError
from replay.keys import (
    ENV_VAR,
    RedactionKeyMismatchWarning,
    fingerprint,
    key_file_path,
    key_text,
    load_or_create_key_file,
    parse_key_text,
)
from replay.store import Store
from tests.integration.test_store import V1_SQL


@pytest.fixture(autouse=True)
def _no_shared_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def _files_bytes(db: Path) -> bytes:
    return b"".join(
        p.read_bytes()
        for p in db.parent.iterdir()
        if p.name.startswith(db.name) and not p.name.endswith(".key")
    )


def test_new_store_keeps_its_key_in_a_0600_file_and_only_a_fingerprint_inside(
    tmp_path: Path,
) -> None:
    """A new store creates replay.db.key (0600); the database holds the key's fingerprint, never
    the key."""
    db = tmp_path / "replay.db"
    with Store(db) as s:
        key, fp = s.secret_key, s.key_fingerprint
        meta = dict(s.db.execute("SELECT key, value FROM meta").fetchall())
        assert s.key_source == "file"
    path = key_file_path(db)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_key_text(path.read_text()) == key and len(key) == 32
    assert "secret_key" not in meta and meta["key_fingerprint"] == fp == fingerprint(key)
    assert key not in _files_bytes(db) and key.hex().encode() not in _files_bytes(db)


def test_env_key_wins_and_creates_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With REPLAY_REDACTION_KEY set, the store uses it and writes no key file."""
    monkeypatch.setenv(ENV_VAR, "team-ci-secret")
    db = tmp_path / "replay.db"
    with Store(db) as s:
        assert s.key_source == "env" and s.secret_key == parse_key_text("team-ci-secret")
    assert not key_file_path(db).exists()


def test_a_key_file_pasted_into_the_env_var_gives_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text of a .key file, set as REPLAY_REDACTION_KEY elsewhere (CI), is the same key."""
    db = tmp_path / "replay.db"
    with Store(db) as s:
        key = s.secret_key
    monkeypatch.setenv(ENV_VAR, key_file_path(db).read_text())
    with Store(tmp_path / "ci.db") as ci:
        assert ci.secret_key == key and ci.key_fingerprint == fingerprint(key)


def test_old_store_key_moves_out_and_leaves_no_trace_in_the_file(tmp_path: Path) -> None:
    """Migrating a store whose meta held secret_key writes it to the key file and erases it from
    the database."""
    db = tmp_path / "replay.db"
    old_key = bytes(range(7, 39))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SQL)
    conn.execute("INSERT INTO meta VALUES ('secret_key', ?)", (old_key,))
    conn.commit()
    conn.close()
    assert old_key in _files_bytes(db)

    with Store(db) as s:
        assert s.secret_key == old_key  # pseudonyms made before the upgrade stay the same
        assert s.db.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone() is None
        assert s.stored_fingerprint == fingerprint(old_key)
        assert s.get_run("r_01old0000000000000000000000").key_fingerprint is None
    assert parse_key_text(key_file_path(db).read_text()) == old_key
    assert stat.S_IMODE(key_file_path(db).stat().st_mode) == 0o600
    assert old_key not in _files_bytes(db), "the old key's bytes are still in the store or its -wal"


def test_a_symlink_at_the_key_path_is_refused_and_not_followed(tmp_path: Path) -> None:
    """A symlink planted at replay.db.key makes opening fail with a clear error; its target stays
    untouched."""
    target = tmp_path / "elsewhere"
    target.write_text("")
    key_file_path(tmp_path / "replay.db").symlink_to(target)
    with pytest.raises(StoreError, match="symlink"):
        Store(tmp_path / "replay.db")
    assert target.read_text() == ""


def test_a_dangling_symlink_at_the_key_path_is_refused(tmp_path: Path) -> None:
    """A dangling symlink at the key path is not written through."""
    key_file_path(tmp_path / "replay.db").symlink_to(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="symlink"):
        Store(tmp_path / "replay.db")
    assert not (tmp_path / "nowhere").exists()


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    """A key file with group or other permissions is refused, naming chmod 600."""
    db = tmp_path / "replay.db"
    Store(db).close()
    os.chmod(key_file_path(db), 0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        Store(db)


def test_a_damaged_key_file_says_so(tmp_path: Path) -> None:
    """A key file with garbage in it gives an error naming the file, not a silent new key."""
    db = tmp_path / "replay.db"
    fd = os.open(key_file_path(db), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"arkey1:zz-not-hex\n")
    os.close(fd)
    with pytest.raises(StoreError, match="damaged"):
        Store(db)


def test_concurrent_first_creation_agrees_on_one_key(tmp_path: Path) -> None:
    """Sixteen threads creating the same key file at once all read the same key."""
    path = tmp_path / "replay.db.key"
    barrier = threading.Barrier(16)
    keys: list[bytes] = []

    def make() -> None:
        barrier.wait()
        keys.append(load_or_create_key_file(path))

    threads = [threading.Thread(target=make) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 16 and len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["replay.db.key"]  # no temporary file left


def _record_constant_sender(db: Path) -> str:
    rec = Recorder(db)

    @rec.tool("email.send")
    def send(to: str) -> str:
        return "sent"

    with rec.run("sender", input={"x": 1}) as run:
        send("billing@shop.example")
    rec.flush()
    rec.close()
    return run.run_id


def _constant_sender(ticket: Any) -> Any:
    from replay.context import session_var

    session = session_var.get()
    assert session is not None
    return session.recorder.tool("email.send")(lambda to: "sent")("billing@shop.example")


def test_replay_with_another_key_names_both_fingerprints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cassette made with key A replayed with key B warns with both fingerprints (never a key)
    and diverges."""
    monkeypatch.setenv(ENV_VAR, "key-A")
    db = tmp_path / "replay.db"
    rid = _record_constant_sender(db)
    with Store(db) as s:
        cassette = write_cassette(cassette_from_store(s, rid), tmp_path / "c.json")
    text = cassette.read_text()
    fp_a = fingerprint(parse_key_text("key-A"))
    assert f'"key_fingerprint": "{fp_a}"' in text
    assert key_text(parse_key_text("key-A")) not in text and "key-A" not in text

    assert replay_run(str(cassette), agent=_constant_sender).key_mismatch is None
    monkeypatch.setenv(ENV_VAR, "key-B")
    fp_b = fingerprint(parse_key_text("key-B"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = replay_run(str(cassette), agent=_constant_sender)
    messages = [
        str(w.message) for w in caught if issubclass(w.category, RedactionKeyMismatchWarning)
    ]
    assert len(messages) == 1 and fp_a in messages[0] and fp_b in messages[0]
    assert ENV_VAR in messages[0] and "key-B" not in messages[0]
    assert result.key_mismatch == (fp_a, fp_b)
    assert not result.diff.is_empty  # the constant's pseudonym differs, so the call is unrecorded
