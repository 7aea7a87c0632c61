"""Incident tests: turn an exported run into a ready pytest file that replays it.

``replay export RUN_ID --test tests/incidents`` writes
``tests/incidents/test_incident_<run_id>.py``:
the recorded facts (stop reason, tool calls, the calls that repeated, versions, usage) in its
docstring and comments, and assertions stating what the fixed code should do, for the engineer
to edit. The test uses ``@pytest.mark.replay`` and the ``replayed`` fixture of the pytest plugin.

This module writes text only; it never imports pytest.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

from replay.cassette import Cassette
from replay.models import Event, is_step

__all__ = ["incident_test_source", "write_incident_test"]


def _top_steps(cassette: Cassette) -> list[Event]:
    # Replay answers a tool called inside another tool together with it: only top-level steps run.
    return [e for e in cassette.events if is_step(e)]


def _doc(value: object) -> str:
    """A recorded value as text that is inert inside a triple-quoted docstring or a # comment.

    repr escapes backslashes, newlines and control characters; escaping ``"`` as well means no
    ``\"\"\"`` can end the docstring. A recording is data: none of it may become code.
    """
    return repr(str(value))[1:-1].replace('"', '\\"')


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _relative_cassette(cassette_path: Path, test_dir: Path) -> str:
    """The cassette's path as seen from the test's folder (posix), absolute on another drive."""
    try:
        return Path(os.path.relpath(cassette_path.resolve(), test_dir.resolve())).as_posix()
    except ValueError:  # Windows: another drive
        return cassette_path.resolve().as_posix()


def incident_test_source(
    cassette: Cassette, cassette_path: str | os.PathLike[str], test_dir: str | os.PathLike[str]
) -> str:
    """The text of the incident test for `cassette`, stored at `cassette_path`, written into
    `test_dir`."""
    run = cassette.run
    rid = run.run_id
    steps = _top_steps(cassette)
    per_tool = collections.Counter(e.tool or "?" for e in steps)
    repeats = collections.Counter((e.tool or "?", e.args_sha or "") for e in steps)
    repeated = [(tool, sha, n) for (tool, sha), n in repeats.items() if n > 1]
    errors = collections.Counter(
        (e.tool or "?", e.error or "error") for e in steps if e.status == "error"
    )
    usage = run.usage

    from replay.cassette import check_run_id

    check_run_id(rid, "run.run_id")  # it names the test function and the file
    facts = [
        f"agent: {_doc(run.agent)} ({_doc(run.entrypoint or 'no entrypoint recorded')})",
        f"stop reason: {_doc(run.stop_reason)}",
        f"steps: {len(steps)} "
        f"({_doc(', '.join(f'{t} x{n}' for t, n in sorted(per_tool.items())) or 'none')})",
    ]
    if repeated:
        facts.append("repeated calls (same tool, same args):")
        facts += [f"  {_doc(tool)} x{n} (args_sha {_doc(sha)})" for tool, sha, n in repeated]
    else:
        facts.append("repeated calls: none")
    if errors:
        facts.append(
            "errors: "
            + _doc(", ".join(f"{tool} {err} x{n}" for (tool, err), n in sorted(errors.items())))
        )
    if run.versions:
        facts.append(
            "versions: " + _doc(", ".join(f"{k}={v}" for k, v in sorted(run.versions.items())))
        )
    facts.append(
        f"usage: {usage.tokens_in + usage.tokens_out:,} tokens, ${usage.cost_usd:.4f}, "
        f"{_plural(run.tool_calls, 'tool call')}"
    )

    rel = _relative_cassette(Path(cassette_path), Path(test_dir))
    lines = [
        f'"""Incident {rid}: replay the recorded run against the code checked out now.',
        "",
        f"Written by `replay export {rid} --test {_doc(Path(test_dir).as_posix())}`. Recorded "
        "facts",
        f"(from {_doc(Path(cassette_path).as_posix())}):",
        "",
        *[f"    {f}" for f in facts],
        "",
        "The assertions below state what the fixed code should do: edit them to your fix.",
        "Run it with `pytest` on this file; it fails while the incident still reproduces.",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import pytest",
        "",
        "CASSETTE = Path(__file__).parent / "
        f"{json.dumps(rel)}",  # a JSON string is a safe Python literal
        "",
        "",
        "@pytest.mark.replay(CASSETTE)",
        f"def test_incident_{rid}(replayed):",
        f'    """Replaying incident {rid} with the fixed code no longer shows the recorded '
        'failure."""',
    ]
    if run.stop_reason == "completed":
        lines += [
            "    # Recorded: the run completed. It should still complete.",
            '    assert replayed.stop_reason == "completed"',
        ]
    else:
        lines += [
            f"    # Recorded: the run stopped with {_doc(repr(run.stop_reason))}. The fix should "
            "let it complete.",
            '    assert replayed.stop_reason == "completed", replayed.diff.to_text(color=False)',
        ]
    for tool, sha, n in repeated:
        lines += [
            f"    # Recorded: {_doc(tool)} was called {n} times with the same args (args_sha "
            f"{_doc(sha)}).",
            f"    assert sum(s.args_sha == {sha!r} for s in replayed.calls({tool!r})) <= 1",
        ]
    lines += [
        f"    # Recorded: {_plural(len(steps), 'step')}. The fix should not need more.",
        f"    assert len(replayed.steps) <= {len(steps)}",
        "",
    ]
    return "\n".join(lines)


def write_incident_test(
    cassette: Cassette,
    cassette_path: str | os.PathLike[str],
    test_dir: str | os.PathLike[str],
    *,
    force: bool = False,
) -> Path:
    """Write ``test_incident_<run_id>.py`` into `test_dir` (created if missing) and return its path.

    Args:
        cassette: the exported run.
        cassette_path: where the cassette was written; the test finds it relative to itself.
        test_dir: the folder of incident tests.
        force: overwrite an existing test that differs (it may hold the engineer's edits).

    Raises:
        FileExistsError: the test exists with other content and `force` is not set.
    """
    from replay.cassette import atomic_write

    folder = Path(test_dir)
    text = incident_test_source(cassette, cassette_path, folder)  # checks the run id first
    path = folder / f"test_incident_{cassette.run.run_id}.py"
    if path.exists() and not force:
        if not path.is_symlink() and path.read_text(encoding="utf-8") == text:
            return path
        raise FileExistsError(
            f"{path} exists and differs (it may hold your edits): pass --force to overwrite it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path
