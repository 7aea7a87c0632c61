"""The plugin's work: load recordings, replay them, judge, bless, report.

Imported only when a ``--replay*`` option, the marker or a fixture is used: it pulls in the
`replay` library (pydantic, sqlite-utils, deepdiff), which `plugin.py` must not import.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import os
import pickle
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_plugin._options import ReplayOptions
from pytest_plugin.plugin import ReplayFailed, _display, _Source, _State
from replay.diff import IgnoreRules, RunDiff
from replay.errors import EntrypointError, ReplayError, StopRun, UnrecordedCall
from replay.report import Outcome, write_report

if TYPE_CHECKING:
    from pytest_plugin.plugin import ReplayItem, ReplaySource
    from replay.replayer import Recording, ReplayResult

__all__ = ["ReplayOutcome", "SourceError"]

_ENTRYPOINT_HINT = (
    " In pytest: set options.agent in a pytest_replay_configure hook (conftest.py), "
    "or use @pytest.mark.replay(..., agent=fn)."
)


class SourceError(Exception):
    """A ``--replay`` source that cannot be replayed: the message is the whole collection error."""


@dataclasses.dataclass
class ReplayOutcome(Outcome):
    """An `Outcome` with what the plugin adds: why it diverged beyond the diff, and a blessed file."""

    note: str | None = None
    blessed_path: str | None = None
    #: why blessing this replay would freeze something that is not a behaviour (a crash, a call
    #: the recording cannot answer); None when ``--replay-update`` may bless it
    bless_problem: str | None = None

    def summary(self) -> str:
        line = super().summary()
        return f"{line}: {self.note}" if self.note and self.status != "error" else line

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["note"] = self.note
        data["blessed_path"] = self.blessed_path
        data["bless_problem"] = self.bless_problem
        return data


# ---- loading ---------------------------------------------------------------------------------


def _short(path: Path) -> str:
    """`path` relative to the working directory when below it: for messages and for loading."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else Path(rel).as_posix()


def ignore_rules(specs: list[Any]) -> IgnoreRules:
    """One `IgnoreRules` from the ini, fixture and marker specs (strings, lists, mappings, rules)."""
    rules = IgnoreRules()
    for spec in specs:
        if spec is None:
            continue
        rules = rules.merge(spec)
    return rules


def _store_missing(db: Path) -> str:
    return (
        f"the store {_short(db)} does not exist: record runs into it first, or name the store "
        "with --replay-db PATH (ini replay_db, env REPLAY_DB)"
    )


def load_source(
    config: pytest.Config, state: _State, src: _Source
) -> tuple[ReplayOptions, Recording]:
    """The options and the recording of one ``--replay`` source, checked so that it can run.

    Raises:
        SourceError: unknown run id, unreadable cassette, bad ignore rule, entrypoint not importable.
    """
    from replay.replayer import load_recording, resolve_replay_agent

    if src.cassette is not None:
        label = _short(src.cassette)
        options = ReplayOptions(source=label)
    else:
        assert src.db is not None
        label = f"--replay {src.given}"
        options = ReplayOptions(source=src.given, db=str(src.db))
    options.ignore = list(state.ignore)
    options.agents = list(state.agents)
    options.max_token_delta_pct = state.max_token_delta_pct
    options.max_spend_delta_pct = state.max_spend_delta_pct
    config.hook.pytest_replay_configure(config=config, options=options)
    try:
        options.ignore = [ignore_rules(options.ignore)]
    except ReplayError as exc:
        raise SourceError(f"{label}: {exc}") from None
    try:
        if src.cassette is not None:
            recording = load_recording(options.source)
        else:
            db = Path(options.db) if options.db else src.db
            assert db is not None  # a run id always has a store
            if not db.exists():
                raise SourceError(
                    f"--replay {src.given}: no run {src.given!r}: {_store_missing(db)}"
                )
            recording = load_recording(options.source, db=_short(db))
    except ReplayError as exc:
        prefix = "" if src.cassette is not None else f"{label}: "  # a cassette error names its file
        raise SourceError(f"{prefix}{exc}") from None
    run = recording.run
    try:
        resolve_replay_agent(run, options.agent, agents=options.agents, project=config.rootpath)
    except EntrypointError as exc:
        where = label if src.cassette is not None else f"{label} ({_short(Path(str(options.db)))})"
        text = (
            str(exc)
            if str(exc).startswith("cannot replay run")
            else f"cannot replay run {run.run_id}: {exc}"
        )
        raise SourceError(f"{where}: {text}{_ENTRYPOINT_HINT}") from None
    return options, recording


