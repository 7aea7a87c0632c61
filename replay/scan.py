"""Scanning: where redaction would catch something, in values, JSON files and SQLite stores.

`scan_json_file` and `scan_sqlite` report one `FileHit` (file, location, rule) per hit, never the
value; `scan_paths` walks folders of cassettes and stores (what ``replay scan`` does). The optional
heavier detector (detect-secrets' provider plugins, ``agent-replay[scan]``) is for scanning only,
never the recording path.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replay.errors import CassetteDecodeError, ReplayError, StoreError
from replay.redaction import SECRET_MARKER, Hit, RedactionConfig, Redactor

__all__ = [
    "FileHit",
    "ScanInputError",
    "ScanResult",
    "heavy_detector",
    "heavy_settings",
    "scan_file",
    "scan_json_file",
    "scan_paths",
    "scan_sqlite",
    "scan_targets",
]


class ScanInputError(ValueError):
    """What to scan was not given or does not exist (``replay scan`` exits 2 with it)."""


@dataclass(frozen=True)
class FileHit:
    """A `Hit` in a file: ``location`` is a JSON path, or table, row, column and JSON path."""

    file: str
    location: str
    rule: str


# --- files -------------------------------------------------------------------------------------


# detect-secrets plugins left out of the heavier scan: entropy detectors flag every sha and
# pseudonym a store holds, the keyword detector flags "password": "[REDACTED:secret]", and the
# public-IP detector flags the documentation-range addresses pseudonyms use.
_HEAVY_EXCLUDED = frozenset(
    {"HexHighEntropyString", "Base64HighEntropyString", "KeywordDetector", "IPPublicDetector"}
)


def heavy_detector() -> Callable[[str], list[str]] | None:
    """detect-secrets' provider plugins as a text check (``agent-replay[scan]``), or None.

    None when detect-secrets is not installed.

    The returned function gives rule names ``detect-secrets:<type>`` for a text (never the value).
    It needs detect-secrets' settings active: use it inside `heavy_settings()`. About 1-3 ms per
    KB: for ``replay scan``, never on the recording path.
    """
    try:
        from detect_secrets.core.scan import scan_line
    except ImportError:
        return None

    def detect(text: str) -> list[str]:
        found: list[str] = []
        for line in text.splitlines() or [text]:
            if len(line) >= 8:
                found.extend(f"detect-secrets:{s.type}" for s in scan_line(line))
        return list(dict.fromkeys(found))

    return detect


@contextlib.contextmanager
def heavy_settings() -> Iterator[None]:
    """detect-secrets configured with its provider plugins (see `heavy_detector`)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.settings import transient_settings

    plugins: dict[str, type] = get_mapping_from_secret_type_to_class()
    names = sorted({c.__name__ for c in plugins.values()} - _HEAVY_EXCLUDED)
    with transient_settings({"plugins_used": [{"name": n} for n in names]}):
        yield


def _scanner(config: RedactionConfig | None, heavy: bool = False) -> Redactor:
    # Scanning reports rules and paths, never pseudonyms: any key will do.
    return Redactor(b"scan", config, heavy=heavy_detector() if heavy else None)


def scan_json_file(
    path: str | Path, config: RedactionConfig | None = None, heavy: bool = False
) -> list[FileHit]:
    """Scan a cassette or any JSON (or JSON Lines) file for what redaction would catch.

    Returns one `FileHit` per hit, with the JSON path as location (``line N, $.path`` for JSON
    Lines). Never the value. ``heavy`` adds detect-secrets' provider plugins (see
    `heavy_detector`; run it inside `heavy_settings()`).

    Raises:
        FileNotFoundError: no such file.
        CassetteDecodeError: the file is neither JSON nor JSON Lines.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="surrogateescape")
    red = _scanner(config, heavy)
    try:
        docs: list[tuple[str, Any]] = [("", json.loads(text))]
    except json.JSONDecodeError as first:
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append((f"line {n}, ", json.loads(line)))
            except json.JSONDecodeError:
                raise CassetteDecodeError(
                    str(p),
                    f"not JSON ({first.msg} at line {first.lineno} column {first.colno}) "
                    "and not JSON Lines; scan reads JSON files and SQLite stores",
                ) from None
    return [
        FileHit(str(p), prefix + hit.path, hit.rule)
        for prefix, doc in docs
        for hit in red.scan(doc)
    ]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cell_text(value: bytes) -> str | None:
    if value[:2] == b"\x1f\x8b":
        try:
            value = gzip.decompress(value)
        except (OSError, EOFError):
            return None
    elif value[:1] == b"\x78":
        try:
            value = zlib.decompress(value)
        except zlib.error:
            pass
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _scan_cell(red: Redactor, value: Any) -> list[Hit]:
    if isinstance(value, bytes):
        text = _cell_text(value)
        if text is None:
            return []
        value = text
    if isinstance(value, str):
        head = value.lstrip()[:1]
        if head in ("{", "["):
            try:
                return red.scan(json.loads(value))
            except (json.JSONDecodeError, RecursionError):
                pass
        return [Hit("", r) for r in red.scan_text(value)]
    if isinstance(value, int) and red.scan(value):
        return [Hit("", "card")]
    return []


def scan_sqlite(
    path: str | Path, config: RedactionConfig | None = None, heavy: bool = False
) -> list[FileHit]:
    """Scan every text and blob cell of every table of a SQLite file, opened read-only.

    Cells holding JSON (text, or UTF-8 / gzip / zlib blobs) are parsed and walked. Location:
    ``table runs, rowid 12, column input, $.customer.email``. A column with a secret-looking name
    reports its non-empty values as rule ``secret``. Never the value.

    Raises:
        FileNotFoundError: no such file.
        StoreError: the file is not a SQLite database or cannot be read.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"no SQLite file at {p}: pass the path of a replay store (e.g. replay.db)"
        )
    red = _scanner(config, heavy)
    uri = p.resolve().as_uri() + "?mode=ro"
    hits: list[FileHit] = []
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {p} read-only: {e}") from None
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        for table in tables:
            hits.extend(_scan_table(con, table, red, str(p)))
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"cannot read {p} as SQLite ({e}): scan_sqlite reads replay stores; "
            "use scan_json_file for cassettes"
        ) from None
    finally:
        con.close()
    return hits


