"""Which function a replay may call: the registry of agents and the trust rules around it.

A cassette or a store is data, never code. Replay calls only an *agent the project registered*:
a function decorated with ``@rec.agent(NAME)`` (or registered with `register_agent`) whose NAME
equals the recording's agent name. It is looked up, in order:

1. among the agents already registered in this process (code the project itself imported);
2. in the modules the project names: ``[tool.agent-replay] agents = [...]`` in the nearest
   ``pyproject.toml`` above the project folder, the pytest ini option ``replay_agents``, and
   ``--replay-agent MODULE[:FN]`` (pytest and ``replay run``);
3. at the recorded entrypoint's module, only when that module lies inside the project folder
   (never the standard library or an installed package) *and* inside a package the project
   named in 2. A module is never imported only because a recording names it: importing runs the
   module's top-level code, so a cassette in a pull request could otherwise run any project file
   with side effects (a script, ``setup.py``).

``agent=`` in Python (and ``--agent MODULE:FN`` on ``replay run``, ``agent=`` on the marker) names
the function directly; it is the caller's code, so a plain function is accepted too, but a
registered agent of another name is refused.

Every refusal is an `EntrypointError` naming the agent the recording needs and the ways to
register it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import inspect
import os
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from replay.errors import EntrypointError

__all__ = [
    "configured_agents",
    "find_project_config",
    "register_agent",
    "registered_agents",
    "resolve_agent",
]

_lock = threading.Lock()
# agent name -> entrypoint -> function. Several entries per name are normal (an agent moved
# between modules, test modules written again); only the live ones count (see `_live`).
_registry: dict[str, dict[str, Callable[..., Any]]] = {}

#: The attribute a registered function carries: its agent name.
AGENT_ATTR = "__replay_agent_name__"


def register_agent(
    name: str, fn: Callable[..., Any], *, entrypoint: str | None = None
) -> Callable[..., Any]:
    """Register `fn` as the function replay calls for recorded runs of agent `name`; returns `fn`.

    ``@rec.agent`` does this itself. Call it for code recorded with ``rec.run(name, ...)``, so a
    replay can call ``fn(input)``.

    Raises:
        TypeError: `fn` is not callable or `name` is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"register_agent: the agent name must be a non-empty string, got {type(name).__name__}"
        )
    if not callable(fn):
        raise TypeError(
            f"register_agent({name!r}, ...): expected a function, got {type(fn).__name__}"
        )
    entry = entrypoint or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}"
    with _lock:
        _registry.setdefault(name, {})[entry] = fn
    try:
        setattr(fn, AGENT_ATTR, name)
    except (AttributeError, TypeError):  # a builtin or a bound method: the registry still holds it
        pass
    return fn


def _live(fn: Callable[..., Any]) -> bool:
    """Still the function its module holds (a module written again and re-imported replaces it)."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    qualname = getattr(fn, "__qualname__", "") or ""
    if module is None:
        return False
    if "<locals>" in qualname:
        return True  # cannot be looked up again; it was registered by code that ran
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return obj is fn or getattr(obj, "__func__", None) is fn


def registered_agents(name: str) -> list[tuple[str, Callable[..., Any]]]:
    """The live ``(entrypoint, function)`` pairs registered under `name`, oldest first."""
    with _lock:
        entries = list(_registry.get(name, {}).items())
    return [(entry, fn) for entry, fn in entries if _live(fn)]


def _all_names() -> list[str]:
    with _lock:
        names = list(_registry)
    return sorted(n for n in names if registered_agents(n))


# ---- the project's configuration ---------------------------------------------------------------


def find_project_config(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` at or above `start` (default: the working folder)."""
    folder = Path(start if start is not None else os.getcwd()).resolve()
    for d in (folder, *folder.parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def configured_agents(start: str | os.PathLike[str] | None = None) -> tuple[list[str], Path | None]:
    """``[tool.agent-replay] agents`` of the nearest pyproject.toml: (module names, that file).

    Raises:
        EntrypointError: the file is not valid TOML or ``agents`` is not a list of module names.
    """
    path = find_project_config(start)
    if path is None:
        return [], None
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
        import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EntrypointError(f"{path}: cannot be read as TOML ({exc}): fix the file") from None
    table = data.get("tool", {}).get("agent-replay", {})
    agents = table.get("agents", []) if isinstance(table, dict) else []
    if not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents):
        raise EntrypointError(
            f"{path}: [tool.agent-replay] agents must be a list of module names, e.g. agents = "
            f'["app.agent"]'
        )
    return list(agents), path.parent


# ---- where a module lives, without importing it --------------------------------------------------


def _installed_roots() -> list[Path]:
    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            roots.add(Path(p).resolve())
    try:
        import site

        roots.update(Path(p).resolve() for p in site.getsitepackages())
        roots.add(Path(site.getusersitepackages()).resolve())
    except Exception:  # noqa: BLE001 - some embedded interpreters have no site paths
        pass
    return sorted(roots)