# ---- judging ---------------------------------------------------------------------------------

_GATES = (
    (
        "tokens",
        "tokens",
        "max_token_delta_pct",
        "--replay-max-token-delta-pct",
        "replay_max_token_delta_pct",
    ),
    (
        "spend",
        "cost_usd",
        "max_spend_delta_pct",
        "--replay-max-spend-delta-pct",
        "replay_max_spend_delta_pct",
    ),
)


def _usage(diff: RunDiff, field: str, after: bool) -> str:
    u = diff.usage_after if after else diff.usage_before
    if field == "cost_usd":
        return f"${u.cost_usd:.4f}"
    return f"{u.tokens_in + u.tokens_out:,}"


def gate_failures(diff: RunDiff, options: ReplayOptions) -> list[str]:
    """The usage gates this replay broke: growth above the limits (a decrease never fails)."""
    out = []
    for label, field, attr, flag, ini in _GATES:
        limit = getattr(options, attr)
        pct = diff.usage_delta_pct(field)
        if limit is None or pct is None or pct <= limit:
            continue
        grew = "new, the recording had none" if math.isinf(pct) else f"{pct:+.1f}%"
        out.append(
            f"{label} {_usage(diff, field, False)} -> {_usage(diff, field, True)} ({grew}) is above the "
            f"{limit:g}% limit ({flag}, ini {ini})"
        )
    return out


def _width(config: pytest.Config) -> int:
    try:
        return max(120, config.get_terminal_writer().fullwidth)
    except Exception:  # noqa: BLE001 - no terminal (an xdist worker): a fixed width
        return 120


def failure_text(config: pytest.Config, source: str, result: ReplayResult, gates: list[str]) -> str:
    """The item's failure report: the RunDiff text, the broken gates, what the agent raised."""
    diff = result.diff
    text = diff.to_text(width=_width(config), color=False)
    lines = []
    if diff.is_empty:  # only a usage gate failed: the diff's headline would say "matches"
        lines.append(
            f"replay of {diff.recorded_id} broke a usage gate (same steps, stop reason and output)"
        )
        text = text.split("\n", 1)[1] if "\n" in text else ""
    if text:
        lines.append(text)
    lines += [f"usage gate: {g}" for g in gates]
    exc = result.exception
    if exc is not None and not diff.is_empty:
        lines.append(f"the agent raised {type(exc).__name__}: {exc}")
    lines.append(f"recording: {source}")
    return "\n".join(lines)


_FORCE_HINT = "--replay-update-force blesses it anyway"
#: Stop reasons that say the replay broke rather than behaved differently.
_BROKEN_STOPS = ("error", "killed")


def _error_class(name: str | None) -> str:
    return (name or "").rsplit(".", 1)[-1].split("[", 1)[0]


