"""The current run travels in a contextvar.

asyncio tasks copy the context when they are created, so a run follows its tasks automatically.
Threads do not: wrap the callable with `propagate` before handing it to a thread or an executor.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from replay.replay_layer import ReplaySession
    from replay.run_state import RunState

__all__ = ["current_run_id", "propagate", "run_var", "session_var", "step_var", "stop"]

T = TypeVar("T")

#: The run the code executes in (its `RunState`), None outside any run.
run_var: contextvars.ContextVar[RunState | None] = contextvars.ContextVar(
    "replay_run", default=None
)
# The tool step being executed, so a tool called from inside another tool records its parent.
step_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("replay_step", default=None)
# Set while replay_run() drives an agent: tools answer from the recording, writes go to its store.
session_var: contextvars.ContextVar[ReplaySession | None] = contextvars.ContextVar(
    "replay_session", default=None
)


def current_run_id() -> str | None:
    """The id of the run this code executes in, or None outside any run."""
    st = run_var.get()
    return None if st is None else st.run_id


def stop(reason: str) -> None:
    """End the current run with `reason` (e.g. ``"budget_exceeded"``) when the agent returns.

    Raises:
        InvalidStopReasonError: the reason is neither in the taxonomy nor a lowercase name.
        RuntimeError: called outside any run.
    """
    from replay.models import validate_stop_reason

    validate_stop_reason(reason)
    st = run_var.get()
    if st is None:
        raise RuntimeError(
            f"replay.stop({reason!r}) was called outside any run: call it inside a function "
            "decorated with @rec.agent or inside `with rec.run(...)`"
        )
    st.stop_reason = reason


def propagate(fn: Callable[..., T]) -> Callable[..., T]:
    """Return `fn` bound to the current context, so a thread or executor runs it inside this run.

    Example::

        pool.submit(replay.propagate(fetch), url)
        threading.Thread(target=replay.propagate(work)).start()
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> T:
        # A copy per call: one Context cannot be entered by two threads at once.
        return ctx.copy().run(fn, *args, **kwargs)

    return bound
