"""Cassettes: one self-contained, versioned, redacted JSON file per recorded run.

The file is sorted and indented so it diffs well in git, and exporting an unchanged run twice
gives the same bytes. Loading validates it with pydantic: a broken file names the file and the
field (``cassettes/x.json: events[3].args_sha: Field required``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from replay.errors import CassetteDecodeError
from replay.hashing import TRUNCATED_TAG, canonical_bytes, ordered_bytes, sha_of_canonical
from replay.models import Event, Run, is_step

__all__ = [
    "CASSETTE_FORMAT",
    "RUN_ID_PATTERN",
    "atomic_write",
    "check_integrity",
    "check_run_id",
    "CASSETTE_VERSION",
    "Cassette",
    "Snapshot",
    "stored_http",
    "cassette_from_replay",
    "cassette_from_store",
    "dump_cassette",
    "import_cassette",
    "load_cassette",
    "write_cassette",
]

CASSETTE_FORMAT = "agent-replay-cassette"
CASSETTE_VERSION = 1

#: A well-formed run id (`replay.models.new_run_id`): ``r_`` + 26 lowercase Crockford base32
#: characters.
RUN_ID_PATTERN = re.compile(r"r_[0-9abcdefghjkmnpqrstvwxyz]{26}")


def check_run_id(run_id: object, where: str = "run_id") -> str:
    """Return `run_id` if it is well-formed; it names files, so nothing else is accepted.

    Raises:
        CassetteDecodeError: anything else (``../../x``, a path, an empty string).
    """
    if isinstance(run_id, str) and RUN_ID_PATTERN.fullmatch(run_id):
        return run_id
    shown = repr(run_id) if len(repr(run_id)) <= 60 else repr(run_id)[:56] + "...'"
    raise CassetteDecodeError(
        where,
        f"{shown} is not a well-formed run id (r_ followed by 26 characters of 0-9 and "
        "a-z without i, l, o, u, as recorded by agent-replay)",
    )


def atomic_write(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` atomically, mode 0600, never through a symlink.

    The text goes to a new temporary file in the same folder (created with O_EXCL|O_NOFOLLOW, so
    nothing planted at a predictable name is followed), then replaces `path` with one rename: a
    reader sees the old file or the new one, never half of one; a symlink at `path` is replaced,
    not written through.

    Raises:
        OSError: the folder cannot be written; the temporary file is removed.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


class Snapshot(BaseModel):
    """A redacted output (or error) body, addressed by its sha."""

    model_config = ConfigDict(extra="forbid")

    body: Any
    type: str | None = None
    truncated: bool = False


class Cassette(BaseModel):
    """The whole recording of one run: the run row, every event, and the snapshots they name."""

    model_config = ConfigDict(extra="forbid")

    format: str = CASSETTE_FORMAT
    version: int = Field(default=CASSETTE_VERSION, ge=1, le=CASSETTE_VERSION)
    run: Run
    events: list[Event]
    snapshots: dict[str, Snapshot] = Field(default_factory=dict)
    http: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def steps(self) -> list[Event]:
        """The steps of the run: top-level tool and model calls (as `Recording.steps`)."""
        return [e for e in self.events if is_step(e)]

    @property
    def all_steps(self) -> list[Event]:
        """Every tool and model call, those made inside another tool included."""
        return [e for e in self.events if is_step(e, nested=True)]


def _body_value(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # not JSON (should not happen): keep it, tagged like other bytes
        return {"$bytes": base64.b64encode(body).decode("ascii")}


def cassette_from_store(store: Any, run_id: str) -> Cassette:
    """Build the cassette of one run from a store (raises RunNotFoundError)."""
    run = store.get_run(run_id)
    events = store.events(run.run_id)
    snapshots: dict[str, Snapshot] = {}
    shas = {e.output_sha for e in events if e.output_sha} | {run.input_sha, run.output_sha}
    for sha in sorted(s for s in shas if s):
        found = store.snapshot(sha)
        if found is not None:
            body, type_name, truncated = found
            snapshots[sha] = Snapshot(
                body=_body_value(body), type=type_name, truncated=bool(truncated)
            )
    run = run.model_copy(update={"pinned": False, "expires_at": None})
    return Cassette(
        run=run, events=events, snapshots=snapshots, http=stored_http(store, run.http_sha)
    )


def stored_http(store: Any, http_sha: str | None) -> list[dict[str, Any]]:
    """The run's HTTP interactions (the ``$http`` snapshot), [] when it has none."""
    found = store.snapshot(http_sha) if http_sha else None
    if found is None:
        return []
    value = _body_value(found[0])
    return value if isinstance(value, list) else []  # a truncated snapshot cannot be played back


