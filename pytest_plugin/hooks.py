"""The hook agent-replay adds to pytest, registered through ``pytest_addhooks``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_plugin._options import ReplayOptions


@pytest.hookspec
def pytest_replay_configure(config: pytest.Config, options: ReplayOptions) -> None:
    """Adjust one replay before its recording is loaded: add stubs or ignore rules, pick the agent.

    Called once per ``--replay`` / ``--replay-all`` item (at collection) and once per
    ``@pytest.mark.replay`` test (when its ``replayed`` fixture is set up). Change ``options``
    in place; every implementation is called.

    Example (in a conftest.py)::

        def pytest_replay_configure(config, options):
            options.ignore.append("tool:clock.now")
            options.stubs["email.send"] = lambda to, body: {"sent": True}
    """
