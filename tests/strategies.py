"""Hypothesis strategies that plant secrets and PII into JSON, for "nothing planted survives" tests.

`planted_values()` draws one `Planted` value of a kind the default redaction rules must catch;
`json_with_planted()` draws ``(value, planted)``: arbitrary nested JSON with such values planted in
string leaves (alone or inside sentences, like exception messages), in dict keys (emails), as int
card numbers and under secret-looking keys. ``planted`` lists the strings that must not occur
anywhere after redaction. Each is long and random enough (>= 10 characters, high entropy) that a
substring search over the raw bytes of a database or log file has no false positives.

Planted text is always separated from its neighbours by whitespace or punctuation the rules treat
as a boundary (the way PII sits in real text); ``"x4111..."`` glued to a word is not a card number.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import string
from typing import Any, NamedTuple

from hypothesis import strategies as st

__all__ = [
    "SECRET_KEY_NAMES",
    "Planted",
    "api_keys",
    "bearer_tokens",
    "cards",
    "emails",
    "filler_text",
    "ibans",
    "ipv4s",
    "json_with_planted",
    "jwts",
    "luhn_check_digit",
    "phones",
    "planted_values",
    "secret_keyed_values",
    "ssns",
]


class Planted(NamedTuple):
    """One planted value.

    ``text`` is what goes into the data; ``secret`` is the part that must not survive (for a bearer
    token, ``text`` is ``"Bearer <token>"`` and ``secret`` the token). ``key`` is set for values
    that are secret only because of the dict key they sit under.
    """

    kind: str
    text: str
    secret: str
    key: str | None = None


_ALNUM = string.ascii_letters + string.digits
_LOWER_DIGITS = string.ascii_lowercase + string.digits
_B64URL = _ALNUM + "-_"

#: Key names the default rules treat as secret, in the spellings agents and HTTP use.
SECRET_KEY_NAMES: tuple[str, ...] = (
    "password",
    "passwd",
    "api_key",
    "apiKey",
    "X-Api-Key",
    "x_api_key",
    "client_secret",
    "clientSecret",
    "access_token",
    "refresh_token",
    "accessToken",
    "token",
    "Authorization",
    "Cookie",
    "set-cookie",
    "private_key",
    "aws_secret_access_key",
)


def _chars(alphabet: str, n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=n, max_size=n)


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these sit at odd positions once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


@st.composite
def emails(draw: st.DrawFn) -> str:
    """``local@domain.tld`` with a random 8-14 character local part."""
    local = (
        draw(_chars(string.ascii_lowercase, 1))
        + draw(st.text(alphabet=_LOWER_DIGITS + "._", min_size=6, max_size=12)).strip("._")
        + draw(_chars(_LOWER_DIGITS, 2))
    )
    domain = (
        draw(_chars(string.ascii_lowercase, 1))
        + draw(st.text(alphabet=_LOWER_DIGITS + "-", min_size=2, max_size=10)).strip("-")
        + draw(_chars(string.ascii_lowercase, 1))
    )
    tld = draw(st.sampled_from(["com", "org", "io", "net", "co.uk", "de", "example"]))
    local = local.replace("..", ".").replace("._", "_").replace("_.", "_")
    return f"{local}@{domain}.{tld}"


@st.composite
def phones(draw: st.DrawFn) -> str:
    """International (+country, 11-14 digits) and US/UK national formats with separators."""

    def d(n: int) -> str:
        return draw(_chars(string.digits, n))

    def nxx() -> str:
        return draw(st.sampled_from("23456789")) + d(2)

    kind = draw(st.sampled_from(["e164", "intl", "us_paren", "us_dash", "us_dot", "uk", "fr"]))
    if kind == "e164":
        return "+" + draw(st.sampled_from(["1", "44", "49", "33", "61"])) + nxx() + d(7)
    if kind == "intl":
        return f"+{draw(st.sampled_from(['44', '49', '33', '34']))} {d(2)} {d(4)} {d(4)}"
    if kind == "us_paren":
        return f"({nxx()}) {nxx()}-{d(4)}"
    if kind == "us_dash":
        return f"{nxx()}-{nxx()}-{d(4)}"
    if kind == "us_dot":
        return f"{nxx()}.{nxx()}.{d(4)}"
    if kind == "uk":
        return f"0{d(2)} {d(4)} {d(4)}"
    return f"0{draw(st.sampled_from('123456789'))} {d(2)} {d(2)} {d(2)} {d(2)}"


@st.composite
def cards(draw: st.DrawFn) -> str:
    """Luhn-valid Visa / Mastercard (16 digits) and Amex (15), plain or grouped."""
    brand = draw(st.sampled_from(["visa", "mc", "amex"]))
    if brand == "amex":
        body = draw(st.sampled_from(["34", "37"])) + draw(_chars(string.digits, 12))
    else:
        body = "4" if brand == "visa" else draw(st.sampled_from(["51", "52", "53", "54", "55"]))
        body += draw(_chars(string.digits, 15 - len(body)))
    number = body + luhn_check_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    if not sep:
        return number
    if len(number) == 15:
        return sep.join((number[:4], number[4:10], number[10:]))
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


_IBAN_FORMATS = {  # country: BBAN alphabet per position (d digit, A uppercase letter)
    "DE": "d" * 18,
    "GB": "AAAA" + "d" * 14,
    "NL": "AAAA" + "d" * 10,
    "FR": "d" * 23,
    "ES": "d" * 20,
    "CH": "d" * 17,
}


@st.composite
def ibans(draw: st.DrawFn) -> str:
    """Mod-97-valid IBANs of a few countries, compact or in groups of four."""
    country = draw(st.sampled_from(sorted(_IBAN_FORMATS)))
    bban = "".join(
        draw(st.sampled_from(string.digits if c == "d" else string.ascii_uppercase))
        for c in _IBAN_FORMATS[country]
    )
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    iban = f"{country}{check:02d}{bban}"
    if draw(st.booleans()):
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


@st.composite
def ssns(draw: st.DrawFn) -> str:
    """US SSNs ``NNN-NN-NNNN`` with a valid area (not 000, 666 or 9xx)."""
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    group = draw(st.integers(1, 99))
    serial = draw(st.integers(1, 9999))
    return f"{area:03d}-{group:02d}-{serial:04d}"


@st.composite
def ipv4s(draw: st.DrawFn) -> str:
    """Public IPv4 addresses with 2-3 digit octets (at least 11 characters, so they stay unique).

    Loopback, private, link-local and reserved ranges are kept by redaction (not personal data),
    so they are not planted.
    """
    first = draw(st.integers(11, 223))
    rest = draw(st.lists(st.integers(10, 254), min_size=3, max_size=3))
    ip = ".".join(str(o) for o in [first, *rest])
    if not ipaddress.IPv4Address(ip).is_global:
        ip = ".".join(str(o) for o in [81, *rest])
    return ip


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@st.composite
def jwts(draw: st.DrawFn) -> str:
    """Three-part JWTs whose header and payload are base64url JSON (so both start ``eyJ``)."""
    header = {"alg": draw(st.sampled_from(["HS256", "RS256"])), "typ": "JWT"}
    payload = {"sub": draw(_chars(_ALNUM, 12)), "iat": draw(st.integers(10**9, 2 * 10**9))}
    sig = draw(st.text(alphabet=_B64URL, min_size=20, max_size=43))
    return ".".join(
        (_b64url(json.dumps(header).encode()), _b64url(json.dumps(payload).encode()), sig)
    )


@st.composite
def bearer_tokens(draw: st.DrawFn) -> tuple[str, str]:
    """``("Bearer <token>", token)``: opaque tokens of 24-40 characters with a digit."""
    token = draw(st.text(alphabet=_ALNUM + "._-", min_size=23, max_size=39)) + draw(
        _chars(string.digits, 1)
    )
    token = draw(_chars(_ALNUM, 1)) + token
    return f"{draw(st.sampled_from(['Bearer', 'bearer']))} {token}", token


@st.composite
def api_keys(draw: st.DrawFn) -> str:
    """Provider keys: OpenAI ``sk-``/``sk-proj-``, AWS ``AKIA``, GitHub ``ghp_``, Slack
    ``xoxb-``."""
    kind = draw(st.sampled_from(["sk", "sk-proj", "akia", "ghp", "xoxb", "stripe"]))
    if kind == "sk":
        return "sk-" + draw(_chars(_ALNUM, 48))
    if kind == "sk-proj":
        return "sk-proj-" + draw(_chars(_ALNUM + "_-", 40)) + draw(_chars(_ALNUM, 20))
    if kind == "akia":
        return "AKIA" + draw(_chars(string.ascii_uppercase + string.digits, 16))
    if kind == "ghp":
        return "ghp_" + draw(_chars(_ALNUM, 36))
    if kind == "stripe":
        return "sk_live_" + draw(_chars(_ALNUM, 24))
    digits = string.digits
    return f"xoxb-{draw(_chars(digits, 12))}-{draw(_chars(digits, 13))}-{draw(_chars(_ALNUM, 24))}"


@st.composite
def secret_keyed_values(draw: st.DrawFn) -> Planted:
    """A random 16-24 character value under a secret key name (caught because of the key)."""
    key = draw(st.sampled_from(SECRET_KEY_NAMES))
    value = draw(_chars(_ALNUM, 1)) + draw(st.text(alphabet=_ALNUM, min_size=15, max_size=23))
    return Planted("secret", value, value, key)


def _simple(kind: str, strategy: st.SearchStrategy[str]) -> st.SearchStrategy[Planted]:
    return strategy.map(lambda s: Planted(kind, s, s))


def planted_values(*, keyed: bool = True) -> st.SearchStrategy[Planted]:
    """One planted secret or PII value of any kind the default rules catch.

    Args:
        keyed: include values that are secret only under a secret key (``Planted.key`` set).
    """
    kinds = [
        _simple("email", emails()),
        _simple("phone", phones()),
        _simple("card", cards()),
        _simple("iban", ibans()),
        _simple("ssn", ssns()),
        _simple("ipv4", ipv4s()),
        _simple("jwt", jwts()),
        bearer_tokens().map(lambda t: Planted("bearer", t[0], t[1])),
        _simple("api_key", api_keys()),
    ]
    if keyed:
        kinds.append(secret_keyed_values())
    return st.one_of(kinds)


_WORDS = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8)
_SEPARATORS = st.sampled_from([" ", ", ", "; ", ": ", " (", ") ", "\n", "\t", " - ", ". "])


@st.composite
def filler_text(draw: st.DrawFn, max_words: int = 6) -> str:
    """Ordinary words and punctuation: nothing a default rule catches."""
    words = draw(st.lists(_WORDS, max_size=max_words))
    return " ".join(words)


@st.composite
def _sentence_with(draw: st.DrawFn, plants: list[Planted]) -> str:
    """Plants embedded in filler text, e.g. ``"ValueError: cannot email bob@x.io; retry"``."""
    parts: list[str] = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(["ValueError: ", "failed for ", "", "note "])))
        parts.append(draw(filler_text(3)))
    for p in plants:
        if parts:
            parts.append(draw(_SEPARATORS))
        parts.append(p.text)
    if draw(st.booleans()):
        parts.append(draw(_SEPARATORS))
        parts.append(draw(filler_text(3)))
    return "".join(parts)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    filler_text(),
    st.sampled_from(["2024-05-01T10:30:00Z", "ord_000123", "v1.2.3", "19.99", "eu-west-1"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_WORDS, children, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def json_with_planted(
    draw: st.DrawFn, min_plants: int = 1, max_plants: int = 6, keyed: bool = True
) -> tuple[Any, list[str]]:
    """``(value, planted)``: nested JSON with planted values; ``planted`` must not survive.

    Plants go into string leaves (alone or inside sentences), dict keys (emails), int leaves (card
    numbers without separators) and values under secret keys. The top level is always a dict, the
    shape of tool args, outputs and run inputs.
    """
    plants = draw(st.lists(planted_values(keyed=keyed), min_size=min_plants, max_size=max_plants))
    value: dict[str, Any] = {"args": draw(_JSON), "items": []}
    for p in plants:
        slot = draw(st.sampled_from(["leaf", "sentence", "key", "int", "nested"]))
        if p.key is not None:
            holder = {p.key: p.text}
        elif slot == "key" and p.kind == "email":
            holder = {p.text: draw(_JSON)}
        elif slot == "int" and p.kind == "card" and p.text.isdigit():
            holder = {"n": int(p.text)}
        elif slot == "sentence":
            holder = {"message": draw(_sentence_with([p]))}
        elif slot == "nested":
            holder = {"outer": [draw(_JSON), {"inner": draw(_sentence_with([p]))}]}
        else:
            holder = {"value": p.text}
        value["items"].append(holder)
    in_text = [p for p in plants if p.key is None]
    if len(in_text) >= 2 and draw(st.booleans()):
        value["error"] = {"class": "RuntimeError", "message": draw(_sentence_with(in_text[:3]))}
    return value, [p.secret for p in plants]
