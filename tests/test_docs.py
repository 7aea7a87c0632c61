"""Docs that cannot drift: the README's CLI reference against the real command tree and plugin
options, the module map against the package, and the console examples against a real run.

In the spirit of sqlite-utils' tests/test_docs.py. Each failure names what is missing and where
to add it. The console examples are written by ``python docs/regen.py`` (see its docstring).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from replay.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WALKTHROUGH = ROOT / "examples" / "support_agent" / "WALKTHROUGH.md"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
CLI_SECTION = "## CLI reference"
PLUGIN_PART = (
    "**pytest plugin**"  # the CLI reference's second part: the pytest flags and ini options
)

FLAG = re.compile(r"(?<![\w/-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")
VERB = re.compile(r"\breplay ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)*)")


# -- the command tree ---------------------------------------------------------------------------


def commands(
    group: click.Command = cli, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], click.Command]:
    """Every visible command under the group, by its path of names (groups included)."""
    found: dict[tuple[str, ...], click.Command] = {}
    if isinstance(group, click.Group):
        for name, cmd in group.commands.items():
            if getattr(cmd, "hidden", False):
                continue
            found[path + (name,)] = cmd
            found.update(commands(cmd, path + (name,)))
    return found


def options(cmd: click.Command) -> list[list[str]]:
    """The visible options of a command, each as its list of spellings (``-o``, ``--out``)."""
    return [
        p.opts + p.secondary_opts
        for p in cmd.params
        if isinstance(p, click.Option) and not p.hidden
    ]


def _verb_at(
    text: str, pos: int, verbs: set[tuple[str, ...]]
) -> tuple[tuple[str, ...] | None, int]:
    m = VERB.match(text, pos)
    if not m:
        return None, pos
    words = m.group(1).split()
    for n in range(len(words), 0, -1):
        if tuple(words[:n]) in verbs:
            return tuple(words[:n]), pos + len("replay ") + len(" ".join(words[:n]))
    return None, pos


def section(text: str, heading: str) -> str:
    """The body of a ``## `` section of a Markdown file, up to the next ``## `` heading."""
    start = text.index(heading + "\n")
    nxt = text.find("\n## ", start + len(heading))
    return text[start : nxt if nxt >= 0 else len(text)]


def blocks(body: str) -> list[str]:
    """Table rows one by one, other text by paragraph: the unit a flag is read in."""
    out: list[str] = []
    para: list[str] = []
    for line in body.splitlines():
        if line.startswith("|"):
            if para:
                out.append("\n".join(para))
                para = []
            out.append(line)
        elif not line.strip():
            if para:
                out.append("\n".join(para))
                para = []
        else:
            para.append(line)
    if para:
        out.append("\n".join(para))
    return out


def documented_flags(
    body: str, verbs: set[tuple[str, ...]]
) -> tuple[dict[tuple[str, ...], set[str]], set[str]]:
    """Flags the CLI reference names, per verb, plus the common ones named before any verb.

    In a table row or a paragraph, a flag belongs to the last ``replay VERB`` named before it;
    flags before any verb (the section's opening sentence) are common to every verb that has them.
    """
    per_verb: dict[tuple[str, ...], set[str]] = {}
    common: set[str] = set()
    for block in blocks(body):
        current = None
        pos = 0
        while pos < len(block):
            verb, end = _verb_at(block, pos, verbs)
            if verb is not None and (pos == 0 or not block[pos - 1].isalnum()):
                current = verb
                per_verb.setdefault(verb, set())
                pos = end
                continue
            m = FLAG.match(block, pos)
            if m and (pos == 0 or not (block[pos - 1].isalnum() or block[pos - 1] in "-/_")):
                (per_verb[current] if current else common).add(m.group(1))
                pos = m.end()
                continue
            pos += 1
    return per_verb, common


def cli_reference() -> str:
    """The `replay` part of the README's CLI reference (before its pytest plugin part)."""
    body = section(README.read_text(encoding="utf-8"), CLI_SECTION)
    assert PLUGIN_PART in body, (
        f"README.md, section '{CLI_SECTION}', has no part starting with {PLUGIN_PART}"
    )
    return body.split(PLUGIN_PART)[0]


def plugin_reference() -> str:
    """The pytest plugin part of the README's CLI reference."""
    return section(README.read_text(encoding="utf-8"), CLI_SECTION).split(PLUGIN_PART, 1)[1]


# -- the CLI ------------------------------------------------------------------------------------


