"""Deploy settings of the support agent: which version runs, and the recorder.

The version is a deploy flag, read at every call: ``SUPPORT_AGENT_VERSION=v1|v2`` (default ``v2``,
the code checked out now), or `use_version` for a block of code (what the demo does).

* ``v1``, the incident: the tool layer retries ``http.get`` up to 8 times without jitter,
  ``email.send`` carries no idempotency key, and the policy reads a failed call as "try another
  query": it searches the knowledge base again and repeats the call.
* ``v2``, the fix: 2 retries with exponential backoff and jitter, an idempotency key on
  ``email.send`` (derived in the tool from to+subject+body, so the upstream deduplicates), and a
  loop guard: a failed upstream call is never a reason to search again; the agent sends a holding
  email and stops with the stop reason ``escalated``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping

from replay.recorder import Recorder

__all__ = ["VERSIONS", "DeployedVersions", "rec", "use_version", "version"]

#: What each deploy records as its versions (model, prompt, tools, app).
VERSIONS: dict[str, dict[str, str]] = {
    "v1": {
        "model": "scripted-policy-2026-01",
        "prompt": "support-v3",
        "tools": "support-tools-1.4",
        "app": "support-agent-v1",
    },
    "v2": {
        "model": "scripted-policy-2026-01",
        "prompt": "support-v4",
        "tools": "support-tools-1.5",
        "app": "support-agent-v2",
    },
}

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "support_agent_version", default=None
)


def version() -> str:
    """The deployed version: `use_version`'s, else ``$SUPPORT_AGENT_VERSION``, else ``v2``."""
    v = _override.get() or os.environ.get("SUPPORT_AGENT_VERSION") or "v2"
    if v not in VERSIONS:
        raise ValueError(f"SUPPORT_AGENT_VERSION={v!r}: use one of {', '.join(VERSIONS)}")
    return v


@contextlib.contextmanager
def use_version(v: str) -> Iterator[str]:
    """Run the block as deploy `v` (``"v1"`` or ``"v2"``)."""
    if v not in VERSIONS:
        raise ValueError(f"version {v!r}: use one of {', '.join(VERSIONS)}")
    token = _override.set(v)
    try:
        yield v
    finally:
        _override.reset(token)


class DeployedVersions(Mapping[str, str]):
    """The versions of the deploy selected at the moment a run starts (a live view of
    `VERSIONS`)."""

    def _now(self) -> dict[str, str]:
        return VERSIONS[version()]

    def __getitem__(self, key: str) -> str:
        return self._now()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())


#: The agent's recorder: ``$REPLAY_DB``, else ``./replay.db`` (the demo points it elsewhere).
rec = Recorder()