def bless_reason(result: ReplayResult) -> str | None:
    """Why this replay must not be blessed, in a few words; None when blessing it is right.

    Refused: calls or HTTP requests the recording has no answer for, an agent that raised where
    the recording did not, a run that stopped with ``error`` or ``killed`` where the recording
    did not. A cassette is the reference of good behaviour: freezing a crash into it turns the
    gate green on a broken agent.
    """
    unrecorded = [s for s in result.steps if _error_class(s.error) == "UnrecordedCall"]
    if unrecorded or isinstance(result.exception, UnrecordedCall):
        tools = sorted({s.tool for s in unrecorded if s.tool}) or [
            getattr(result.exception, "tool", "?")
        ]
        return (
            f"the replay made {max(len(unrecorded), 1)} call(s) the recording has no answer for "
            f"({', '.join(tools)})"
        )
    http = list(getattr(result, "unrecorded_http", []) or [])
    if http:
        first = http[0]
        return (
            f"the replay made {len(http)} HTTP request(s) the recording has no answer for "
            f"(first: {first.method} {first.url})"
        )
    before, after = result.recorded.stop_reason, result.stop_reason
    exc = result.exception
    if exc is not None and not isinstance(exc, StopRun) and before != "error":
        return f"the agent raised {type(exc).__name__} where the recording did not (it stopped {before})"
    if after in _BROKEN_STOPS and after != before:
        return f"the replay stopped with {after} where the recording stopped {before}"
    return None


def _bless_problem(result: ReplayResult) -> str | None:
    """The failure text's line for a bless refused by `bless_reason`, or None."""
    reason = bless_reason(result)
    if reason is None:
        return None
    if "call(s) the recording has no answer for" in reason:
        fix = (
            "a cassette must hold real answers: re-record the run with the new code and export it "
            "(`replay export RUN_ID`), or answer those tools with stubs "
            "(options.stubs in a pytest_replay_configure hook)"
        )
    elif "HTTP request(s)" in reason:
        fix = (
            "a cassette must hold real answers: re-record the run with the new code and export it "
            "(`replay export RUN_ID`), or loosen the run's HTTP matching (http_match=)"
        )
    else:
        fix = "a cassette must hold behaviour worth keeping, not a crash: fix the agent and run the gate again"
    return f"not blessed: {reason}, and {fix}; {_FORCE_HINT}"


def _bless(config: pytest.Config, state: _State, src: _Source, result: ReplayResult) -> Path:
    from replay.cassette import cassette_from_replay, write_cassette

    target = (
        src.cassette
        if src.cassette is not None
        else state.cassettes_dir / f"{result.recorded.run_id}.json"
    )
    if config.option.replay_review:  # what-if: a pending change for `replay review`
        from replay.review import write_pending

        return write_pending(result, target)
    return write_cassette(cassette_from_replay(result), target, force=True)


def run_item(item: ReplayItem, state: _State, recording: Recording) -> None:
    """Replay one item's recording; sets ``item.outcome``; raises `ReplayFailed` when it diverged."""
    from replay.replayer import replay_run

    opts, config = item.options, item.config
    source = (
        _short(item.source.cassette)
        if item.source.cassette is not None
        else (f"run {recording.run.run_id} in {_short(item.source.db or Path(str(opts.db)))}")
    )
    rid = recording.run.run_id
    t0 = time.perf_counter()

    def outcome(status: str, **kw: Any) -> ReplayOutcome:
        return ReplayOutcome(
            source=source, run_id=rid, status=status, seconds=time.perf_counter() - t0, **kw
        )

    try:
        result = replay_run(
            recording,
            agent=opts.agent,
            stubs=opts.stubs,
            on_unrecorded=opts.on_unrecorded,
            ignore=ignore_rules(opts.ignore),
            ordered=opts.ordered,
            agents=opts.agents,
            project=config.rootpath,
        )
    except Exception as exc:
        item.outcome = outcome("error", error=clean_error(exc) or f"{type(exc).__name__}: {exc}")
        raise
    diff = result.diff
    gates = gate_failures(diff, opts)
    if diff.is_empty and not gates:
        item.outcome = outcome("matched", diff=diff)
        return
    text = failure_text(config, source, result, gates)
    note = "; ".join(gates) or None
    reason = bless_reason(result)
    if state.update:
        if reason is None or state.update_force:
            path = _bless(config, state, item.source, result)
            shown = _display(config, path.resolve())
            forced = f" (forced: {reason})" if reason is not None else ""
            item.outcome = outcome(
                "blessed",
                diff=diff,
                note=f"rewrote {shown}{forced}",
                blessed_path=shown,
                bless_problem=reason,
            )
            return
        problem = _bless_problem(result)
        item.outcome = outcome("diverged", diff=diff, note=problem, bless_problem=reason)
        raise ReplayFailed(f"{text}\n{problem}")
    item.outcome = outcome("diverged", diff=diff, note=note, bless_problem=reason)
    raise ReplayFailed(text)


