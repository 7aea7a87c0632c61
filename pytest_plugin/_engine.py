"""The plugin's work: load recordings, replay them, judge, bless, report.

Imported only when a ``--replay*`` option, the marker or a fixture is used: it pulls in the
`replay` library (pydantic, sqlite-utils, deepdiff), which `plugin.py` must not import.
"""

from __future__ import annotations

import base64
import binascii
import os
import pickle
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_plugin._options import ReplayOptions
from pytest_plugin.state import (
    ReplayFailed,
    display,
    is_cassette,
    is_server_url,
    store_exists,
    store_ref,
    store_text,
)
from replay.batch import (
    RunOptions,
    UsageGate,
    ensure_importable,
    error_outcome,
    judge,
    merge_ignore,
    usage_gates,
)
from replay.errors import EntrypointError, ReplayError
from replay.replay_modes import parse_match_options
from replay.replayer import Recording, ReplayResult, load_recording, resolve_replay_agent
from replay.report import Outcome, counts, summary_line, write_report
from replay.review import change_line

if TYPE_CHECKING:
    from pytest_plugin.plugin import ReplayItem, ReplaySource
    from pytest_plugin.state import Source, State, StoreRef

__all__ = ["SourceError"]

_ENTRYPOINT_HINT = (
    " In pytest: set options.agent in a pytest_replay_configure hook (conftest.py), "
    "or use @pytest.mark.replay(..., agent=fn)."
)


class SourceError(Exception):
    """A ``--replay`` source that cannot be replayed: the message is the whole collection error."""


# ---- loading ---------------------------------------------------------------------------------


def _short(path: StoreRef) -> str:
    """`path` relative to the working directory when below it: for messages and for loading.

    A server URL is shown without its password (never loaded from this text).
    """
    if isinstance(path, str):
        return store_text(path)
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else Path(rel).as_posix()


def _store_missing(db: StoreRef) -> str:
    return (
        f"the store {_short(db)} does not exist: record runs into it first, or name the store "
        "with --replay-db PATH (ini replay_db, env REPLAY_DB)"
    )


def _importable(config: pytest.Config) -> None:
    # Recorded entrypoints are `module:function` of the project; `pytest` (the console script)
    # does not put the project root on sys.path the way `python -m pytest` does.
    ensure_importable(config.rootpath, config.invocation_params.dir)


def load_source(
    config: pytest.Config, state: State, src: Source
) -> tuple[ReplayOptions, Recording]:
    """The options and the recording of one ``--replay`` source, checked so that it can run.

    Raises:
        SourceError: unknown run id, unreadable cassette, bad ignore rule, entrypoint not
            importable.
    """
    _importable(config)
    if src.cassette is not None:
        label = _short(src.cassette)
        options = ReplayOptions(source=label)
    else:
        assert src.db is not None
        label = f"--replay {src.given}"
        options = ReplayOptions(source=src.given, db=str(src.db))
    options.ignore = list(state.ignore)
    options.agents = list(state.agents)
    options.live = list(state.live)
    try:
        options.match = parse_match_options(state.match)
    except ValueError as exc:
        raise SourceError(f"{label}: {exc}") from None
    options.max_token_delta_pct = state.max_token_delta_pct
    options.max_spend_delta_pct = state.max_spend_delta_pct
    config.hook.pytest_replay_configure(config=config, options=options)
    try:
        options.ignore = [merge_ignore(options.ignore)]
    except ReplayError as exc:
        raise SourceError(f"{label}: {exc}") from None
    try:
        if src.cassette is not None:
            recording = load_recording(options.source)
        else:
            db = store_ref(options.db) if options.db else src.db
            assert db is not None  # a run id always has a store
            if not store_exists(db):
                raise SourceError(
                    f"--replay {src.given}: no run {src.given!r}: {_store_missing(db)}"
                )
            recording = load_recording(options.source, db=db if is_server_url(db) else _short(db))
    except ReplayError as exc:
        prefix = "" if src.cassette is not None else f"{label}: "  # a cassette error names its file
        raise SourceError(f"{prefix}{exc}") from None
    run = recording.run
    try:
        resolve_replay_agent(run, options.agent, agents=options.agents, project=config.rootpath)
    except EntrypointError as exc:
        where = (
            label if src.cassette is not None else f"{label} ({_short(store_ref(str(options.db)))})"
        )
        text = (
            str(exc)
            if str(exc).startswith("cannot replay run")
            else f"cannot replay run {run.run_id}: {exc}"
        )
        raise SourceError(f"{where}: {text}{_ENTRYPOINT_HINT}") from None
    return options, recording


# ---- judging ---------------------------------------------------------------------------------


def gates(options: ReplayOptions) -> list[UsageGate]:
    """The usage gates of one replay, naming the plugin's flags and ini options."""
    return usage_gates(
        options.max_token_delta_pct,
        options.max_spend_delta_pct,
        token_flag="--replay-max-token-delta-pct, ini replay_max_token_delta_pct",
        spend_flag="--replay-max-spend-delta-pct, ini replay_max_spend_delta_pct",
    )


def _width(config: pytest.Config) -> int:
    try:
        return max(120, config.get_terminal_writer().fullwidth)
    except Exception:  # noqa: BLE001 - no terminal (an xdist worker): a fixed width
        return 120


def _run_options(config: pytest.Config, options: ReplayOptions) -> RunOptions:
    return RunOptions.from_fields(options, project=config.rootpath)


