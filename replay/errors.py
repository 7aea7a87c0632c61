"""Named exceptions of agent-replay. Each one says what happened, the input, and the fix."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any


class ReplayError(Exception):
    """Base class of every error agent-replay raises on purpose."""


class InvalidStopReasonError(ReplayError, ValueError):
    """A stop reason that is neither in the taxonomy nor a lowercase user-defined name."""

    def __init__(self, reason: Any, valid: Sequence[str]) -> None:
        self.reason = reason
        super().__init__(
            f"invalid stop reason {reason!r}: use one of {', '.join(valid)} "
            "or your own lowercase name matching [a-z][a-z0-9_]* (e.g. 'quota_hit')"
        )


class RunNotFoundError(ReplayError, LookupError):
    """No run with that id in the store."""

    def __init__(self, run_id: str, store: str, count: int) -> None:
        self.run_id, self.store, self.count = run_id, store, count
        super().__init__(
            f"no run {run_id!r} in {store} ({count} run{'' if count == 1 else 's'}; "
            "list them with `replay runs`)"
        )


class SchemaVersionError(ReplayError):
    """The database was written by a newer agent-replay than this one."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        self.path, self.found, self.supported = path, found, supported
        super().__init__(
            f"{path} has schema {found}; this agent-replay reads up to {supported}: upgrade it "
            "(pip install -U agent-replay)"
        )


class StoreError(ReplayError):
    """The store cannot be opened or used (not SQLite, locked, unreadable)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class CorruptRowError(StoreError):
    """A row of the store that cannot be read back (hand-edited, damaged, or from a broken tool).

    Attributes: ``table``, ``run_id`` and ``field`` name the row and the column; the value is
    never shown.
    """

    def __init__(
        self, path: str, table: str, run_id: str, field: str, problem: str, *, where: str = ""
    ) -> None:
        self.table, self.run_id, self.field = table, run_id, field
        where = where or f"run_id = '{run_id}'"
        super().__init__(
            f"{path}: unreadable row in {table} for run {run_id}, field {field}: {problem}; "
            f"export the other runs, or delete the damaged row "
            f'(sqlite3 {path} "DELETE FROM {table} WHERE {where}")',
            path=path,
        )


class ExpiredSnapshotsError(ReplayError):
    """A run whose recorded outputs (snapshots) were pruned: replay cannot answer those steps.

    Attributes: ``run_id`` and ``steps``, a list of ``(step_id, tool, expired_since_ms)``.
    """

    def __init__(
        self,
        run_id: str,
        steps: list[tuple[int, str, int]],
        *,
        action: str = "replay",
        fix: str = "",
    ) -> None:
        self.run_id, self.steps = run_id, steps

        def when(ms: int) -> str:
            return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"
            )

        shown = ", ".join(
            f"step {sid} {tool} (expired since {when(ms)})" for sid, tool, ms in steps[:10]
        )
        more = f" and {len(steps) - 10} more" if len(steps) > 10 else ""
        super().__init__(
            f"cannot {action} run {run_id}: the recorded outputs of {len(steps)} step(s) expired "
            f"and were pruned: {shown}{more}. Snapshots are kept 14 days by default "
            "(Store/Recorder snapshot_days), events 30; pin incidents (`replay pin RUN_ID`) or "
            "export them before then" + (f". {fix}" if fix else "")
        )


class CorruptRowWarning(UserWarning):
    """Rows a listing (`replay runs`, `stats`, `alerts`, metrics) skipped: they cannot be read."""


class AmbiguousRunIdError(ReplayError, LookupError):
    """A run id prefix that matches more than one run."""

    def __init__(self, prefix: str, store: str, candidates: list[str], more: bool = False) -> None:
        self.prefix, self.store, self.candidates = prefix, store, candidates
        listing = ", ".join(candidates) + (", …" if more else "")
        super().__init__(
            f"run id prefix {prefix!r} matches {len(candidates)}{'+' if more else ''} runs in "
            f"{store} ({listing}): give more characters of the id"
        )


class CassetteDecodeError(ReplayError, ValueError):
    """A cassette file that cannot be read: not JSON, wrong version, or a field that is wrong."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class EntrypointError(ReplayError):
    """The recorded agent entrypoint cannot be imported or called."""


