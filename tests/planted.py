"""A seeded generator of secrets and PII of every kind the default rules must catch.

`plant(rng)` returns one `Planted`: ``text`` goes into the data, ``needles`` are the strings that
must not occur anywhere after redaction (for a bearer token the token, for a key=value the value,
for bytes the raw text and its base64). ``key`` is set for values secret only under a key name.
Every needle is random and at least 10 characters long, so a substring search over raw file bytes
has no false positives.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import string
from typing import Any, NamedTuple

__all__ = ["KINDS", "Planted", "plant", "plants"]

_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"


class Planted(NamedTuple):
    kind: str
    text: Any  # str, or bytes for kind "bytes"
    needles: tuple[str, ...]
    key: str | None = None


def _s(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _luhn_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _iban(rng: random.Random) -> str:
    country, bban = rng.choice(
        [("DE", "d" * 18), ("GB", "AAAA" + "d" * 14), ("NL", "AAAA" + "d" * 10), ("FR", "d" * 23)]
    )
    body = "".join(rng.choice(string.digits if c == "d" else string.ascii_uppercase) for c in bban)
    check = 98 - int("".join(str(int(c, 36)) for c in body + country + "00")) % 97
    return f"{country}{check:02d}{body}"


def _public_ipv4(rng: random.Random) -> str:
    while True:
        ip = (
            f"{rng.randint(11, 223)}.{rng.randint(10, 254)}."
            f"{rng.randint(10, 254)}.{rng.randint(10, 254)}"
        )
        if ipaddress.IPv4Address(ip).is_global:
            return ip


def _public_ipv6(rng: random.Random) -> str:
    while True:
        groups = [f"{rng.randint(0x1000, 0xFFFF):x}" for _ in range(5)]
        ip = str(
            ipaddress.IPv6Address(
                f"2a0{rng.randint(0, 9)}:{':'.join(groups[:3])}::{groups[3]}:{groups[4]}"
            )
        )
        if ipaddress.IPv6Address(ip).is_global and len(ip) >= 12:
            return ip


def _nanp(rng: random.Random) -> str:
    return (
        f"{rng.randint(2, 9)}{rng.randint(0, 99):02d}"
        f"{rng.randint(2, 9)}{rng.randint(0, 999999):06d}"
    )


def _email(rng: random.Random) -> str:
    return (
        f"{_s(rng, string.ascii_lowercase, 6)}."
        f"{_s(rng, string.ascii_lowercase + string.digits, 5)}@"
        f"{_s(rng, string.ascii_lowercase, 7)}.{rng.choice(['com', 'io', 'de', 'co.uk'])}"
    )


def _jwt(rng: random.Random) -> str:
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    body = (
        base64.urlsafe_b64encode(f'{{"sub":"{_s(rng, _ALNUM, 12)}"}}'.encode()).decode().rstrip("=")
    )
    return f"{head}.{body}.{_s(rng, _ALNUM + '-_', 32)}"


def _card(rng: random.Random) -> str:
    body = "4" + _s(rng, string.digits, 14)
    return body + _luhn_digit(body)


def _pw(rng: random.Random) -> str:
    return _s(rng, string.ascii_letters, 1) + _s(rng, _ALNUM, 15)


_KEYED = (
    "pwd",
    "pass",
    "passwd",
    "password",
    "private_key_pem",
    "x-session",
    "api-key",
    "accessToken",
    "X-Api-Key",
    "Cookie",
    "client_secret",
    "refresh_token",
    "db_pass",
    "sessionId",
)


def _make(kind: str, rng: random.Random) -> Planted:
    if kind == "email":
        e = _email(rng)
        return Planted(kind, e, (e,))
    if kind == "email_idn":
        e = (
            f"jürgen.{_s(rng, string.ascii_lowercase, 6)}"
            f"@bücher{_s(rng, string.ascii_lowercase, 4)}.de"
        )
        return Planted(kind, e, (e,))
    if kind == "email_punycode":
        e = (
            f"ivan.{_s(rng, string.ascii_lowercase, 6)}"
            f"@xn--{_s(rng, string.ascii_lowercase, 6)}-kva.xn--p1ai"
        )
        return Planted(kind, e, (e,))
    if kind == "email_localhost":
        e = f"root.{_s(rng, string.ascii_lowercase, 7)}@localhost"
        return Planted(kind, e, (e,))
    if kind == "phone10":
        p = _nanp(rng)
        return Planted(kind, f"call {p} today", (p,))
    if kind == "phone_intl":
        p = f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
        return Planted(kind, p, (p,))
    if kind == "tel":
        p = f"+1-{rng.randint(200, 999)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        return Planted(kind, f"<a href='tel:{p}'>", (p,))
    if kind == "ipv4":
        ip = _public_ipv4(rng)
        return Planted(kind, f"from {ip}:443", (ip,))
    if kind == "ipv6":
        ip = _public_ipv6(rng)
        return Planted(kind, f"peer [{ip}]:8443", (ip,))
    if kind == "pem":
        body = _s(rng, _B64, 64)
        text = (
            f"-----BEGIN PRIVATE KEY-----\n{body}\n{_s(rng, _B64, 40)}\n-----END PRIVATE KEY-----\n"
        )
        return Planted(kind, text, (body,))
    if kind == "aws":
        akia = "AKIA" + _s(rng, string.ascii_uppercase + string.digits, 16)
        secret = (
            _s(rng, string.ascii_uppercase, 2)
            + _s(rng, string.ascii_lowercase, 2)
            + _s(rng, _B64, 35)
            + "7"
        )
        return Planted(
            kind, f"aws_access_key_id={akia} aws_secret_access_key={secret}", (akia, secret)
        )
    if kind == "postgres":
        pw = _pw(rng)
        return Planted(kind, f"postgres://app:{pw}@db.internal:5432/orders", (pw,))
    if kind == "userinfo":
        pw = _pw(rng)
        return Planted(kind, f"https://bob:{pw}@example.com/path", (pw,))
    if kind == "query":
        s = _pw(rng)
        return Planted(kind, f"https://api.example.com/v1/items?api_key={s}&page=2", (s,))
    if kind == "stripe":
        s = rng.choice(["sk_live_", "rk_live_"]) + _s(rng, _ALNUM, 24)
        return Planted(kind, s, (s,))
    if kind == "ya29":
        s = "ya29." + _s(rng, _ALNUM + "-_", 40)
        return Planted(kind, s, (s,))
    if kind == "github":
        s = (
            rng.choice(["ghp_", "gho_"]) + _s(rng, _ALNUM, 36)
            if rng.random() < 0.7
            else "github_pat_" + _s(rng, _ALNUM + "_", 60)
        )
        return Planted(kind, s, (s,))
    if kind == "slack":
        s = f"xox{rng.choice('bpa')}-{_s(rng, string.digits, 12)}-{_s(rng, _ALNUM, 24)}"
        return Planted(kind, s, (s,))
    if kind == "openai":
        s = "sk-" + _s(rng, _ALNUM, 48)
        return Planted(kind, s, (s,))
    if kind == "iban":
        s = _iban(rng)
        return Planted(kind, s, (s,))
    if kind == "iban_lower":
        s = _iban(rng).lower()
        return Planted(kind, f"pay to {s} please", (s,))
    if kind == "card":
        s = _card(rng)
        return Planted(kind, s, (s,))
    if kind == "ssn":
        s = f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
        return Planted(kind, f"ssn {s}", (s,))
    if kind == "jwt":
        s = _jwt(rng)
        return Planted(kind, s, (s,))
    if kind == "bearer":
        s = _pw(rng) + "9"
        return Planted(kind, f"Bearer {s}", (s,))
    if kind == "dict_repr":
        pw, tok = _pw(rng), _pw(rng)
        return Planted(kind, f"{{'password': '{pw}', 'access_token': '{tok}', 'n': 1}}", (pw, tok))
    if kind == "kv_text":
        key = rng.choice(["pwd", "passwd", "X-Session", "api-key", "accessToken", "client_secret"])
        s = _pw(rng)
        return Planted(kind, f"{key}{rng.choice(['=', ': ', '='])}{s}", (s,))
    if kind == "keyed":
        s = _pw(rng)
        return Planted(kind, s, (s,), rng.choice(_KEYED))
    if kind == "bytes":
        e = _email(rng)
        raw = f"to: {e}\n".encode()
        return Planted(kind, raw, (e, base64.b64encode(raw).decode()))
    if kind == "base64":
        e = _email(rng)
        b = base64.b64encode(f"contact {e} now".encode()).decode()
        return Planted(kind, b, (e, b))
    raise ValueError(kind)


KINDS: tuple[str, ...] = (
    "email",
    "email_idn",
    "email_punycode",
    "email_localhost",
    "phone10",
    "phone_intl",
    "tel",
    "ipv4",
    "ipv6",
    "pem",
    "aws",
    "postgres",
    "userinfo",
    "query",
    "stripe",
    "ya29",
    "github",
    "slack",
    "openai",
    "iban",
    "iban_lower",
    "card",
    "ssn",
    "jwt",
    "bearer",
    "dict_repr",
    "kv_text",
    "keyed",
    "bytes",
    "base64",
)


def plant(rng: random.Random, kind: str | None = None) -> Planted:
    """One planted value (of `kind`, else a random kind)."""
    return _make(kind or rng.choice(KINDS), rng)


def plants(rng: random.Random, n: int) -> list[Planted]:
    """`n` planted values, every kind at least once when n >= len(KINDS)."""
    out = [plant(rng, k) for k in KINDS[: min(n, len(KINDS))]]
    out += [plant(rng) for _ in range(n - len(out))]
    rng.shuffle(out)
    return out
