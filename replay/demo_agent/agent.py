"""The support agent: a scripted policy stands in for the model, so runs are deterministic.

It answers "where is my order?" tickets: search the knowledge base, fetch the order and the
customer, email the customer. The policy differs by deploy (see `config`):

* ``v1`` (prompt support-v3): "if a tool call fails, rephrase your search and try again", and
  "if sending fails, send it again". Against a flaky upstream this loops (about 12 tool calls
  instead of 4) and, when the email gateway loses an acknowledgement, emails the customer twice.
  The run still ends ``completed``.
* ``v2`` (prompt support-v4): a failed upstream call (after the tool's bounded retries) is never a
  reason to search again: the agent sends one holding email and ends the run with the stop reason
  ``escalated`` for a human to pick up.
"""

from __future__ import annotations

from typing import Any

import replay
from replay.demo_agent.config import DeployedVersions, rec, version
from replay.demo_agent.tools import BASE_URL, email_send, http_get, kb_search
from replay.demo_agent.upstream import HTTPStatusError

__all__ = ["MAX_REWRITES_V1", "UPSTREAM_ERRORS", "handle"]

#: What the policy reads as "the upstream call failed": an HTTP error answer, a timeout, a refused
#: connection (a timeout or a connection error is what a fault test injects; the fake upstream
#: itself only answers with HTTP errors).
UPSTREAM_ERRORS = (HTTPStatusError, TimeoutError, ConnectionError)

#: v1's bound on "rephrase your search and try again".
MAX_REWRITES_V1 = 6
_REWRITES = [
    "{subject} order status",
    "order status explained",
    "shipping delays carrier",
    "order lookup errors",
    "where is my order tracking",
    "delivery address order",
]
# The scripted policy's token use per turn (the context grows each turn) and its price.
_TOKENS_BASE, _TOKENS_PER_TURN, _TOKENS_OUT = 420, 180, 60
_PRICE_IN, _PRICE_OUT = 3.0 / 1e6, 15.0 / 1e6


def _think(turn: int) -> None:
    """One policy turn: record the tokens a model would have used to decide the next step."""
    tin = _TOKENS_BASE + _TOKENS_PER_TURN * turn
    rec.usage(
        tokens_in=tin, tokens_out=_TOKENS_OUT, cost_usd=tin * _PRICE_IN + _TOKENS_OUT * _PRICE_OUT
    )


def _reply(
    ticket: dict[str, Any],
    order: dict[str, Any],
    customer: dict[str, Any],
    articles: list[dict[str, str]],
) -> tuple[str, str]:
    subject = f"Re: {ticket['subject']} [{ticket['ticket_id']}]"
    see = f"\n\nMore: {articles[0]['title']} ({articles[0]['id']})." if articles else ""
    body = (
        f"Hi {customer['first_name']},\n\n"
        f"Your order {order['id']} is {order['status']} with {order['carrier']} "
        f"(tracking {order['tracking']}), expected in {order['eta_days']} day(s).{see}\n\n"
        "The support team"
    )
    return subject, body


@rec.agent("support-agent", versions=DeployedVersions())
def handle(ticket: dict[str, Any]) -> str:
    """Answer one support ticket; returns what was done (no personal data in it)."""
    if version() == "v1":
        return _handle_v1(ticket)
    return _handle_v2(ticket)


def _handle_v1(ticket: dict[str, Any]) -> str:
    turn = 0
    _think(turn)
    articles = kb_search(ticket["subject"])
    order: dict[str, Any] | None = None
    customer: dict[str, Any] | None = None
    rewrites = 0
    while order is None or customer is None:
        turn += 1
        _think(turn)
        try:
            if order is None:
                order = http_get(f"{BASE_URL}/orders/{ticket['order_id']}")
            if customer is None:
                customer = http_get(f"{BASE_URL}/customers/{ticket['customer_id']}")
        except UPSTREAM_ERRORS:
            # support-v3: "If a tool call fails, rephrase your search and try again."
            if rewrites >= MAX_REWRITES_V1:
                return f"could not answer ticket {ticket['ticket_id']}: the shop API kept failing"
            articles = kb_search(_REWRITES[rewrites].format(subject=ticket["subject"]))
            rewrites += 1
    turn += 1
    _think(turn)
    subject, body = _reply(ticket, order, customer, articles)
    for _ in range(2):  # support-v3: "If sending fails, send it again."
        try:
            email_send(customer["email"], subject, body)
            break
        except UPSTREAM_ERRORS:
            continue
    return f"replied to ticket {ticket['ticket_id']}"


def _handle_v2(ticket: dict[str, Any]) -> str:
    _think(0)
    articles = kb_search(ticket["subject"])
    try:
        _think(1)
        order = http_get(f"{BASE_URL}/orders/{ticket['order_id']}")
        _think(2)
        customer = http_get(f"{BASE_URL}/customers/{ticket['customer_id']}")
    except UPSTREAM_ERRORS as exc:
        # The loop guard (support-v4): the tool already retried; searching again cannot help.
        return _escalate(ticket, f"the shop API {_failure(exc)}")
    _think(3)
    subject, body = _reply(ticket, order, customer, articles)
    try:
        email_send(customer["email"], subject, body)
    except UPSTREAM_ERRORS as exc:
        replay.stop("escalated")  # no second send: a human checks what the customer received
        return f"escalated ticket {ticket['ticket_id']}: the email gateway {_failure(exc)}"
    return f"replied to ticket {ticket['ticket_id']}"


def _failure(exc: BaseException) -> str:
    """How an upstream call failed, in a few words: ``answered 503``, ``timed out``."""
    if isinstance(exc, HTTPStatusError):
        return f"answered {exc.status_code}"
    return "timed out" if isinstance(exc, TimeoutError) else "refused the connection"


def _escalate(ticket: dict[str, Any], why: str) -> str:
    subject = f"Re: {ticket['subject']} [{ticket['ticket_id']}]"
    body = (
        "Hi,\n\nThanks for your message. We are looking into your order and will get back to you "
        "within one business day.\n\nThe support team"
    )
    try:
        email_send(ticket["from"], subject, body)
    except replay.StopRun:
        raise
    except Exception:  # noqa: BLE001 - the holding email is best effort; the escalation is not
        pass
    replay.stop("escalated")
    return f"escalated ticket {ticket['ticket_id']} to a human: {why}"
