"""Nothing planted survives: secrets and PII put into a run never reach the disk or the log lines.

Generated secrets and PII are planted in the agent's input, tool args, tool outputs, exception
messages and the outputs of nested tools; the runs are recorded; then the raw bytes of the SQLite
file, its -wal and the `replay.events` log lines are searched for every planted value.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay import Recorder
from replay.cassette import cassette_from_store, dump_cassette
from replay.store import Store

from tests.strategies import json_with_planted, planted_values


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _record(db: Path, payloads: list[Any], store_args: str) -> None:
    rec = Recorder(db, store_args=store_args)

    @rec.tool("crm.lookup")
    def lookup(query: Any) -> Any:
        return payloads[1]

    @rec.tool("inner.fetch")
    def inner(x: Any) -> Any:
        return payloads[4]

    @rec.tool("outer.process")
    def outer(x: Any) -> Any:
        return {"nested": inner(x)}

    @rec.tool("email.send")
    def send(body: Any) -> None:
        raise RuntimeError(f"gateway refused: {payloads[3]}")

    @rec.agent("support-agent")
    def handle(ticket: Any) -> Any:
        lookup(payloads[2])
        outer(payloads[2])
        try:
            send(payloads[0])
        except RuntimeError:
            pass
        return payloads[1]

    handle(payloads[0])
    rec.flush()
    rec._writer.close()  # leave the -wal as it is (no checkpoint through our reads)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.lists(json_with_planted(min_plants=3, max_plants=6), min_size=5, max_size=5),
    st.lists(planted_values(keyed=False), min_size=3, max_size=6),
    st.sampled_from(["hash", "redacted"]),
)
def test_no_planted_value_reaches_the_store_or_the_logs(
    plants: list[tuple[Any, list[str]]], in_message: list[Any], store_args: str
) -> None:
    """Across input, args, outputs, error messages and nested tools, no planted value is in the file, -wal or logs."""
    payloads = [value for value, _ in plants]
    payloads[3] = "upstream said: " + " ; ".join(p.text for p in in_message)  # inside an exception message
    planted = [s for i, (_, secrets) in enumerate(plants) if i != 3 for s in secrets]
    planted += [p.secret for p in in_message]
    handler = _Lines()
    logger = logging.getLogger("replay.events")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as d:
            db = Path(d) / "replay.db"
            _record(db, payloads, store_args)
            blobs = {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}
            with Store(db) as s:
                (run,) = s.runs()
                cassette = dump_cassette(cassette_from_store(s, run.run_id)).encode()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert "replay.db" in blobs
    assert len(handler.lines) >= 6  # run_start, 5 steps (one nested), stop
    blobs["replay.events log"] = "\n".join(handler.lines).encode()
    blobs["cassette"] = cassette
    for secret in planted:
        needle = secret.encode("utf-8")
        for name, blob in blobs.items():
            assert needle not in blob, f"planted value {secret!r} survived in {name}"
