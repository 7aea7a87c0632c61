"""The Recorder: decorators and a context manager that record every run of an agent.

The agent's own path per call stays a few microseconds: read a contextvar, count the step,
note it in flight at its level (steps that overlap a sibling, or that one model response
announced, share a concurrent group), freeze args and output (orjson bytes), append to the
writer's queue. Redaction, hashing and
storage happen on the writer thread (see `replay.writer`). Recording never breaks the agent:
a tool's exception is re-raised as the same object, and a failing store only counts drops.

The Recorder is the front: decorators, ``rec.run()``, usage, the writer and the store it writes
to. The rest lives in modules named for it: `replay.guards` (defaults, `Guards`),
`replay.binding` (`ToolSpec`, error naming), `replay.run_state` (a run in progress and its step
bookkeeping), `replay.tool_layer` (the seam: `ToolLayer`, the live layer, the SIGALRM timeout),
`replay.run_handle` (`RunHandle`, HTTP glue) and `replay.lifecycle` (atexit, fork, SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast, overload

from replay.agents import register_agent
from replay.binding import ToolSpec, check_name, safe_name, script_entrypoint
from replay.context import run_var, session_var
from replay.errors import StopRun
from replay.guards import Guards, default_db, shared_redaction_key, usage_ok
from replay.hashing import freeze_lenient
from replay.lifecycle import (
    close_all,
    in_worker_process,
    install_sigterm,
    register_worker_finalizer,
    scrub,
    track,
)
from replay.models import Run, new_run_id
from replay.processors import RedactionConfig, Redactor
from replay.run_handle import RunHandle, http_options
from replay.run_state import RunState
from replay.tool_layer import LIVE, ToolLayer
from replay.writer import RecordingLossWarning, RunItem, Writer

__all__ = ["Recorder", "Guards", "RunHandle", "RunState", "default_db"]

F = TypeVar("F", bound=Callable[..., Any])

#: Re-exported for one release: these moved to `replay.guards` / `replay.lifecycle`.
_close_all = close_all
_LEGACY_GUARDS = ("max_steps", "max_repeats", "max_tokens", "max_spend_usd", "tool_timeout_s")
_pid = os.getpid


class Recorder:
    """Records every run of an agent into a store.

    Args:
        db: a SQLite path (default ``$REPLAY_DB``, else ``./replay.db``) or a Store.
        redaction: redaction rules; the defaults are safe (see `RedactionConfig`).
        store_args: ``"hash"`` (default) keeps only args_sha; ``"redacted"`` also stores redacted
        args.
        versions: versions recorded with every run (model, prompt, tools, app, …).
        max_queue: records held in memory at most before ``on_full`` applies (bounds memory).
        on_full: ``"block"`` (default: the agent waits for the writer, nothing is lost) or
            ``"drop"`` (the agent never waits; lost records are counted in `dropped`, warned once).
        max_snapshot_bytes: larger outputs are stored truncated with their full hash.
        snapshot_days, event_days: retention of snapshots and events; pinned runs never expire.
        guards: default limits for every run (``guards=Guards(max_steps=20)``), overridable per
            agent and per run. The limits as keywords (``max_steps=20``) still work this release.
        redaction_key: a key for pseudonyms instead of the store's (replay uses the recording's).
        timeout_s: how long a write waits for another process's lock before the batch is spooled.
        max_queue_bytes: frozen bytes (args, outputs) held in memory at most before ``on_full``
        applies.
        flush_interval_s: the writer's tick; a run's stop is written at once, so a hard kill
        (SIGKILL,
            OOM) loses at most the runs that ended within about one interval.
        spool_dir: where batches the store refuses (locked, read-only, full) wait until it is back;
            default ``<db>.spool`` beside the store. Files are 0600, one per process.
        max_spool_bytes: a spool file larger than this drops new batches (counted in `dropped`).
        sync_run_end: wait (at most 5 s) until a run's stop is written before the run returns;
            ``None`` (default) does so in worker processes (forked or multiprocessing children),
            which may leave through ``os._exit`` without running atexit.
        sigterm_timeout_s: on SIGTERM, end open runs as ``killed`` and write the queue for at most
        this
            long, then run the previous handler (or the default action). ``None`` installs no
            handler.

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
        versions: Mapping[str, str] | None = None,
        max_queue: int = 10_000,
        on_full: str = "block",
        max_snapshot_bytes: int = 1_000_000,
        snapshot_days: int = 14,
        event_days: int = 30,
        guards: Guards | None = None,
        redaction_key: bytes | None = None,
        timeout_s: float = 5.0,
        max_queue_bytes: int = 64 << 20,
        flush_interval_s: float = 0.05,
        spool_dir: str | os.PathLike[str] | None = None,
        max_spool_bytes: int = 256 << 20,
        sync_run_end: bool | None = None,
        sigterm_timeout_s: float | None = 2.0,
        **legacy_guards: Any,
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
        self.guards = _guards(guards, legacy_guards)
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
        #: The writer's settings, the same for the writer `reopen` starts.
        self._writer_opts: dict[str, Any] = {
            "max_queue": max_queue,
            "max_queue_bytes": max_queue_bytes,
            "on_full": on_full,
            "max_snapshot_bytes": max_snapshot_bytes,
            "store_args": store_args == "redacted",
            "flush_interval": flush_interval_s,
            "max_spool_bytes": max_spool_bytes,
        }
        self._writer = self._new_writer()
        track(self)
        if sigterm_timeout_s is not None:
            install_sigterm()

    def _new_writer(
        self, listeners: list[Callable[[Run, list[Any]], None]] | None = None
    ) -> Writer:
        sync = self.sync_run_end if self.sync_run_end is not None else in_worker_process()
        return Writer(
            self._open_store,
            self._make_redactor,
            peek_key=self._peek_key,
            spool_dir=self._spool_dir(),
            sync_runs=sync,
            listeners=listeners,
            **self._writer_opts,
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
        """The store's key without opening the store (a store locked by another process still has
        one).

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
        self._writer = self._new_writer(old.listeners)

    def close(self) -> None:
        """End open runs as ``killed``, write everything, stop the writer thread."""
        for st in list(self._active):
            self.end(st, "killed", None)
        self._writer.close()

    def terminate(self, timeout: float) -> bool:
        """On SIGTERM: end open runs as ``killed`` and write the queue within `timeout` seconds."""
        w = self._writer
        sync, w.sync_runs = w.sync_runs, False  # one bounded flush below, not one per run
        try:
            for st in list(self._active):
                self.end(st, "killed", None)
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
        versions: Mapping[str, str] | None = None,
        labels: dict[str, str] | None = None,
        entrypoint: str | None = None,
        http: Any = False,
        http_match: Sequence[str] | None = None,
        **guards: Any,
    ) -> RunHandle:
        """A run as a context manager (``with`` or ``async with``), for code a decorator does not
        fit.

        Replay calls ``agent(input)``; name the agent with ``entrypoint="module:function"`` or pass
        ``agent=`` to `replay_run`. ``http=True`` also records the run's HTTP traffic
        (`replay.http`);
        ``http_match=`` (or ``http=HttpOptions(...)``) sets how a replay matches its requests.
        """
        return RunHandle(
            self,
            agent,
            ("value", input),
            dict(versions) if versions is not None else None,
            labels,
            entrypoint,
            guards,
            http=http_options(http, http_match),
        )

    def agent(
        self,
        name: str | None = None,
        *,
        versions: Mapping[str, str] | None = None,
        labels: dict[str, str] | None = None,
        http: Any = False,
        http_match: Sequence[str] | None = None,
        **guards: Any,
    ) -> Callable[[F], F]:
        """Record each call of the decorated function (sync or async) as one run.

        The function is also registered as agent `name` (see `replay.agents`): a replay of a run
        of that agent calls it, and only a registered agent is ever called by a replay. A function
        of a script run as ``python my_agent.py`` is recorded under the script's module name
        (``my_agent:handle``) so a replay can import it; see `replay.binding.script_entrypoint`.

        ``http=True`` also records the HTTP traffic of each run with vcrpy (see `replay.http`).
        ``http_match=("method", "uri", "body", "header:NAME")`` (or ``http=HttpOptions(...)``)
        chooses what a replay matches requests on; the default is method and URL.

        Raises:
            InvalidHttpMatchError: an ``http_match`` rule that names no request field.
        """
        self.guards.merged(**guards)  # reject unknown guard names at decoration time
        http = http_options(http, http_match)  # reject a bad matching rule at decoration time too

        def deco(fn: F) -> F:
            agent_name = check_name(name or fn.__name__, "agent")
            entry = f"{fn.__module__}:{fn.__qualname__}"
            if fn.__module__ == "__main__":
                entry = script_entrypoint(fn, agent_name)
            sig = inspect.signature(fn)

            def handle(args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunHandle:
                session = session_var.get()
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

            wrapped = _agent_wrapper(fn, handle)
            register_agent(agent_name, wrapped, entrypoint=entry)
            return wrapped

        return deco

    def usage(self, *, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0) -> None:
        """Add tokens and spend to the current run (no-op outside a run); checks budget guards."""
        st = run_var.get()
        if st is None:
            return
        if not usage_ok(tokens_in, tokens_out, cost_usd):
            # Recording never breaks the agent: a nonsense amount is left out, with one warning.
            self.warn_encode(
                "rec.usage()", "a negative, non-finite or non-numeric amount was ignored"
            )
            return
        st.tokens_in += tokens_in
        st.tokens_out += tokens_out
        st.cost_usd += cost_usd
        st.check_budget()

    def begin(self, handle: RunHandle) -> RunState:
        session = session_var.get()
        style, value = handle.input
        frozen, problem = freeze_lenient(value, "input")
        if problem:
            self.warn_encode(f"the input of agent {handle.agent!r}", problem)
        ts = time.time_ns() // 1_000_000
        if self._finalizer_pid != _pid():
            self._finalizer_pid = _pid()
            register_worker_finalizer()
        run = Run(
            run_id=new_run_id(ts),
            pid=_pid(),
            last_seen_ms=ts,
            agent=safe_name(handle.agent),
            entrypoint=handle.entrypoint,
            versions={**self.versions, **(handle.versions or {})},
            labels=dict(handle.labels or {}),
            started_ms=ts,
            call_style="value" if style == "value" else "bound",
            replay_of=None if session is None else session.source_run_id,
        )
        layer: ToolLayer = LIVE if session is None else session
        st = RunState(
            self,
            run,
            frozen,
            self.guards.merged(**handle.guards),
            layer=layer,
            sink=self._writer if session is None else session.step_sink(self._writer),
            track_groups=self._track_groups,
        )
        st.session = session
        if session is not None and session.replayed_run_id is None:
            session.replayed_run_id = run.run_id
        self._active.add(st)
        self._writer.submit(RunItem(run.model_copy(), frozen, None, False, ts))
        return st

    def end(self, st: RunState, reason: str, exc: BaseException | None) -> None:
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
            # a worker may leave through os._exit right after: the run is written first
            w.wait_run()
        else:
            w.keep_up(ts)  # bounds what a hard kill can lose to about one flush interval

    def note_last(self, run_id: str) -> None:
        """Remember `run_id` as the last run that ended in this context (`last_run_id`)."""
        self._last.set(run_id)

    def forget_parent_runs(self) -> None:
        """In a forked child: the parent's open runs are the parent's, not ended here at exit."""
        self._active = set()
        self._finalizer_pid = 0
        if (
            self.sync_run_end is not None
        ):  # the writer's own hook turned it on; an explicit choice wins
            self._writer.sync_runs = self.sync_run_end

    def stop_reason_for(self, st: RunState, exc: BaseException | None) -> str:
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

    def warn_encode(self, where: str, problem: str) -> None:
        if not self._warned_encode:
            self._warned_encode = True
            warnings.warn(
                scrub(
                    f"agent-replay recorded a placeholder for {where}: {problem}",
                    self._writer._redactor,
                ),
                RecordingLossWarning,
                stacklevel=4,
            )

    # ---- tools and models -------------------------------------------------------------------

    @overload
    def tool(
        self,
        name: F,
        *,
        timeout_s: float | None = None,
        ignore_args: list[str] | tuple[str, ...] | None = None,
    ) -> F: ...

    @overload
    def tool(
        self,
        name: str | None = None,
        *,
        timeout_s: float | None = None,
        ignore_args: list[str] | tuple[str, ...] | None = None,
    ) -> Callable[[F], F]: ...

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

    @overload
    def model(
        self,
        name: F,
        *,
        price_in_per_mtok: float | None = None,
        price_out_per_mtok: float | None = None,
        ignore_args: list[str] | tuple[str, ...] | None = None,
    ) -> F: ...

    @overload
    def model(
        self,
        name: str | None = None,
        *,
        price_in_per_mtok: float | None = None,
        price_out_per_mtok: float | None = None,
        ignore_args: list[str] | tuple[str, ...] | None = None,
    ) -> Callable[[F], F]: ...

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

    #: concurrent-group bookkeeping on; the benchmark turns it off to measure what it costs
    _track_groups = True

    def _wrap(self, fn: F, name: str, kind: str, **opts: Any) -> F:
        spec = ToolSpec(fn, name, kind, **opts)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                st = run_var.get()
                if st is None:
                    return await fn(*args, **kwargs)
                return await st.layer.acall(st, spec, args, kwargs)

            awrapper.__replay_tool__ = spec  # type: ignore[attr-defined]
            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            st = run_var.get()
            if st is None:
                return fn(*args, **kwargs)
            return st.layer.call(st, spec, args, kwargs)

        wrapper.__replay_tool__ = spec  # type: ignore[attr-defined]
        return cast(F, wrapper)


def _agent_wrapper(fn: F, handle: Callable[[tuple[Any, ...], dict[str, Any]], RunHandle]) -> F:
    """`fn` run inside ``handle(args, kwargs)``, its return value recorded as the run's output."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            async with handle(args, kwargs) as run:
                result = await fn(*args, **kwargs)
                run.set_output(result)
                return result

        awrapper.__replay_agent__ = True  # type: ignore[attr-defined]  # read by replay._invoke
        return cast(F, awrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with handle(args, kwargs) as run:
            result = fn(*args, **kwargs)
            run.set_output(result)
            return result

    wrapper.__replay_agent__ = True  # type: ignore[attr-defined]  # read by replay._invoke
    return cast(F, wrapper)


def _guards(guards: Guards | None, legacy: dict[str, Any]) -> Guards:
    """`guards`, or the limits as keywords as 0.1 took them (accepted for one more release)."""
    unknown = set(legacy) - set(_LEGACY_GUARDS)
    if unknown:
        raise TypeError(
            f"Recorder() got unexpected keyword argument(s) {', '.join(sorted(unknown))}"
        )
    if guards is not None and legacy:
        raise TypeError("give the limits either as guards=Guards(...) or as keywords, not both")
    return guards if guards is not None else Guards(**legacy)