def module_origin(module: str) -> Path | None:
    """The file `module` would be loaded from, found without running any of its code (or its
    parents').

    None for a builtin, frozen or missing module.
    """
    parts = module.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    path: list[str] | None = None
    spec = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        if i < len(parts) - 1:
            if spec.submodule_search_locations is None:
                return None
            path = list(spec.submodule_search_locations)
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    return Path(spec.origin).resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def is_project_module(module: str, project: Path) -> tuple[bool, str]:
    """(True, "") when `module`'s file lies inside `project` and not in an installed location."""
    if module in sys.builtin_module_names:
        return False, "it is a built-in module"
    origin = module_origin(module)
    if origin is None:
        return False, "no file of the project defines it"
    for root in _installed_roots():
        if _inside(origin, root):
            return False, "it is part of the standard library or an installed package"
    if "site-packages" in origin.parts or "dist-packages" in origin.parts:
        return False, "it is part of an installed package"
    if not _inside(origin, project):
        return False, f"it lies outside the project folder {project}"
    return True, ""


# ---- resolution ---------------------------------------------------------------------------------


def _short(value: Any, limit: int = 80) -> str:
    """A recorded string for an error message: repr (escapes control characters), bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _how_to_register(name: str) -> str:
    return (
        f"Register it one of these ways: decorate the function with @rec.agent({name!r}) (or, for "
        f"code "
        f"recorded with rec.run(), call replay.register_agent({name!r}, fn)) in a module the "
        'project names, listed in pyproject.toml ([tool.agent-replay] agents = ["your.module"]) or '
        "in the pytest ini option replay_agents; or pass --replay-agent your.module:handle "
        "(pytest and `replay run`); or call replay_run(..., agent=handle) in Python."
    )


def _import_user(module: str, where: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure, named with its cause
        raise EntrypointError(
            f"{where}: module {module!r} cannot be imported ({type(exc).__name__}: {exc}); "
            "run from the project root or fix the import."
        ) from exc


def _ensure_on_path(folder: Path | None) -> None:
    if folder is not None and str(folder) not in sys.path:
        sys.path.append(str(folder))


def load_named(refs: Iterable[str], *, where: str = "--replay-agent") -> None:
    """Import the modules the project names (``MODULE`` or ``MODULE:FN``); checks that FN is an
    agent.

    Raises:
        EntrypointError: a module cannot be imported, FN is missing or not a registered agent.
    """
    for ref in refs:
        module, _, fn_name = ref.partition(":")
        if not module:
            raise EntrypointError(
                f"{where} {ref!r}: expected MODULE or MODULE:FUNCTION (e.g. app.agent:handle)"
            )
        mod = _import_user(module, f"{where} {ref}")
        if not fn_name:
            continue
        obj: Any = mod
        for part in fn_name.split("."):
            if not hasattr(obj, part):
                raise EntrypointError(f"{where} {ref}: {module} has no attribute {part!r}")
            obj = getattr(obj, part)
        if getattr(obj, AGENT_ATTR, None) is None:
            raise EntrypointError(
                f"{where} {ref}: {fn_name} is not an agent: decorate it with @rec.agent(NAME), "
                "or register it with replay.register_agent(NAME, fn)"
            )


def _pick(name: str, entrypoint: str | None) -> Callable[..., Any] | None:
    found = registered_agents(name)
    for entry, fn in found[::-1]:  # the newest registration of that entrypoint
        if entry == entrypoint:
            return fn
    return None


def resolve_agent(
    agent_name: str,
    entrypoint: str | None,
    *,
    agents: Sequence[str] = (),
    project: str | os.PathLike[str] | None = None,
    run_id: str = "?",
) -> Callable[..., Any]:
    """The registered function to call for a recorded run of `agent_name` (see the module
    docstring).

    Args:
        agent_name: the recording's agent name.
        entrypoint: the recording's ``module:qualname``: picks among several agents of that name,
            and may be imported under the rules above.
        agents: ``MODULE`` or ``MODULE:FN`` the project names (``--replay-agent``, ini
            ``replay_agents``).
        project: the project folder (default: the working folder); its nearest pyproject.toml is
            read.

    Raises:
        EntrypointError: no agent of that name is registered, or several are and the entrypoint
            does not say which; the message says how to register one.
    """
    fn = _pick(agent_name, entrypoint)
    if fn is not None:
        return fn
    root = Path(project if project is not None else os.getcwd()).resolve()
    listed, config_dir = configured_agents(root)
    _ensure_on_path(config_dir)
    _ensure_on_path(root)
    load_named(agents, where="--replay-agent")
    load_named(
        listed,
        where=f"{config_dir / 'pyproject.toml' if config_dir else 'pyproject.toml'} "
        f"[tool.agent-replay] agents",
    )
    fn = _pick(agent_name, entrypoint)
    if fn is not None:
        return fn
    why = _entrypoint_refusal(entrypoint, root, [r.partition(":")[0] for r in (*agents, *listed)])
    if why is None:  # the recorded module is part of a package the project named: import it
        assert entrypoint is not None
        module = entrypoint.partition(":")[0]
        _import_user(module, f"entrypoint {entrypoint}")
        fn = _pick(agent_name, entrypoint)
        if fn is not None:
            return fn
        why = f"{_short(entrypoint)} is not a function registered as agent {_short(agent_name)}"
    named = [r.partition(":")[0] for r in (*agents, *listed)]
    return _only_agent_of_project(agent_name, entrypoint, root, named, run_id, why)


def _only_agent_of_project(
    agent_name: str, entrypoint: str | None, root: Path, named: list[str], run_id: str, why: str
) -> Callable[..., Any]:
    """The one agent of that name this project registers (moved or renamed since the recording).

    Raises:
        EntrypointError: several functions of the project are registered under that name, or none
            is (`why` says why the recorded entrypoint was not imported).
    """
    live = [(e, f) for e, f in registered_agents(agent_name) if _of_project(f, root, named)]
    functions = {id(f): (e, f) for e, f in live}
    if len(functions) == 1:
        return next(iter(functions.values()))[1]
    if len(functions) > 1:
        entries = ", ".join(sorted(e for e, _ in functions.values()))
        raise EntrypointError(
            f"cannot replay run {run_id}: agent {_short(agent_name)} is registered by several "
            f"functions "
            f"({entries}) and the recorded entrypoint {_short(entrypoint)} is none of them: "
            "pass --replay-agent MODULE:FN (pytest, `replay run`) or agent= (Python) to choose one"
        )
    others = _all_names()
    known = (
        f" (registered agents: {', '.join(map(_short, others))})"
        if others
        else " (no agent is registered)"
    )
    raise EntrypointError(
        f"cannot replay run {run_id}: it needs agent {_short(agent_name)}, and no function is "
        f"registered "
        f"under that name{known}; the recorded entrypoint {_short(entrypoint)} is not imported: "
        f"{why}. " + _how_to_register(agent_name)
    )


def _of_project(fn: Callable[..., Any], project: Path, named: list[str]) -> bool:
    """A registered agent of this project: in a module it names, or defined in a file inside its
    folder.
    """
    module = getattr(fn, "__module__", "") or ""
    if any(module == n or module.startswith(n + ".") for n in named):
        return True
    try:
        source = inspect.getsourcefile(inspect.unwrap(fn))
    except TypeError:
        return False
    if not source:
        return False
    path = Path(source).resolve()
    return _inside(path, project) and not any(_inside(path, r) for r in _installed_roots())


def _entrypoint_refusal(entrypoint: str | None, project: Path, named: list[str]) -> str | None:
    """Why the recorded entrypoint's module may not be imported, or None when it may."""
    if not entrypoint:
        return "the run has no recorded entrypoint (recorded with rec.run())"
    module, sep, qualname = entrypoint.partition(":")
    if (
        not sep
        or not module
        or not qualname
        or not all(p.isidentifier() for p in module.split("."))
    ):
        return "it is not of the form module:function"
    if module in sys.modules:
        return "its module is loaded but holds no agent registered under that name"
    ok, reason = is_project_module(module, project)
    if not ok:
        return reason
    if not any(module == n or module.startswith(n + ".") for n in named):
        return (
            "agent-replay never imports a module only because a recording names it (importing runs "
            "the module's code); the project does not list it"
        )
    return None


