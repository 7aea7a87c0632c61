"""`RunHandle`: one run as a context manager (``with rec.run(...)``; the agent decorator uses it),
and the glue that records an ``http=True`` run's HTTP traffic (`replay.http`)."""

from __future__ import annotations

import contextvars
import dataclasses
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

from replay.binding import type_name
from replay.context import run_var
from replay.hashing import freeze_lenient
from replay.lifecycle import scrub
from replay.models import validate_stop_reason
from replay.writer import RecordingLossWarning

if TYPE_CHECKING:
    from replay.recorder import Recorder
    from replay.run_state import RunState

__all__ = ["RunHandle", "http_options"]


@dataclasses.dataclass(eq=False, repr=False)  # compared and shown by identity, like any handle
class RunHandle:
    """One run as a context manager; ``with rec.run(...) as run`` gives this object."""

    recorder: Recorder
    agent: str
    input: tuple[str, Any]
    versions: dict[str, str] | None
    labels: dict[str, str] | None
    entrypoint: str | None
    guards: dict[str, Any]
    http: Any = None  # replay.http.HttpOptions (True: the defaults), or None: no HTTP recorded
    state: RunState | None = dataclasses.field(default=None, init=False)
    _token: contextvars.Token[RunState | None] | None = dataclasses.field(default=None, init=False)
    #: the run's replay.http.HttpRecording while it runs
    _http: Any = dataclasses.field(default=None, init=False)

    @property
    def run_id(self) -> str:
        assert self.state is not None, "the run has not started: use it inside `with`"
        return self.state.run_id

    def set_output(self, value: Any) -> None:
        """Record `value` as the run's output (the decorator does this with the return value)."""
        assert self.state is not None
        frozen, problem = freeze_lenient(value, "output")
        if problem:
            self.recorder.warn_encode(f"the output of agent {self.agent!r}", problem)
        self.state.output = frozen
        self.state.output_type = type_name(value)

    def stop(self, reason: str) -> None:
        """End this run with `reason` when the block exits."""
        assert self.state is not None
        self.state.stop_reason = validate_stop_reason(reason)

    def __enter__(self) -> RunHandle:
        self.state = self.recorder.begin(self)
        self._token = run_var.set(self.state)
        # HTTP layer: per run, only with http=True, never during a replay (the session plays HTTP
        # back).
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
            run_var.reset(self._token)
        except ValueError:  # exited in another context (a generator finalised elsewhere)
            run_var.set(None)
        self.recorder.end(st, self.recorder.stop_reason_for(st, exc), exc)
        self.recorder.note_last(st.run_id)
        return False

    async def __aenter__(self) -> RunHandle:
        return self.__enter__()

    async def __aexit__(self, et: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        return self.__exit__(et, exc, tb)


def http_options(http: Any, http_match: Sequence[str] | None) -> Any:
    """`replay.http.HttpOptions` for ``http=`` / ``http_match=``, None when HTTP is not recorded."""
    if not http and http_match is None:
        return None
    from replay.http import HttpOptions

    return HttpOptions.of(http, http_match)


def _start_http(st: RunState, options: Any = None) -> Any:
    """Start the run's HTTP capture; on failure warn and record the run without HTTP (fail-open)."""
    try:
        from replay.http import HttpOptions, HttpRecording

        return HttpRecording(
            st.run_id, options if isinstance(options, HttpOptions) else None
        ).start()
    except Exception as exc:  # noqa: BLE001 - recording must never break the agent
        st.recorder.warn_encode(
            f"the HTTP traffic of run {st.run_id}", f"vcrpy could not start ({exc!r})"
        )
        return None


def _stop_http(capture: Any) -> list[Any] | None:
    try:
        return cast(list[Any], capture.stop())
    except Exception as exc:  # noqa: BLE001 - recording must never break the agent
        warnings.warn(
            scrub(f"agent-replay lost a run's HTTP interactions: {exc!r}"),
            RecordingLossWarning,
            stacklevel=3,
        )
        return None
