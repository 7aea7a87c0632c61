"""Write the console examples of README.md and WALKTHROUGH.md from a real run, or check them.

    python docs/regen.py            # run the demo in a temporary folder, rewrite every marked block
    python docs/regen.py --check    # exit 1, with a diff, when a block no longer matches a real run
    python docs/regen.py FILE...    # only these Markdown files

A block is marked by an HTML comment on the line just above its fence:

    <!-- console: replay stats --since 7d -->
    ```console
    $ replay stats --since 7d
    ...
    ```

or, with options, one per line:

    <!-- console: replay show {run}
    keep: ^run .. ^\\s+3\\s+tool
    keep: ^\\s+15\\s+tool ..
    -->

- The command runs in a temporary folder where ``replay demo`` ran first (a marked ``replay demo``
  shows that run's output). ``{run}`` is the demo's worst run (the id its ``replay show`` hint
  names). Leading ``NAME=value`` words set environment variables; ``replay`` and ``pytest`` run
  with this interpreter, any other program only if it is a script installed beside it
  (``sqlite-utils``).
- ``in: repo`` runs it in the repository instead (for ``pytest tests/incidents`` and the
  committed cassettes); nothing there is written (``-p no:cacheprovider``).
- ``keep: START .. END`` (repeatable) keeps the lines from the first line matching the regex
  START to the first line from there matching END (END empty: to the end), searched in order.
  Each run of lines left out becomes one line ``[... N lines cut ...]``, so a shortened block
  says so.
- A ``console`` fence gets ``$ COMMAND`` then the output; a ``text`` fence the output only.

``--check`` compares the block with a new run after normalising what changes from run to run:
run ids, hashes and pseudonyms (by order of first appearance, so "the same id twice" is still
checked), timestamps, paths, the width of ``===`` rules and of column padding. Durations are
compared loosely (within 10x, anything under 50 ms counting as 50 ms, for a loaded machine): a
p95 of 4,361 ms against a real 96 ms is drift, 96 against 114 is not. Every other figure must be
equal.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "examples" / "support_agent" / "WALKTHROUGH.md")
MARKER = re.compile(r"^<!-- console: (?P<cmd>.*?)(?P<end> -->)?$")
FENCE = re.compile(r"^```(?P<lang>console|text)\s*$")
CUT = "[... {n} lines cut ...]"
RUN_ID = re.compile(r"\br_[0-9a-z]{20,32}\b")
SHOW_HINT = re.compile(r"replay show (r_[0-9a-z]{20,32})")
DEMO = "replay demo"


class RegenError(Exception):
    """A marker that cannot be honoured: the message names the file, the line and the fix."""


@dataclass
class Block:
    """One marked console block of a Markdown file."""

    path: Path
    marker_line: int  # 0-based index of the `<!-- console:` line
    start: int  # index of the opening fence
    end: int  # index of the closing fence
    command: str
    lang: str
    keep: list[tuple[str, str]] = field(default_factory=list)
    where: str = "demo"
    body: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        try:
            rel = self.path.relative_to(ROOT)
        except ValueError:
            rel = self.path
        return f"{rel}:{self.marker_line + 1}"


def find_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The marked blocks of one Markdown file, in order."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if not m:
            i += 1
            continue
        block = Block(path, i, 0, 0, m.group("cmd").strip(), "")
        j = i + 1
        if not m.group("end"):
            while j < len(lines) and lines[j].strip() != "-->":
                key, _, value = lines[j].strip().partition(":")
                if key == "keep" and ".." in value:
                    start, _, end = value.partition("..")
                    block.keep.append((start.strip(), end.strip()))
                elif key == "in" and value.strip() in ("repo", "demo"):
                    block.where = value.strip()
                else:
                    raise RegenError(
                        f"{block.name}: unknown marker option {lines[j].strip()[:60]!r}: "
                        "use `keep: START .. END` or `in: repo`"
                    )
                j += 1
            if j == len(lines):
                raise RegenError(
                    f"{block.name}: the marker comment is never closed with a `-->` line"
                )
            j += 1
        fence = FENCE.match(lines[j]) if j < len(lines) else None
        if not fence:
            raise RegenError(f"{block.name}: a ```console or ```text fence must follow the marker")
        block.lang, block.start = fence.group("lang"), j
        k = j + 1
        while k < len(lines) and lines[k].rstrip() != "```":
            k += 1
        if k == len(lines):
            raise RegenError(f"{block.name}: the fence is never closed")
        block.end, block.body = k, lines[j + 1 : k]
        found.append(block)
        i = k + 1
    return found


# -- running ------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REPLAY_", "PYTEST_", "SUPPORT_AGENT_"))
        # pytest prints untruncated summaries when CI or BUILD_NUMBER is set: outputs must not
        # depend on where the check runs.
        and k not in ("COLUMNS", "LINES", "CI", "BUILD_NUMBER")
    }
    env.update(
        COLUMNS="80",
        NO_COLOR="1",
        TZ="UTC",
        PYTEST_ADDOPTS="-p no:cacheprovider",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _argv(command: str) -> tuple[list[str], dict[str, str]]:
    words = shlex.split(command)
    env: dict[str, str] = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if not words:
        raise RegenError(f"no command in {command!r}")
    if words[0] == "replay":
        return [
            sys.executable,
            "-c",
            "from replay.cli import cli; cli(prog_name='replay')",
        ] + words[1:], env
    if words[0] == "pytest":
        return [sys.executable, "-m", "pytest"] + words[1:], env
    beside = shutil.which(words[0], path=str(Path(sys.executable).parent))
    if beside is None:
        raise RegenError(
            f"{command!r}: only `replay`, `pytest` and the scripts installed beside this "
            f"interpreter ({Path(sys.executable).parent}) are run; {words[0]!r} is not there"
        )
    return [beside] + words[1:], env


def run(command: str, cwd: Path) -> str:
    """Run one documented command as a user would see it (stdout and stderr together)."""
    argv, extra = _argv(command)
    env = _env()
    env.update(extra)
    out = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    return out.stdout


class Session:
    """A temporary folder where the demo ran, and the outputs of the commands run so far."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.demo = run(DEMO, folder)
        ids = SHOW_HINT.findall(self.demo)
        if not ids:
            raise RegenError(
                f"`{DEMO}` printed no `replay show RUN_ID` hint: cannot resolve {{run}}:\n"
                + self.demo[-2000:]
            )
        self.values = {"run": ids[-1]}
        self.outputs: dict[tuple[str, str], str] = {(DEMO, "demo"): self.demo}

    def command(self, block: Block) -> str:
        try:
            return block.command.format(**self.values)
        except KeyError as e:
            raise RegenError(
                f"{block.name}: unknown placeholder {e} (known: {sorted(self.values)})"
            ) from None

    def output(self, block: Block) -> str:
        command = self.command(block)
        key = (command, block.where)
        if key not in self.outputs:
            self.outputs[key] = run(command, ROOT if block.where == "repo" else self.folder)
        return self.outputs[key]


