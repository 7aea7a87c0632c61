"""The agent-replay pytest plugin: recorded agent runs as test items, a marker and fixtures.

Registered through the ``pytest11`` entry point ``replay = "pytest_plugin.plugin"``::

    pytest --replay r_01jd2k8...                  # one item per run: a run id or a cassette path
    pytest --replay-all                           # the deploy gate: ./cassettes but incidents/
    pytest --replay-all --replay-update           # bless: rewrite the diverging cassettes
    pytest --replay-all --replay-update-force     # bless even a crash or an unanswerable call
    pytest --replay-all --replay-report out.md    # a report for a CI comment (or .json)

An item fails with the readable diff when its replay diverges from the recording: another step
sequence, another stop reason (always a failure) or another final output, or tokens or spend
that grew by more than ``--replay-max-token-delta-pct`` / ``--replay-max-spend-delta-pct``
(default 20 percent each, see `DEFAULT_MAX_DELTA_PCT`; a decrease never fails).

A project that has agent-replay installed but does not replay pays nothing: this module imports
only pytest and the standard library. The `replay` library (pydantic, sqlite-utils, deepdiff) is
imported, and a store opened, only when a ``--replay*`` option, the marker or a fixture is used.

Precedence of settings, first wins: the command-line flag, then the ``@pytest.mark.replay``
keyword arguments, then the ``replay_config`` fixture, then (for the store only) the ``REPLAY_DB``
environment variable, then the ini option, then the default. Ignore rules and stubs are merged
instead: ini ``replay_ignore`` + fixture + marker.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_plugin._flags import DEFAULT_MAX_DELTA_PCT, add_flags
from pytest_plugin._options import MARKER_KWARGS, ON_UNRECORDED, ReplayOptions
from pytest_plugin.state import (
    ReplayFailed,
    Source,
    State,
    StoreRef,
    display,
    is_cassette,
    store_ref,
)

if TYPE_CHECKING:
    from replay.recorder import Recorder
    from replay.replayer import Recording, ReplayResult

__all__ = ["DEFAULT_MAX_DELTA_PCT", "ReplayItem", "ReplayOptions", "ReplaySource"]

_REPORT_SUFFIXES = (".json", ".md", ".markdown", ".xml")
_DEFAULT_DB = "replay.db"


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


#: Cassettes under a folder of this name are left out of --replay-all (see `_sources`).
INCIDENTS_DIR = "incidents"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``--replay*`` flags and their ini options (`pytest_plugin._flags`).

    https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_addoption
    """
    add_flags(parser)


# ---- what-if (faults, repeat, review: replay.faults, replay.flaky, replay.review) ------------


def _load_whatif() -> Any:
    return importlib.import_module("pytest_plugin._whatif")


@pytest.fixture
def replay_fault() -> Any:
    """This item's fault of a ``@pytest.mark.replay(..., faults=...)`` test (None: no fault)."""
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One item per fault of ``@pytest.mark.replay(..., faults=...)``: ids like ``[http.get=503]``.

    https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_generate_tests
    """
    mark = metafunc.definition.get_closest_marker("replay")
    if not (mark and mark.kwargs.get("faults") and "replay_fault" in metafunc.fixturenames):
        return
    specs = _load_whatif().expand_marker(metafunc.definition.nodeid, mark.kwargs["faults"])
    metafunc.parametrize("replay_fault", specs, ids=specs)


# ---- end of the what-if options -------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Add the `pytest_replay_configure` hook.

    https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_addhooks
    """
    from pytest_plugin import hooks

    pluginmanager.add_hookspecs(hooks)


_STATE = pytest.StashKey[State]()


def _ini_path(config: pytest.Config, value: str) -> Path:
    """An ini path, relative to the ini file's folder (the rootdir without one)."""
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    return (base / value).resolve()


def _cli_path(config: pytest.Config, value: str) -> Path:
    return (config.invocation_params.dir / os.path.expanduser(value)).resolve()


def _pct(config: pytest.Config, dest: str, flag: str) -> float:
    value = config.getoption(dest)
    where = flag
    if value is None:
        raw = config.getini(dest)
        where = f"ini {dest}"
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise pytest.UsageError(
                f"{where} = {raw!r}: expected a number of percent, e.g. 20"
            ) from None
    if value < 0:
        raise pytest.UsageError(f"{where} = {value:g}: expected a percentage of 0 or more, e.g. 20")
    return float(value)


def _store_ref(config: pytest.Config, value: str, *, ini: bool = False) -> StoreRef:
    """A store value: a server URL kept as given, else a path resolved as the flag or ini's."""
    return store_ref(value, functools.partial(_ini_path if ini else _cli_path, config))


