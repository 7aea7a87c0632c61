"""A sealed replay: nothing real is reached while a replay runs.

During a replay (see `sealed`) this process refuses:

* sockets: ``socket.socket.connect`` / ``connect_ex`` (TCP, and UDP "connect"), ``sendto`` and
  ``sendmsg`` to an address (UDP), ``socket.create_connection``;
* DNS: ``socket.getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``, ``gethostbyaddr``,
  ``getnameinfo`` (asyncio's resolver calls ``getaddrinfo`` too);
* processes: every ``subprocess.Popen`` (so ``run``, ``call``, ``check_output`` and asyncio's
  subprocesses), ``os.system``, ``os.popen``, the ``os.exec*``, ``os.spawn*`` and
  ``os.posix_spawn*`` families.

The error names what was tried: the address as ``host:port`` or the program's name (never the
whole command line, which may hold secrets). The HTTP layer's playback (vcrpy) answers requests
without opening a socket, so it works while sockets are sealed.

What cannot be sealed in-process: code that reaches the OS without these Python functions (ctypes,
C extensions with their own sockets, ``_socket`` or ``_posixsubprocess`` called directly, file
descriptors opened before the replay, names bound by ``from os import system`` before the replay
started). The patches are process-wide while a replay runs, as with any socket-blocking tool.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "NetworkBlockedError",
    "SubprocessBlockedError",
    "block_network",
    "block_subprocess",
    "sealed",
]

_HINT = (
    "nothing real is called in a replay. Decorate the code that makes this call with @rec.tool, "
    "answer it with stubs=, or opt out with replay_run(..., {opt}=True)"
)


class NetworkBlockedError(ConnectionRefusedError):
    """A connection or a send attempted during a replay. HTTP clients see a refused connection."""


class DnsBlockedError(NetworkBlockedError, socket.gaierror):
    """A DNS lookup attempted during a replay (also a ``socket.gaierror``, as resolvers expect)."""


class SubprocessBlockedError(PermissionError):
    """A process started during a replay (``subprocess``, ``os.system``, ``os.exec*``,
    ``os.spawn*``).
    """


_lock = threading.RLock()
_depth = {"network": 0, "subprocess": 0}
_MISSING = object()
# key -> (owner, attribute, what the owner's __dict__ held (or _MISSING: inherited), the original
# callable)
_saved: dict[str, tuple[Any, str, Any, Any]] = {}


def _address(addr: Any) -> str:
    """``host:port`` (``[v6]:port``) for an inet address, the path for a Unix socket."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        host = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(addr, (str, bytes)):
        text = addr.decode("utf-8", "replace") if isinstance(addr, bytes) else addr
        return f"unix socket {text!r}"
    return repr(addr)


def _refuse_net(
    what: str, target: str, cls: type[NetworkBlockedError] = NetworkBlockedError
) -> Any:
    raise cls(
        f"agent-replay blocked {what} {target} during a replay: "
        + _HINT.format(opt="allow_network")
    )


def _connect(self: socket.socket, address: Any) -> Any:
    _refuse_net("a connection to", _address(address))


def _create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
    _refuse_net("a connection to", _address(address))


def _sendto(self: socket.socket, data: Any, *args: Any) -> Any:
    # sendto(data, address) or sendto(data, flags, address)
    _refuse_net("a datagram to", _address(args[-1]) if args else "?")


def _sendmsg(
    self: socket.socket, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None
) -> Any:
    if address is None:
        return _saved["sendmsg"][3](self, buffers, ancdata, flags)
    _refuse_net("a datagram to", _address(address))


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    h = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    _refuse_net(
        "a DNS lookup of",
        _address((h, port)) if port not in (None, 0) else repr(h),
        DnsBlockedError,
    )


def _gethostbyname(host: Any, *args: Any) -> Any:
    _refuse_net("a DNS lookup of", repr(host), DnsBlockedError)


def _getnameinfo(sockaddr: Any, *args: Any) -> Any:
    _refuse_net("a reverse DNS lookup of", _address(sockaddr), DnsBlockedError)


def _program(args: Any) -> str:
    """The program's name only: a command line may carry secrets."""
    try:
        if isinstance(args, (str, bytes, os.PathLike)):
            text = os.fsdecode(args)
            first = shlex.split(text)[0] if text.strip() else text
        else:
            first = os.fsdecode(list(args)[0])
    except (ValueError, IndexError, TypeError):
        return "a program"
    return repr(os.path.basename(first) or first)


