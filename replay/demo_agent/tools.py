"""The support agent's tools, recorded with ``@rec.tool``: kb.search, http.get, email.send.

Retries live here, in the tool layer, as they did in the incident: one recorded ``http.get`` step
is one call of the tool, however many attempts it made inside (its duration shows them, and a
final error says how many). What the deploy flag changes (see `config`):

========  ===============================================  =====================================
version   http.get                                         email.send
========  ===============================================  =====================================
v1        up to 8 retries, fixed 50 ms apart (no jitter)   no idempotency key, no retry
v2        up to 2 retries, exponential backoff + jitter    idempotency key from to+subject+body;
                                                           up to 2 retries (safe: deduplicated)
========  ===============================================  =====================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from replay.demo_agent import upstream
from replay.demo_agent.config import rec, version
from replay.demo_agent.upstream import HTTPStatusError

__all__ = [
    "BASE_URL",
    "RETRY",
    "RetryPolicy",
    "email_send",
    "http_get",
    "idempotency_key",
    "kb_search",
]

BASE_URL = "https://api.shop.test"
RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How a tool retries a retryable HTTP status (429/5xx)."""

    retries: int
    base_ms: float
    exponential: bool
    jitter: bool

    def delay_ms(self, attempt: int, rng: Any) -> float:
        """Wait before retry number ``attempt + 1``."""
        d = self.base_ms * (2**attempt if self.exponential else 1)
        # "Equal jitter": half fixed, half random, so clients that failed together retry apart.
        return d / 2 + rng.uniform(0, d / 2) if self.jitter else d


RETRY: dict[str, RetryPolicy] = {
    "v1": RetryPolicy(retries=8, base_ms=50, exponential=False, jitter=False),
    "v2": RetryPolicy(retries=2, base_ms=600, exponential=True, jitter=True),
}


@rec.tool("kb.search")
def kb_search(query: str) -> list[dict[str, str]]:
    """Search the knowledge base; the two best articles (id, title)."""
    return upstream.current().search(query)


@rec.tool("http.get")
def http_get(url: str) -> dict[str, Any]:
    """GET a JSON resource of the shop API, retrying 429/5xx per the deployed `RetryPolicy`.

    Raises:
        HTTPStatusError: the last answer was an error (the message says after how many attempts).
    """
    up = upstream.current()
    policy = RETRY[version()]
    path = url.removeprefix(BASE_URL)
    attempt = 0
    while True:
        try:
            return up.get(path)
        except HTTPStatusError as exc:
            if exc.status_code not in RETRYABLE or attempt >= policy.retries:
                raise HTTPStatusError(
                    exc.status_code, f"GET {url} after {attempt + 1} attempt(s)"
                ) from None
            up.clock.sleep(policy.delay_ms(attempt, up.rng))
            attempt += 1


def idempotency_key(to: str, subject: str, body: str) -> str:
    """The key v2 sends with an email: the same message always gets the same key."""
    return "idem-" + hashlib.sha256(f"{to}\n{subject}\n{body}".encode()).hexdigest()[:20]


@rec.tool("email.send")
def email_send(to: str, subject: str, body: str) -> dict[str, Any]:
    """Send an email to a customer.

    Raises:
        HTTPStatusError: the gateway answered an error (in v1 the message may still have gone out).
    """
    up = upstream.current()
    if version() == "v1":
        return up.send_email(to, subject, body)
    policy = RETRY["v2"]
    key = idempotency_key(to, subject, body)
    attempt = 0
    while True:
        try:
            return up.send_email(to, subject, body, idempotency_key=key)
        except HTTPStatusError as exc:
            if exc.status_code not in RETRYABLE or attempt >= policy.retries:
                raise
            up.clock.sleep(policy.delay_ms(attempt, up.rng))
            attempt += 1
