"""Fleets on a real PostgreSQL server: recording processes, a server restart, the CLI, replay.

The recording processes are real (subprocesses with their own Recorder), the server is real
(tests/pg.py), and every count is exact: nothing lost, nothing written twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from replay import Recorder, replay_run
from replay.cli import cli
from replay.store_api import StoreAPI, open_store
from tests.pg import PgServer

WORKER = """
import os, sys
from replay import Recorder

rec = Recorder(os.environ["REPLAY_DB"], flush_interval_s=0.02)

@rec.tool("lookup")
def lookup(i):
    return {"i": i, "host": os.environ["WORKER"]}

@rec.agent("worker")
def handle(i):
    lookup(i)
    lookup(i + 1)
    return i * 2

for i in range(int(sys.argv[1])):
    handle(i)
assert rec.flush(60), "the writer did not finish"
assert rec.dropped == 0, rec.dropped
"""

EVENTS_PER_RUN = 4  # run_start, two lookups, stop


def _counts(store: StoreAPI) -> tuple[int, int, int]:
    """(runs, events, distinct (run_id, seq) keys) in the store."""
    ((runs,),) = store.query("SELECT count(*) FROM runs")
    ((events, keys),) = store.query(
        "SELECT count(*), count(DISTINCT run_id || ':' || CAST(seq AS TEXT)) FROM events"
    )
    return runs, events, keys


@pytest.mark.slow
def test_eight_processes_record_a_thousand_runs_each_into_one_server(
    pg_url: str, tmp_path: Path
) -> None:
    """8 processes x 1,000 runs into one PostgreSQL: exactly 8,000 runs and 32,000 events."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "REPLAY_DB": pg_url, "REPLAY_SPOOL_DIR": str(tmp_path / "spool")}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "1000"],
            env={**env, "WORKER": f"w{n}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    with open_store(pg_url) as store:
        assert _counts(store) == (8000, 8000 * EVENTS_PER_RUN, 8000 * EVENTS_PER_RUN)
        assert {r.stop_reason for r in store.runs()} == {"completed"}
        ((hosts,),) = store.query("SELECT count(DISTINCT pid) FROM runs")
        assert hosts == 8


def test_a_retried_batch_leaves_one_copy_of_each_event(pg_url: str) -> None:
    """Writing the same batch twice (a retry after a lost connection) stores each event once."""
    rec = Recorder(pg_url, flush_interval_s=0.01)

    @rec.tool("lookup")
    def lookup(i: int) -> dict[str, int]:
        return {"i": i}

    @rec.agent("worker")
    def handle(i: int) -> int:
        lookup(i)
        return i

    handle(1)
    assert rec.flush(10)
    rec.close()
    with open_store(pg_url) as store:
        run = store.runs()[0]
        events = store.events(run.run_id)
        store.write_batch(runs=[run], events=events)
        store.write_batch(runs=[run], events=events + events)  # duplicates inside one batch too
        assert _counts(store) == (1, 3, 3)
        assert store.events(run.run_id) == events


@pytest.mark.slow
def test_a_server_restart_during_recording_loses_nothing(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs recorded while the server stops and starts again are all stored once it is back."""
    monkeypatch.setenv("REPLAY_REDACTION_KEY", "fleet-test-key")
    url = pg_server.url()
    rec = Recorder(url, flush_interval_s=0.01, spool_dir=tmp_path / "spool")

    @rec.tool("lookup")
    def lookup(i: int) -> dict[str, int]:
        return {"i": i}

    @rec.agent("worker")
    def handle(i: int) -> int:
        lookup(i)
        lookup(i + 1)
        return i

    stop = threading.Event()
    done = [0]

    def record() -> None:
        while not stop.is_set():
            handle(done[0])
            done[0] += 1
            time.sleep(0.002)

    worker = threading.Thread(target=record)
    worker.start()
    try:
        time.sleep(0.5)
        pg_server.stop("fast")  # clients are disconnected mid-stream
        time.sleep(1.0)  # recording goes on against a server that is down
        pg_server.start()
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert rec.flush(30)
    assert rec._writer.spooled > 0, "the restart was not noticed: nothing went through the spool"
    with open_store(url) as store:
        deadline = time.monotonic() + 30
        while _counts(store)[0] < done[0] and time.monotonic() < deadline:
            time.sleep(0.2)  # the writer ingests its spool on its next retry
        assert _counts(store) == (done[0], done[0] * EVENTS_PER_RUN, done[0] * EVENTS_PER_RUN)
    assert rec.dropped == 0
    rec.close()


def test_recorder_cli_and_replay_share_one_postgresql_store(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A run recorded with Recorder(URL) is listed, shown, pinned and pruned by the CLI with
    --db URL, and replays from the URL with an empty diff."""
    monkeypatch.chdir(tmp_path)
    rec = Recorder(pg_url)

    @rec.tool("kb.search")
    def kb_search(query: str) -> list[str]:
        return ["a", query]

    @rec.agent("support-agent")
    def handle(q: str) -> str:
        return kb_search(q)[0]

    handle("where is my parcel")
    run_id = rec.last_run_id
    assert run_id is not None and rec.flush(10)
    cli_runner = CliRunner()
    res = cli_runner.invoke(cli, ["runs", "--db", pg_url, "--json"], catch_exceptions=False)
    assert res.exit_code == 0 and run_id in res.output
    res = cli_runner.invoke(cli, ["show", run_id, "--db", pg_url], catch_exceptions=False)
    assert res.exit_code == 0 and "kb.search" in res.output
    res = cli_runner.invoke(cli, ["pin", run_id, "--db", pg_url], catch_exceptions=False)
    assert res.exit_code == 0
    res = cli_runner.invoke(cli, ["prune", "--db", pg_url], catch_exceptions=False)
    assert res.exit_code == 0
    with open_store(pg_url) as store:
        assert store.get_run(run_id).pinned
    result = replay_run(run_id, db=pg_url, agent=handle)
    assert result.diff.is_empty, str(result.diff)
    rec.close()


def test_a_server_store_without_a_key_says_how_to_configure_one(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing to PostgreSQL without REPLAY_REDACTION_KEY or a key file fails naming both fixes,
    and the message never shows the URL's password."""
    from replay.errors import StoreError

    monkeypatch.delenv("REPLAY_REDACTION_KEY", raising=False)
    monkeypatch.delenv("REPLAY_REDACTION_KEY_FILE", raising=False)
    secret_url = pg_url.replace("postgresql://", "postgresql://", 1)
    user, _, rest = secret_url.partition("@")
    with_password = f"{user}:s3cret-pw@{rest}"
    store = open_store(with_password)  # trust auth: the password is accepted and unused
    try:
        with pytest.raises(StoreError) as info:
            store.secret_key  # noqa: B018
    finally:
        store.close()
    msg = str(info.value)
    assert "REPLAY_REDACTION_KEY" in msg and "REPLAY_REDACTION_KEY_FILE" in msg
    assert "s3cret-pw" not in msg and "***" in msg


def test_the_key_file_gives_every_host_the_same_pseudonyms(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores opened with one key file (two hosts) share the key; its fingerprint is kept in
    meta and the key itself nowhere in the database."""
    monkeypatch.delenv("REPLAY_REDACTION_KEY", raising=False)
    key_file = tmp_path / "fleet.key"
    with open_store(pg_url, key_file=key_file) as a, open_store(pg_url, key_file=key_file) as b:
        assert a.secret_key == b.secret_key and a.key_source == "file"
        a.write_batch(runs=[])
        from replay.models import Run, new_run_id

        a.write_batch(runs=[Run(run_id=new_run_id(), agent="x", started_ms=1)])
        assert a.query("SELECT value FROM meta WHERE key = 'key_fingerprint'") == [
            (a.key_fingerprint,)
        ]
        dump = repr(a.query("SELECT key, value FROM meta"))
        assert a.secret_key.hex() not in dump
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_a_server_store_spools_to_a_private_folder_of_its_own(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorder on a URL spools (when the server is down) to REPLAY_SPOOL_DIR when set, else to
    a folder of this user and this store in the temporary folder, never named with the password."""
    from replay.store_api import server_spool_dir

    monkeypatch.delenv("REPLAY_SPOOL_DIR", raising=False)
    user, _, rest = pg_url.partition("@")
    secret = f"{user}:pw-xyz@{rest}"
    default = server_spool_dir(secret)
    assert "pw-xyz" not in default and default == server_spool_dir(secret)
    assert default != server_spool_dir(pg_url + "&application_name=other")
    rec = Recorder(secret)
    try:
        assert rec._writer.spool_dir == Path(default)
    finally:
        rec.close()
    monkeypatch.setenv("REPLAY_SPOOL_DIR", str(tmp_path / "spool"))
    rec = Recorder(pg_url)
    try:
        assert rec._writer.spool_dir == tmp_path / "spool"
    finally:
        rec.close()
