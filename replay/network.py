"""Block outgoing connections while a replay runs: nothing real is ever called."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["NetworkBlockedError", "block_network"]


class NetworkBlockedError(ConnectionRefusedError):
    """A connection attempted during a replay. HTTP clients see a refused connection."""


_lock = threading.Lock()
_depth = 0
_saved: dict[str, Any] = {}


def _refuse(*args: Any, **kwargs: Any) -> Any:
    target = args[1] if len(args) > 1 else kwargs.get("address", args[0] if args else "?")
    raise NetworkBlockedError(
        f"agent-replay blocked a connection to {target!r} during a replay: nothing real is called "
        "in a replay. Decorate the code that makes this call with @rec.tool, or answer it with stubs=."
    )


@contextlib.contextmanager
def block_network() -> Iterator[None]:
    """Refuse every socket connection in this process until the block exits (re-entrant)."""
    global _depth
    with _lock:
        if _depth == 0:
            _saved["connect"] = socket.socket.connect
            _saved["connect_ex"] = socket.socket.connect_ex
            _saved["create_connection"] = socket.create_connection
            socket.socket.connect = _refuse  # type: ignore[method-assign]
            socket.socket.connect_ex = _refuse  # type: ignore[method-assign]
            socket.create_connection = _refuse  # type: ignore[assignment]
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                socket.socket.connect = _saved["connect"]  # type: ignore[method-assign]
                socket.socket.connect_ex = _saved["connect_ex"]  # type: ignore[method-assign]
                socket.create_connection = _saved["create_connection"]  # type: ignore[assignment]
