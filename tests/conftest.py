"""Fixtures for every test: the store backends (SQLite and a real PostgreSQL server).

``store_url`` is parametrized over both backends, so a behaviour test of the store runs once on a
SQLite file and once on a fresh PostgreSQL database. The server is started once per session
(tests/pg.py) or taken from ``REPLAY_TEST_PG_URL``; in CI a missing server fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import PgServer, drop_database, find_pg_bin, new_database


def _no_server(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run: {why} (CI never skips them)", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {why}; set REPLAY_TEST_PG_URL or install postgresql")


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL of a database on a running server whose user may create databases."""
    given = os.environ.get("REPLAY_TEST_PG_URL")
    if given:
        yield given
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _no_server("psycopg is not installed (pip install -e '.[test]')")
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _no_server("initdb/pg_ctl not found")
        return
    server = PgServer(bin_dir)
    try:
        server.start()
        yield server.url()
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test, with a key file for its pseudonyms."""
    monkeypatch.setenv("REPLAY_REDACTION_KEY_FILE", str(tmp_path / "pg.key"))
    url = new_database(pg_admin_url)
    try:
        yield url
    finally:
        drop_database(pg_admin_url, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new store on each backend: a SQLite file path, or a PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "replay.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`store_url` shared by a module's tests (a store built once and only read)."""
    folder = tmp_path_factory.mktemp("store")
    if request.param == "sqlite":
        yield str(folder / "replay.db")
        return
    admin = str(request.getfixturevalue("pg_admin_url"))
    url = new_database(admin)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REPLAY_REDACTION_KEY_FILE", str(folder / "pg.key"))
            yield url
    finally:
        drop_database(admin, url)


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[PgServer]:
    """A server of this test's own, which it may stop and start again."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _no_server("initdb/pg_ctl not found")
        return
    server = PgServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