def test_every_cli_verb_and_flag_is_in_the_readme_cli_reference():
    """Each `replay` command and each of its --help flags is named in the README's CLI reference."""
    tree = commands()
    per_verb, common = documented_flags(cli_reference(), set(tree))
    missing = []
    for path, cmd in sorted(tree.items()):
        name = "replay " + " ".join(path)
        if path not in per_verb:
            missing.append(
                f"verb `{name}`: add a row `| `{name} ...` | what it does |` to the table"
            )
            continue
        for spellings in options(cmd):
            if not (set(spellings) & (per_verb[path] | common)):
                missing.append(
                    f"flag `{spellings[-1]}` of `{name}`: add it to the `{name}` row "
                    f"(or a paragraph under the table that starts with `{name}`)"
                )
    assert not missing, f"README.md, section '{CLI_SECTION}', does not document:\n  " + "\n  ".join(
        missing
    )


def test_every_flag_the_readme_cli_reference_names_exists():
    """Each flag the README's CLI reference gives a `replay` command is accepted by that command."""
    tree = commands()
    per_verb, common = documented_flags(cli_reference(), set(tree))
    wrong = []
    for path, named in sorted(per_verb.items()):
        real = {s for spellings in options(tree[path]) for s in spellings} | {"-h", "--help"}
        for flag in sorted(named - real):
            wrong.append(
                f"`replay {' '.join(path)} {flag}`: no such flag (replay {' '.join(path)} --help)"
            )
    every = {s for cmd in tree.values() for spellings in options(cmd) for s in spellings} | {
        "-h",
        "--help",
    }
    for flag in sorted(common - every):
        wrong.append(f"`{flag}` in the opening sentence: no command has it")
    assert not wrong, (
        f"README.md, section '{CLI_SECTION}', names flags that do not exist:\n  "
        + "\n  ".join(wrong)
    )


def test_every_replay_command_the_docs_name_exists():
    """`replay WORD` at the start of a code span or a console line names a real command."""
    tree = commands()
    first_words = {p[0] for p in tree}
    wrong = []
    for doc in (README, WALKTHROUGH, ARCHITECTURE):
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"(?:`|^\$ |^\s*\$ )replay ([a-z][a-z-]*)", text, re.M):
            if m.group(1) not in first_words:
                line = text.count("\n", 0, m.start()) + 1
                wrong.append(f"{doc.relative_to(ROOT)}:{line}: `replay {m.group(1)}`")
    assert not wrong, "these commands do not exist (replay --help lists them):\n  " + "\n  ".join(
        wrong
    )


def _entry_points() -> list[list[str]]:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    scripts = section(pyproject.replace("\n[", "\n## ["), "## [project.scripts]")
    assert re.findall(r'^(\S+) = "([^"]+)"', scripts, re.M) == [("replay", "replay.cli:cli")], (
        "pyproject.toml [project.scripts] changed: check every script against the README's CLI "
        "reference"
    )
    found = [[sys.executable, "-c", "from replay.cli import cli; cli(prog_name='replay')"]]
    if (ROOT / "replay" / "__main__.py").exists():
        found.append([sys.executable, "-m", "replay"])
    return found


