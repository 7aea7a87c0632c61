"""An in-process fake upstream: orders, customers, a knowledge base and an email outbox.

Nothing here touches the network. Time is simulated by `FakeClock`: waiting advances a number,
and only a small, scaled-down real sleep keeps recorded durations proportional to the simulated
latency (``SUPPORT_AGENT_TIME_SCALE``, default 1/50; 0 disables real sleeping).

Two shapes of upstream:

* `Upstream.healthy()` answers every request with 200.
* `Upstream.flaky(seed)` is down in seeded windows of simulated time, answering 429 or 503 while
  down; every request that arrives while it is down keeps it down a little longer (the thundering
  herd: retries that come fast and in step prolong the outage they retry against). Its email
  gateway loses the acknowledgement of the first send: the message is delivered, then the caller
  gets a 503 (the way a proxy times out after the backend accepted). Sends that carry an
  idempotency key are deduplicated; sends without one are delivered again.

`delivered` counts the emails each recipient actually received: the truth a customer sees,
whatever the agent's logs say.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ARTICLES",
    "CUSTOMERS",
    "ORDERS",
    "FakeClock",
    "HTTPStatusError",
    "Upstream",
    "current",
    "use",
]

#: A flaky upstream is down for DOWN_MS, then up for UP_MS, and so on; each request that arrives
#: while it is down keeps it down HERD_MS longer.
DOWN_MS = (800.0, 1600.0)
UP_MS = (200.0, 400.0)
HERD_MS = 15.0

_REASONS = {429: "Too Many Requests", 503: "Service Unavailable", 404: "Not Found"}


class HTTPStatusError(Exception):
    """An HTTP error answer from the upstream; ``status_code`` carries the status.

    Built from the status (``HTTPStatusError(503, "GET /orders/A-3001")``) or from its own message
    (``HTTPStatusError("503 Service Unavailable: GET /orders/A-3001")``), which is how a replay
    rebuilds a recorded error: the status is read back from the message.
    """

    def __init__(self, status: int | str, detail: str = "") -> None:
        if isinstance(status, int):
            code = status
            message = f"{code} {_REASONS.get(code, 'Error')}" + (f": {detail}" if detail else "")
        else:
            message = status
            m = re.match(r"\s*(\d{3})\b", message)
            code = int(m.group(1)) if m else 0
        self.status_code = code
        super().__init__(message)


class FakeClock:
    """Simulated milliseconds. `sleep` advances them and sleeps ``ms * scale`` for real."""

    def __init__(self, start_ms: float = 0.0, scale: float | None = None) -> None:
        self.now_ms = float(start_ms)
        if scale is None:
            scale = float(os.environ.get("SUPPORT_AGENT_TIME_SCALE", "0.02"))
        self.scale = scale

    def sleep(self, ms: float) -> None:
        self.now_ms += ms
        if self.scale > 0 and ms > 0:
            time.sleep(ms * self.scale / 1000.0)


# ---- the data behind the upstream -----------------------------------------------------------

FIRST_NAMES = ["Dana", "Ravi", "Mei", "Jonas", "Amara", "Lucas", "Sofia", "Kenji", "Ines", "Omar"]
LAST_NAMES = [
    "Reyes",
    "Patel",
    "Chen",
    "Berg",
    "Okafor",
    "Silva",
    "Rossi",
    "Tanaka",
    "Costa",
    "Haddad",
]
STATUSES = ["shipped", "in transit", "delayed at the carrier", "out for delivery", "delivered"]
CARRIERS = ["DHL", "UPS", "PostNL", "GLS"]

CUSTOMERS: dict[str, dict[str, Any]] = {}
ORDERS: dict[str, dict[str, Any]] = {}
for _i in range(50):
    _first, _last = FIRST_NAMES[_i % 10], LAST_NAMES[(_i * 3) % 10]
    _cid = f"C-{2001 + _i}"
    CUSTOMERS[_cid] = {
        "id": _cid,
        "first_name": _first,
        "email": f"{_first.lower()}.{_last.lower()}{_i}@example.com",
        "tier": "gold" if _i % 4 == 0 else "standard",
    }
    _oid = f"A-{3001 + _i}"
    ORDERS[_oid] = {
        "id": _oid,
        "customer_id": _cid,
        "status": STATUSES[_i % len(STATUSES)],
        "carrier": CARRIERS[_i % len(CARRIERS)],
        "tracking": f"TRK-{48213 + _i * 7}",
        "eta_days": 1 + _i % 4,
    }

ARTICLES: list[dict[str, str]] = [
    {
        "id": "kb-12",
        "title": "Where is my order?",
        "text": "Orders ship in 1-2 days; tracking follows by email.",
    },
    {
        "id": "kb-17",
        "title": "Shipping delays",
        "text": "Carrier delays resolve within 3 days in most cases.",
    },
    {
        "id": "kb-23",
        "title": "Order status explained",
        "text": "Shipped, in transit, out for delivery, delivered.",
    },
    {
        "id": "kb-31",
        "title": "Refunds and returns",
        "text": "Return within 30 days for a full refund.",
    },
    {
        "id": "kb-40",
        "title": "Changing the delivery address",
        "text": "Possible until the order ships.",
    },
    {
        "id": "kb-44",
        "title": "Lookup errors",
        "text": "If an order cannot be found, ask for the order id.",
    },
]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2}


# ---- the upstream ---------------------------------------------------------------------------


@dataclass
class Upstream:
    """The services the agent's tools talk to, with a failure schedule.

    Attributes:
        clock: simulated time; every request takes ``latency_ms`` of it.
        down: windows of simulated time ``(start_ms, end_ms, status)`` when http answers `status`.
        lost_acks: how many email sends are delivered and then answered 503.
        rng: the simulation's seeded randomness (the tools' retry jitter draws from it too), so
            one scenario always plays out the same way.
        delivered: emails received per recipient.
        requests: requests received per endpoint (retries included).
    """

    clock: FakeClock = field(default_factory=FakeClock, repr=False)
    down: list[tuple[float, float, int]] = field(default_factory=list, repr=False)
    lost_acks: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)
    latency_ms: float = 40.0
    herd_ms: float = 0.0
    delivered: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    outbox: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _keys: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def healthy(cls, *, seed: int | str = 0, clock: FakeClock | None = None) -> Upstream:
        """An upstream that answers everything with 200."""
        return cls(clock=clock or FakeClock(), rng=random.Random(f"healthy:{seed}"))

    @classmethod
    def flaky(
        cls, seed: int | str, *, clock: FakeClock | None = None, lost_acks: int = 1
    ) -> Upstream:
        """An upstream down in seeded windows (429/503) whose email gateway loses `lost_acks`
        acks."""
        clock = clock or FakeClock()
        rng = random.Random(f"flaky:{seed}")
        down: list[tuple[float, float, int]] = []
        t = clock.now_ms + rng.uniform(0, 60)
        for _ in range(12):
            length = rng.uniform(*DOWN_MS)
            down.append((t, t + length, rng.choice((429, 503, 503))))
            t += length + rng.uniform(*UP_MS)
        return cls(clock=clock, down=down, lost_acks=lost_acks, rng=rng, herd_ms=HERD_MS)

    # -- failure schedule ---------------------------------------------------------------------

    def status_now(self) -> int:
        """The status http answers now; a request while down keeps the upstream down longer."""
        now = self.clock.now_ms
        for i, (start, end, status) in enumerate(self.down):
            if start <= now < end:
                # The thundering herd: every request that hits an overloaded upstream adds to its
                # backlog, so retries that come fast and in step keep it down.
                self.down[i] = (start, end + self.herd_ms, status)
                return status
        return 200

    def _arrive(self, endpoint: str) -> None:
        self.requests[endpoint] += 1
        self.clock.sleep(self.latency_ms)

    # -- endpoints ----------------------------------------------------------------------------

    def get(self, path: str) -> dict[str, Any]:
        """``GET path``: /orders/<id> or /customers/<id>; raises `HTTPStatusError`."""
        self._arrive("GET /" + path.strip("/").split("/")[0])
        status = self.status_now()
        if status != 200:
            raise HTTPStatusError(status, f"GET {path}")
        m = re.fullmatch(r"/(orders|customers)/([A-Z]-\d+)", path)
        table = {"orders": ORDERS, "customers": CUSTOMERS}[m.group(1)] if m else {}
        if not m or m.group(2) not in table:
            raise HTTPStatusError(404, f"GET {path}")
        return dict(table[m.group(2)])

    def search(self, query: str, limit: int = 2) -> list[dict[str, str]]:
        """The knowledge base: articles ranked by words shared with `query` (never fails)."""
        self.requests["kb"] += 1
        self.clock.sleep(15)
        q = _words(query)
        scored = sorted(
            ARTICLES, key=lambda a: (-len(q & _words(a["title"] + " " + a["text"])), a["id"])
        )
        return [{"id": a["id"], "title": a["title"]} for a in scored[:limit]]

    def send_email(
        self, to: str, subject: str, body: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Deliver an email; a repeated idempotency key returns the first message id, delivering
        nothing.
        """
        self._arrive("POST /emails")
        if idempotency_key is not None and idempotency_key in self._keys:
            return {"message_id": self._keys[idempotency_key], "status": "duplicate_suppressed"}
        message_id = f"msg-{len(self.outbox) + 1:04d}"
        self.outbox.append({"message_id": message_id, "to": to, "subject": subject, "body": body})
        self.delivered[to] += 1
        if idempotency_key is not None:
            self._keys[idempotency_key] = message_id
        if self.lost_acks > 0:
            self.lost_acks -= 1
            raise HTTPStatusError(
                503, "POST /emails (gateway timeout after the message was accepted)"
            )
        return {"message_id": message_id, "status": "queued"}


_current: contextvars.ContextVar[Upstream | None] = contextvars.ContextVar(
    "support_agent_upstream", default=None
)
_default: Upstream | None = None


def current() -> Upstream:
    """The upstream the tools talk to now (a healthy one unless `use` says otherwise)."""
    up = _current.get()
    if up is None:
        global _default
        if _default is None:
            _default = Upstream.healthy()
        up = _default
    return up


@contextlib.contextmanager
def use(upstream: Upstream) -> Iterator[Upstream]:
    """Make the tools talk to `upstream` inside the block."""
    token = _current.set(upstream)
    try:
        yield upstream
    finally:
        _current.reset(token)
