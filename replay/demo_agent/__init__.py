"""A small customer-support agent that reproduces the duplicate-email incident.

``handle(ticket)`` is the agent (``@rec.agent``); its tools ``kb.search``, ``http.get`` and
``email.send`` talk to an in-process fake upstream (`upstream`) that can turn flaky. The deploy
flag ``SUPPORT_AGENT_VERSION`` (or `use_version`) selects the incident code (``v1``) or the fix
(``v2``, the default). `scenario` records healthy and incident runs; ``replay demo`` drives it.
"""

from __future__ import annotations

from replay.demo_agent.agent import handle
from replay.demo_agent.config import VERSIONS, rec, use_version, version
from replay.demo_agent.upstream import HTTPStatusError, Upstream

__all__ = ["VERSIONS", "HTTPStatusError", "Upstream", "handle", "rec", "use_version", "version"]