def test_every_entry_point_offers_the_documented_command_tree():
    """The console script (and `python -m replay` when it exists) list the commands the tree walk
    checks."""
    expected = {p[0] for p in commands()}
    for argv in _entry_points():
        out = subprocess.run(
            argv + ["--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert out.returncode == 0, out.stderr
        listed = set(re.findall(r"^  ([a-z][a-z-]*)\s", out.stdout.split("Commands:")[-1], re.M))
        assert listed == expected, (
            f"{' '.join(argv[1:])} --help lists {sorted(listed)}, the tree {sorted(expected)}"
        )


# -- the pytest plugin --------------------------------------------------------------------------


def _plugin_help(pytester: pytest.Pytester) -> tuple[set[str], set[str]]:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    flags = set(re.findall(r"^\s+(--replay[a-z0-9-]*)", text, re.M))
    flags |= set(re.findall(r",\s*(--replay[a-z0-9-]*)", text))
    inis = set(re.findall(r"^\s+(replay_[a-z0-9_]+) \(", text, re.M))
    assert "--replay" in flags and inis, (
        "pytest --help shows no agent-replay options: is the plugin loaded?"
    )
    return flags, inis


def test_every_pytest_option_and_ini_is_in_the_readme_cli_reference(pytester):
    """Each `--replay*` flag and `replay_*` ini option in `pytest --help` is named in the README's
    CLI reference."""
    flags, inis = _plugin_help(pytester)
    body = plugin_reference()
    named_flags = set(FLAG.findall(body))
    named_inis = set(re.findall(r"\breplay_[a-z0-9_]+\b", body))
    missing = [f"pytest flag `{f}`" for f in sorted(flags - named_flags)]
    missing += [f"ini option `{i}`" for i in sorted(inis - named_inis)]
    assert not missing, (
        f"README.md, section '{CLI_SECTION}', part {PLUGIN_PART}, does not document "
        "(add a row `| `FLAG` (ini `NAME`) | what it does |`):\n  " + "\n  ".join(missing)
    )


def test_every_replay_flag_the_docs_name_exists(pytester):
    """Each `--replay-*` flag the README or the walk-through names is a pytest option or a `replay`
    flag."""
    flags, inis = _plugin_help(pytester)
    cli_flags = {s for cmd in commands().values() for spellings in options(cmd) for s in spellings}
    wrong = []
    for doc in (README, WALKTHROUGH):
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"(?<![\w-])(--replay[a-z0-9-]*)", text):
            if m.group(1) not in flags | cli_flags:
                line = text.count("\n", 0, m.start()) + 1
                wrong.append(f"{doc.relative_to(ROOT)}:{line}: `{m.group(1)}`")
    body = plugin_reference()
    for name in sorted(set(re.findall(r"\bini `(replay_[a-z0-9_]+)`", body)) - inis):
        wrong.append(f"README.md CLI reference: ini `{name}`")
    assert not wrong, "these options do not exist (pytest --help lists them):\n  " + "\n  ".join(
        sorted(set(wrong))
    )


# -- the module map -----------------------------------------------------------------------------


def test_the_architecture_map_lists_every_module_and_only_those():
    """docs/ARCHITECTURE.md's module table names every module (and subpackage) of replay/ and none
    that is gone."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = "\n".join(line for line in text.splitlines() if line.startswith("| `"))
    named = set(re.findall(r"`([a-z_]+\.py|[a-z_]+/)`", table))
    real = {
        p.name
        for p in (ROOT / "replay").glob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    real |= {p.parent.name + "/" for p in (ROOT / "replay").glob("*/__init__.py")}
    problems = [
        f"`{n}` exists in replay/ but has no row: add `| `{n}` | its concept |`"
        for n in sorted(real - named)
    ]
    problems += [
        f"`{n}` has a row but replay/{n} does not exist: remove or rename it"
        for n in sorted(named - real)
    ]
    assert not problems, "docs/ARCHITECTURE.md, the module table:\n  " + "\n  ".join(problems)


# -- the console examples -----------------------------------------------------------------------


def _regen():
    spec = importlib.util.spec_from_file_location("docs_regen", ROOT / "docs" / "regen.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_regen"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regen():
    """docs/regen.py, loaded as a module (docs/ is not a package)."""
    return _regen()


@pytest.fixture(scope="module")
def session(regen, tmp_path_factory):
    """A folder where `replay demo` ran, and the outputs of the documented commands run there."""
    return regen.Session(tmp_path_factory.mktemp("docs-demo"))


def test_console_examples_match_a_real_run(regen, session):
    """Every marked console block of the README and the walk-through shows what a real run shows
    now."""
    problems = regen.regenerate(list(regen.DOCS), session, check=True)
    assert not problems, "\n\n".join(problems) + "\n\nrewrite them with: python docs/regen.py"


@pytest.mark.parametrize(
    "old, new",
    [
        ("run latency       avg", "run latency       avg 836 ms   p95 4,361 ms\nwas"),
        ("runs              25 (25 finished)", "runs              24 (24 finished)"),
        ("  by error class", "  by error kind "),
    ],
)
def test_the_check_reports_a_block_whose_figures_or_shape_drifted(
    regen, session, tmp_path, old, new
):
    """A stats block with a latency 40x off, a wrong count or a renamed line is reported, naming the
    block."""
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- console: replay stats")
    assert old in text[start:]
    doc = tmp_path / "README.md"
    doc.write_text(text[:start] + text[start:].replace(old, new, 1), encoding="utf-8")
    problems = regen.regenerate([doc], session, check=True)
    assert len(problems) == 1 and "`replay stats --since 7d` no longer shows" in problems[0], (
        problems
    )


def test_rewriting_a_block_makes_it_pass_the_check(regen, session, tmp_path):
    """`python docs/regen.py` replaces a stale block with real output that the check then
    accepts."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# x\n\n<!-- console: replay stats --since 7d -->\n```console\n$ replay stats\nstale\n```\n"
        "\n<!-- console: replay demo\nkeep: ^\\[6/6\\] .. changes\n-->\n```text\nSTALE2\n```\n",
        encoding="utf-8",
    )
    assert len(regen.regenerate([doc], session, check=True)) == 2
    regen.regenerate([doc], session, check=False)
    assert regen.regenerate([doc], session, check=True) == []
    body = doc.read_text(encoding="utf-8")
    assert "$ replay stats --since 7d\n" in body and "stale" not in body and "STALE2" not in body
    assert re.search(r"```text\n\[\.\.\. \d+ lines cut \.\.\.\]\n\[6/6\]", body), body


