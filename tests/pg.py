"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temporary folder.

`REPLAY_TEST_PG_URL` (``postgresql://user@host:port/db``) points the suite at an existing server
instead; each test still gets a database of its own there. Without either, the PostgreSQL tests
skip on a developer's machine and fail in CI (``CI`` set): `.ci/run` installs Debian's postgresql.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

__all__ = ["PgServer", "find_pg_bin"]


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A PostgreSQL server of its own in a temporary folder, on 127.0.0.1 and a free port."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="replay-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        else:
            import getpass

            self.user = getpass.getuser()
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--locale=C",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            cwd=self.root,  # a folder the postgres user may enter (the checkout may be private)
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def start(self) -> None:
        """Start (or start again) the server and wait until it accepts connections."""
        opts = (
            f"-p {self.port} -h 127.0.0.1 -k {self.root} -F -c max_connections=200 "
            "-c shared_buffers=64MB -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w",
            "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, ``immediate``: as a crash would)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def benchmark_server() -> tuple[str | None, PgServer | None]:
    """The server a benchmark runs on: ``$REPLAY_BENCH_PG_URL`` as given, else a throwaway one
    started here (stop it afterwards); ``(None, None)`` when no PostgreSQL is installed."""
    given = os.environ.get("REPLAY_BENCH_PG_URL")
    if given:
        return given, None
    bin_dir = find_pg_bin()
    if bin_dir is None:
        return None, None
    server = PgServer(bin_dir)
    server.start()
    return server.url(), server


def new_database(admin_url: str) -> str:
    """A new empty schema on the server at `admin_url`; returns a URL whose search_path is it.

    A schema is as isolated as a database for a store (tables, views, advisory locks by name) and
    about ten times cheaper to create and drop.
    """
    import psycopg

    name = "replay_t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in admin_url else "?"
    return f"{admin_url}{sep}options=-csearch_path%3D{name}"


def drop_database(admin_url: str, url: str) -> None:
    """Drop the schema of `url` made by `new_database`, with everything in it."""
    import psycopg

    name = url.rpartition("%3D")[2]
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def execute(store: object, sql: str, params: tuple[object, ...] | list[object] = ()) -> None:
    """Run one writing statement (``?`` placeholders) on `store`'s database, as a test's setup."""
    if getattr(store, "dialect", "") == "postgresql":
        import psycopg

        from replay.pg_store import qmark_to_pyformat

        with psycopg.connect(store.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(qmark_to_pyformat(sql), tuple(params))
    else:
        store.db.execute(sql, list(params))  # type: ignore[attr-defined]