def _default_db(config: pytest.Config) -> StoreRef:
    """The store run ids are read from without --replay-db: REPLAY_DB, ini replay_db, replay.db.

    The plugin cannot ask the library (it must not import it while idle); the rule is the
    library's (`replay.recorder.default_db`), with the ini option between the two.
    """
    env_db = os.environ.get("REPLAY_DB")
    ini_db = config.getini("replay_db")
    if env_db:
        return _store_ref(config, env_db)
    if ini_db:
        return _store_ref(config, ini_db, ini=True)
    return (config.invocation_params.dir / _DEFAULT_DB).resolve()


def _report_path(config: pytest.Config) -> Path | None:
    """--replay-report (or ini replay_report), checked for a suffix that names the format."""
    opt = config.option
    value = opt.replay_report or config.getini("replay_report") or None
    if not value:
        return None
    report = _cli_path(config, value) if opt.replay_report else _ini_path(config, value)
    if report.suffix.lower() not in _REPORT_SUFFIXES:
        raise pytest.UsageError(
            f"--replay-report {value}: the suffix names the format; use .json, or .md for "
            "Markdown (also .xml for JUnit)"
        )
    return report


def _sources(config: pytest.Config, store: StoreRef, cassettes_dir: Path) -> list[Source]:
    """The --replay sources, then every cassette --replay-all finds, each once."""
    opt = config.option
    sources: list[Source] = []
    seen: set[Any] = set()

    def add(src: Source) -> None:
        key = src.cassette if src.cassette is not None else (src.db, src.given)
        if key not in seen:
            seen.add(key)
            sources.append(src)

    for given in opt.replay_sources:
        if is_cassette(given):
            add(Source(given, _cli_path(config, given), None))
        else:
            add(Source(given, None, store))
    if opt.replay_all:
        if not cassettes_dir.is_dir():
            where = "--replay-cassettes" if opt.replay_cassettes else "ini replay_cassettes"
            raise pytest.UsageError(
                f"--replay-all: no cassettes folder at {cassettes_dir} ({where}); export runs "
                "into it with `replay export RUN_ID`, or point --replay-cassettes DIR at the folder"
            )
        for path in sorted(cassettes_dir.rglob("*.json")):
            # An incident cassette records the bad behaviour on purpose; its incident test (the
            # marker) replays it. The gate replays the blessed recordings of good behaviour.
            if INCIDENTS_DIR in path.relative_to(cassettes_dir).parts[:-1]:
                continue
            add(Source(str(path), path.resolve(), None))
    return sources