def cassette_from_replay(result: Any) -> Cassette:
    """The cassette a bless writes: the replayed trace, under the original run's id.

    Keeping the id keeps the file name, ``--replay RUN_ID`` and incident tests pointing at it.
    """
    rid = result.recorded.run_id
    run = result.replayed.model_copy(
        update={"run_id": rid, "replay_of": None, "pinned": False, "expires_at": None}
    )
    events = [e.model_copy(update={"run_id": rid}) for e in result.replayed_events]
    snapshots = {
        sha: Snapshot(body=value, type=type_name, truncated=truncated)
        for sha, (value, type_name, truncated) in result.replayed_snapshots.items()
    }
    # Answers replayed from the recording point at the recording's snapshots.
    for sha in {run.input_sha, run.output_sha} | {e.output_sha for e in events}:
        if sha and sha not in snapshots and sha in result.recording.snapshots:
            value, type_name, truncated = result.recording.snapshots[sha]
            snapshots[sha] = Snapshot(body=value, type=type_name, truncated=truncated)
    # HTTP was played back from the recording, not recorded again: keep the recording's
    # interactions.
    http = list(result.recording.http)
    run = run.model_copy(update={"http_sha": result.recorded.http_sha if http else None})
    return Cassette(run=run, events=events, snapshots=snapshots, http=http)


