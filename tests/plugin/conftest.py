"""Helpers for the plugin tests: a small support agent, recorded for real into a SQLite store.

`AgentProject` writes the agent module into the pytester folder, calls it once through a real
`Recorder` (so the run lands in ``replay.db`` there), and exports cassettes with the library's own
`cassette_from_store` / `write_cassette`. Tests then change the agent module and replay.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import deepdiff  # noqa: F401
import pytest

import pytest_plugin._engine  # noqa: F401
import replay.recorder
import replay.replayer  # noqa: F401
from replay.cassette import cassette_from_store, write_cassette
from replay.store import Store

# deepdiff, the engine, the recorder and the replayer are imported here once: pytester restores
# sys.modules after each in-process run, and importing them again per run doubled the suite's
# time. Isolation is the subprocess test's business (test_plugin_inert.py).

AGENT_TEMPLATE = """
import replay
from replay import Recorder

rec = Recorder("replay.db")


@rec.tool("crm.lookup")
def lookup(customer_id: str) -> dict:
    return {{"id": customer_id, "plan": "pro"}}


@rec.tool("email.send")
def send(to: str, body: str) -> dict:
    return {{"sent": True, "to": to}}


@rec.agent("support-agent", versions={{"model": "m-1", "prompt": "p-1"}})
def handle(ticket: dict) -> str:
    customer = lookup(ticket["customer_id"])
{body}
    return "done"
"""

#: The recorded behaviour: one lookup, one email, 150 tokens, one cent.
ONE_EMAIL = """
rec.usage(tokens_in=100, tokens_out=50, cost_usd=0.01)
send(customer["id"], "your refund is on its way")
"""

#: The seed incident: the same email sent twice (a retry storm).
TWO_EMAILS = """
rec.usage(tokens_in=100, tokens_out=50, cost_usd=0.01)
send(customer["id"], "your refund is on its way")
send(customer["id"], "your refund is on its way")
"""

#: Same steps as ONE_EMAIL, twice the spend.
DOUBLE_SPEND = """
rec.usage(tokens_in=100, tokens_out=50, cost_usd=0.02)
send(customer["id"], "your refund is on its way")
"""

#: Same steps as ONE_EMAIL, twice the tokens.
DOUBLE_TOKENS = """
rec.usage(tokens_in=200, tokens_out=100, cost_usd=0.01)
send(customer["id"], "your refund is on its way")
"""


class AgentProject:
    """The agent module `support_agent` in a pytester folder, its store and its cassettes."""

    module = "support_agent"
    ONE_EMAIL = ONE_EMAIL
    TWO_EMAILS = TWO_EMAILS
    DOUBLE_SPEND = DOUBLE_SPEND
    DOUBLE_TOKENS = DOUBLE_TOKENS

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path
        self.db = pytester.path / "replay.db"
        #: what the agent module records into: the SQLite file, or a PostgreSQL URL
        self.store = "replay.db"
        # A recording is data: replay calls only agents of modules the project names (trust model).
        (self.path / "pyproject.toml").write_text(
            '[tool.agent-replay]\nagents = ["support_agent"]\n'
        )

    def write_agent(self, body: str = ONE_EMAIL) -> None:
        """(Re)write the agent module with `body` after the customer lookup."""
        source = AGENT_TEMPLATE.format(
            body=textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        )
        if self.store != "replay.db":  # a server store: the URL replaces the file
            source = source.replace('Recorder("replay.db")', f"Recorder({self.store!r})")
        self.pytester.makepyfile(**{self.module: source})
        sys.modules.pop(self.module, None)
        # Rewritten within the same second with the same size, a cached .pyc would shadow the
        # source.
        for stale in self.path.glob(f"__pycache__/{self.module}.*.pyc"):
            stale.unlink()
        importlib.invalidate_caches()

    def record(self, body: str = ONE_EMAIL, customer_id: str = "c-1") -> str:
        """Write the agent with `body`, run it once with a real Recorder, return the run id."""
        self.write_agent(body)
        mod = importlib.import_module(self.module)
        try:
            mod.handle({"customer_id": customer_id})
            run_id = mod.rec.last_run_id
            assert mod.rec.flush(), "the recorder did not flush"
        finally:
            mod.rec.close()
            sys.modules.pop(self.module, None)
        assert run_id is not None
        return str(run_id)

    def export(self, run_id: str, folder: str = "cassettes") -> Path:
        """Export `run_id` from the store to ``<folder>/<run_id>.json``."""
        store = Store(str(self.db))
        try:
            cassette = cassette_from_store(store, run_id)
        finally:
            store.close()
        return write_cassette(cassette, self.path / folder / f"{run_id}.json")

    def cassette(
        self, body: str = ONE_EMAIL, folder: str = "cassettes", customer_id: str = "c-1"
    ) -> tuple[str, Path]:
        """Record with `body` and export: (run id, cassette path)."""
        run_id = self.record(body, customer_id=customer_id)
        return run_id, self.export(run_id, folder)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester, with inner runs that skip plugins they do not need (hypothesis costs ~1 s a
    run)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:benchmark")
    monkeypatch.delenv("REPLAY_DB", raising=False)
    return pytester


@pytest.fixture
def project(pytester: pytest.Pytester) -> AgentProject:
    """An `AgentProject` in this test's pytester folder, importable by the inner pytest runs."""
    pytester.syspathinsert()
    return AgentProject(pytester)
