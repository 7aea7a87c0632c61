"""What one run did, from the recording alone: the timeline `replay show` prints and the five
incident questions the demo answers (which tools, with what args, what came back, which
versions, why it stopped).

Example::

    tl = load_timeline(store, "r_01jd2k8...")
    print(tl.render())             # the `replay show` text
    tl.five_answers()              # [("1. tools, in order", "7 calls: ..."), ...]
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from replay._text import fmt_ms, fmt_ts, table
from replay.models import Event, Run

if TYPE_CHECKING:
    from replay.store_api import StoreAPI as Store

__all__ = ["Timeline", "load_timeline"]


@dataclass
class Timeline:
    """One run's row, its tool and model steps in step order, and its HTTP attempts per step.

    Args:
        run: the run row (versions, usage, stop reason).
        steps: tool_result / model_result events in step order, nested steps included.
        http: HTTP requests per step id of an ``http=True`` run (None key: outside tool steps);
            None when the run has no HTTP record.
    """

    run: Run
    steps: list[Event]
    http: dict[int | None, int] | None = None

    @property
    def tool_steps(self) -> list[Event]:
        """The tool calls only (no model calls)."""
        return [e for e in self.steps if e.kind == "tool_result"]

    def repeats(self) -> list[tuple[str | None, str | None, list[int]]]:
        """(tool, args_sha, step ids) of each call made more than once with the same args."""
        seen: dict[tuple[str | None, str | None], list[int]] = {}
        for e in self.steps:
            seen.setdefault((e.tool, e.args_sha), []).append(e.step_id or 0)
        return [(tool, sha, ids) for (tool, sha), ids in seen.items() if len(ids) > 1]

    def to_json(self, events: list[Event]) -> dict[str, Any]:
        """`replay show --json`: the run, all its `events`, and the HTTP attempts when recorded."""
        data: dict[str, Any] = {
            "run": self.run.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in events],
        }
        if self.http is not None:
            data["http_attempts"] = [
                {"step_id": k, "attempts": v} for k, v in sorted(self.http.items(), key=_none_last)
            ]
        return data

    def render(self, *, full: bool = False) -> str:
        """The `replay show` text: header, one row per step, HTTP, groups, repeats, stop."""
        out = self._header(full)
        out.append(self._steps_table(full))
        out += self._footer()
        return "\n".join(out)

    def five_answers(self) -> list[tuple[str, str]]:
        """The five incident questions and their answers, from the tool steps of the recording."""
        steps = self.tool_steps
        repeats = Counter((e.tool, e.args_sha) for e in steps)
        rep = [f"{tool} {(sha or '')[:12]} x{n}" for (tool, sha), n in repeats.items() if n > 1]
        errors = Counter(e.error for e in steps if e.status == "error")
        err = ", ".join(f"{name} x{n}" for name, n in errors.most_common())
        calls = " > ".join(f"{e.tool}{'' if e.status == 'ok' else ' x'}" for e in steps)
        versions = " ".join(f"{k}={v}" for k, v in sorted(self.run.versions.items()))
        return [
            ("1. tools, in order", f"{len(steps)} calls: {calls} (x: it raised)"),
            ("2. with what args", f"args_sha repeated: {'; '.join(rep) or 'none'}"),
            (
                "3. what came back",
                f"{sum(errors.values())} errors ({err or 'none'}); the output_sha of "
                "every step is in the table above",
            ),
            ("4. which versions", versions),
            ("5. why it stopped", str(self.run.stop_reason)),
        ]

    # -- the parts of `render` ---------------------------------------------------------------

    def _header(self, full: bool) -> list[str]:
        run, u = self.run, self.run.usage
        versions = " ".join(f"{k}={v}" for k, v in sorted(run.versions.items()))
        replay_of = f"  (replay of {run.replay_of})" if run.replay_of else ""
        return [
            f"run {run.run_id}  agent {run.agent}{replay_of}",
            f"entrypoint  {run.entrypoint or '-'}",
            f"versions    {versions or '(none recorded)'}",
            f"started     {fmt_ts(run.started_ms)} UTC  latency {fmt_ms(run.latency_ms)}",
            f"input       sha {_short(run.input_sha, full)}   "
            f"output sha {_short(run.output_sha, full)}",
            f"usage       {u.tokens_in} tokens in, {u.tokens_out} out, ${u.cost_usd:.4f}, "
            f"{run.tool_calls} tool calls",
            "",
        ]

    def _steps_table(self, full: bool) -> str:
        if not self.steps:
            return "(no tool or model calls)"
        sizes = Counter(e.concurrent_group for e in self.steps if e.concurrent_group is not None)
        opened: set[int] = set()
        rows = []
        for e in self.steps:
            indent = "  " if e.parent_step_id is not None else ""
            # Parallel calls: a bracket over the steps of one concurrent group (compared as a set).
            group = e.concurrent_group if sizes.get(e.concurrent_group or 0, 0) > 1 else None
            if group is not None:
                indent += "│ " if group in opened else "┌ "
                opened.add(group)
            row = [
                str(e.step_id),
                "model" if e.kind == "model_result" else "tool",
                indent + (e.tool or "-"),
                _short(e.args_sha, full),
                e.status or "-",
                e.error or "",
                str(e.duration_ms or 0),
                _short(e.output_sha, full),
            ]
            if self.http is not None:  # HTTP requests under this step: a retry storm shows here
                row.append(f"×{self.http[e.step_id]}" if self.http.get(e.step_id) else "")
            rows.append(row)
        header = ["step", "kind", "tool", "args_sha", "status", "error", "ms", "output_sha"]
        return table(header + (["http"] if self.http is not None else []), rows, right={0, 6})

    def _footer(self) -> list[str]:
        out: list[str] = []
        if self.http is not None:
            outside, total = self.http.get(None, 0), sum(self.http.values())
            out.append(
                f"http        {total} request{'' if total == 1 else 's'} recorded"
                + (f", {outside} outside tool steps" if outside else "")
            )
        groups = Counter(e.concurrent_group for e in self.steps if e.concurrent_group is not None)
        if groups:
            n = sum(1 for v in groups.values() if v > 1)
            out.append(
                f"concurrent  {n} group(s) of parallel calls (┌ │), "
                "each compared as a set by replay"
            )
        dup = self.repeats()
        if dup:
            out.append("")
            for tool, _sha, ids in dup:
                out.append(
                    f"repeated    {tool} with the same args {len(ids)}x "
                    f"(steps {', '.join(map(str, ids))})"
                )
        run = self.run
        if run.stop_inferred:
            where = f"process {run.pid} on {run.host or 'an unknown host'}"
            out += ["", f"stop        killed (inferred: no stop event, and {where} is gone)"]
        else:
            out += ["", f"stop        {run.stop_reason or '(no stop event yet: still running)'}"]
        return out


def load_timeline(store: Store, run_id: str) -> tuple[Timeline, list[Event]]:
    """The timeline of the run `run_id` (a unique prefix works) and all its events.

    Raises:
        RunNotFoundError, AmbiguousRunIdError: no run, or several, match `run_id`.
    """
    run = store.find_run(run_id)
    events = store.events(run.run_id)
    steps = [e for e in events if e.kind in ("tool_result", "model_result")]
    return Timeline(run, steps, _http_attempts(store, run.http_sha)), events


def _http_attempts(store: Store, http_sha: str | None) -> dict[int | None, int] | None:
    """HTTP requests per step id of an http=True run (None key: outside tool steps)."""
    found = store.snapshot(http_sha) if http_sha else None
    if not found:
        return None
    try:
        interactions = json.loads(found[0])
    except (TypeError, ValueError):
        return None
    # vcrpy is heavy to import and only http=True runs need it.
    from replay.http import attempts_by_step

    return attempts_by_step(interactions) if isinstance(interactions, list) else None


def _short(sha: str | None, full: bool) -> str:
    if not sha:
        return "-"
    return sha if full else sha[:12]


def _none_last(item: tuple[int | None, int]) -> tuple[bool, int]:
    return (item[0] is None, item[0] or 0)
