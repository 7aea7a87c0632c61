"""The Recorder: decorators and a context manager that record every run of an agent.

The agent's own path per call stays a few microseconds: read a contextvar, count the step,
note it in flight at its level (steps that overlap a sibling, or that one model response
announced, share a concurrent group), freeze args and output (orjson bytes), append to the
writer's queue. Redaction, hashing and
storage happen on the writer thread (see `replay.writer`). Recording never breaks the agent:
a tool's exception is re-raised as the same object, and a failing store only counts drops.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import dataclasses
import functools
import inspect
import itertools
import math
import os
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NoReturn, TypeVar, cast

from replay.agents import register_agent
from replay.context import _run, _session, _step
from replay.errors import StopRun
from replay.fidelity import capture_error
from replay.hashing import TEXT_ERRORS, freeze_lenient, type_tag
from replay.keys import env_key
from replay.models import Run, Usage, new_run_id, validate_stop_reason
from replay.processors import RedactionConfig, Redactor
from replay.usage import extract_usage
from replay.writer import RecordingLossWarning, RunItem, StepItem, Writer

__all__ = ["Recorder", "Guards", "RunHandle", "RunState", "default_db"]

F = TypeVar("F", bound=Callable[..., Any])


def shared_redaction_key() -> bytes | None:
    """The key set in ``$REPLAY_REDACTION_KEY``, if any, used instead of the store's key file.

    Pseudonyms are keyed, so a value the agent's own code holds (a from-address) gets another
    pseudonym when a cassette is replayed with another key. Teams that replay cassettes in CI set
    the same secret in production and CI to keep those pseudonyms equal (see `replay.keys`).
    """
    return env_key()


_scratch: list[Redactor] = []


def _scrub(text: str, redactor: Redactor | None = None) -> str:
    """Warning text with what redaction catches replaced (an exception's text can quote a value).

    Uses the recording's redactor when it exists, else a process-local one with a random key (a
    warning's pseudonyms need not match anything). Never raises: a warning must still go out.
    """
    try:
        if redactor is None:
            if not _scratch:
                _scratch.append(Redactor(os.urandom(32)))
            redactor = _scratch[0]
        return redactor.redact_text(text)
    except Exception:  # noqa: BLE001
        return "(detail withheld: it could not be redacted)"


def default_db() -> str:
    """The store used when none is named: ``$REPLAY_DB``, else ``./replay.db``."""
    return os.environ.get("REPLAY_DB") or "replay.db"


@dataclasses.dataclass(frozen=True)
class Guards:
    """Limits that end a run with a stop reason and raise `StopRun` inside the agent.

    Attributes:
        max_steps: more tool and model calls than this -> ``max_steps``.
        max_repeats: the same tool with the same args more than this many times -> ``loop_detected``.
        max_tokens: tokens in + out above this -> ``budget_exceeded``.
        max_spend_usd: spend above this -> ``budget_exceeded``.
        tool_timeout_s: a tool call longer than this -> ``tool_timeout``.
    """

    max_steps: int | None = None
    max_repeats: int | None = None
    max_tokens: int | None = None
    max_spend_usd: float | None = None
    tool_timeout_s: float | None = None

    def merged(self, **overrides: Any) -> Guards:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(
                f"unknown guard(s) {', '.join(sorted(unknown))}: use {', '.join(sorted(known))}"
            )
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


class RunState:
    """The mutable state of one run in progress, carried in the contextvar."""

    __slots__ = (
        "run",
        "recorder",
        "input",
        "steps",
        "tool_calls",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "stop_reason",
        "tripped",
        "guards",
        "repeats",
        "output",
        "output_type",
        "ended",
        "started_ns",
        "session",
        "http",
        "levels",
        "marks",
        "group_lock",
        "__weakref__",
    )

    def __init__(
        self, recorder: Recorder, run: Run, input_frozen: bytes | None, guards: Guards
    ) -> None:
        self.run = run
        self.recorder = recorder
        self.input = input_frozen
        self.steps = itertools.count(1)
        self.tool_calls = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self.stop_reason: str | None = None
        self.tripped: StopRun | None = None
        self.guards = guards
        self.repeats: dict[tuple[str, int], int] = {}
        self.output: bytes | None = None
        self.output_type: str | None = None
        self.ended = False
        self.started_ns = time.perf_counter_ns()
        self.session: Any = None
        self.http: list[Any] | None = (
            None  # the HTTP interactions of an http=True run, set at its end
        )
        # Concurrent groups (parallel tool calls), per parent step (None: top level):
        # [dict of the step ids in flight (an ordered set); model-announced calls still to come;
        #  their group id]. `marks`: step id -> group, set for the steps in flight when a sibling
        # finishes while they run. Entering and a lone step finishing use only atomic dict
        # operations; the lock is taken only when steps really overlap (or a model announced some).
        self.levels: dict[int | None, list[Any]] = {}
        self.marks: dict[int, int] = {}
        self.group_lock = threading.Lock()  # tools in worker threads enter and finish at once

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def usage(self) -> Usage:
        return Usage.lenient(
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=round(self.cost_usd, 10) if math.isfinite(self.cost_usd) else 0.0,
            tool_calls=self.tool_calls,
        )


def _check_name(name: Any, what: str) -> str:
    """A tool, model or agent name given to a decorator: text SQLite can store, checked at import time."""
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{what} name {name!r}: give a non-empty string, e.g. @rec.{what}('http.get')"
        )
    if name != _safe_name(name):
        raise ValueError(
            f"{what} name {ascii(name)}: remove the NUL character or lone surrogate from it"
        )
    return name


def _safe_name(name: Any) -> str:
    """`name` with NUL and lone surrogates replaced by U+FFFD: a run never fails over its name."""
    text = str(name)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", TEXT_ERRORS).decode("utf-8")
    return text


def _usage_ok(tokens_in: Any, tokens_out: Any, cost_usd: Any) -> bool:
    try:
        return (
            int(tokens_in) >= 0
            and int(tokens_out) >= 0
            and math.isfinite(float(cost_usd))
            and float(cost_usd) >= 0
        )
    except (TypeError, ValueError, OverflowError):
        return False


def _ignore_paths(ignore_args: Any, name: str) -> tuple[tuple[str, ...], ...]:
    if ignore_args is None:
        return ()
    if isinstance(ignore_args, str) or not all(isinstance(p, str) and p for p in ignore_args):
        raise TypeError(
            f"ignore_args of {name!r} must be a list of argument names or dotted paths "
            '(e.g. ignore_args=["idempotency_key", "payload.request_id"])'
        )
    return tuple(tuple(p.split(".")) for p in ignore_args)


def _without(bound: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """`bound` without the ignored fields; dicts on the way are copied, the agent's own are untouched."""
    out = dict(bound)
    for path in paths:
        node: Any = out
        for key in path[:-1]:
            child = node.get(key) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                node = None
                break
            node[key] = child = dict(child)
            node = child
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


class _ToolSpec:
    __slots__ = (
        "fn",
        "name",
        "kind",
        "skip_first",
        "params",
        "timeout_s",
        "price_in",
        "price_out",
        "ignore",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        kind: str,
        timeout_s: float | None = None,
        price_in: float | None = None,
        price_out: float | None = None,
        ignore_args: Any = None,
    ) -> None:
        self.ignore = _ignore_paths(ignore_args, name)
        self.fn = fn
        self.name = _check_name(name, "tool" if kind == "tool_result" else "model")
        self.kind = kind
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        # A method decorated in its class body receives self/cls first; it is not part of the args.
        self.skip_first = bool(params) and params[0].name in ("self", "cls")
        self.params = params[1:] if self.skip_first else params
        self.timeout_s = timeout_s
        self.price_in = price_in
        self.price_out = price_out

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name (what args_sha hashes), self excluded."""
        if self.skip_first:
            args = args[1:]
        out: dict[str, Any] = {}
        i = 0
        for p in self.params:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                if i < len(args):
                    out[p.name] = args[i]
                    i += 1
            elif p.kind == p.VAR_POSITIONAL:
                if i < len(args):
                    out[p.name] = list(args[i:])
                    i = len(args)
        if i < len(args):  # more positionals than parameters: keep them rather than lose them
            out["*args"] = list(args[i:])
        out.update(kwargs)
        return _without(out, self.ignore) if self.ignore else out


def _status_code(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (httpx, requests, aiohttp and most SDKs), if any."""
    for obj in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status"):
            code = getattr(obj, attr, None)
            if isinstance(code, int) and 100 <= code <= 599:
                return code
    return None


def _error_names(exc: BaseException) -> tuple[str, str, str]:
    """(display name, module, qualname); the display name carries an HTTP status as ``[429]``.

    The status makes "429/5xx retries turning constant" visible from the events alone.
    """
    cls = type(exc)
    module = cls.__module__
    display = (
        cls.__qualname__ if module == "builtins" else f"{module.split('.')[0]}.{cls.__qualname__}"
    )
    code = _status_code(exc)
    if code is not None:
        display += f"[{code}]"
    return display, module, cls.__qualname__


def _tool_calls_in(response: Any) -> int:
    """How many tool calls one model response asks for: OpenAI (``choices[0].message.tool_calls``),
    Anthropic (``tool_use`` content blocks) and pydantic-ai (``tool-call`` parts), dicts or objects.

    The calls one response issues are one concurrent group, even when they happen to run one after
    another (a framework may run them in worker threads in any order). 0 when nothing is found.
    """
    try:
        get = response.get if isinstance(response, dict) else functools.partial(getattr, response)
        choices = get("choices", None)
        if isinstance(choices, (list, tuple)) and choices:
            first = choices[0]
            msg = (
                first.get("message") if isinstance(first, dict) else getattr(first, "message", None)
            )
            calls = (
                msg.get("tool_calls") if isinstance(msg, dict) else getattr(msg, "tool_calls", None)
            )
            return len(calls) if isinstance(calls, (list, tuple)) else 0
        blocks = get("content", None)
        kind = "type"
        if not isinstance(blocks, (list, tuple)):
            blocks, kind = get("parts", None), "part_kind"
        if isinstance(blocks, (list, tuple)):
            n = 0
            for b in blocks:
                k = b.get(kind) if isinstance(b, dict) else getattr(b, kind, None)
                n += k in ("tool_use", "tool-call")
            return n
    except Exception:  # noqa: BLE001 - an unusual response shape: no group, never an error
        return 0
    return 0


def _type_name(value: Any) -> str | None:
    """The value's type tag tree (`replay.hashing.type_tag`): what replay rebuilds it as."""
    return type_tag(value)


def _error_detail(exc: BaseException) -> bytes | None:
    """The exception's args and public attributes, frozen (`replay.fidelity.capture_error`).

    Taken on the agent's path only when a tool raised; never raises.
    """
    try:
        frozen, _ = freeze_lenient(capture_error(exc))
        return frozen
    except Exception:  # noqa: BLE001 - recording never breaks the agent: replay falls back to the message
        return None


_warned_scripts: set[str] = set()


def _script_entrypoint(fn: Callable[..., Any], agent_name: str) -> str:
    """The entrypoint of an agent defined in a script run as ``__main__`` (``python my_agent.py``).

    ``__main__:handle`` cannot be found by a replay; the script's path relative to the working
    folder gives the module name replay imports (``my_agent:handle``). Replay imports it only when
    the project lists it (``[tool.agent-replay] agents``) or ``--replay-agent`` names it, so this
    warns once per script unless pyproject.toml lists it already.
    """
    from replay.agents import configured_agents, script_module

    module = script_module(fn)
    qualname = fn.__qualname__
    if module is None:
        entry = f"__main__:{qualname}"
        hint = (
            f"it runs as __main__ from outside the working folder, so a replay cannot import it: "
            f"replay it with --replay-agent MODULE:{qualname} (or agent= in Python)"
        )
    else:
        entry = f"{module}:{qualname}"
        try:
            listed, _ = configured_agents()
        except Exception:  # noqa: BLE001 - a broken pyproject must not break recording
            listed = []
        if any(module == n or module.startswith(n + ".") for n in listed):
            return entry
        hint = (
            f"it is recorded as {entry}; for a replay to import it, list {module!r} in pyproject.toml "
            f"([tool.agent-replay] agents) or pass --replay-agent {entry}"
        )
    if entry not in _warned_scripts:
        _warned_scripts.add(entry)
        warnings.warn(
            f"agent-replay: agent {agent_name!r} is defined in a script: {hint}",
            UserWarning,
            stacklevel=3,
        )
    return entry


class _ToolTimeout(BaseException):
    """Raised by SIGALRM inside a sync tool that ran past tool_timeout_s."""


_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


class Recorder:
    """Records every run of an agent into a store.

    Args:
        db: a SQLite path (default ``$REPLAY_DB``, else ``./replay.db``) or a Store.
        redaction: redaction rules; the defaults are safe (see `RedactionConfig`).
        store_args: ``"hash"`` (default) keeps only args_sha; ``"redacted"`` also stores redacted args.
        versions: versions recorded with every run (model, prompt, tools, app, …).
        max_queue: records held in memory at most before ``on_full`` applies (bounds memory).
        on_full: ``"block"`` (default: the agent waits for the writer, nothing is lost) or
            ``"drop"`` (the agent never waits; lost records are counted in `dropped`, warned once).
        max_snapshot_bytes: larger outputs are stored truncated with their full hash.
        snapshot_days, event_days: retention of snapshots and events; pinned runs never expire.
        guards: default limits for every run (see `Guards`), overridable per agent and per run.
        redaction_key: a key for pseudonyms instead of the store's (replay uses the recording's).
        timeout_s: how long a write waits for another process's lock before the batch is spooled.
        max_queue_bytes: frozen bytes (args, outputs) held in memory at most before ``on_full`` applies.
        flush_interval_s: the writer's tick; a run's stop is written at once, so a hard kill (SIGKILL,
            OOM) loses at most the runs that ended within about one interval.
        spool_dir: where batches the store refuses (locked, read-only, full) wait until it is back;
            default ``<db>.spool`` beside the store. Files are 0600, one per process.
        max_spool_bytes: a spool file larger than this drops new batches (counted in `dropped`).
        sync_run_end: wait (at most 5 s) until a run's stop is written before the run returns;
            ``None`` (default) does so in worker processes (forked or multiprocessing children),
            which may leave through ``os._exit`` without running atexit.
        sigterm_timeout_s: on SIGTERM, end open runs as ``killed`` and write the queue for at most this
            long, then run the previous handler (or the default action). ``None`` installs no handler.

    Example::

        rec = Recorder("replay.db")

        @rec.tool("http.get")
        def http_get(url: str) -> dict: ...

        @rec.agent("support-agent", versions={"model": "m-2026-10", "prompt": "support-v3"})
        def handle(ticket: dict) -> str: ...
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Any | None = None,
        *,
        redaction: RedactionConfig | None = None,
        store_args: str = "hash",
        versions: dict[str, str] | None = None,
        max_queue: int = 10_000,
        on_full: str = "block",
        max_snapshot_bytes: int = 1_000_000,
        snapshot_days: int = 14,
        event_days: int = 30,
        max_steps: int | None = None,
        max_repeats: int | None = None,
        max_tokens: int | None = None,
        max_spend_usd: float | None = None,
        tool_timeout_s: float | None = None,
        redaction_key: bytes | None = None,
        timeout_s: float = 5.0,
        max_queue_bytes: int = 64 << 20,
        flush_interval_s: float = 0.05,
        spool_dir: str | os.PathLike[str] | None = None,
        max_spool_bytes: int = 256 << 20,
        sync_run_end: bool | None = None,
        sigterm_timeout_s: float | None = 2.0,
    ) -> None:
        if store_args not in ("hash", "redacted"):
            raise ValueError(
                f"store_args={store_args!r}: use 'hash' (default, args_sha only) or 'redacted'"
            )
        self.db = db if db is not None else default_db()
        self.redaction = redaction or RedactionConfig()
        self.redaction_key = redaction_key
        self.versions = dict(versions or {})
        self.snapshot_days = snapshot_days
        self.event_days = event_days
        self.guards = Guards(max_steps, max_repeats, max_tokens, max_spend_usd, tool_timeout_s)
        self._last: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            "replay_last_run", default=None
        )
        self._active: set[RunState] = set()
        self._finalizer_pid = 0
        self._warned_encode = False
        self.timeout_s = timeout_s
        self.spool_dir = spool_dir
        self.sync_run_end = sync_run_end
        self.sigterm_timeout_s = sigterm_timeout_s
        self._writer = self._new_writer(
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
            on_full=on_full,
            max_snapshot_bytes=max_snapshot_bytes,
            store_args=store_args == "redacted",
            flush_interval=flush_interval_s,
            max_spool_bytes=max_spool_bytes,
        )
        _recorders.add(self)
        if sigterm_timeout_s is not None:
            _install_sigterm()

    def _new_writer(self, **opts: Any) -> Writer:
        sync = self.sync_run_end if self.sync_run_end is not None else _in_worker_process()
        return Writer(
            self._open_store,
            self._make_redactor,
            peek_key=self._peek_key,
            spool_dir=self._spool_dir(),
            sync_runs=sync,
            **opts,
        )

    def _spool_dir(self) -> str | None:
        from replay.store_api import is_server_url, server_spool_dir

        if self.spool_dir is not None:
            return os.fspath(self.spool_dir)
        path = (
            self.db if isinstance(self.db, (str, os.PathLike)) else getattr(self.db, "path", None)
        )
        if path is None or str(path) in (":memory:", ""):
            return None
        if is_server_url(str(path)):
            return server_spool_dir(str(path))
        return f"{os.fspath(path)}.spool"

    def _peek_key(self) -> bytes | None:
        """The store's key without opening the store (a store locked by another process still has one).

        A key given to the recorder (or ``$REPLAY_REDACTION_KEY``) is the one redaction uses anyway.
        """
        explicit = self.redaction_key or shared_redaction_key()
        if explicit is not None:
            return explicit
        if not isinstance(self.db, (str, os.PathLike)):
            return None
        from replay.keys import key_file_path, load_or_create_key_file, server_store_key
        from replay.store_api import is_server_url

        if is_server_url(self.db):  # a server store's key is configured, never beside it
            return server_store_key(str(self.db))[0]

        path = key_file_path(self.db)
        if not path.parent.is_dir():
            return None
        # The key lives beside the store, not in it: a locked store does not hide it.
        return load_or_create_key_file(path)

    # ---- store ------------------------------------------------------------------------------

    def _open_store(self) -> Any:
        from replay.store_api import open_store

        if isinstance(self.db, (str, os.PathLike)):
            return open_store(
                self.db,
                snapshot_days=self.snapshot_days,
                event_days=self.event_days,
                timeout_s=self.timeout_s,
            )
        return self.db

    def _make_redactor(self, key: bytes | None) -> Redactor:
        # Without a store there is no persistent key; an ephemeral one still keeps pseudonyms keyed.
        return Redactor(
            self.redaction_key or shared_redaction_key() or key or os.urandom(32), self.redaction
        )

    def open_store(self) -> Any:
        """A Store on this recorder's database, for reading in the calling thread."""
        return self._open_store()

    @property
    def dropped(self) -> int:
        """Records truly lost (warned once): the queue was full with ``on_full="drop"``, the spool
        was full or unwritable, or the store could never be opened. A store that is only locked
        or missing for a while loses nothing: its records wait in the spool (see `spool_dir`)."""
        return self._writer.dropped

    @property
    def last_run_id(self) -> str | None:
        """The id of the last run that ended in this context (thread or task)."""
        return self._last.get()

    def add_listener(self, fn: Callable[[Run, list[Any]], None]) -> None:
        """Call ``fn(run, error_steps)`` on the writer thread after each run's stop is stored.

        ``error_steps`` are the run's tool/model events with status error (for metrics), e.g.
        ``rec.add_listener(PrometheusExporter())``. A listener with ``wants_steps = True``
        (``replay.otel.OtelExporter``) is called ``fn(run, events, store)`` instead: all of the
        run's stored events, and the store to read its redacted snapshots from.
        """
        self._writer.listeners.append(fn)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write everything recorded so far. Returns False if it did not finish in `timeout`."""
        return self._writer.flush(timeout)

    def reopen(self, db: str | os.PathLike[str] | Any) -> None:
        """Record into `db` from now on; what is queued is written to the current store first.

        Decorators bind their recorder at import time; this points it at a store chosen later
        (an app's settings, a test's temporary file, ``replay demo --db``).

        Raises:
            RuntimeError: a run is in progress (its start and its stop would land in two stores).
        """
        if self._active:
            raise RuntimeError(
                f"cannot reopen the recorder while {len(self._active)} run(s) are in progress: "
                "call reopen() between runs"
            )
        old = self._writer
        old.close()
        self.db = db
        self._writer = self._new_writer(
            max_queue=old.max_queue,
            max_queue_bytes=old.max_queue_bytes,
            on_full=old.on_full,
            max_snapshot_bytes=old.max_snapshot_bytes,
            store_args=old.store_args,
            listeners=old.listeners,
            flush_interval=old.flush_interval,
            max_spool_bytes=old.max_spool_bytes,
        )

    def close(self) -> None:
        """End open runs as ``killed``, write everything, stop the writer thread."""
        for st in list(self._active):
            self._end(st, "killed", None)
        self._writer.close()

    def _terminate(self, timeout: float) -> bool:
        """On SIGTERM: end open runs as ``killed`` and write the queue within `timeout` seconds."""
        w = self._writer
        sync, w.sync_runs = w.sync_runs, False  # one bounded flush below, not one per run
        try:
            for st in list(self._active):
                self._end(st, "killed", None)
        finally:
            w.sync_runs = sync
        return w.flush(timeout)

    def prune(self, *, now_ms: int | None = None, dry_run: bool = False) -> Any:
        """Delete what has expired (pinned runs never do); returns the counts deleted."""
        self.flush()
        store = self._open_store()
        try:
            return store.prune(now_ms=now_ms, dry_run=dry_run)
        finally:
            if store is not self.db:
                store.close()

    # ---- runs -------------------------------------------------------------------------------

    def run(
        self,
        agent: str,
        *,
        input: Any = None,
        versions: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        entrypoint: str | None = None,
        http: Any = False,
        http_match: Sequence[str] | None = None,
        **guards: Any,
    ) -> RunHandle:
        """A run as a context manager (``with`` or ``async with``), for code a decorator does not fit.

        Replay calls ``agent(input)``; name the agent with ``entrypoint="module:function"`` or pass
        ``agent=`` to `replay_run`. ``http=True`` also records the run's HTTP traffic (`replay.http`);
        ``http_match=`` (or ``http=HttpOptions(...)``) sets how a replay matches its requests.
        """
        return RunHandle(
            self,
            agent,
            ("value", input),
            versions,
            labels,
            entrypoint,
            guards,
            http=_http_options(http, http_match),
        )

    def agent(
        self,
        name: str | None = None,
        *,
        versions: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        http: Any = False,
        http_match: Sequence[str] | None = None,
        **guards: Any,
    ) -> Callable[[F], F]:
        """Record each call of the decorated function (sync or async) as one run.

        The function is also registered as agent `name` (see `replay.agents`): a replay of a run
        of that agent calls it, and only a registered agent is ever called by a replay. A function
        of a script run as ``python my_agent.py`` is recorded under the script's module name
        (``my_agent:handle``) so a replay can import it; see `_script_entrypoint`.

        ``http=True`` also records the HTTP traffic of each run with vcrpy (see `replay.http`).
        ``http_match=("method", "uri", "body", "header:NAME")`` (or ``http=HttpOptions(...)``)
        chooses what a replay matches requests on; the default is method and URL.

        Raises:
            InvalidHttpMatchError: an ``http_match`` rule that names no request field.
        """
        self.guards.merged(**guards)  # reject unknown guard names at decoration time
        http = _http_options(http, http_match)  # reject a bad matching rule at decoration time too

        def deco(fn: F) -> F:
            agent_name = _check_name(name or fn.__name__, "agent")
            entry = f"{fn.__module__}:{fn.__qualname__}"
            if fn.__module__ == "__main__":
                entry = _script_entrypoint(fn, agent_name)
            sig = inspect.signature(fn)

            def handle(args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunHandle:
                session = _session.get()
                rec = session.recorder if session is not None else self
                try:
                    bound = sig.bind(*args, **kwargs).arguments
                except TypeError:
                    bound = {"*args": list(args), **kwargs}
                bound.pop("self", None)
                bound.pop("cls", None)
                return RunHandle(
                    rec,
                    agent_name,
                    ("bound", bound),
                    {**self.versions, **(versions or {})},
                    labels,
                    entry,
                    guards,
                    http=http,
                )

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    async with handle(args, kwargs) as run:
                        result = await fn(*args, **kwargs)
                        run.set_output(result)
                        return result

                awrapper.__replay_agent__ = True  # type: ignore[attr-defined]
                register_agent(agent_name, awrapper, entrypoint=entry)
                return cast(F, awrapper)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with handle(args, kwargs) as run:
                    result = fn(*args, **kwargs)
                    run.set_output(result)
                    return result

            wrapper.__replay_agent__ = True  # type: ignore[attr-defined]
            register_agent(agent_name, wrapper, entrypoint=entry)
            return cast(F, wrapper)

        return deco

    def usage(self, *, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0) -> None:
        """Add tokens and spend to the current run (no-op outside a run); checks budget guards."""
        st = _run.get()
        if st is None:
            return
        if not _usage_ok(tokens_in, tokens_out, cost_usd):
            # Recording never breaks the agent: a nonsense amount is left out, with one warning.
            self._warn_encode(
                "rec.usage()", "a negative, non-finite or non-numeric amount was ignored"
            )
            return
        st.tokens_in += tokens_in
        st.tokens_out += tokens_out
        st.cost_usd += cost_usd
        self._check_budget(st)

    def _begin(self, handle: RunHandle) -> RunState:
        session = _session.get()
        style, value = handle.input
        frozen, problem = freeze_lenient(value, "input")
        if problem:
            self._warn_encode(f"the input of agent {handle.agent!r}", problem)
        ts = time.time_ns() // 1_000_000
        if self._finalizer_pid != _pid():
            _register_worker_finalizer(self)
        run = Run(
            run_id=new_run_id(ts),
            pid=_pid(),
            last_seen_ms=ts,
            agent=_safe_name(handle.agent),
            entrypoint=handle.entrypoint,
            versions={**self.versions, **(handle.versions or {})},
            labels=dict(handle.labels or {}),
            started_ms=ts,
            call_style="value" if style == "value" else "bound",
            replay_of=None if session is None else session.source_run_id,
        )
        st = RunState(self, run, frozen, self.guards.merged(**handle.guards))
        st.session = session
        if session is not None and session.replayed_run_id is None:
            session.replayed_run_id = run.run_id
        self._active.add(st)
        self._writer.submit(RunItem(run.model_copy(), frozen, None, False, ts))
        return st

    def _end(self, st: RunState, reason: str, exc: BaseException | None) -> None:
        if st.ended:
            return
        st.ended = True
        self._active.discard(st)
        ts = time.time_ns() // 1_000_000
        run = st.run.model_copy()
        run.ended_ms = ts
        run.last_seen_ms = ts
        run.stop_reason = reason
        run.usage = st.usage()
        run.tool_calls = st.tool_calls
        w = self._writer
        w.submit(RunItem(run, st.input, st.output, True, ts, st.output_type, st.http))
        if w.sync_runs:
            w.wait_run()  # a worker may leave through os._exit right after: the run is written first
        else:
            w.keep_up(ts)  # bounds what a hard kill can lose to about one flush interval

    def _stop_reason_for(self, st: RunState, exc: BaseException | None) -> str:
        if st.tripped is not None:
            return st.tripped.stop_reason
        if exc is None:
            return st.stop_reason or "completed"
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError, GeneratorExit)):
            return "cancelled"
        if isinstance(exc, StopRun):
            return exc.stop_reason
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            # sys.exit() / sys.exit(0) inside an agent is a clean end, not a failure.
            return st.stop_reason or "completed"
        return st.stop_reason or "error"

    def _warn_encode(self, where: str, problem: str) -> None:
        if not self._warned_encode:
            self._warned_encode = True
            warnings.warn(
                _scrub(
                    f"agent-replay recorded a placeholder for {where}: {problem}",
                    self._writer._redactor,
                ),
                RecordingLossWarning,
                stacklevel=4,
            )

    # ---- tools and models -------------------------------------------------------------------

    def tool(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        timeout_s: float | None = None,
        ignore_args: list[str] | tuple[str, ...] | None = None,
    ) -> Any:
        """Record each call of the decorated function (sync or async) as a step of the current run.

        A tool called outside any run just runs. During a replay it answers from the recording.
        ``ignore_args`` names arguments (or dotted paths into dict arguments) left out of args_sha,
        e.g. a random idempotency key: a replay then matches the call whatever value it got.
        """
        if callable(name):  # bare @rec.tool
            return self._wrap(
                name, name.__name__, "tool_result", timeout_s=timeout_s, ignore_args=ignore_args
            )
        return lambda fn: self._wrap(
            fn, name or fn.__name__, "tool_result", timeout_s=timeout_s, ignore_args=ignore_args
        )

    def model(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        price_in_per_mtok: float | None = None,
        price_out_per_mtok: float | None = None,
        ignore_args: list[str] | tuple[str, ...] | None = None,
    ) -> Any:
        """Record each call of the decorated model client as a step of kind ``model_result``.

        Usage (tokens) is read from OpenAI- and Anthropic-shaped responses; with prices per
        million tokens, spend is computed too.
        """
        if callable(name):
            return self._wrap(name, name.__name__, "model_result", ignore_args=ignore_args)
        return lambda fn: self._wrap(
            fn,
            name or fn.__name__,
            "model_result",
            price_in=price_in_per_mtok,
            price_out=price_out_per_mtok,
            ignore_args=ignore_args,
        )

    def _wrap(self, fn: F, name: str, kind: str, **opts: Any) -> F:
        spec = _ToolSpec(fn, name, kind, **opts)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                st = _run.get()
                if st is None:
                    return await fn(*args, **kwargs)
                if st.session is not None:
                    return await st.session.answer_async(st, spec, args, kwargs)
                return await st.recorder._call_async(st, spec, args, kwargs)

            awrapper.__replay_tool__ = spec  # type: ignore[attr-defined]
            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            st = _run.get()
            if st is None:
                return fn(*args, **kwargs)
            if st.session is not None:
                return st.session.answer(st, spec, args, kwargs)
            return st.recorder._call(st, spec, args, kwargs)

        wrapper.__replay_tool__ = spec  # type: ignore[attr-defined]
        return cast(F, wrapper)

    def _enter_step(
        self, st: RunState, spec: _ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, bytes]:
        if st.tripped is not None:
            raise st.tripped  # the run is over; a guard already ended it
        step_id = next(st.steps)
        g = st.guards
        if g.max_steps is not None and step_id > g.max_steps:
            self._trip(
                st, "max_steps", f"{spec.name} would be step {step_id}, max_steps={g.max_steps}"
            )
        frozen, problem = freeze_lenient(spec.bind(args, kwargs))
        if problem:
            self._warn_encode(f"the args of {spec.name}", problem)
        if g.max_repeats is not None:
            key = (spec.name, hash(frozen))
            n = st.repeats.get(key, 0) + 1
            st.repeats[key] = n
            if n > g.max_repeats:
                self._trip(
                    st,
                    "loop_detected",
                    f"{spec.name} called {n} times with the same args, max_repeats={g.max_repeats}",
                )
        if self._track_groups:
            # Concurrent groups: note the step in flight at its level (inline: this runs on every
            # call); its group is settled when steps finish (`_settle_group`).
            parent = _step.get()
            try:
                lv = st.levels[parent]
            except KeyError:  # the first step at this level
                lv = st.levels.setdefault(parent, [{}, 0, 0])
            lv[0][step_id] = None
            if lv[1]:
                self._announced(st, spec, lv, step_id)
        return step_id, frozen

    #: concurrent-group bookkeeping on; the benchmark turns it off to measure what it costs
    _track_groups = True

    def _announced(self, st: RunState, spec: _ToolSpec, lv: list[Any], step_id: int) -> None:
        """A step entering after a model response announced tool calls: those join one group."""
        with st.group_lock:
            if spec.kind != "tool_result":
                lv[1] = 0  # a model call ends what the previous response announced
            elif lv[1]:
                lv[1] -= 1
                if not lv[2]:
                    lv[2] = step_id
                st.marks[step_id] = lv[2]

    def _settle_group(
        self, st: RunState, spec: _ToolSpec, lv: list[Any], step_id: int, result: Any
    ) -> int | None:
        """A step finishing while siblings are in flight puts them all in one group: its own
        (from an earlier overlap), one of theirs, else the earliest one's step id. A step that
        finishes alone is grouped only if one of those marked it. Groups are thus the connected
        runs of overlapping siblings, named by their first step. A model response that announces
        several tool calls makes them one group (see `_announced`)."""
        marks = st.marks
        q = lv[0]
        with st.group_lock:
            flying = list(q)  # one C-level copy: others may enter meanwhile
            group = marks.pop(step_id, None)
            others = [j for j in flying if j != step_id]
            if others:
                if group is None:
                    group = next((marks[j] for j in others if j in marks), None) or min(flying)
                for j in others:
                    marks[j] = group
            q.pop(step_id, None)
            if spec.kind == "model_result" and result is not None:
                n = _tool_calls_in(result)
                if n > 1:  # the next n tool calls at this level are one group, named by the first
                    lv[1], lv[2] = n, 0
        return group

    def _trip(self, st: RunState, reason: str, detail: str) -> None:
        st.tripped = StopRun(reason, detail)
        st.stop_reason = reason
        raise st.tripped

    def _check_budget(self, st: RunState) -> None:
        g = st.guards
        if g.max_tokens is not None and st.tokens_in + st.tokens_out > g.max_tokens:
            self._trip(
                st,
                "budget_exceeded",
                f"{st.tokens_in + st.tokens_out} tokens, max_tokens={g.max_tokens}",
            )
        if g.max_spend_usd is not None and st.cost_usd > g.max_spend_usd:
            self._trip(
                st, "budget_exceeded", f"${st.cost_usd:.4f} spent, max_spend_usd={g.max_spend_usd}"
            )

    def _finish_step(
        self,
        st: RunState,
        spec: _ToolSpec,
        step_id: int,
        parent: int | None,
        frozen_args: bytes,
        t0: int,
        result: Any = None,
        exc: BaseException | None = None,
        args_sha: str | None = None,
        error_names: tuple[str, str, str] | None = None,
        error_message: str | None = None,
        output_sha: str | None = None,
        concurrent_group: int | None = None,
    ) -> None:
        """Hand one finished call to the writer.

        `output_sha` is set by replay for an answer taken from the recording: the recorded snapshot
        stands for it, so the value is neither copied nor hashed again. `concurrent_group` is set by
        replay too: the recorded step's group in the replayed run's numbering (0: it had none)
        replaces the replay's own, since answers from the recording are instant.
        """
        dur = (time.perf_counter_ns() - t0) // 1_000_000
        # Leave the in-flight steps (inline, this runs on every call): a step that ran alone and
        # is no model call costs a few dict operations and no lock; the rest is `_settle_group`.
        group = None
        if self._track_groups:
            try:
                lv = st.levels[parent]
            except KeyError:  # never entered at this level (a parent reset elsewhere)
                lv = None
            if lv is not None:
                q = lv[0]
                if len(q) > 1 or spec.kind == "model_result":
                    group = self._settle_group(
                        st, spec, lv, step_id, result if exc is None else None
                    )
                else:
                    if st.marks:
                        group = st.marks.pop(step_id, None)
                    try:
                        del q[step_id]
                    except KeyError:  # not counted at this level (it entered under another parent)
                        pass
        if concurrent_group is not None:
            group = concurrent_group or None
        usage = None
        if spec.kind == "tool_result":
            st.tool_calls += 1
        if exc is not None:
            item = StepItem(
                st.run_id,
                step_id,
                parent,
                spec.kind,
                spec.name,
                frozen_args,
                None,
                error_names or _error_names(exc),
                str(exc) if error_message is None else error_message,
                time.time_ns() // 1_000_000,
                dur,
                None,
                None,
                args_sha,
                output_sha,
                group,
                error_detail=None if output_sha is not None else _error_detail(exc),
            )
        else:
            if spec.kind == "model_result":
                usage = self._model_usage(st, spec, result)
            out: bytes | None = None
            if output_sha is None:
                out, problem = freeze_lenient(result, "output")
                if problem:
                    self._warn_encode(f"the output of {spec.name}", problem)
            # The type tag tree is taken on the writer thread (off the agent's path) from `output_ref`.
            item = StepItem(
                st.run_id,
                step_id,
                parent,
                spec.kind,
                spec.name,
                frozen_args,
                out,
                None,
                None,
                time.time_ns() // 1_000_000,
                dur,
                usage,
                None,
                args_sha,
                output_sha,
                group,
                output_ref=None if out is None else result,
            )
        self._writer.submit(item)

    def _model_usage(self, st: RunState, spec: _ToolSpec, response: Any) -> Usage | None:
        found = extract_usage(response)
        if found is None:
            return None
        tin, tout = found
        cost = 0.0
        if spec.price_in is not None or spec.price_out is not None:
            cost = round(tin * (spec.price_in or 0) / 1e6 + tout * (spec.price_out or 0) / 1e6, 10)
        st.tokens_in += tin
        st.tokens_out += tout
        st.cost_usd += cost
        return Usage.lenient(tokens_in=tin, tokens_out=tout, cost_usd=cost)

    def _call(
        self, st: RunState, spec: _ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        step_id, frozen = self._enter_step(st, spec, args, kwargs)
        parent = _step.get()
        token = _step.set(step_id)
        timeout = spec.timeout_s or st.guards.tool_timeout_s
        t0 = time.perf_counter_ns()
        try:
            if timeout is None:
                result = spec.fn(*args, **kwargs)
            else:
                result = _call_with_timeout(spec.fn, args, kwargs, timeout)
        except _ToolTimeout:
            _step.reset(token)
            self._timed_out(st, spec, step_id, parent, frozen, t0, timeout)
        except BaseException as exc:
            _step.reset(token)
            self._finish_step(st, spec, step_id, parent, frozen, t0, exc=exc)
            raise
        _step.reset(token)
        if timeout is not None and (time.perf_counter_ns() - t0) / 1e9 > timeout:
            # Could not interrupt it (not the main thread): the call finished late; its result is discarded.
            self._timed_out(st, spec, step_id, parent, frozen, t0, timeout)
        self._finish_step(st, spec, step_id, parent, frozen, t0, result=result)
        if spec.kind == "model_result":
            self._check_budget(st)
        return result

    def _timed_out(
        self,
        st: RunState,
        spec: _ToolSpec,
        step_id: int,
        parent: int | None,
        frozen: bytes,
        t0: int,
        timeout: float | None,
    ) -> NoReturn:
        """Record the call as a TimeoutError step and end the run with ``tool_timeout``."""
        err = TimeoutError(f"{spec.name} ran longer than tool_timeout_s={timeout}")
        self._finish_step(st, spec, step_id, parent, frozen, t0, exc=err)
        self._trip(st, "tool_timeout", str(err))
        raise err  # _trip raises StopRun; this line only satisfies the type checker

    async def _call_async(
        self, st: RunState, spec: _ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        step_id, frozen = self._enter_step(st, spec, args, kwargs)
        parent = _step.get()
        token = _step.set(step_id)
        timeout = spec.timeout_s or st.guards.tool_timeout_s
        t0 = time.perf_counter_ns()
        try:
            coro = cast(Awaitable[Any], spec.fn(*args, **kwargs))
            result = await (coro if timeout is None else asyncio.wait_for(coro, timeout))
        except asyncio.TimeoutError as exc:
            _step.reset(token)
            self._finish_step(st, spec, step_id, parent, frozen, t0, exc=exc)
            if timeout is not None and (time.perf_counter_ns() - t0) / 1e9 >= timeout:
                self._trip(
                    st, "tool_timeout", f"{spec.name} ran longer than tool_timeout_s={timeout}"
                )
            raise
        except BaseException as exc:
            _step.reset(token)
            self._finish_step(st, spec, step_id, parent, frozen, t0, exc=exc)
            raise
        _step.reset(token)
        self._finish_step(st, spec, step_id, parent, frozen, t0, result=result)
        if spec.kind == "model_result":
            self._check_budget(st)
        return result


def _call_with_timeout(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
) -> Any:
    """Run a sync tool with a deadline, without starting a thread that would outlive it.

    In the main thread on POSIX the call is interrupted by SIGALRM (like ``timeout(1)``). Elsewhere
    it runs to the end and the caller discards a late result; either way no work is left running.
    """
    usable = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
    )
    if not usable:
        return fn(*args, **kwargs)

    def on_alarm(signum: int, frame: Any) -> None:
        raise _ToolTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class RunHandle:
    """One run as a context manager; ``with rec.run(...) as run`` gives this object."""

    def __init__(
        self,
        recorder: Recorder,
        agent: str,
        input: tuple[str, Any],
        versions: dict[str, str] | None,
        labels: dict[str, str] | None,
        entrypoint: str | None,
        guards: dict[str, Any],
        http: Any = None,
    ) -> None:
        self.recorder = recorder
        self.agent = agent
        self.input = input
        self.versions = versions
        self.labels = labels
        self.entrypoint = entrypoint
        self.guards = guards
        self.state: RunState | None = None
        self._token: contextvars.Token[RunState | None] | None = None
        self.http = http  # replay.http.HttpOptions (True: the defaults), or None: no HTTP recorded
        self._http: Any = None  # the run's replay.http.HttpRecording while it runs

    @property
    def run_id(self) -> str:
        assert self.state is not None, "the run has not started: use it inside `with`"
        return self.state.run_id

    def set_output(self, value: Any) -> None:
        """Record `value` as the run's output (the decorator does this with the return value)."""
        assert self.state is not None
        frozen, problem = freeze_lenient(value, "output")
        if problem:
            self.recorder._warn_encode(f"the output of agent {self.agent!r}", problem)
        self.state.output = frozen
        self.state.output_type = _type_name(value)

    def stop(self, reason: str) -> None:
        """End this run with `reason` when the block exits."""
        assert self.state is not None
        self.state.stop_reason = validate_stop_reason(reason)

    def __enter__(self) -> RunHandle:
        self.state = self.recorder._begin(self)
        self._token = _run.set(self.state)
        # HTTP layer: per run, only with http=True, never during a replay (the session plays HTTP back).
        if self.http and self.state.session is None:
            self._http = _start_http(self.state, self.http)
        return self

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        assert self.state is not None and self._token is not None
        st = self.state
        if self._http is not None:
            st.http = _stop_http(self._http)
            self._http = None
        try:
            _run.reset(self._token)
        except ValueError:  # exited in another context (a generator finalised elsewhere)
            _run.set(None)
        self.recorder._end(st, self.recorder._stop_reason_for(st, exc), exc)
        self.recorder._last.set(st.run_id)
        return False

    async def __aenter__(self) -> RunHandle:
        return self.__enter__()

    async def __aexit__(self, et: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        return self.__exit__(et, exc, tb)


def _http_options(http: Any, http_match: Sequence[str] | None) -> Any:
    """`replay.http.HttpOptions` for ``http=`` / ``http_match=``, None when HTTP is not recorded."""
    if not http and http_match is None:
        return None
    from replay.http import HttpOptions

    return HttpOptions.of(http, http_match)


def _start_http(st: RunState, options: Any = None) -> Any:
    """Start the run's HTTP capture; a failure warns and records the run without HTTP (fail-open)."""
    try:
        from replay.http import HttpOptions, HttpRecording

        return HttpRecording(
            st.run_id, options if isinstance(options, HttpOptions) else None
        ).start()
    except Exception as exc:  # noqa: BLE001 - recording must never break the agent
        st.recorder._warn_encode(
            f"the HTTP traffic of run {st.run_id}", f"vcrpy could not start ({exc!r})"
        )
        return None


def _stop_http(capture: Any) -> list[Any] | None:
    try:
        return cast(list[Any], capture.stop())
    except Exception as exc:  # noqa: BLE001 - recording must never break the agent
        warnings.warn(
            _scrub(f"agent-replay lost a run's HTTP interactions: {exc!r}"),
            RecordingLossWarning,
            stacklevel=3,
        )
        return None


_pid = os.getpid


def _in_worker_process() -> bool:
    """A multiprocessing child (fork, spawn or forkserver; Pool, Process, ProcessPoolExecutor)."""
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


def _register_worker_finalizer(rec: Recorder) -> None:
    """In a multiprocessing child, close the recorders when the worker exits normally.

    A worker leaves through ``os._exit`` (no atexit) after running multiprocessing's finalizers,
    which it clears when it starts; so this is registered at the first run in each process.
    """
    rec._finalizer_pid = _pid()
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    try:
        from multiprocessing import util

        util.Finalize(None, _close_all, exitpriority=100)
    except Exception:  # noqa: BLE001 - recording must never break the agent
        pass


def _after_fork_in_child() -> None:
    # The parent's open runs belong to the parent: the child must not end them as killed at exit.
    for rec in list(_recorders):
        rec._active = set()
        rec._finalizer_pid = 0
        if (
            rec.sync_run_end is not None
        ):  # the writer's own hook turned it on; an explicit choice wins
            rec._writer.sync_runs = rec.sync_run_end


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_sigterm_prev: Any = None
_sigterm_installed = False


def _install_sigterm() -> None:
    """Chain a SIGTERM handler that ends open runs as killed and writes the queue, then runs the
    previous handler (or the default action). Only from the main thread, and only over the default
    action or a Python handler: an ignored SIGTERM or a handler set from C is left alone."""
    global _sigterm_prev, _sigterm_installed
    if _sigterm_installed or not hasattr(signal, "SIGTERM"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm:
            _sigterm_installed = True
            return
        if not (current == signal.SIG_DFL or callable(current)):
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return
    _sigterm_prev = current
    _sigterm_installed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    deadline = time.monotonic() + max(
        (r.sigterm_timeout_s or 0.0 for r in list(_recorders)), default=0.0
    )
    for rec in list(_recorders):
        if rec.sigterm_timeout_s is None:
            continue
        try:
            rec._terminate(max(0.0, min(rec.sigterm_timeout_s, deadline - time.monotonic())))
        except Exception:  # noqa: BLE001 - the previous handler must still run
            pass
    prev = _sigterm_prev
    if callable(prev) and prev is not _on_sigterm:
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    # The default action: terminate by SIGTERM, so the parent sees the same exit status as before.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@atexit.register
def _close_all() -> None:
    # Every run ends with exactly one stop event, also when the process shuts down.
    for rec in list(_recorders):
        try:
            rec.close()
        except Exception:  # noqa: BLE001 - never raise at interpreter exit
            pass