def clean_error(exc: BaseException) -> str | None:
    """The message of an error agent-replay raised on purpose (shown without a traceback), else None."""
    if isinstance(exc, ReplayError):
        return str(exc)
    return None


# ---- the marker ------------------------------------------------------------------------------


def _resolve_marked_source(config: pytest.Config, node: pytest.Item, given: str) -> str:
    from pytest_plugin.plugin import _is_cassette

    if not _is_cassette(given):
        return given
    path = Path(os.path.expanduser(given))
    if path.is_absolute():
        return str(path)
    for base in (config.rootpath, config.invocation_params.dir, node.path.parent):
        if (base / path).exists():
            return str(base / path)
    return str(config.rootpath / path)


def replay_marked(
    config: pytest.Config,
    state: _State,
    node: pytest.Item,
    mark: pytest.Mark,
    fixture_cfg: Mapping[str, Any],
    fault: Any = None,
) -> ReplayResult:
    """Replay the run a ``@pytest.mark.replay`` names, with flag > marker > fixture > ini settings.

    `fault` is this item's one fault of the marker's ``faults=`` (see `plugin.replay_fault`).
    """
    from replay.replayer import load_recording, replay_run

    given = os.fspath(mark.args[0])
    kw = mark.kwargs
    merged = {**fixture_cfg, **kw}  # the marker wins over the fixture
    db_value = merged.get("db")
    if state.flag_db is not None:  # the flag wins over both
        db = state.flag_db
    elif db_value:
        db = Path(os.fspath(db_value))
        db = db if db.is_absolute() else config.rootpath / db
    else:
        db = state.default_db
    options = ReplayOptions(
        source=_resolve_marked_source(config, node, given),
        db=str(db),
        agent=merged.get("agent"),
        stubs={**(fixture_cfg.get("stubs") or {}), **(kw.get("stubs") or {})},
        ignore=[*state.ignore, fixture_cfg.get("ignore"), kw.get("ignore")],
        on_unrecorded=merged.get("on_unrecorded", "error"),
        ordered=merged.get("ordered", True),
        agents=list(state.agents),
        faults=fault,  # what-if: this item's fault (replay.faults)
        repeat=merged.get("repeat") or config.option.replay_repeat,
    )
    config.hook.pytest_replay_configure(config=config, options=options)
    where = f"@pytest.mark.replay({given!r})"
    from pytest_plugin.plugin import _is_cassette

    if not _is_cassette(options.source) and options.db and not Path(options.db).exists():
        pytest.fail(f"{where}: no run {given!r}: {_store_missing(Path(options.db))}", pytrace=False)
    try:
        recording = load_recording(options.source, db=options.db)
        if options.faults or options.repeat > 1:  # what-if: replay.faults, replay.flaky
            from pytest_plugin._whatif import replay_options

            return replay_options(config, options, recording)  # type: ignore[no-any-return]
        return replay_run(
            recording,
            agent=options.agent,
            stubs=options.stubs,
            on_unrecorded=options.on_unrecorded,
            ignore=ignore_rules(options.ignore),
            ordered=options.ordered,
            agents=options.agents,
            project=config.rootpath,
        )
    except EntrypointError as exc:
        pytest.fail(f"{where}: {exc}{_ENTRYPOINT_HINT}", pytrace=False)
    except ReplayError as exc:
        pytest.fail(f"{where}: {exc}", pytrace=False)


# ---- outcomes across xdist, the report, the summary -----------------------------------------