def run_item(item: ReplayItem, state: State, recording: Recording) -> None:
    """Replay one item's recording; sets ``item.outcome``; raises `ReplayFailed` if it diverged."""
    opts, config = item.options, item.config
    source = (
        _short(item.source.cassette)
        if item.source.cassette is not None
        else (f"run {recording.run.run_id} in {_short(item.source.db or store_ref(str(opts.db)))}")
    )
    t0 = time.perf_counter()
    try:
        result = _run_options(config, opts).replay(recording)
    except Exception as exc:
        item.outcome = error_outcome(
            source, recording.run.run_id, exc, seconds=time.perf_counter() - t0
        )
        raise
    target = item.source.cassette or state.cassettes_dir / f"{recording.run.run_id}.json"
    verdict = judge(
        source,
        result,
        gates(opts),
        seconds=time.perf_counter() - t0,
        update=state.update,
        force=state.update_force,
        target=target,
        write=_pending_writer(config),
        show=lambda p: display(config, p.resolve()),
        width=_width(config),
    )
    item.outcome = verdict.outcome
    if verdict.failure is not None:
        raise ReplayFailed(verdict.failure)


def _pending_writer(config: pytest.Config) -> Any:
    """How a bless is written: under ``--replay-review`` a `<cassette>.pending` (replay.review)."""
    if not config.option.replay_review:
        return None
    from replay.review import write_pending

    return write_pending


def clean_error(exc: BaseException) -> str | None:
    """The message of an error agent-replay raised on purpose (shown without a traceback)."""
    if isinstance(exc, ReplayError):
        return str(exc)
    return None


# ---- the marker ------------------------------------------------------------------------------


def _resolve_marked_source(config: pytest.Config, node: pytest.Item, given: str) -> str:
    if not is_cassette(given):
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
    state: State,
    node: pytest.Item,
    mark: pytest.Mark,
    fixture_cfg: Mapping[str, Any],
    fault: Any = None,
) -> ReplayResult:
    """Replay the run a ``@pytest.mark.replay`` names: flag > marker > fixture > ini settings.

    `fault` is this item's one fault of the marker's ``faults=`` (see `plugin.replay_fault`).
    """
    _importable(config)
    given = os.fspath(mark.args[0])
    kw = mark.kwargs
    merged = {**fixture_cfg, **kw}  # the marker wins over the fixture
    db_value = merged.get("db")
    if state.flag_db is not None:  # the flag wins over both
        db = state.flag_db
    elif db_value:  # a server URL as given, else a path from the rootdir
        db = store_ref(os.fspath(db_value), config.rootpath.joinpath)
    else:
        db = state.default_db
    options = ReplayOptions(
        source=_resolve_marked_source(config, node, given),
        db=str(db),
        agent=merged.get("agent"),
        stubs={**(fixture_cfg.get("stubs") or {}), **(kw.get("stubs") or {})},
        ignore=[*state.ignore, fixture_cfg.get("ignore"), kw.get("ignore")],
        stub_mode=merged.get("stub_mode", "always"),
        match=dict(merged.get("match") or parse_match_options(state.match)),
        live=list(merged.get("live") or state.live),
        on_unrecorded=merged.get("on_unrecorded", "error"),
        ordered=merged.get("ordered", True),
        agents=list(state.agents),
        faults=fault,  # what-if: this item's fault (replay.faults)
        repeat=merged.get("repeat") or config.option.replay_repeat,
    )
    config.hook.pytest_replay_configure(config=config, options=options)
    where = f"@pytest.mark.replay({given!r})"
    if not is_cassette(options.source) and options.db and not store_exists(store_ref(options.db)):
        pytest.fail(
            f"{where}: no run {given!r}: {_store_missing(store_ref(options.db))}", pytrace=False
        )
    try:
        recording = load_recording(options.source, db=options.db)
        if options.repeat > 1:  # what-if: replay.flaky
            from pytest_plugin._whatif import replay_options

            return replay_options(config, options, recording)
        return _run_options(config, options).replay(recording)
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


def collect_error(collector: ReplaySource, message: str) -> str:
    """The encoded outcome of a source that failed at collection."""
    return encode_outcome(error_outcome(collector.nodeid, None, message))


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


def write_summary(tr: pytest.TerminalReporter, config: pytest.Config, state: State) -> None:
    """The summary section: the count line, blessed files, the report, the next command."""
    outcomes: list[Outcome] = [state.outcomes[k] for k in sorted(state.outcomes)]
    c = counts(outcomes)
    if c["diverged"] or c["error"]:
        markup = {"red": True}
    elif c["blessed"]:
        markup = {"yellow": True}
    else:
        markup = {"green": True}
    tr.write_sep("=", summary_line(c), bold=True, **markup)
    for o in outcomes:
        if o.status == "blessed":
            forced = o.bless_problem
            tr.write_line(
                f"blessed {o.run_id}: rewrote {o.blessed_path or o.source}"
                + (f" (forced: {forced})" if forced else "")
            )
            if o.diff is not None:  # what-if: what the bless changed (replay.review)
                tr.write_line(f"  {change_line(o.diff)}")
    if config.option.replay_review and c["blessed"]:  # what-if: replay.review
        tr.write_line(
            "pending changes written beside the cassettes: review them with `replay review`"
        )
    if state.report is not None:
        if state.report_error:
            tr.write_line(state.report_error, red=True)
        else:
            tr.write_line(f"replay report: {_short(state.report)}")
    if c["diverged"]:
        diverged = [o for o in outcomes if o.status == "diverged"]
        refused = [o for o in diverged if o.bless_problem]
        if state.update:
            tr.write_line(
                f"{c['diverged']} diverging run(s) could not be blessed: see the failures above",
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
                tr.write_line(f"  {o.run_id}: {o.bless_problem}")
            tr.write_line(
                f"fix the agent; to bless anyway: {_next_command(config, '--replay-update-force')}"
            )
