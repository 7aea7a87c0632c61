"""`replay show --outputs` and `replay show --step N`: what each step returned, from the store.

Outputs are the redacted snapshots the store keeps (never the raw values). Text output escapes
control characters, so a recorded value cannot drive the terminal.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import click

from replay._cli_util import BadInput, echo_json
from replay.errors import ReplayError
from replay.models import is_step

__all__ = ["show_detail"]

_MISSING = object()


def _clean(text: str) -> str:
    """`text` with control characters escaped (\\x1b, \\r, \\n ...): one safe terminal line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _load(run_id: str, db: str) -> tuple[Any, dict[str, Any]]:
    """The recording and its stored redacted args by args_sha (runs recorded with
    store_args='redacted')."""
    from replay.replayer import load_recording
    from replay.store_api import open_store

    try:
        rec = load_recording(run_id, db=db)
    except (ReplayError, ValueError) as exc:
        raise BadInput(str(exc)) from exc
    args: dict[str, Any] = {}
    shas = [e.args_sha for e in rec.events if e.args_sha]
    if shas:
        from replay.hashing import thaw

        store = open_store(db)
        try:
            # Snapshots are content-addressed: one stored under an args_sha is those args, redacted.
            for sha, (body, _type_name, _truncated) in store.snapshots(shas).items():
                args[sha] = thaw(body)
        finally:
            store.close()
    return rec, args


def _steps(rec: Any) -> list[Any]:
    return [e for e in rec.events if is_step(e, nested=True)]


def _output(rec: Any, e: Any) -> Any:
    if not e.output_sha or e.output_sha not in rec.snapshots:
        return _MISSING
    return rec.snapshots[e.output_sha][0]


def _step_json(rec: Any, e: Any, args: dict[str, Any]) -> dict[str, Any]:
    out = _output(rec, e)
    d: dict[str, Any] = {
        "step_id": e.step_id,
        "parent_step_id": e.parent_step_id,
        "kind": "model" if e.kind == "model_result" else "tool",
        "tool": e.tool,
        "status": e.status,
        "error": e.error,
        "duration_ms": e.duration_ms,
        "args_sha": e.args_sha,
        "output_sha": e.output_sha,
        "output": None if out is _MISSING else out,
        "output_stored": out is not _MISSING,
    }
    if e.args_sha in args:
        d["args"] = args[e.args_sha]
    return d


def _http_of(rec: Any, step_id: int | None) -> tuple[list[dict[str, Any]], int]:
    """(the run's HTTP interactions attributed to this step, all of the run's interactions)."""
    mine = [i for i in rec.http if isinstance(i, dict) and i.get("step_id") == step_id]
    return mine, len(rec.http)


def _interaction_line(i: dict[str, Any], n: int, total: int) -> str:
    req, resp = i.get("request") or {}, i.get("response") or {}
    status = resp.get("status")
    code = status.get("code") if isinstance(status, dict) else status
    return _clean(
        f"attempt {n}/{total}  {req.get('method', '?')} {req.get('uri', '?')} -> "
        f"{code if code is not None else '?'}"
    )


def show_detail(run_id: str, db: str, *, outputs: bool, step: int | None, as_json: bool) -> None:
    """Print every step's redacted output on one line (`outputs`) or one step in full (`step`)."""
    if outputs and step is not None:
        raise BadInput(
            "--outputs and --step exclude each other: list every step's output, or show one step"
        )
    rec, args = _load(run_id, db)
    steps = _steps(rec)
    if outputs:
        _show_outputs(rec, steps, args, as_json)
        return
    found = [e for e in steps if e.step_id == step]
    if not found:
        ids = [e.step_id for e in steps if e.step_id is not None]
        have = f"steps {min(ids)} to {max(ids)}" if ids else "no steps"
        raise BadInput(
            f"--step {step}: run {rec.run.run_id} has {have}; see `replay show {rec.run.run_id}`"
        )
    _show_step(rec, steps, found[0], args, as_json)