def _refuse_proc(how: str, program: str) -> Any:
    raise SubprocessBlockedError(
        f"agent-replay blocked {how} of {program} during a replay: "
        + _HINT.format(opt="allow_subprocess")
    )


def _execute_child(self: Any, args: Any, executable: Any, *rest: Any, **kwargs: Any) -> Any:
    _refuse_proc("starting a process (subprocess)", _program(executable or args))


def _os_system(command: Any) -> Any:
    _refuse_proc("os.system", _program(command))


def _os_popen(cmd: Any, *args: Any, **kwargs: Any) -> Any:
    _refuse_proc("os.popen", _program(cmd))


def _os_call(name: str) -> Callable[..., Any]:
    def refuse(path: Any, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("spawn") and isinstance(path, int) and args:  # spawn*(mode, file, ...)
            path = args[0]
        _refuse_proc(f"os.{name}", _program([path]))

    refuse.__name__ = name
    return refuse


_OS_FAMILY = [
    n
    for n in (
        "execl",
        "execle",
        "execlp",
        "execlpe",
        "execv",
        "execve",
        "execvp",
        "execvpe",
        "spawnl",
        "spawnle",
        "spawnlp",
        "spawnlpe",
        "spawnv",
        "spawnve",
        "spawnvp",
        "spawnvpe",
        "posix_spawn",
        "posix_spawnp",
    )
    if hasattr(os, n)
]


def _network_patches() -> list[tuple[str, Any, str, Any]]:
    sock = socket.socket
    return [
        ("connect", sock, "connect", _connect),
        ("connect_ex", sock, "connect_ex", _connect),
        ("sendto", sock, "sendto", _sendto),
        *([("sendmsg", sock, "sendmsg", _sendmsg)] if hasattr(sock, "sendmsg") else []),
        ("create_connection", socket, "create_connection", _create_connection),
        ("getaddrinfo", socket, "getaddrinfo", _getaddrinfo),
        ("gethostbyname", socket, "gethostbyname", _gethostbyname),
        ("gethostbyname_ex", socket, "gethostbyname_ex", _gethostbyname),
        ("gethostbyaddr", socket, "gethostbyaddr", _gethostbyname),
        ("getnameinfo", socket, "getnameinfo", _getnameinfo),
    ]


def _subprocess_patches() -> list[tuple[str, Any, str, Any]]:
    return [
        ("Popen._execute_child", subprocess.Popen, "_execute_child", _execute_child),
        ("os.system", os, "system", _os_system),
        ("os.popen", os, "popen", _os_popen),
        *[(f"os.{n}", os, n, _os_call(n)) for n in _OS_FAMILY],
    ]


@contextlib.contextmanager
def _patched(kind: str, patches: Callable[[], list[tuple[str, Any, str, Any]]]) -> Iterator[None]:
    with _lock:
        if _depth[kind] == 0:
            for key, owner, attr, replacement in patches():
                own = (
                    owner.__dict__.get(attr, _MISSING)
                    if isinstance(owner, type)
                    else getattr(owner, attr)
                )
                _saved[key] = (owner, attr, own, getattr(owner, attr))
                setattr(owner, attr, replacement)
        _depth[kind] += 1
    try:
        yield
    finally:
        with _lock:
            _depth[kind] -= 1
            if _depth[kind] == 0:
                for key, _owner, _attr, _r in patches():
                    owner, attr, own, _original = _saved.pop(key)
                    if own is _MISSING:
                        delattr(owner, attr)  # inherited from the C base class: inherit it again
                    else:
                        setattr(owner, attr, own)


def block_network() -> contextlib.AbstractContextManager[None]:
    """Refuse sockets (connect, sendto, create_connection) and DNS in this process until the block
    exits.

    Re-entrant: nested blocks restore the originals when the outermost one exits.
    """
    return _patched("network", _network_patches)


def block_subprocess() -> contextlib.AbstractContextManager[None]:
    """Refuse starting processes (subprocess, os.system, os.popen, os.exec*/spawn*) until the block
    exits.
    """
    return _patched("subprocess", _subprocess_patches)


@contextlib.contextmanager
def sealed(*, allow_network: bool = False, allow_subprocess: bool = False) -> Iterator[None]:
    """The seal of a replay: network and processes blocked, unless a test opts out of one."""
    with contextlib.ExitStack() as stack:
        if not allow_network:
            stack.enter_context(block_network())
        if not allow_subprocess:
            stack.enter_context(block_subprocess())
        yield