class UnrecordedCall(ReplayError):
    """Raised inside a replayed agent for a tool call the recording has no answer for."""

    def __init__(
        self,
        tool: str,
        args_sha: str,
        recorded: list[str],
        message: str | None = None,
        recorded_tools: list[str] | None = None,
    ) -> None:
        self.tool, self.args_sha, self.recorded = tool, args_sha, recorded
        if message is None:
            if recorded:
                listing = ", ".join(recorded[:10]) + (" …" if len(recorded) > 10 else "")
                message = (
                    f"unrecorded call {tool}(args_sha={args_sha}): the recording has "
                    f"{len(recorded)} call(s) of {tool} with args_sha {listing}; "
                    f"pass stubs={{{tool!r}: fn}} to answer it, or re-record the run"
                )
            else:
                names = ", ".join(sorted(set(recorded_tools or []))) or "(none)"
                message = (
                    f"unrecorded call {tool}(args_sha={args_sha}): "
                    f"the recording has no call of {tool} "
                    f"(recorded tools: {names}; renamed since the recording?); "
                    f"pass stubs={{{tool!r}: fn}} to answer it, or re-record the run"
                )
        super().__init__(message)


class RecordedToolError(ReplayError):
    """A recorded tool error whose original exception class could not be rebuilt."""

    def __init__(self, error: str, message: str) -> None:
        self.error, self.message = error, message
        super().__init__(f"{error}: {message}" if message else error)


class StopRun(ReplayError):
    """Raised inside the agent when a guard ends the run (max_steps, loops, budget, timeout)."""

    def __init__(self, stop_reason: str, detail: str = "") -> None:
        self.stop_reason, self.detail = stop_reason, detail
        super().__init__(f"run stopped: {stop_reason}" + (f" ({detail})" if detail else ""))


class InvalidIgnoreRuleError(ReplayError, ValueError):
    """A diff ignore rule that is not ``tool:NAME``, ``field:NAME`` or ``output:PATH``."""

    def __init__(self, rule: str, reason: str, fields: tuple[str, ...] = ()) -> None:
        self.rule = rule
        names = ", ".join(fields) or "args_sha, error, status, output_sha"
        super().__init__(
            f"invalid ignore rule {rule!r}: {reason}; use tool:NAME (e.g. tool:clock.now), "
            f"field:NAME ({names}) or output:PATH (e.g. output:root['ts'])"
        )


class InvalidHttpMatchError(ReplayError, ValueError):
    """An HTTP matching rule (``http_match=``) that names no known request field."""

    def __init__(self, rule: Any, allowed: tuple[str, ...]) -> None:
        self.rule = rule
        shown = (
            rule
            if isinstance(rule, str) and len(rule) <= 40 and rule.isprintable()
            else type(rule).__name__
        )
        super().__init__(
            f"invalid HTTP matching rule {shown!r}: use {', '.join(allowed)} or header:NAME "
            "(e.g. http_match=('method', 'uri', 'body', 'header:x-request-kind'))"
        )


class UnrecordedRequest(ReplayError):
    """Raised inside a replayed agent for an HTTP request the recording has no answer for.

    Attributes:
        method: the request's method.
        url: the request's URL, redacted as the recording stores it.
        step_id: the replayed tool step that made it (None: outside any tool step).
        nearest: the closest recorded request as ``"METHOD URL"`` (redacted), or None.
        passed, failed: the matching rules the nearest request passed and failed.
        reason: ``"no_match"``, ``"already_played"`` (every matching answer was used: the replay
            makes this request more often than the recording did) or ``"nothing_recorded"``.
    """

    def __init__(
        self,
        method: str,
        url: str,
        *,
        step_id: int | None,
        nearest: str | None,
        passed: list[str],
        failed: list[str],
        reason: str,
        match_on: list[str],
        times: int = 0,
    ) -> None:
        self.method, self.url, self.step_id = method, url, step_id
        self.nearest, self.passed, self.failed, self.reason = nearest, passed, failed, reason
        self.match_on = match_on
        where = f" (tool step {step_id})" if step_id is not None else ""
        head = f"unrecorded HTTP request {method} {url}{where}"
        if reason == "already_played":
            body = (
                f"the recording answered this request {times} time(s) and the replay makes it "
                "again (a retry the recording did not make?)"
            )
        elif nearest is None:
            body = "the recording has no HTTP interactions to answer it"
        else:
            body = (
                f"nearest recorded request: {nearest} (matched {', '.join(passed) or 'nothing'}; "
                f"differs in {', '.join(failed)})"
            )
        super().__init__(
            f"{head}: {body}; matching on {', '.join(match_on)}. Re-record the run with the new "
            "code, or loosen the matching with rec.agent(..., http_match=(...))"
        )
