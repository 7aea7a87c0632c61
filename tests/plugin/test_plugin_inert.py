"""Issue item 10: a project that has the plugin installed but does not replay pays nothing for
it."""

from __future__ import annotations

import pytest


def test_a_session_without_replay_options_imports_nothing_heavy_and_opens_no_store(
    pytester: pytest.Pytester,
) -> None:
    """Without options or the marker, the plugin is loaded but no `replay` module is imported and no
    store is created."""
    pytester.makepyfile(
        """
        import sys

        HEAVY = (
            "replay", "pytest_plugin._engine", "pydantic", "sqlite_utils", "deepdiff", "orjson",
            "vcr",
        )

        def test_plugin_loaded_but_idle(request):
            assert "pytest_plugin.plugin" in sys.modules
            assert request.config.pluginmanager.hasplugin("replay")
            loaded = sorted(
                m for m in sys.modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY[1])
            )
            assert loaded == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*runs replayed*")
    assert list(pytester.path.rglob("*.db*")) == []
    assert not (pytester.path / "cassettes").exists()