# -- rendering ----------------------------------------------------------------------------------


def select(lines: list[str], keep: list[tuple[str, str]], name: str = "") -> list[str]:
    """The kept ranges of `lines`, each gap replaced by one `[... N lines cut ...]` line."""
    if not keep:
        return lines
    out: list[str] = []
    pos = 0
    for start_re, end_re in keep:
        start = next((i for i in range(pos, len(lines)) if re.search(start_re, lines[i])), None)
        if start is None:
            raise RegenError(
                f"{name}: keep start /{start_re}/ matches no line after line {pos + 1} "
                "of the output: edit the marker"
            )
        if end_re:
            end = next((i for i in range(start, len(lines)) if re.search(end_re, lines[i])), None)
            if end is None:
                raise RegenError(
                    f"{name}: keep end /{end_re}/ matches no line after /{start_re}/: edit the "
                    f"marker"
                )
        else:
            end = len(lines) - 1
        if start > pos:
            out.append(CUT.format(n=start - pos))
        out.extend(lines[start : end + 1])
        pos = end + 1
    if pos < len(lines):
        out.append(CUT.format(n=len(lines) - pos))
    return out


def render(block: Block, command: str, output: str) -> list[str]:
    """The new body of a block: `$ COMMAND` for a console fence, then the kept output."""
    lines = [line.rstrip() for line in output.rstrip("\n").splitlines()]
    lines = select(lines, block.keep, block.name)
    return ([f"$ {command}"] if block.lang == "console" else []) + lines


# -- checking -----------------------------------------------------------------------------------

_DURATION = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?) ?(ms|s|µs)\b")
_HEX = re.compile(r"(?<![\w-])[0-9a-f]{8,64}(?![\w-])")
_PSEUDONYM = re.compile(r"\bu[0-9a-f]{8}@redacted\.invalid\b")
_TIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?: ?UTC|Z|[+-]\d{2}:?\d{2})?"
)
_RULE = re.compile(r"([=_-])\1{2,}")
_PATH = re.compile(r"(?<![\w.])(/[\w.+-]+)+/(?=[\w.-]+)")


