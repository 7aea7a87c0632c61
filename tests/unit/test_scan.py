"""Scanning: where redaction would catch something, in values, JSON files and SQLite stores."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.errors import CassetteDecodeError, StoreError
from replay.processors import (
    SECRET_MARKER,
    FileHit,
    Hit,
    RedactionConfig,
    Redactor,
    scan_json_file,
    scan_sqlite,
)
from replay.scan import ScanInputError, scan_paths
from tests.strategies import json_with_planted

R = Redactor(b"k" * 32)
# REPLAY_HYPOTHESIS_EXAMPLES=5000 for a deeper local run.
SLOW = settings(
    max_examples=int(os.environ.get("REPLAY_HYPOTHESIS_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=15,
)

SECRET_DOC = {
    "run": {"input": {"customer": {"email": "jane.doe@example.com", "name": "Jane"}}},
    "steps": [
        {"tool": "crm.lookup", "args": {"phone": "+1 415 555 0100"}},
        {"tool": "http.get", "headers": {"Authorization": "Bearer abc123def456ghi789"}},
        {"tool": "pay", "output": {"card": 4111111111111111, "note": "ok"}},
    ],
    "a b": ["x", "y", "z", "from 81.20.30.40"],
}
SECRET_HITS = [
    Hit("$.run.input.customer.email", "email"),
    Hit("$.steps[0].args.phone", "phone"),
    Hit("$.steps[1].headers.Authorization", "secret"),
    Hit("$.steps[2].output.card", "card"),
    Hit('$["a b"][3]', "ipv4"),
]
SECRETS = [
    "jane.doe@example.com",
    "415 555 0100",
    "abc123def456ghi789",
    "4111111111111111",
    "81.20.30.40",
]


# --- Redactor.scan ------------------------------------------------------------------------------


def test_scan_paths_and_rules() -> None:
    """scan names each catch by JSON path and rule, in document order."""
    assert R.scan(SECRET_DOC) == SECRET_HITS


def test_scan_never_shows_the_value() -> None:
    """Nothing a hit holds (path or rule) contains the value that was caught."""
    text = repr(R.scan(SECRET_DOC))
    assert [s for s in SECRETS if s in text] == []


def test_scan_masks_keys_that_are_pii() -> None:
    """A dict key that would be pseudonymized appears in paths as its position, not its text."""
    value = {"customers": {"ok": 1, "bob@example.com": {"cc": "amy@example.org"}}}
    assert R.scan(value) == [
        Hit("$.customers[<key 1>]", "email"),
        Hit("$.customers[<key 1>].cc", "email"),
    ]


def test_scan_reports_every_rule_of_a_string_once() -> None:
    """One string with several kinds of PII gives one hit per rule, in rule order."""
    text = "mail bob@example.com or jim@example.com from 81.2.69.1"
    assert R.scan({"m": text}, path="$.log") == [Hit("$.log.m", "email"), Hit("$.log.m", "ipv4")]


def test_scan_skips_what_is_already_redacted() -> None:
    """Placeholders and [REDACTED:secret] are not hits: a redacted value scans clean."""
    assert R.scan({"password": SECRET_MARKER, "to": "u1a2b3c4d@redacted.invalid"}) == []
    assert R.scan(R(SECRET_DOC)) == []


def test_scan_respects_the_config() -> None:
    """Allowed values and disabled rules are not reported; extra rules are."""
    r = Redactor(
        b"k",
        RedactionConfig(
            allow=("jane.doe@example.com",),
            disabled=("ipv4",),
            extra_patterns={"order": r"ORD-\d+"},
        ),
    )
    doc = dict(SECRET_DOC, ref="ORD-123")
    assert r.scan(doc) == [h for h in SECRET_HITS if h.rule not in ("email", "ipv4")] + [
        Hit("$.ref", "order")
    ]


@SLOW
@given(json_with_planted())
def test_scan_hides_planted_values(vp: tuple) -> None:
    """No planted value occurs in what scan returns, and every planted value is reported."""
    value, planted = vp
    hits = R.scan(value)
    assert hits
    assert [p for p in planted if p in repr(hits)] == []


@SLOW
@given(json_with_planted() | JSON)
def test_scan_agrees_with_redaction(value: object) -> None:
    """scan finds something exactly when redaction changes the value, and never after it."""
    value = value[0] if isinstance(value, tuple) else value
    redacted = R(value)
    assert bool(R.scan(value)) == (redacted != value)
    assert R.scan(redacted) == []


# --- scan_json_file -----------------------------------------------------------------------------


def test_scan_json_file(tmp_path: Path) -> None:
    """A cassette-like JSON file gives one FileHit per catch, located by JSON path."""
    path = tmp_path / "r_1.json"
    path.write_text(json.dumps(SECRET_DOC, indent=2))
    assert scan_json_file(path) == [FileHit(str(path), h.path, h.rule) for h in SECRET_HITS]
    assert scan_json_file(str(path)) == scan_json_file(path)


def test_scan_json_file_clean(tmp_path: Path) -> None:
    """A redacted file scans clean."""
    path = tmp_path / "clean.json"
    path.write_text(json.dumps(R(SECRET_DOC)))
    assert scan_json_file(path) == []


def test_scan_json_lines(tmp_path: Path) -> None:
    """A JSON Lines log is scanned line by line: 'line N, $.path'."""
    path = tmp_path / "events.log"
    lines = [
        {"kind": "run_start"},
        {"msg": "sent to jane.doe@example.com"},
        {},
        {"ip": "81.2.69.1"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert scan_json_file(path) == [
        FileHit(str(path), "line 2, $.msg", "email"),
        FileHit(str(path), "line 4, $.ip", "ipv4"),
    ]


def test_scan_json_file_not_json(tmp_path: Path) -> None:
    """A file that is neither JSON nor JSON Lines is refused, naming the file and the error."""
    path = tmp_path / "broken.json"
    path.write_text('{"a": 1,\n')
    with pytest.raises(CassetteDecodeError) as e:
        scan_json_file(path)
    assert str(e.value).startswith(
        f"{path}: not JSON (Expecting property name enclosed in double quotes"
    )
    assert "scan reads JSON files and SQLite stores" in str(e.value)


def test_scan_json_file_missing(tmp_path: Path) -> None:
    """A missing file raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        scan_json_file(tmp_path / "nope.json")