def test_shortened_output_says_where_lines_were_cut(regen):
    """Each run of lines a `keep:` range leaves out becomes one `[... N lines cut ...]` line."""
    lines = [str(i) for i in range(1, 11)]
    kept = regen.select(lines, [("^3$", "^4$"), ("^8$", "")])
    assert kept == ["[... 2 lines cut ...]", "3", "4", "[... 3 lines cut ...]", "8", "9", "10"]
    assert regen.select(lines, [("^1$", "^2$")]) == ["1", "2", "[... 8 lines cut ...]"]
    with pytest.raises(regen.RegenError, match="keep start /\\^11\\$/ matches no line"):
        regen.select(lines, [("^11$", "")], "README.md:3")


def test_the_architecture_contracts_name_methods_and_parameters_that_exist(tmp_path):
    """Each `store.METHOD` of the Store contract exists on a real Store, each replay_run parameter
    named exists."""
    from replay.replayer import replay_run
    from replay.store import Store

    text = ARCHITECTURE.read_text(encoding="utf-8")
    store_part = section(text, "## Store contract (`replay/store_api.py`)")
    store = Store(tmp_path / "replay.db")
    methods = set(re.findall(r"(?<![/\w])store\.(\w+)", store_part))
    wrong = [f"store.{n}" for n in sorted(methods) if not hasattr(store, n)]
    replay_part = section(text, "## Replay contract")
    signature = re.search(r"`replay_run\(([^`]*)\)`", replay_part, re.S)
    assert signature, (
        "docs/ARCHITECTURE.md, section 'Replay contract', no longer shows `replay_run(...)`"
    )
    named = {p.split("=")[0].strip() for p in signature.group(1).replace("\n", " ").split(",")} - {
        "*",
        "",
    }
    wrong += [
        f"replay_run({n}=...)"
        for n in sorted(named - set(inspect.signature(replay_run).parameters))
    ]
    assert not wrong, (
        "docs/ARCHITECTURE.md names what does not exist (fix the contract sections):\n  "
        + "\n  ".join(wrong)
    )


def test_every_block_that_shows_output_is_generated_or_pinned_by_a_test(regen):
    """A block of output has a `<!-- console: -->` marker, or a `<!-- pinned: TEST -->` whose test
    holds its first line."""
    loose = []
    for doc in regen.DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        generated = {b.start for b in regen.find_blocks(doc)}
        i = 0
        while i < len(lines):
            fence = re.match(r"^```(console|text)\s*$", lines[i])
            if not fence:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            body = [line for line in lines[i + 1 : end] if line.strip()]
            shows_output = any(not line.startswith("$ ") for line in body)
            pinned = re.match(r"^<!-- pinned: (\S+) -->$", lines[i - 1]) if i else None
            where = f"{doc.relative_to(ROOT)}:{i + 1}"
            if pinned:
                test = ROOT / pinned.group(1)
                first = body[0][:60] if body else ""
                if not test.is_file() or first not in test.read_text(encoding="utf-8"):
                    loose.append(
                        f"{where}: {pinned.group(1)} does not hold the block's first line {first!r}"
                    )
            elif shows_output and i not in generated:
                loose.append(
                    f"{where}: output nobody checks: add a `<!-- console: COMMAND -->` line above "
                    "it (then python docs/regen.py), or `<!-- pinned: tests/FILE.py -->` naming "
                    "the "
                    "test that holds it"
                )
            i = end + 1
    assert not loose, "\n  ".join(["blocks of output that can drift:"] + loose)
