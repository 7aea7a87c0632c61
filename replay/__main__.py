"""``python -m replay``: the same command line as the ``replay`` console script."""

from replay.cli import cli

if __name__ == "__main__":
    cli(prog_name="replay")