def _build_state(config: pytest.Config) -> State:
    opt = config.option
    flag_db = _store_ref(config, opt.replay_db) if opt.replay_db else None
    default_db = _default_db(config)
    if opt.replay_cassettes:
        cassettes_dir = _cli_path(config, opt.replay_cassettes)
    else:
        cassettes_dir = _ini_path(config, config.getini("replay_cassettes") or "cassettes")
    report = _report_path(config)
    sources = _sources(config, flag_db or default_db, cassettes_dir)
    update = bool(opt.replay_update or opt.replay_update_force or opt.replay_review)
    if update and not (opt.replay_sources or opt.replay_all):
        flag = "--replay-update-force" if opt.replay_update_force else "--replay-update"
        raise pytest.UsageError(
            f"{flag} blesses the runs replayed by --replay or --replay-all: add one of them, "
            f"e.g. pytest --replay-all {flag}"
        )
    return State(
        sources=sources,
        update=update,
        update_force=bool(
            opt.replay_update_force or (opt.replay_update and config.getini("replay_update_force"))
        ),
        report=report,
        max_token_delta_pct=_pct(
            config, "replay_max_token_delta_pct", "--replay-max-token-delta-pct"
        ),
        max_spend_delta_pct=_pct(
            config, "replay_max_spend_delta_pct", "--replay-max-spend-delta-pct"
        ),
        ignore=list(config.getini("replay_ignore")),
        agents=[*opt.replay_agent_refs, *config.getini("replay_agents")],
        match=list(opt.replay_match),
        live=list(opt.replay_live),
        cassettes_dir=cassettes_dir,
        flag_db=flag_db,
        default_db=default_db,
        active=bool(opt.replay_sources or opt.replay_all or report is not None),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and check the options before any work starts.

    https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_configure
    """
    config.addinivalue_line(
        "markers",
        "replay(source, *, stubs=None, ignore=None, agent=None, db=None, on_unrecorded='error', "
        "ordered=True, faults=None, repeat=1): replay the recorded run `source` (a run id or a "
        "cassette path) for this test; the `replayed` fixture gives its ReplayResult. faults= "
        "makes one item per fault (the `replay_fault` fixture names it); repeat=K fails a "
        "flaky run.",
    )
    state = config.stash[_STATE] = _build_state(config)
    if state.active:
        config.pluginmanager.register(_ReplayReporter(config, state), "replay-reporter")


def _state(config: pytest.Config) -> State:
    return config.stash[_STATE]


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")  # an xdist worker: the controller reports


def _load_engine() -> Any:
    """`pytest_plugin._engine`, imported on first use (it pulls in the `replay` library).

    Looked up in sys.modules each time, so outcomes pickle with the class pickle will find.
    """
    return importlib.import_module("pytest_plugin._engine")


# --------------------------------------------------------------------------------------------
# Collection: one collector per cassette and per store, one item per run
# --------------------------------------------------------------------------------------------


class ReplayCollectError(Exception):
    """A recording that cannot be replayed; shown as the collection error, without a traceback."""


class ReplaySource(pytest.Collector):
    """The runs of one store, or one cassette file; collects one `ReplayItem` per run."""

    def __init__(self, *, sources: list[Source], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sources = sources

    def collect(self) -> list[pytest.Item]:
        _engine = _load_engine()
        items: list[pytest.Item] = []
        errors: list[str] = []
        for src in self.sources:
            try:
                options, recording = _engine.load_source(self.config, _state(self.config), src)
            except _engine.SourceError as exc:
                errors.append(str(exc))
                continue
            for fault in self.config.option.replay_faults or [None]:  # what-if: one per fault
                items.append(
                    ReplayItem.from_parent(
                        self,
                        name=recording.run.run_id
                        if fault is None
                        else f"{recording.run.run_id}[{fault}]",
                        source=src,
                        options=dataclasses.replace(
                            options, faults=fault, repeat=self.config.option.replay_repeat
                        ),
                        recording=recording,
                    )
                )
        if errors:
            raise ReplayCollectError("\n".join(errors))
        return items

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, ReplayCollectError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ReplayItem(pytest.Item):
    """One recorded run, replayed against the code checked out now and diffed with its recording."""

    def __init__(
        self, *, source: Source, options: ReplayOptions, recording: Recording, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.options = options
        self.recording = recording
        self.outcome: Any = None  # a replay.report.Outcome once run
        self.add_marker("replay")
        self.extra_keyword_matches.add(recording.run.agent)

    def runtest(self) -> None:
        if self.options.faults or self.options.repeat > 1:  # what-if: replay.faults, replay.flaky
            _load_whatif().run_item(self, _state(self.config), self.recording)
            return
        _engine = _load_engine()
        _engine.run_item(self, _state(self.config), self.recording)  # sets self.outcome

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ReplayFailed):
            return str(excinfo.value)
        _engine = _load_engine()
        clean = _engine.clean_error(excinfo.value)
        if clean is not None:
            return (
                clean
                if clean.startswith("cannot replay")
                else f"cannot replay {self.name}: {clean}"
            )
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"replay {self.name}"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """Add the replay collectors to the session's: -k, -m, --lf, -x and xdist treat them as tests.

    https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_make_collect_report
    """
    report: Any = yield
    if isinstance(collector, pytest.Session):
        state = _state(collector.config)
        if state.sources:
            # `pytest --replay X` with no paths named runs the replays only, not the whole suite
            # from testpaths; `pytest tests/ --replay X` runs both.
            if collector.config.args_source != pytest.Config.ArgsSource.ARGS:
                report.result[:] = []
            report.result.extend(_collectors(collector, state))
    elif isinstance(collector, ReplaySource) and report.failed:
        _engine = _load_engine()
        report.replay_outcome = _engine.collect_error(collector, str(report.longrepr))
    return report  # type: ignore[no-any-return]


def _collectors(session: pytest.Session, state: State) -> list[ReplaySource]:
    out: list[ReplaySource] = []
    by_store: dict[StoreRef, list[Source]] = {}
    for src in state.sources:
        if src.cassette is not None:
            out.append(
                ReplaySource.from_parent(
                    session,
                    name=display(session.config, src.cassette),
                    path=src.cassette,
                    nodeid=display(session.config, src.cassette),
                    sources=[src],
                )
            )
        else:
            assert src.db is not None
            by_store.setdefault(src.db, []).append(src)
    for db, srcs in by_store.items():
        name = display(session.config, db)
        path = db if isinstance(db, Path) else session.config.rootpath  # a server has no file
        out.append(
            ReplaySource.from_parent(session, name=name, path=path, nodeid=name, sources=srcs)
        )
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Reject a malformed ``@pytest.mark.replay`` before anything runs.

    https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_collection_modifyitems
    """
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        for mark in item.iter_markers("replay"):
            _validate_marker(item.nodeid, mark.args, mark.kwargs)


def _validate_marker(nodeid: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    usage = '@pytest.mark.replay("RUN_ID_OR_CASSETTE", stubs=..., ignore=...)'
    if len(args) != 1 or not isinstance(args[0], (str, os.PathLike)):
        raise pytest.UsageError(
            f"{nodeid}: {usage} takes one run id or cassette path, got {len(args)} positional "
            f"argument(s): {', '.join(map(repr, args)) or '(none)'}"
        )
    unknown = sorted(set(kwargs) - set(MARKER_KWARGS))
    if unknown:
        raise pytest.UsageError(
            f"{nodeid}: @pytest.mark.replay got unexpected keyword argument(s) "
            f"{', '.join(unknown)}; "
            f"allowed: {', '.join(MARKER_KWARGS)}"
        )
    if "on_unrecorded" in kwargs and kwargs["on_unrecorded"] not in ON_UNRECORDED:
        raise pytest.UsageError(
            f"{nodeid}: @pytest.mark.replay(on_unrecorded={kwargs['on_unrecorded']!r}): use one of "
            f"{', '.join(map(repr, ON_UNRECORDED))}"
        )


# --------------------------------------------------------------------------------------------
# Outcomes, report, summary (on the xdist controller, from the reports the workers send)
# --------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the replay's outcome to its report, so an xdist controller can count and report it.

    https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_runtest_makereport
    """
    report: Any = yield
    if isinstance(item, ReplayItem) and report.when == "call" and item.outcome is not None:
        _engine = _load_engine()
        report.replay_outcome = _engine.encode_outcome(item.outcome)
    return report  # type: ignore[no-any-return]


class _ReplayReporter:
    """Collects the outcomes of one session's replays; writes the report and the summary.

    Registered per config in `pytest_configure`, only when a ``--replay*`` option is used.
    """

    def __init__(self, config: pytest.Config, state: State) -> None:
        self.config = config
        self.state = state

    def _record(self, report: Any) -> None:
        encoded = getattr(report, "replay_outcome", None)
        if encoded is None:
            return
        _engine = _load_engine()
        outcome = _engine.decode_outcome(encoded)
        if outcome is not None:
            self.state.outcomes[report.nodeid] = outcome

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect each replay's outcome.

        https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_runtest_logreport
        """
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """Count a recording that could not be loaded as an error in the summary and the report.

        https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_collectreport
        """
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write ``--replay-report`` (on the xdist controller only).

        https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_sessionfinish
        """
        if self.state.report is None or _is_worker(self.config):
            return
        _engine = _load_engine()
        try:
            _engine.write_outcomes(self.state.outcomes, self.state.report)
        except OSError as exc:
            self.state.report_error = (
                f"cannot write the replay report {self.state.report}: {exc.strerror or exc}"
            )
            # The only case the plugin's status goes into the exit code: tests passed, the report
            # is missing.
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print "N runs replayed: M matched, D diverged, B blessed" and the next command to run.

        https://docs.pytest.org/en/stable/reference/reference.html#pytest.hookspec.pytest_terminal_summary
        """
        if _is_worker(self.config):
            return
        _engine = _load_engine()
        _engine.write_summary(terminalreporter, self.config, self.state)


# --------------------------------------------------------------------------------------------
# Marker and fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def replay_config() -> dict[str, Any]:
    """Defaults for every ``@pytest.mark.replay`` test in scope (stubs, ignore, agent, db, ...);
    override it."""
    return {}


@pytest.fixture
def replayed(
    request: pytest.FixtureRequest, replay_config: dict[str, Any], replay_fault: Any
) -> ReplayResult:
    """The `ReplayResult` of the run named by the test's ``@pytest.mark.replay(...)``."""
    mark = request.node.get_closest_marker("replay")
    if mark is None:
        pytest.fail(
            f"{request.node.nodeid}: the `replayed` fixture needs the run to replay: add "
            '@pytest.mark.replay("RUN_ID_OR_CASSETTE") to the test',
            pytrace=False,
        )
    if not isinstance(replay_config, dict):
        pytest.fail(
            f"the replay_config fixture must return a dict, got {type(replay_config).__name__}",
            pytrace=False,
        )
    unknown = sorted(set(replay_config) - set(MARKER_KWARGS))
    if unknown:
        pytest.fail(
            f"the replay_config fixture returned unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(MARKER_KWARGS)}",
            pytrace=False,
        )
    _validate_marker(request.node.nodeid, mark.args, mark.kwargs)
    _engine = _load_engine()
    result: ReplayResult = _engine.replay_marked(
        request.config, _state(request.config), request.node, mark, replay_config, replay_fault
    )
    return result


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    """A `Recorder` on a fresh SQLite store in the test's tmp_path, closed after the test."""
    from replay.recorder import Recorder

    rec = Recorder(tmp_path / "replay.db")
    try:
        yield rec
    finally:
        rec.close()