def _scan_table(con: sqlite3.Connection, table: str, red: Redactor, file: str) -> list[FileHit]:
    """Every cell of one table: `scan_sqlite`'s hits there."""
    q = _quote_ident(table)
    try:
        cur = con.execute(f"SELECT rowid, * FROM {q}")
        has_rowid = True
    except sqlite3.OperationalError:
        cur = con.execute(f"SELECT * FROM {q}")
        has_rowid = False
    columns = [d[0] for d in cur.description][1 if has_rowid else 0 :]
    secret_cols = {c for c in columns if red.is_secret_key(c)}
    hits: list[FileHit] = []
    for n, row in enumerate(cur, 1):
        rowid, cells = (row[0], row[1:]) if has_rowid else (n, row)
        where = f"table {table}, {'rowid' if has_rowid else 'row'} {rowid}"
        for col, cell in zip(columns, cells, strict=True):
            if cell is None:
                continue
            if col in secret_cols:
                if cell not in ("", b"", SECRET_MARKER):
                    hits.append(FileHit(file, f"{where}, column {col}", "secret"))
                continue
            for hit in _scan_cell(red, cell):
                loc = f"{where}, column {col}" + (f", {hit.path}" if hit.path else "")
                hits.append(FileHit(file, loc, hit.rule))
    return hits


@dataclass
class ScanResult:
    """What `scan_paths` found: the files it looked at, the hits, and the files it could not read
    (each ``"<file>: could not read (<why>)"``: the scan is then incomplete)."""

    files: list[Path]
    hits: list[FileHit]
    unreadable: list[str]


def scan_targets(paths: list[str]) -> list[Path]:
    """The files `scan_paths` reads: each path as it is, or the ``*.json`` files under a folder.

    Raises:
        ScanInputError: a path does not exist.
    """
    files: list[Path] = []
    for t in paths:
        p = Path(t)
        if not p.exists():
            raise ScanInputError(f"{t}: no such file or folder")
        files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    return files


def scan_paths(
    paths: list[str], config: RedactionConfig | None = None, heavy: bool = False
) -> ScanResult:
    """Scan SQLite stores, JSON cassettes and folders of cassettes (what ``replay scan`` does).

    A file that cannot be read is named in `ScanResult.unreadable` and the scan goes on.
    ``heavy`` adds detect-secrets' provider plugins (`heavy_detector` must not be None).

    Raises:
        ScanInputError: no paths, or a path that does not exist.
    """
    if not paths:
        raise ScanInputError(
            "nothing to scan: name a store or cassette files (replay scan cassettes/ replay.db)"
        )
    files = scan_targets(paths)
    hits: list[FileHit] = []
    unreadable: list[str] = []
    with heavy_settings() if heavy else contextlib.nullcontext():
        for f in files:
            try:
                hits.extend(scan_file(f, config, heavy))
            except (OSError, ReplayError, ValueError, RecursionError, sqlite3.Error) as exc:
                # "Could not read" is not "secrets found": name the file, go on.
                unreadable.append(f"{f}: could not read ({_why(exc)})")
    return ScanResult(files, hits, unreadable)


def scan_file(
    path: str | Path, config: RedactionConfig | None = None, heavy: bool = False
) -> list[FileHit]:
    """`scan_sqlite` for a SQLite file (by its header), else `scan_json_file`."""
    with open(path, "rb") as fh:
        is_sqlite = fh.read(16) == b"SQLite format 3\x00"
    if is_sqlite:
        return scan_sqlite(path, config, heavy=heavy)
    return scan_json_file(path, config, heavy=heavy)


def _why(exc: BaseException) -> str:
    """Why a file could not be read, without its content: the OS reason, our error, or a type."""
    if isinstance(exc, ReplayError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
