"""Binding a tool call's arguments and naming what it raised, at decoration and call time.

`ToolSpec` is a decorated tool or model (its name, kind, parameters, timeout, prices, ignored
args); the helpers name errors (``httpx.HTTPStatusError[429]``), count the tool calls a model
response announces, and give an agent defined in a script an entrypoint a replay can import.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from replay.fidelity import capture_error
from replay.hashing import TEXT_ERRORS, freeze_lenient, type_tag

__all__ = [
    "ToolSpec",
    "check_name",
    "error_detail",
    "error_names",
    "safe_name",
    "script_entrypoint",
    "tool_calls_in",
    "type_name",
]


def check_name(name: Any, what: str) -> str:
    """A tool, model or agent name given to a decorator: text SQLite can store, checked at import
    time."""
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{what} name {name!r}: give a non-empty string, e.g. @rec.{what}('http.get')"
        )
    if name != safe_name(name):
        raise ValueError(
            f"{what} name {ascii(name)}: remove the NUL character or lone surrogate from it"
        )
    return name


def safe_name(name: Any) -> str:
    """`name` with NUL and lone surrogates replaced by U+FFFD: a run never fails over its name."""
    text = str(name)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", TEXT_ERRORS).decode("utf-8")
    return text


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
    """`bound` without the ignored fields; dicts on the way are copied, the agent's own are
    untouched."""
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


class ToolSpec:
    """A decorated tool or model: what a call's step is recorded under and how its args bind."""

    __slots__ = (
        "fn",
        "name",
        "kind",
        "skip_first",
        "params",
        "positional",
        "var_positional",
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
        self.name = check_name(name, "tool" if kind == "tool_result" else "model")
        self.kind = kind
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        # A method decorated in its class body receives self/cls first; it is not part of the args.
        self.skip_first = bool(params) and params[0].name in ("self", "cls")
        self.params = params[1:] if self.skip_first else params
        # What `bind` needs, read once: Parameter.kind is a property (a Python call per read).
        self.positional = tuple(
            p.name for p in self.params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        self.var_positional = next(
            (p.name for p in self.params if p.kind == p.VAR_POSITIONAL), "*args"
        )
        self.timeout_s = timeout_s
        self.price_in = price_in
        self.price_out = price_out

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name (what args_sha hashes), self excluded.

        Positionals bind to their parameters in order; the rest go to the ``*args`` parameter
        under its name (to ``"*args"`` when there is none: kept rather than lost); then keywords.
        """
        if self.skip_first:
            args = args[1:]
        names = self.positional
        out: dict[str, Any] = dict(zip(names, args, strict=False))
        if len(args) > len(names):
            out[self.var_positional] = list(args[len(names) :])
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


def error_names(exc: BaseException) -> tuple[str, str, str]:
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


def tool_calls_in(response: Any) -> int:
    """How many tool calls one model response asks for: OpenAI (``choices[0].message.tool_calls``),
    Anthropic (``tool_use`` content blocks) and pydantic-ai (``tool-call`` parts), dicts or objects.

    The calls one response issues are one concurrent group, even when they happen to run one after
    another (a framework may run them in worker threads in any order). 0 when nothing is found.
    """
    if type(response) is dict and type(choices := response.get("choices")) is list and choices:
        # An OpenAI-shaped dict (most recorded answers): no partial, no isinstance chain.
        msg = choices[0].get("message") if type(choices[0]) is dict else None
        if type(msg) is dict:
            calls = msg.get("tool_calls")
            return len(calls) if isinstance(calls, (list, tuple)) else 0
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


def type_name(value: Any) -> str | None:
    """The value's type tag tree (`replay.hashing.type_tag`): what replay rebuilds it as."""
    return type_tag(value)


def error_detail(exc: BaseException) -> bytes | None:
    """The exception's args and public attributes, frozen (`replay.fidelity.capture_error`).

    Taken on the agent's path only when a tool raised; never raises.
    """
    try:
        frozen, _ = freeze_lenient(capture_error(exc))
        return frozen
    except Exception:  # noqa: BLE001 - recording never breaks the agent: replay falls back to the message
        return None


_warned_scripts: set[str] = set()


def script_entrypoint(fn: Callable[..., Any], agent_name: str) -> str:
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
            f"it is recorded as {entry}; for a replay to import it, list {module!r} in "
            "pyproject.toml "
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
