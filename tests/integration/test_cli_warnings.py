"""Warnings raised inside a `replay` command reach the user once, and the command still ends."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import warnings
    import click
    from replay.cli import cli

    @cli.command("warn-twice")
    def warn_twice():
        warnings.warn("first thing to know", UserWarning)
        warnings.warn("second thing to know", RuntimeWarning)
        click.echo("done")

    cli(["warn-twice"], prog_name="replay")
""")


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_a_warning_inside_a_command_is_shown_once_and_the_command_finishes():
    """A command that warns prints its output and each warning once on stderr, then exits 0 (no
    endless re-recording)."""
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == "done\n"
    assert out.stderr.count("first thing to know") == 1, out.stderr[-2000:]
    assert out.stderr.count("second thing to know") == 1, out.stderr[-2000:]
    assert "UserWarning" in out.stderr and "RuntimeWarning" in out.stderr