def dump_cassette(cassette: Cassette) -> str:
    """The cassette as indented JSON text, sorted but for snapshot bodies (stable across
    exports)."""
    data = cassette.model_dump(mode="json")
    for event in data["events"]:
        # Added with parallel tool calls: left out when unset, so a cassette without concurrent
        # steps keeps the bytes it had before the field existed (and older readers load it).
        if event.get("concurrent_group") is None:
            event.pop("concurrent_group", None)
    # Snapshot bodies keep the tool's key order (replay hands values back in it); everything else
    # is sorted. Their shas are over the canonical form, so the order does not change them.
    bodies = {sha: snap.pop("body", None) for sha, snap in data.get("snapshots", {}).items()}
    data = _sorted_keys(data)
    for sha, snap in data.get("snapshots", {}).items():
        snap["body"] = bodies[sha]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def write_cassette(
    cassette: Cassette, path: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Write `cassette` to `path`; an existing different file needs ``force=True``.

    Raises:
        FileExistsError: the file exists with other content and `force` is not set.
    """
    p = Path(path)
    text = dump_cassette(cassette)
    if (p.exists() or p.is_symlink()) and not force:
        if not p.is_symlink() and p.read_text(encoding="utf-8") == text:
            return p
        raise FileExistsError(
            f"{p} exists and differs from the export: pass --force to overwrite it"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(p, text)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def read_input_file(
    p: Path,
    error: type[CassetteDecodeError],
    missing: str,
    max_bytes: int | None = None,
    reader: str = "an import",
) -> bytes:
    """The bytes of an input file, or `error` naming the file: `missing` when there is no such
    file, the OS's reason when it cannot be read, the limit `reader` has when it is over
    `max_bytes`.
    """
    try:
        if max_bytes is not None:
            size = p.stat().st_size
            if size > max_bytes:
                raise error(str(p), f"{size} bytes is more than the {max_bytes} {reader} reads")
        return p.read_bytes()
    except FileNotFoundError:
        raise error(str(p), missing) from None
    except OSError as exc:
        raise error(str(p), f"cannot be read: {exc.strerror}") from None


def load_cassette(path: str | os.PathLike[str]) -> Cassette:
    """Read and validate a cassette file.

    Raises:
        CassetteDecodeError: missing file, not JSON, another format or a newer version, or a field
            that is wrong; the message names the file and the field.
    """
    p = Path(path)
    raw = read_input_file(
        p, CassetteDecodeError, "no such cassette file (export one with `replay export RUN_ID`)"
    )
    try:
        data = json.loads(raw)
    except RecursionError:
        raise CassetteDecodeError(
            str(p),
            "nested too deeply to read (thousands of levels): agent-replay never writes such a "
            "file",
        ) from None
    except ValueError as exc:
        raise CassetteDecodeError(str(p), f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CassetteDecodeError(str(p), "not a cassette: the top level must be a JSON object")
    _check_format(data, str(p))
    try:
        cas = Cassette.model_validate(data)
    except RecursionError:
        raise CassetteDecodeError(str(p), "a value is nested too deeply to validate") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CassetteDecodeError(
            str(p), f"{_loc(tuple(first['loc']))}: {first['msg']}{more}"
        ) from None
    check_integrity(cas, str(p))
    return cas


def _check_format(data: dict[str, Any], where: str) -> None:
    """Refuse a JSON object that is not a cassette, or one of a format version this one cannot
    read (older than 1, newer than `CASSETTE_VERSION`).
    """
    fmt = data.get("format")
    if fmt != CASSETTE_FORMAT:
        raise CassetteDecodeError(
            where,
            f"format: expected {CASSETTE_FORMAT!r}, found {str(fmt)[:40]!r} (is this an "
            f"agent-replay cassette?)",
        )
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CassetteDecodeError(
            where, f"version: expected an integer, found {str(version)[:40]!r}"
        )
    if version < 1:
        raise CassetteDecodeError(
            where,
            f"version: {version} is not a cassette format version (versions start at 1; "
            f"this agent-replay writes {CASSETTE_VERSION}): re-export the run with `replay export "
            f"RUN_ID`",
        )
    if version > CASSETTE_VERSION:
        raise CassetteDecodeError(
            where,
            f"cassette format version {version}; this agent-replay reads up to {CASSETTE_VERSION}: "
            "upgrade it (pip install -U agent-replay)",
        )


_SHA = re.compile(r"[0-9a-f]{24}")


def check_integrity(cas: Cassette, where: str = "<cassette>") -> None:
    """Check that every row belongs to the cassette's run and every snapshot hashes to its sha.

    A snapshot's sha is the hash of the canonical form of its (redacted) body, so the body is
    parsed and canonicalised again, not hashed as stored (it may keep the tool's key order). A
    truncated snapshot holds a marker naming the full body's sha, which must be its own.

    Raises:
        CassetteDecodeError: a malformed run id, an event of another run, or a snapshot whose
            body does not hash to its sha (a tampered file); names the file and the field.
    """
    rid = check_run_id(cas.run.run_id, f"{where}: run.run_id")
    if cas.run.replay_of is not None:
        check_run_id(cas.run.replay_of, f"{where}: run.replay_of")
    for i, e in enumerate(cas.events):
        if e.run_id != rid:
            raise CassetteDecodeError(
                where,
                f"events[{i}].run_id: {e.run_id[:40]!r} is not the cassette's run {rid}: every "
                f"event "
                "of a cassette belongs to its run (the file was edited or assembled from two runs)",
            )
    for sha, snap in cas.snapshots.items():
        if not _SHA.fullmatch(sha):
            raise CassetteDecodeError(where, f"snapshots: key {sha[:40]!r} is not a 24-hex sha")
        if snap.truncated:
            body = snap.body
            ok = (
                isinstance(body, dict)
                and body.get(TRUNCATED_TAG) is True
                and body.get("sha") == sha
            )
        else:
            try:
                ok = sha_of_canonical(canonical_bytes(snap.body)) == sha
            except (TypeError, ValueError):
                ok = False
        if not ok:
            raise CassetteDecodeError(
                where,
                f"snapshots[{sha}]: the body does not hash to its sha (the file was edited): "
                "export the run again from its store",
            )


def import_cassette(store: Any, path_or_cassette: str | os.PathLike[str] | Cassette) -> bool:
    """Load a cassette into a store. Returns False when the run was already there (nothing added).

    Only rows of the cassette's own run are written, and only after `check_integrity`: a run
    already in the store is never overwritten, and a snapshot sha already there keeps its body
    (snapshots are content-addressed and checked against their sha).

    Raises:
        CassetteDecodeError: the cassette fails `check_integrity`.
    """
    from replay.errors import RunNotFoundError

    if isinstance(path_or_cassette, Cassette):
        cas = path_or_cassette
        check_integrity(cas)
    else:
        cas = load_cassette(path_or_cassette)
    try:
        store.get_run(cas.run.run_id)
        return False
    except RunNotFoundError:
        pass
    snaps = []
    for sha, snap in cas.snapshots.items():
        body = ordered_bytes(
            snap.body
        )  # the tool's key order, as recorded (the sha is over the canonical form)
        snaps.append((sha, body, snap.type, snap.truncated))
    run = cas.run.model_copy(update={"pinned": True, "http_sha": None})
    if cas.http:  # the HTTP interactions go back into one $http snapshot, referenced by http_sha
        run.http_sha = sha_of_canonical(canonical_bytes(cas.http))
        snaps.append((run.http_sha, ordered_bytes(cas.http), "$http", False))
    store.write_batch(runs=[run], events=cas.events, snapshots=snaps)
    return True