# --- scan_sqlite --------------------------------------------------------------------------------


def _make_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE runs (run_id TEXT, input TEXT, note TEXT, body BLOB, gz BLOB, n INTEGER,
                           password TEXT, ts INTEGER);
        CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
        """
    )
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "r_1",
            json.dumps({"customer": {"email": "jane.doe@example.com", "id": 7}}),
            "call +1 415 555 0100 today",
            json.dumps({"ip": "81.20.30.40"}).encode(),
            gzip.compress(json.dumps([{"card": "4111 1111 1111 1111"}]).encode()),
            4111111111111111,
            "hunter2",
            1718000000000,
        ),
    )
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "r_2",
            json.dumps({"customer": {"email": "u1a2b3c4d@redacted.invalid"}}),
            "fine",
            None,
            b"\x00\x01binary",
            7,
            SECRET_MARKER,
            1718000000001,
        ),
    )
    con.execute("INSERT INTO kv VALUES (?, ?)", ("secret_key", "0f" * 32))
    con.execute("INSERT INTO kv VALUES (?, ?)", ("note", "ssn 123-45-6789"))
    con.commit()
    con.close()


DB_HITS = [
    ("table kv, row 1, column v", "ssn"),
    ("table runs, rowid 1, column input, $.customer.email", "email"),
    ("table runs, rowid 1, column note", "phone"),
    ("table runs, rowid 1, column body, $.ip", "ipv4"),
    ("table runs, rowid 1, column gz, $[0].card", "card"),
    ("table runs, rowid 1, column n", "card"),
    ("table runs, rowid 1, column password", "secret"),
]


def test_scan_sqlite(tmp_path: Path) -> None:
    """Every text and blob cell of every table is scanned; JSON and gzip JSON cells by path."""
    path = tmp_path / "replay.db"
    _make_db(path)
    assert scan_sqlite(path) == [FileHit(str(path), loc, rule) for loc, rule in DB_HITS]


def test_scan_sqlite_opens_read_only(tmp_path: Path) -> None:
    """Scanning a read-only store works and leaves the file byte for byte as it was."""
    path = tmp_path / "replay.db"
    _make_db(path)
    before = path.read_bytes()
    os.chmod(path, stat.S_IRUSR)
    try:
        assert len(scan_sqlite(path)) == len(DB_HITS)
    finally:
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    assert path.read_bytes() == before


def test_scan_sqlite_sees_rows_still_in_the_wal(tmp_path: Path) -> None:
    """Rows written in WAL mode and not yet checkpointed into the main file are scanned too."""
    path = tmp_path / "wal.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE events (msg TEXT)")
    con.execute("INSERT INTO events VALUES ('mail jane.doe@example.com')")
    con.commit()
    try:
        assert b"jane.doe" not in path.read_bytes()
        assert scan_sqlite(path) == [
            FileHit(str(path), "table events, rowid 1, column msg", "email")
        ]
    finally:
        con.close()


def test_scan_sqlite_hits_never_show_values(tmp_path: Path) -> None:
    """What scan_sqlite returns holds no caught value."""
    path = tmp_path / "replay.db"
    _make_db(path)
    text = repr(scan_sqlite(path))
    assert [
        s for s in ("jane.doe", "415 555", "81.20.30.40", "4111", "hunter2", "123-45") if s in text
    ] == []


def test_scan_sqlite_not_a_database(tmp_path: Path) -> None:
    """A file that is not SQLite raises StoreError naming it and pointing to scan_json_file."""
    path = tmp_path / "fake.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"cannot read .*fake\.db as SQLite .*use scan_json_file"):
        scan_sqlite(path)


def test_scan_sqlite_missing(tmp_path: Path) -> None:
    """A missing store raises FileNotFoundError naming the path, and creates no file."""
    path = tmp_path / "missing.db"
    with pytest.raises(FileNotFoundError, match="no SQLite file at"):
        scan_sqlite(path)
    assert not path.exists()


# --- scan_paths: folders, stores and files together (what `replay scan` runs) ----------------


def test_scan_paths_walks_folders_and_reads_stores_by_their_header(tmp_path: Path) -> None:
    """A folder gives its *.json files at any depth, in order; a store is read as SQLite whatever
    its name.
    """
    nested = tmp_path / "cassettes" / "incidents"
    nested.mkdir(parents=True)
    (nested / "r_2.json").write_text(json.dumps(SECRET_DOC))
    (tmp_path / "cassettes" / "r_1.json").write_text(json.dumps(R(SECRET_DOC)))
    (tmp_path / "cassettes" / "notes.txt").write_text("jane.doe@example.com")
    store = tmp_path / "prod.sqlite"
    _make_db(store)
    result = scan_paths([str(tmp_path / "cassettes"), str(store)])
    assert result.files == [
        tmp_path / "cassettes" / "incidents" / "r_2.json",
        tmp_path / "cassettes" / "r_1.json",
        store,
    ]
    assert result.unreadable == []
    assert result.hits == [
        FileHit(str(nested / "r_2.json"), h.path, h.rule) for h in SECRET_HITS
    ] + [FileHit(str(store), loc, rule) for loc, rule in DB_HITS]


def test_scan_paths_names_an_unreadable_file_and_goes_on(tmp_path: Path) -> None:
    """A file that is neither JSON nor SQLite is listed as unreadable (never its content); the
    other files are still scanned.
    """
    bad = tmp_path / "broken.json"
    bad.write_text("not json at all: jane.doe@example.com")
    good = tmp_path / "r_1.json"
    good.write_text(json.dumps(SECRET_DOC))
    result = scan_paths([str(bad), str(good)])
    assert len(result.unreadable) == 1
    assert result.unreadable[0].startswith(f"{bad}: could not read (")
    assert "jane.doe" not in result.unreadable[0]
    assert result.hits == [FileHit(str(good), h.path, h.rule) for h in SECRET_HITS]


def test_scan_paths_refuses_a_missing_path_or_nothing(tmp_path: Path) -> None:
    """A path that does not exist, or no path at all, is a ScanInputError naming what to pass."""
    with pytest.raises(ScanInputError, match="nope.db: no such file or folder"):
        scan_paths([str(tmp_path / "nope.db")])
    with pytest.raises(ScanInputError, match="nothing to scan"):
        scan_paths([])


def test_the_processors_module_still_exports_the_moved_names() -> None:
    """replay.processors re-exports the names that moved to replay.redaction and replay.scan, for
    one release.
    """
    import replay.processors as old
    import replay.redaction as redaction
    import replay.scan as scan

    for name in (
        "Redactor",
        "RedactionConfig",
        "Hit",
        "SECRET_MARKER",
        "SECRET_KEYS",
        "DEFAULT_RULES",
    ):
        assert getattr(old, name) is getattr(redaction, name)
    for name in ("FileHit", "scan_json_file", "scan_sqlite", "heavy_detector", "heavy_settings"):
        assert getattr(old, name) is getattr(scan, name)