def check_explicit(
    fn: Callable[..., Any], agent_name: str, run_id: str = "?"
) -> Callable[..., Any]:
    """An agent the caller chose (``agent=``): a registered agent must carry the recording's name.

    Raises:
        EntrypointError: `fn` is registered as another agent.
    """
    registered_as = getattr(fn, AGENT_ATTR, None)
    if registered_as is not None and registered_as != agent_name:
        raise EntrypointError(
            f"cannot replay run {run_id}: it is a run of agent {_short(agent_name)}, but "
            f"{getattr(fn, '__qualname__', 'the function')} is registered as agent "
            f"{_short(registered_as)}: "
            "pass the agent of that name, or a plain function that wraps yours"
        )
    return fn


def script_module(
    fn: Callable[..., Any], project: str | os.PathLike[str] | None = None
) -> str | None:
    """The module name a ``__main__`` script's function has when imported from the project folder.

    ``python my_agent.py`` runs the file as ``__main__``; replay imports it as ``my_agent``. None
    when the script is outside the project folder or its path is not a module name.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or inspect.getsourcefile(fn)
    if not path:
        return None
    root = Path(project if project is not None else os.getcwd()).resolve()
    try:
        rel = Path(path).resolve().relative_to(root)
    except ValueError:
        return None
    if rel.suffix != ".py":
        return None
    parts = list(rel.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)
