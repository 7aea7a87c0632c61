"""`replay.batch` and `replay.report`: the count line and the defaults the CLI and plugin share."""

from __future__ import annotations

import pytest

from pytest_plugin.plugin import DEFAULT_MAX_DELTA_PCT as PLUGIN_DEFAULT
from replay.batch import DEFAULT_MAX_DELTA_PCT, merge_ignore
from replay.report import Outcome, summary_line


def _outcomes(*statuses: str) -> list[Outcome]:
    return [Outcome(source=f"s{i}", run_id=f"r{i}", status=s) for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    ("statuses", "line"),
    [
        ((), "0 runs replayed: 0 matched, 0 diverged, 0 blessed"),
        (("matched",), "1 run replayed: 1 matched, 0 diverged, 0 blessed"),
        (
            ("matched", "diverged", "blessed", "error"),
            "4 runs replayed: 1 matched, 1 diverged, 1 blessed, 1 error",
        ),
        (("error", "error"), "2 runs replayed: 0 matched, 0 diverged, 0 blessed, 2 errors"),
    ],
)
def test_summary_line_has_one_wording(statuses: tuple[str, ...], line: str) -> None:
    """The count line says runs (or run), each status, and errors only when there are some."""
    assert summary_line(_outcomes(*statuses)) == line


def test_the_plugin_and_the_cli_default_to_the_same_usage_limit() -> None:
    """The plugin (which cannot import the library while idle) keeps the library's default limit."""
    assert PLUGIN_DEFAULT == DEFAULT_MAX_DELTA_PCT == 20.0


def test_merge_ignore_joins_specs_from_every_place() -> None:
    """Ignore rules from the ini, a fixture and a marker merge into one set; None is skipped."""
    rules = merge_ignore(["tool:clock.now", None, {"fields": ["status"]}, ["output:ts"]])
    assert rules.to_strings() == ["tool:clock.now", "field:status", "output:ts"]
