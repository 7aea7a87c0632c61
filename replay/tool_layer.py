"""The tool-layer seam: what answers a ``@rec.tool`` / ``@rec.model`` call inside a run.

Every decorated call inside a run goes to ``st.layer.call(st, spec, args, kwargs)`` (``acall`` for
async tools). Two layers implement `ToolLayer`: `LiveLayer` (recording: run the real function,
with ``tool_timeout_s``) and the replay layer (`replay.replay_layer.ReplaySession`: answer from a
recording). Both drive the step through the run state (`replay.run_state.RunState.enter`,
``finish_ok`` / ``finish_error``, ``check_budget``), so a step is recorded the same way whoever
answered it. A replay mode is a small layer that picks, per call, which layer answers (see
`replay.replay_modes`).
"""

from __future__ import annotations

import asyncio
import contextvars
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast

from replay.binding import ToolSpec
from replay.context import step_var

if TYPE_CHECKING:
    from replay.run_state import RunState, Step

__all__ = ["LIVE", "Args", "Kwargs", "LiveLayer", "ToolLayer", "ToolTimeout", "call_with_timeout"]

#: A tool call's positional and keyword arguments, as the decorator received them.
Args = tuple[Any, ...]
Kwargs = dict[str, Any]


class ToolLayer(Protocol):
    """Answers one tool or model call of a run and records it as a step of that run."""

    def call(self, st: RunState, spec: ToolSpec, args: Args, kwargs: Kwargs) -> Any:
        """A sync tool's call: its value, or its exception raised."""
        ...

    async def acall(self, st: RunState, spec: ToolSpec, args: Args, kwargs: Kwargs) -> Any:
        """An async tool's call."""
        ...


class ToolTimeout(BaseException):
    """Raised by SIGALRM inside a sync tool that ran past tool_timeout_s."""


class LiveLayer:
    """Recording: the real function runs; its value or exception is recorded and handed back."""

    def call(
        self, st: RunState, spec: ToolSpec, args: Args, kwargs: Kwargs, step: Step | None = None
    ) -> Any:
        """Run the real function; `step`: entered already (a live tool in a replay)."""
        step, token, timeout = _begin(st, spec, args, kwargs, step)
        try:
            if timeout is None:
                result = spec.fn(*args, **kwargs)
            else:
                result = call_with_timeout(spec.fn, args, kwargs, timeout)
        except ToolTimeout:
            step_var.reset(token)
            _timed_out(st, step, timeout)
        except BaseException as exc:
            _failed(st, step, token, exc)
            raise
        step_var.reset(token)
        if timeout is not None and (time.perf_counter_ns() - step.t0) / 1e9 > timeout:
            # Could not interrupt it (not the main thread): the call finished late; its result is
            # discarded.
            _timed_out(st, step, timeout)
        return _returned(st, step, result)

    async def acall(
        self, st: RunState, spec: ToolSpec, args: Args, kwargs: Kwargs, step: Step | None = None
    ) -> Any:
        """`call` for an async tool."""
        step, token, timeout = _begin(st, spec, args, kwargs, step)
        try:
            coro = cast(Awaitable[Any], spec.fn(*args, **kwargs))
            result = await (coro if timeout is None else asyncio.wait_for(coro, timeout))
        except asyncio.TimeoutError as exc:
            _failed(st, step, token, exc)
            if timeout is not None and (time.perf_counter_ns() - step.t0) / 1e9 >= timeout:
                st.trip("tool_timeout", f"{spec.name} ran longer than tool_timeout_s={timeout}")
            raise
        except BaseException as exc:
            _failed(st, step, token, exc)
            raise
        step_var.reset(token)
        return _returned(st, step, result)


def _begin(
    st: RunState, spec: ToolSpec, args: Args, kwargs: Kwargs, step: Step | None
) -> tuple[Step, contextvars.Token[int | None], float | None]:
    """Before the real function runs: the step entered (unless it was), made the current step,
    and its deadline (the tool's own ``timeout_s``, else the run's ``tool_timeout_s``)."""
    if step is None:
        step = st.enter(spec, args, kwargs)
    return step, step_var.set(step.step_id), spec.timeout_s or st.guards.tool_timeout_s


def _failed(
    st: RunState, step: Step, token: contextvars.Token[int | None], exc: BaseException
) -> None:
    """The real function raised `exc`: no longer the current step, recorded as an error step."""
    step_var.reset(token)
    st.finish_error(step, exc)


def _returned(st: RunState, step: Step, result: Any) -> Any:
    """The real function returned `result`: recorded, a model's spend checked, handed back."""
    st.finish_ok(step, result)
    if step.spec.kind == "model_result":
        st.check_budget()
    return result


#: The live layer every recorded run uses (it holds no state).
LIVE = LiveLayer()


def _timed_out(st: RunState, step: Step, timeout: float | None) -> NoReturn:
    """Record the call as a TimeoutError step and end the run with ``tool_timeout``."""
    err = TimeoutError(f"{step.spec.name} ran longer than tool_timeout_s={timeout}")
    st.finish_error(step, err)
    st.trip("tool_timeout", str(err))


def call_with_timeout(
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
        raise ToolTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
