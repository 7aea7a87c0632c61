"""The support agent of ``replay demo``, under its old name: it ships in the package as
`replay.demo_agent`.

``examples.support_agent.agent`` (and ``config``, ``scenario``, ``tools``, ``upstream``) are the
packaged modules themselves (aliased in ``sys.modules``), so runs and cassettes recorded under
these names still replay.
"""

from __future__ import annotations

import sys

from replay import register_agent
from replay.demo_agent import (
    VERSIONS,
    HTTPStatusError,
    Upstream,
    agent,
    config,
    handle,
    rec,
    scenario,
    tools,
    upstream,
    use_version,
    version,
)

# Every submodule under its old name at once: a run recorded here names its errors' module
# (examples.support_agent.upstream), and a replay rebuilds them only from modules already loaded.
for _name, _module in {
    "agent": agent,
    "config": config,
    "scenario": scenario,
    "tools": tools,
    "upstream": upstream,
}.items():
    sys.modules[f"{__name__}.{_name}"] = _module

# Runs recorded before the move name this entrypoint: the same function answers to it.
register_agent("support-agent", handle, entrypoint="examples.support_agent.agent:handle")

__all__ = ["VERSIONS", "HTTPStatusError", "Upstream", "handle", "rec", "use_version", "version"]