def encode_outcome(outcome: Outcome) -> str:
    """The outcome as text that survives xdist's report serialisation."""
    return base64.b64encode(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def decode_outcome(data: str) -> Outcome | None:
    try:
        value = pickle.loads(base64.b64decode(data))
    except (
        binascii.Error,
        pickle.UnpicklingError,
        AttributeError,
        ImportError,
        EOFError,
        TypeError,
    ):
        return None
    return value if isinstance(value, Outcome) else None


def error_outcome(collector: ReplaySource, message: str) -> str:
    """The encoded outcome of a source that failed at collection."""
    return encode_outcome(
        ReplayOutcome(source=collector.nodeid, run_id=None, status="error", error=message)
    )


def write_outcomes(outcomes: Mapping[str, Outcome], path: Path) -> Path:
    """Write the report, runs in node id order (stable whatever order xdist ran them in)."""
    return write_report([outcomes[k] for k in sorted(outcomes)], path)


def _next_command(config: pytest.Config, flag: str = "--replay-update") -> str:
    args = [
        a
        for a in config.invocation_params.args
        if a not in ("--replay-update", "--replay-update-force")
    ]
    return shlex.join(["pytest", *args, flag])


def write_summary(tr: pytest.TerminalReporter, config: pytest.Config, state: _State) -> None:
    """The summary section: the count line, blessed files, the report, the next command."""
    outcomes = [state.outcomes[k] for k in sorted(state.outcomes)]
    counts = {"matched": 0, "diverged": 0, "blessed": 0, "error": 0}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    n = len(outcomes)
    title = (
        f"{n} run{'' if n == 1 else 's'} replayed: {counts['matched']} matched, {counts['diverged']} diverged, "
        f"{counts['blessed']} blessed"
    )
    if counts["error"]:
        title += f", {counts['error']} error{'' if counts['error'] == 1 else 's'}"
    if counts["diverged"] or counts["error"]:
        markup = {"red": True}
    elif counts["blessed"]:
        markup = {"yellow": True}
    else:
        markup = {"green": True}
    tr.write_sep("=", title, bold=True, **markup)
    for o in outcomes:
        if o.status == "blessed":
            forced = getattr(o, "bless_problem", None)
            tr.write_line(
                f"blessed {o.run_id}: rewrote {getattr(o, 'blessed_path', None) or o.source}"
                + (f" (forced: {forced})" if forced else "")
            )
            if o.diff is not None:  # what-if: what the bless changed (replay.review)
                from replay.review import change_line

                tr.write_line(f"  {change_line(o.diff)}")
    if config.option.replay_review and counts["blessed"]:  # what-if: replay.review
        tr.write_line(
            "pending changes written beside the cassettes: review them with `replay review`"
        )
    if state.report is not None:
        if state.report_error:
            tr.write_line(state.report_error, red=True)
        else:
            tr.write_line(f"replay report: {_short(state.report)}")
    if counts["diverged"]:
        diverged = [o for o in outcomes if o.status == "diverged"]
        refused = [o for o in diverged if getattr(o, "bless_problem", None)]
        if state.update:
            tr.write_line(
                f"{counts['diverged']} diverging run(s) could not be blessed: see the failures above",
                red=True,
            )
        elif len(refused) < len(diverged):
            # Suggest a bless only where it is right: never for a crash or an unanswerable call.
            which = (
                "the new behaviour"
                if not refused
                else f"the {len(diverged) - len(refused)} other run(s)"
            )
            tr.write_line(f"bless {which} with: {_next_command(config)}")
        if refused:
            tr.write_line(
                f"{len(refused)} diverging run(s) must not be blessed as they are:", red=True
            )
            for o in refused:
                tr.write_line(f"  {o.run_id}: {o.bless_problem}")  # type: ignore[attr-defined]
            tr.write_line(
                f"fix the agent; to bless anyway: {_next_command(config, '--replay-update-force')}"
            )