def _ms(value: str, unit: str) -> float:
    number = float(value.replace(",", ""))
    return number * {"ms": 1.0, "s": 1000.0, "µs": 0.001}[unit]


def normalise(lines: list[str]) -> tuple[list[str], list[float]]:
    """Lines with the volatile parts replaced by placeholders, and the durations (ms) in order."""
    names: dict[str, str] = {}
    durations: list[float] = []

    def name(kind: str, value: str) -> str:
        if value not in names:
            names[value] = (
                f"<{kind}{sum(1 for v in names.values() if v.startswith('<' + kind)) + 1}>"
            )
        return names[value]

    out = []
    ms_columns: list[int] = []
    for line in lines:
        if not line.strip():
            ms_columns = []
        # a right-aligned `ms` column: the number under the header's `ms` is a duration
        for col in ms_columns:
            m = re.search(r"(\d+)$", line[:col])
            if m and (m.start() == 0 or line[m.start() - 1] == " "):
                durations.append(float(m.group(1)))
                line = line[: m.start()] + "<ms>" + line[col:]
                break
        # a table header (no digits) with a column `ms` or `..._ms`: its right-aligned numbers vary
        header = [m.end() for m in re.finditer(r"(?<![^\s])(?:\w+_)?ms(?=\s|$)", line)]
        if header and not re.search(r"\d", line):
            ms_columns = header
        line = _TIME.sub("<time>", line)
        line = RUN_ID.sub(lambda m: name("run", m.group(0)), line)
        line = _PSEUDONYM.sub(lambda m: name("email", m.group(0)), line)
        line = _HEX.sub(lambda m: name("h", m.group(0)), line)

        def duration(m: re.Match) -> str:
            durations.append(_ms(m.group(1), m.group(2)))
            return "<dur>"

        line = _DURATION.sub(duration, line)
        line = _PATH.sub("<path>/", line)
        line = _RULE.sub(r"\1\1\1", line)
        out.append(" ".join(line.split()))
    return out, durations


def _close(a: float, b: float) -> bool:
    return max(a, b) <= 10 * max(min(a, b), 50.0)


def drift(old: list[str], new: list[str]) -> str | None:
    """None when `old` shows what `new` shows up to volatile parts, else a diff to read."""
    old_n, old_d = normalise(old)
    new_n, new_d = normalise(new)
    if old_n != new_n:
        return "\n".join(
            difflib.unified_diff(
                old_n,
                new_n,
                "in the file (normalised)",
                "from a run now (normalised)",
                lineterm="",
                n=1,
            )
        )
    far = [(a, b) for a, b in zip(old_d, new_d, strict=True) if not _close(a, b)]
    if far:
        return "durations far from a run now (file -> now, ms): " + ", ".join(
            f"{a:g} -> {b:g}" for a, b in far
        )
    return None


# -- the command --------------------------------------------------------------------------------


def regenerate(paths: list[Path], session: Session, check: bool) -> list[str]:
    """Rewrite (or, with `check`, compare) every marked block; returns the problems found."""
    problems: list[str] = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        blocks = find_blocks(path, text)
        # run in the file's order (a command may depend on an earlier one), rewrite from the end
        rendered = [
            render(block, session.command(block), session.output(block)) for block in blocks
        ]
        for block, new in reversed(list(zip(blocks, rendered, strict=True))):
            if check:
                found = drift(block.body, new)
                if found:
                    problems.append(
                        f"{block.name}: `{block.command}` no longer shows what a run "
                        f"shows:\n{found}"
                    )
            else:
                lines[block.start + 1 : block.end] = new
        if not check:
            path.write_text(
                "\n".join(lines) + ("\n" if text.endswith("\n") else ""), encoding="utf-8"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "files", nargs="*", type=Path, help="Markdown files (default: README.md and WALKTHROUGH.md)"
    )
    parser.add_argument(
        "--check", action="store_true", help="compare, write nothing; exit 1 on drift"
    )
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.files] or list(DOCS)
    try:
        with tempfile.TemporaryDirectory(prefix="replay-docs-") as folder:
            problems = regenerate(paths, Session(Path(folder)), args.check)
    except RegenError as e:
        print(f"docs/regen.py: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem + "\n", file=sys.stderr)
    if problems:
        print(
            f"{len(problems)} block(s) drifted: run `python docs/regen.py` to rewrite them from a "
            f"real run",
            file=sys.stderr,
        )
        return 1
    if not args.check:
        print(f"rewrote the marked blocks of {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