def _show_outputs(rec: Any, steps: list[Any], args: dict[str, Any], as_json: bool) -> None:
    """`--outputs`: one line per step with its redacted output, cut to the terminal width."""
    if as_json:
        echo_json({"run_id": rec.run.run_id, "steps": [_step_json(rec, e, args) for e in steps]})
        return
    width = shutil.get_terminal_size((100, 24)).columns
    click.echo(
        f"run {rec.run.run_id}  agent {_clean(rec.run.agent)}  "
        f"({len(steps)} steps; redacted outputs)"
    )
    tw = min(
        max(
            (
                len(_clean(e.tool or "-")) + (2 if e.parent_step_id is not None else 0)
                for e in steps
            ),
            default=4,
        ),
        24,
    )
    for e in steps:
        out = _output(rec, e)
        if e.status == "error" and isinstance(out, dict) and "message" in out:
            text = f"{out.get('error', e.error)}: {out.get('message', '')}"
        else:
            text = "(not stored)" if out is _MISSING else _compact(out)
        tool = ("  " if e.parent_step_id is not None else "") + _clean(e.tool or "-")
        head = f"{e.step_id or 0:>4}  {_fit(tool, tw):<{tw}}  {(e.status or '-'):<6} "
        click.echo(head + _fit(_clean(text), max(width - len(head), 10)))
    if not steps:
        click.echo("(no tool or model calls)")


def _pretty(value: Any) -> list[str]:
    """`value` as indented JSON lines, each escaped for the terminal."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    return ["  " + _clean(ln) for ln in text.splitlines()]


def _show_step(rec: Any, steps: list[Any], e: Any, args: dict[str, Any], as_json: bool) -> None:
    """`--step N`: one step in full: args, output or error, the steps inside it, its HTTP."""
    d = _step_json(rec, e, args)
    mine, total = _http_of(rec, e.step_id)
    children = [c.step_id for c in steps if c.parent_step_id == e.step_id]
    if as_json:
        out = d.get("output")
        if e.status == "error" and isinstance(out, dict):
            d["message"] = out.get("message")
        d.update(http=mine, http_attempts=len(mine), http_in_run=total, children=children)
        echo_json({"run_id": rec.run.run_id, "step": d})
        return
    lines = [
        f"run {rec.run.run_id}  step {e.step_id}"
        + (f" (inside step {e.parent_step_id})" if e.parent_step_id else ""),
        f"{d['kind']:<10}  {_clean(e.tool or '-')}",
        f"status      {e.status or '-'}   {e.duration_ms or 0} ms",
        f"args_sha    {e.args_sha or '-'}",
    ]
    if "args" in d:
        lines += ["args (redacted):", *_pretty(d["args"])]
    else:
        lines.append(
            "args        (only the hash is stored: record with store_args='redacted' to keep them)"
        )
    out = d["output"]
    if e.status == "error":
        body = out if isinstance(out, dict) else {}
        lines.append(f"error       {_clean(str(e.error or body.get('error') or '-'))}")
        lines.append(f"message     {_clean(str(body.get('message', '(not stored)')))}")
    elif not d["output_stored"]:
        lines.append("output      (not stored)")
    else:
        lines += ["output (redacted):", *_pretty(out)]
    if children:
        lines.append(f"calls       steps {', '.join(map(str, children))} ran inside it")
    lines += _http_lines(rec, mine, total)
    click.echo("\n".join(lines))


def _http_lines(rec: Any, mine: list[dict[str, Any]], total: int) -> list[str]:
    if mine:
        return [
            f"http        {len(mine)} request(s) made under this step (redacted):",
            *("  " + _interaction_line(i, n, len(mine)) for n, i in enumerate(mine, 1)),
        ]
    if total and not all(isinstance(i, dict) and "step_id" in i for i in rec.http):
        return [
            f"http        the run recorded {total} HTTP interaction(s), not attributed to steps"
        ]
    if total:
        return [f"http        none under this step ({total} in the run)"]
    return []
