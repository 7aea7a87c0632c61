"""The modules of `replay/` and `pytest_plugin/` import each other without a cycle.

Every import counts, also one inside a function (an in-function import is how a cycle hides) and
``importlib.import_module("literal")``; only imports under ``if TYPE_CHECKING:`` are left out:
they never run, they name types for annotations.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("replay", "pytest_plugin")

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first import}


def _modules(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def _imported_names(module: str, is_package: bool, node: ast.AST) -> Iterator[str]:
    """The dotted names an import node (or an import_module call) may refer to."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + [node.module] if node.module else base)
        if not node.level:
            prefix = node.module or ""
        for alias in node.names:
            yield f"{prefix}.{alias.name}"  # `from pkg import module`
            yield prefix
    elif (
        isinstance(node, ast.Call)
        and ast.unparse(node.func).endswith("import_module")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        yield node.args[0].value


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph(root: Path) -> Graph:
    """Which project module imports which, from the source of every module (nothing is run)."""
    modules = _modules(root)
    graph: Graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_nodes(tree)
        deps: dict[str, int] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            for name in _imported_names(module, path.name == "__init__.py", node):
                target = _resolve(name, modules)
                # A package's __init__ is imported with each of its modules: not an edge back.
                if target and target != module and not module.startswith(target + "."):
                    deps.setdefault(target, getattr(node, "lineno", 0))
        graph[module] = deps
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _describe(cycle: list[str], graph: Graph) -> str:
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        + f" -> {cycle[-1]}"
    )


def test_replay_and_the_plugin_have_no_import_cycle() -> None:
    """No module of replay/ or pytest_plugin/ reaches itself through imports (in functions too)."""
    graph = import_graph(ROOT)
    assert "replay.cli" in graph and "pytest_plugin.plugin" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + _describe(cycle, graph)


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        (
            {
                "a.py": "def f():\n    from replay import b\n",
                "b.py": "from replay.a import f\n",
            },
            ["replay.a", "replay.b", "replay.a"],
        ),
        (
            {
                "a.py": "import importlib\nimportlib.import_module('replay.b')\n",
                "b.py": "from replay import a\n",
            },
            ["replay.a", "replay.b", "replay.a"],
        ),
        (
            {
                "a.py": "import typing\nif typing.TYPE_CHECKING:\n    import replay.b\n",
                "b.py": "import replay.a\n",
            },
            None,
        ),
    ],
)
def test_the_check_sees_cycles_hidden_in_functions_and_ignores_type_checking(
    tmp_path: Path, files: dict[str, str], cycle: list[str] | None
) -> None:
    """A cycle through an in-function import or import_module is found; TYPE_CHECKING is no edge."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / "replay" / name).write_text(text)
    assert find_cycle(import_graph(tmp_path)) == cycle
