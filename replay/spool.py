"""The spool: batches the store refused, kept redacted in a local file until it comes back.

Each process appends to its own ``<db>.spool/<host>-<pid>.jsonl`` (0600, never through a
symlink), one JSON line per batch: its event rows, runs and snapshots (bodies in base64). The
writer ingests its own file when the store is back; the next process that opens the store ingests
the files of processes that died (same host: their pid is gone; another host: not written for
`STALE_MS`). A file is claimed by an atomic rename, so one process ingests each.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import pathlib
import time
from typing import TYPE_CHECKING, Any

import orjson

from replay.liveness import STALE_MS, pid_alive, this_host
from replay.models import Run

if TYPE_CHECKING:
    from replay.store_api import StoreAPI as Store

__all__ = ["SpoolFull", "append_batch", "ingest_file", "ingest_orphans", "own_spool"]

log = logging.getLogger("replay")


class SpoolFull(Exception):
    """The spool file would grow past its bound: the batch is not written."""


def own_spool(spool_dir: pathlib.Path) -> pathlib.Path:
    """This process's spool file in `spool_dir`."""
    return spool_dir / f"{this_host()}-{os.getpid()}.jsonl"


def batch_line(rows: list[tuple[Any, ...]], runs: list[Run], snapshots: list[Any]) -> bytes:
    """One batch as a spool line (JSON, newline-terminated)."""
    return (
        orjson.dumps(
            {
                "v": 1,
                "rows": rows,
                "runs": [r.model_dump(mode="json") for r in runs],
                "snapshots": [
                    [sha, base64.b64encode(body).decode(), t, tr] for sha, body, t, tr in snapshots
                ],
            }
        )
        + b"\n"
    )


def append_batch(
    spool_dir: pathlib.Path,
    rows: list[tuple[Any, ...]],
    runs: list[Run],
    snapshots: list[Any],
    max_bytes: int,
) -> pathlib.Path:
    """Append one batch to this process's spool file; returns its path.

    Raises `SpoolFull` past `max_bytes`, PermissionError when the folder is a symlink, OSError
    when it cannot be written.
    """
    path = own_spool(spool_dir)
    line = batch_line(rows, runs, snapshots)
    with contextlib.suppress(FileExistsError):
        os.mkdir(spool_dir, 0o700)
    if spool_dir.is_symlink():
        raise PermissionError("the spool folder is a symlink")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if os.fstat(fd).st_size + len(line) > max_bytes:
            raise SpoolFull(str(path))
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


def ingest_file(store: Store, path: pathlib.Path) -> int:
    """Write every batch of a spool file into the store; returns the rows written."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                d = orjson.loads(line)
                rows = [tuple(r) for r in d["rows"]]
                runs = [Run.model_validate(r) for r in d["runs"]]
                snaps = [
                    (sha, base64.b64decode(b), t, bool(tr)) for sha, b, t, tr in d["snapshots"]
                ]
            except Exception:  # noqa: BLE001 - a line cut short by a kill: the rest is still good
                continue
            store.write_rows(rows, runs=runs, snapshots=snaps)
            n += len(rows)
    return n


def _orphaned(path: pathlib.Path, host: str, me: int) -> bool:
    """Whether a spool file belongs to a process that is gone (or, on another host, idle)."""
    name = path.name
    if not name.endswith(".jsonl") or path.is_symlink():
        return False
    owner_host, _, pid_text = name[: -len(".jsonl")].rpartition("-")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if owner_host == host:
        return pid != me and not pid_alive(pid)
    try:
        # another host: only when it has not written for a while
        return (time.time() - path.stat().st_mtime) * 1000 >= STALE_MS
    except OSError:
        return False


def ingest_orphans(store: Store, spool_dir: pathlib.Path | None) -> None:
    """Write the spools of processes that died before their store came back; delete them."""
    if spool_dir is None or not spool_dir.is_dir():
        return
    host, me = this_host(), os.getpid()
    for path in sorted(spool_dir.iterdir()):
        if not _orphaned(path, host, me):
            continue
        claimed = path.with_name(f"{path.name}.{host}-{me}.ingest")
        try:
            os.rename(path, claimed)  # atomic: one process ingests each file
        except OSError:
            continue
        try:
            ingest_file(store, claimed)
            claimed.unlink()
        except Exception as exc:  # noqa: BLE001 - leave it for the next open
            with contextlib.suppress(OSError):
                os.rename(claimed, path)
            log.warning("replay: could not ingest the spool %s yet (%s)", path, type(exc).__name__)
            return
