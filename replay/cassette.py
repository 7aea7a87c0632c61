"""Cassettes: one self-contained, versioned, redacted JSON file per recorded run.

The file is sorted and indented so it diffs well in git, and exporting an unchanged run twice
gives the same bytes. Loading validates it with pydantic: a broken file names the file and the
field (``cassettes/x.json: events[3].args_sha: Field required``).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from replay.errors import CassetteDecodeError
from replay.hashing import canonical_bytes, ordered_bytes, sha_of_canonical
from replay.models import Event, Run

__all__ = [
    "CASSETTE_FORMAT",
    "CASSETTE_VERSION",
    "Cassette",
    "Snapshot",
    "cassette_from_replay",
    "cassette_from_store",
    "dump_cassette",
    "import_cassette",
    "load_cassette",
    "write_cassette",
]

CASSETTE_FORMAT = "agent-replay-cassette"
CASSETTE_VERSION = 1


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
    version: int = CASSETTE_VERSION
    run: Run
    events: list[Event]
    snapshots: dict[str, Snapshot] = Field(default_factory=dict)
    http: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def steps(self) -> list[Event]:
        return [e for e in self.events if e.kind in ("tool_result", "model_result")]


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
            snapshots[sha] = Snapshot(body=_body_value(body), type=type_name, truncated=bool(truncated))
    run = run.model_copy(update={"pinned": False, "expires_at": None})
    return Cassette(run=run, events=events, snapshots=snapshots, http=_stored_http(store, run.http_sha))


def _stored_http(store: Any, http_sha: str | None) -> list[dict[str, Any]]:
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
    run = result.replayed.model_copy(update={"run_id": rid, "replay_of": None, "pinned": False, "expires_at": None})
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
    # HTTP was played back from the recording, not recorded again: keep the recording's interactions.
    http = list(result.recording.http)
    run = run.model_copy(update={"http_sha": result.recorded.http_sha if http else None})
    return Cassette(run=run, events=events, snapshots=snapshots, http=http)


def dump_cassette(cassette: Cassette) -> str:
    """The cassette as indented JSON text, sorted but for snapshot bodies (stable across exports)."""
    data = cassette.model_dump(mode="json")
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


def write_cassette(cassette: Cassette, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write `cassette` to `path`; an existing different file needs ``force=True``.

    Raises:
        FileExistsError: the file exists with other content and `force` is not set.
    """
    p = Path(path)
    text = dump_cassette(cassette)
    if p.exists() and not force:
        if p.read_text(encoding="utf-8") == text:
            return p
        raise FileExistsError(f"{p} exists and differs from the export: pass --force to overwrite it")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return p


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def load_cassette(path: str | os.PathLike[str]) -> Cassette:
    """Read and validate a cassette file.

    Raises:
        CassetteDecodeError: missing file, not JSON, another format or a newer version, or a field
            that is wrong; the message names the file and the field.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise CassetteDecodeError(str(p), "no such cassette file (export one with `replay export RUN_ID`)") from None
    except OSError as exc:
        raise CassetteDecodeError(str(p), f"cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CassetteDecodeError(str(p), f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CassetteDecodeError(str(p), "not a cassette: the top level must be a JSON object")
    fmt = data.get("format")
    if fmt != CASSETTE_FORMAT:
        raise CassetteDecodeError(
            str(p), f"format: expected {CASSETTE_FORMAT!r}, found {fmt!r} (is this an agent-replay cassette?)"
        )
    version = data.get("version")
    if not isinstance(version, int):
        raise CassetteDecodeError(str(p), f"version: expected an integer, found {version!r}")
    if version > CASSETTE_VERSION:
        raise CassetteDecodeError(
            str(p),
            f"cassette format version {version}; this agent-replay reads up to {CASSETTE_VERSION}: "
            "upgrade it (pip install -U agent-replay)",
        )
    try:
        return Cassette.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CassetteDecodeError(str(p), f"{_loc(tuple(first['loc']))}: {first['msg']}{more}") from None


def import_cassette(store: Any, path_or_cassette: str | os.PathLike[str] | Cassette) -> bool:
    """Load a cassette into a store. Returns False when the run was already there (nothing added)."""
    from replay.errors import RunNotFoundError

    cas = path_or_cassette if isinstance(path_or_cassette, Cassette) else load_cassette(path_or_cassette)
    try:
        store.get_run(cas.run.run_id)
        return False
    except RunNotFoundError:
        pass
    snaps = []
    for sha, snap in cas.snapshots.items():
        body = ordered_bytes(snap.body)  # the tool's key order, as recorded (the sha is over the canonical form)
        snaps.append((sha, body, snap.type, snap.truncated))
    run = cas.run.model_copy(update={"pinned": True})
    if cas.http:  # the HTTP interactions go back into one $http snapshot, referenced by http_sha
        run.http_sha = sha_of_canonical(canonical_bytes(cas.http))
        snaps.append((run.http_sha, ordered_bytes(cas.http), "$http", False))
    store.write_batch(runs=[run], events=cas.events, snapshots=snaps)
    return True
