"""Tickets and the two phases of the incident: a healthy batch, then the flaky upstream.

`record_batch` runs the agent on tickets against a fresh upstream per ticket (healthy or flaky,
seeded by the ticket id, so a ticket always plays out the same way) and returns what happened,
including what the customers received, which no log line says.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from replay.demo_agent.agent import handle
from replay.demo_agent.config import rec, use_version
from replay.demo_agent.upstream import CUSTOMERS, ORDERS, FakeClock, Upstream, use

__all__ = ["Batch", "fake_outbox", "record_batch", "ticket"]

_SUBJECTS = [
    "Where is my order?",
    "My package is late",
    "Order status?",
    "Tracking is not updating",
]


def ticket(i: int) -> dict[str, Any]:
    """Ticket number `i` (0-49): a customer asking about their order."""
    oid = f"A-{3001 + i % 50}"
    order = ORDERS[oid]
    customer = CUSTOMERS[order["customer_id"]]
    return {
        "ticket_id": f"T-{1001 + i}",
        "from": customer["email"],
        "customer_id": customer["id"],
        "order_id": oid,
        "subject": _SUBJECTS[i % len(_SUBJECTS)],
        "message": f"Hello, any news about order {oid}?",
    }


@dataclass
class Batch:
    """The runs of one batch: ids in order, and what the fake upstream saw and delivered."""

    run_ids: list[str] = field(default_factory=list)
    delivered: Counter[str] = field(default_factory=Counter)
    outputs: list[str] = field(default_factory=list)
    #: Requests the upstream received, retries included (the recording has one step per tool call).
    upstream_requests: int = 0

    @property
    def duplicates(self) -> int:
        """Customers who received the same answer more than once."""
        return sum(1 for n in self.delivered.values() if n > 1)


def record_batch(
    tickets: list[dict[str, Any]], *, flaky: bool, version: str = "v1", on_run: Any = None
) -> Batch:
    """Run the agent on each ticket (recorded by `config.rec`) and return the `Batch`."""
    batch = Batch()
    clock = FakeClock()
    with use_version(version):
        for t in tickets:
            seed = t["ticket_id"]
            up = (
                Upstream.flaky(seed, clock=clock)
                if flaky
                else Upstream.healthy(seed=seed, clock=clock)
            )
            with use(up):
                batch.outputs.append(handle(t))
            batch.run_ids.append(rec.last_run_id or "")
            batch.delivered.update(up.delivered)
            batch.upstream_requests += sum(up.requests.values())
            if on_run is not None:
                on_run(len(batch.run_ids))
    return batch


def fake_outbox(*, lost_acks: int = 1) -> tuple[Upstream, dict[str, Any]]:
    """An outbox for replays, and the ``stubs=`` that send through it with the real tool code.

    It behaves like the incident's gateway (the first send is delivered, then answered 503), and
    the stub runs the deployed ``email.send`` body against it: v1 sends without a key, v2 with
    one. ``outbox.delivered`` then says how many emails each recipient would have received.
    """
    from replay.demo_agent import tools

    outbox = Upstream(clock=FakeClock(), lost_acks=lost_acks)

    def send(to: str, subject: str, body: str) -> dict[str, Any]:
        with use(outbox):
            body_only = inspect.unwrap(tools.email_send)  # the tool's body, not the recorded step
            answer: dict[str, Any] = body_only(to, subject, body)
        return answer

    return outbox, {"email.send": send}
