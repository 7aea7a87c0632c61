"""Redaction: plain JSON in, redacted plain JSON out, before anything reaches disk.

`Redactor(key, config)` is a processor in structlog's style (settings in ``__init__``, work in
``__call__``). It replaces

* the value under a secret-looking key (``password``, ``api_key``, ``X-Api-Key``, ``clientSecret``,
  ...; ASCII case-insensitive, ``-``/``_``/space folded, also as a suffix) with ``[REDACTED:secret]``,
  whatever its type;
* every match of a pattern rule inside any string, dict keys included (data keyed by customer email
  is common), with a keyed pseudonym: ``HMAC-SHA256(key, rule + ":" + value)``, first 8 hex. An
  email stays email-shaped (``u1a2b3c4d@redacted.invalid``) so agent code that parses it still runs
  in replay; every other rule gives ``[<rule>:<8hex>]``;
* an int that is a Luhn-valid 13-19 digit card number with the string ``[card:<8hex>]``.

Redaction is idempotent: placeholders never match a rule, and each string is redacted to a fixed
point. Non-finite floats (not JSON) come out as null, as orjson writes them.

Speed (the recorder redacts every tool call): a value is serialized once with orjson and the
whole text is checked at C speed for what each group of rules needs: ``@`` (email), ``eyJ``
(JWT), ``sk-``/``AKIA``/``ghp_``/``xox`` (API keys), ``bearer``, secret key names before ``":``,
and, in a byte translation that maps digits to ``0`` and separators to ``_``, the shapes of
cards, SSNs, IPv4 addresses, phones and IBANs. Each check is a superset of its rules. A value
where none fires is copied by ``orjson.loads`` and never walked (`canonical` returns the bytes
themselves); otherwise one walk gathers the strings, the same checks locate which strings hold a
candidate, and only those run the rules. The rule regexes start with a literal or a character
class so that ``re`` skips ahead in C.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import gzip
import hashlib
import hmac
import ipaddress
import itertools
import json
import math
import re
import sqlite3
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import orjson

from replay.errors import CassetteDecodeError, StoreError
from replay.hashing import BYTES_TAG, canonical_bytes, to_jsonable

__all__ = [
    "DEFAULT_RULES",
    "SECRET_KEYS",
    "SECRET_MARKER",
    "FileHit",
    "Hit",
    "RedactionConfig",
    "Redactor",
    "heavy_detector",
    "heavy_settings",
    "scan_json_file",
    "scan_sqlite",
]

#: What a value under a secret key becomes.
SECRET_MARKER = "[REDACTED:secret]"

#: Names of the default pattern rules, in the order they are applied.
DEFAULT_RULES: tuple[str, ...] = (
    "pem",
    "aws_secret",
    "jwt",
    "api_key",
    "bearer",
    "url_password",
    "kv_secret",
    "email",
    "iban",
    "card",
    "ssn",
    "ipv6",
    "ipv4",
    "phone",
    "tel",
    "b64",
)

#: Secret key names, lowercase with ``-`` and spaces folded to ``_``. A key is secret when its
#: folded form ends with one of these, with or without the underscores (``x_api_key``, ``apiKey``).
SECRET_KEYS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "client_secret",
        "secret_key",
        "secret_access_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "api_key",
        "apikey",
        "x_api_key",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "private_key",
        "credential",
        "credentials",
        "cvv",
        "cvc",
        "pwd",
        "session_id",
        "session_token",
        "session_key",
    }
)

# Key names matched by token: a key is split into lowercase tokens (``accessToken`` -> access,
# token; ``X-Session`` -> x, session; ``private_key_pem`` -> private, key, pem). Up to two trailing
# tokens that only describe the form of the value (`SECRET_FORM_TOKENS`, or digits) are set aside:
# ``private_key_pem``, ``password_hash``, ``api_key_b64``, ``password2`` are secret like
# ``private_key``, ``password``, ``api_key``. Then the name is secret when it ends with a secret
# name (`SECRET_KEYS`, with or without separators) or its last token is in `SECRET_LAST_TOKENS`.
#: tokens that make a key secret as its last token (``db_pass``, ``x-session``; not ``pass_rate``)
SECRET_LAST_TOKENS: frozenset[str] = frozenset({"pass", "token", "session", "auth", "sid"})
#: trailing tokens that describe a secret's form, not what it is (``private_key_pem``)
SECRET_FORM_TOKENS: frozenset[str] = frozenset(
    {
        "pem",
        "der",
        "hash",
        "hashed",
        "digest",
        "id",
        "value",
        "val",
        "b64",
        "base64",
        "hex",
        "enc",
        "encrypted",
        "raw",
        "str",
        "string",
        "text",
        "old",
        "new",
        "current",
        "prev",
        "confirm",
        "confirmation",
        "plain",
        "plaintext",
        "data",
        "file",
        "env",
        "bytes",
        "b",
        "base",
    }
)
_KEY_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+")

_RULE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class RedactionConfig:
    """What to redact beyond (or instead of) the defaults.

    Args:
        extra_keys: more secret key names (matched like `SECRET_KEYS`).
        extra_patterns: rule name -> regex; every match becomes ``[<name>:<8hex>]``. A named group
            ``v`` limits the replacement to that part of the match.
        allow: exact values never redacted (a whole string, or a whole match such as
            ``"support@ourco.com"``).
        disabled: default rule names switched off (e.g. ``"ipv4"``).
        store_args: ``"hash"`` (default) or ``"redacted"``; read by the recorder, ignored here.

    Raises:
        ValueError: a bad regex, an unknown rule name in ``disabled``, or a bad rule name.
        TypeError: a bare string where a tuple of strings is expected.
    """

    extra_keys: tuple[str, ...] = ()
    extra_patterns: Mapping[str, str] = field(default_factory=dict)
    allow: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    store_args: Literal["hash", "redacted"] = "hash"

    def __post_init__(self) -> None:
        for name in ("extra_keys", "allow", "disabled"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)):
                raise TypeError(
                    f"RedactionConfig.{name} must be a tuple of strings, got the string {value!r}: "
                    f"write {name}=({value!r},)"
                )
            value = tuple(value)
            bad = [v for v in value if not isinstance(v, str) or not v]
            if bad:
                raise TypeError(f"RedactionConfig.{name} holds {bad[0]!r}: use non-empty strings")
            object.__setattr__(self, name, value)
        unknown = [d for d in self.disabled if d not in DEFAULT_RULES]
        if unknown:
            raise ValueError(
                f"RedactionConfig.disabled names unknown rule {unknown[0]!r}: "
                f"the default rules are {', '.join(DEFAULT_RULES)}"
            )
        if self.store_args not in ("hash", "redacted"):
            raise ValueError(
                f"RedactionConfig.store_args is {self.store_args!r}: use 'hash' or 'redacted'"
            )
        if not isinstance(self.extra_patterns, Mapping):
            raise TypeError(
                "RedactionConfig.extra_patterns must map rule names to regexes, "
                f"got {type(self.extra_patterns).__name__}"
            )
        object.__setattr__(self, "extra_patterns", MappingProxyType(dict(self.extra_patterns)))
        for name, pattern in self.extra_patterns.items():
            _compile_extra(name, pattern, self.disabled)


def _compile_extra(name: Any, pattern: Any, disabled: tuple[str, ...]) -> re.Pattern[str]:
    if not isinstance(name, str) or not _RULE_NAME.fullmatch(name):
        raise ValueError(
            f"extra_patterns rule name {name!r} is not valid: use lowercase letters, digits and "
            "'_', starting with a letter (it appears in placeholders as [name:1a2b3c4d])"
        )
    if name in DEFAULT_RULES and name not in disabled:
        raise ValueError(
            f"extra_patterns rule {name!r} has the name of a default rule: pick another name, "
            f"or add {name!r} to disabled to replace the default"
        )
    if not isinstance(pattern, str):
        raise TypeError(
            f"extra_patterns[{name!r}] must be a regex string, got {type(pattern).__name__}"
        )
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(
            f"extra_patterns[{name!r}]: bad regex {pattern!r}: {e}; fix the pattern (Python re syntax)"
        ) from None
    if compiled.fullmatch(""):
        raise ValueError(
            f"extra_patterns[{name!r}]: regex {pattern!r} matches the empty string; "
            "make it match at least one character (e.g. + instead of *)"
        )
    return compiled


@dataclass(frozen=True)
class Hit:
    """Something redaction would catch: where it is and which rule. Never the value itself."""

    path: str
    rule: str


@dataclass(frozen=True)
class FileHit:
    """A `Hit` in a file: ``location`` is a JSON path, or table, row, column and JSON path."""

    file: str
    location: str
    rule: str


# --- validators --------------------------------------------------------------------------------

_DOUBLED = "0246813579"  # the Luhn value of a digit in a doubled position


def _luhn(digits: str) -> bool:
    b = (digits[-1::-2] + digits[-2::-2].translate(_LUHN_TABLE)).encode("ascii")
    return (sum(b) - 48 * len(b)) % 10 == 0


_LUHN_TABLE = str.maketrans("0123456789", _DOUBLED)


def _valid_card(value: str) -> bool:
    digits = value.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _valid_ipv4(value: str) -> bool:
    """A well-formed public IPv4 address: loopback, private, link-local, documentation are kept."""
    if not all(len(o) == 1 or (o[0] != "0" and int(o) <= 255) for o in value.split(".")):
        return False
    return ipaddress.IPv4Address(value).is_global


def _public_ipv6(value: str) -> bool:
    """A public IPv6 address (not loopback, ULA fc00::/7, link-local, documentation 2001:db8::/32)."""
    try:
        ip = ipaddress.IPv6Address(value)
    except ValueError:
        return False
    if ip.ipv4_mapped is not None:
        return False  # the IPv4 rule sees the dotted tail
    return ip.is_global


_REDACTED_PASSWORD = re.compile(r"redacted-[0-9a-f]{8}")


def _valid_url_password(value: str) -> bool:
    return _REDACTED_PASSWORD.fullmatch(value) is None


def _valid_aws_secret(value: str) -> bool:
    # 40 characters of base64 with upper, lower and digits; a hex SHA-1 is not one.
    return (
        any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
        and not all(c in "0123456789abcdefABCDEF" for c in value)
    )


def _valid_bearer(value: str) -> bool:
    # "Bearer authentication" in prose is not a token; real tokens carry digits or are long.
    return len(value) >= 20 or any(c.isdigit() for c in value)


# SWIFT IBAN registry lengths; other country codes need a mod-97-valid run of 15-34 characters.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BI": 27,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DJ": 27,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FK": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "LY": 25,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MN": 20,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NI": 28,
    "NL": 18,
    "NO": 15,
    "OM": 23,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "RU": 33,
    "SA": 24,
    "SC": 31,
    "SD": 18,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "SO": 23,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
    "YE": 30,
}


_IBAN_DIGITS = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})  # A -> 10 ... Z -> 35


def _iban_mod97(compact: str) -> bool:
    return int((compact[4:] + compact[:4]).translate(_IBAN_DIGITS)) % 97 == 1


# --- rules -------------------------------------------------------------------------------------

# Leaf-level rules. Lookarounds keep them off neighbouring text; none of them can match a
# placeholder ([rule:1a2b3c4d], u1a2b3c4d@redacted.invalid, [REDACTED:secret]).
# Every pattern starts with a literal or a character class and checks the character before it with
# a lookbehind placed after that first character: then `re` skips ahead to candidate positions in
# C instead of trying the pattern at every position (3-10x faster on ordinary text).
_NOT_TOKEN = r"[A-Za-z0-9_\-]"
_PATTERNS: dict[str, str] = {
    "jwt": rf"eyJ(?<!{_NOT_TOKEN}eyJ)[A-Za-z0-9_\-]{{2,}}\.eyJ[A-Za-z0-9_\-]{{2,}}\.[A-Za-z0-9_\-]*",
    "pem": (
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)"
    ),
    "api_key": (
        rf"(?:sk-(?<!{_NOT_TOKEN}sk-)[A-Za-z0-9_\-]{{20,}}"
        rf"|ya29\.(?<!{_NOT_TOKEN}ya29\.)[A-Za-z0-9_\-]{{20,}}"
        rf"|sk_(?<!{_NOT_TOKEN}sk_)(?:live|test)_[A-Za-z0-9]{{16,}}"
        rf"|rk_(?<!{_NOT_TOKEN}rk_)(?:live|test)_[A-Za-z0-9]{{16,}}"
        rf"|AKIA(?<!{_NOT_TOKEN}AKIA)[0-9A-Z]{{16}}(?![0-9A-Z])"
        rf"|ASIA(?<!{_NOT_TOKEN}ASIA)[0-9A-Z]{{16}}(?![0-9A-Z])"
        rf"|gh[pousr]_(?<!{_NOT_TOKEN}gh[pousr]_)[A-Za-z0-9]{{30,}}"
        rf"|github_pat_(?<!{_NOT_TOKEN}github_pat_)[A-Za-z0-9_]{{22,}}"
        rf"|xox[abposre]-(?<!{_NOT_TOKEN}xox[abposre]-)[A-Za-z0-9\-]{{10,}}"
        rf"|AIza(?<!{_NOT_TOKEN}AIza)[0-9A-Za-z_\-]{{35}})"
    ),
    # Only with AWS context in the same string (see Redactor._aws): 40 characters of base64.
    "aws_secret": r"[A-Za-z0-9/+](?<![A-Za-z0-9/+=][A-Za-z0-9/+])[A-Za-z0-9/+]{39}(?![A-Za-z0-9/+=])",
    "bearer": (
        r"[Bb](?<![A-Za-z0-9][Bb])(?:[Ee][Aa][Rr][Ee][Rr]|[Aa][Ss][Ii][Cc])"
        r"(?:\s+|%20)(?P<v>[A-Za-z0-9\-._~+/]{8,}=*)"
    ),
    # The password of URL userinfo (postgres://user:pass@host); the URL stays a URL.
    "url_password": (r"://(?<=[A-Za-z0-9+.\-]://)[^\s/?#@:\"'<>\[\]]*:(?P<v>[^\s/?#@\"'<>]+)@"),
    # key=value, key: value, 'key': 'value' in text (logs, exception messages, dict reprs, query
    # strings, form bodies); the key decides (see Redactor._kv).
    "kv_secret": (
        r"(?P<k>[A-Za-z_][\w.\-]{0,63})(?P<kq>['\"]?)[ \t]*(?P<sep>[:=])[ \t]*"
        r"(?:(?P<q>['\"])(?P<v1>[^'\"\n]{1,500})(?P=q)|(?P<v2>[^\s'\",;&}\]\)>]+))"
    ),
    # The local part is found by scanning back from '@' (see Redactor._email): a regex that
    # starts at the local part would be tried at every letter of the text.
    "email": (
        r"@(?!redacted\.invalid)(?:"
        r"[\w\-]+(?:\.[\w\-]+)*\.(?:[^\W\d_]{2,24}|[Xx][Nn]--[A-Za-z0-9\-]{2,59})(?![\w\-])"
        r"|localhost(?![\w\-]|\.[\w]))"
    ),
    "iban": r"[A-Za-z](?<![A-Za-z0-9][A-Za-z])[A-Za-z][0-9]{2}(?: ?[A-Za-z0-9]){11,30}",
    "card": (
        r"[2-6](?<![\w.\-][2-6])"
        r"(?:[0-9]{12,18}"
        r"|[0-9]{3}(?P<s1>[ \-])[0-9]{4}(?P=s1)[0-9]{4}(?P=s1)[0-9]{4}"
        r"|(?<=3)[47][0-9]{2}(?P<s2>[ \-])[0-9]{6}(?P=s2)[0-9]{5})"
        r"(?![\w\-]|\.[0-9])"
    ),
    "ssn": (
        r"[0-8](?<![\w.\-][0-8])[0-9]{2}(?<!000)(?<!666)-(?!00)[0-9]{2}-(?!0000)[0-9]{4}"
        r"(?![\w\-]|\.[0-9])"
    ),
    # Candidates only: Python's ipaddress decides (see _public_ipv6).
    "ipv6": r"[0-9A-Fa-f:](?<![\w:.%][0-9A-Fa-f:])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*[0-9A-Fa-f:](?![\w:%])",
    # Octet values (<= 255, no leading zero) and being public are checked by _valid_ipv4.
    "ipv4": r"[0-9](?<![\w.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?!\w|\.[0-9])",
    "phone": (
        r"[+(0-9](?<![\w+.\-/][+(0-9])(?:"
        r"(?<=\+)[1-9](?:[ .\-/()]{0,2}[0-9]){9,14}"
        r"|(?<=\()[0-9]{1,5}\)[ \-]?[0-9]{2,5}(?:[ .\-/][0-9]{2,5}){1,3}"
        r"|(?<=[0-9])[0-9]{0,4}[ .\-/][0-9]{2,5}(?:[ .\-/][0-9]{2,5}){1,3}"
        r"|(?<=[2-9])[0-9]{2}[2-9][0-9]{6}"  # ten digits, NANP-shaped: 4155550100
        r")(?![\w\-/]|[.:][0-9])"
    ),
    "tel": r"[Tt][Ee][Ll]:(?P<v>\+?[0-9(][0-9().\- ]{3,30}[0-9])",
    # Whole strings only (see Redactor._b64): the decoded text is redacted and encoded again.
    # A base64 token (16+ characters) whose decoded text holds something to redact (Redactor._b64).
    "b64": r"[A-Za-z0-9+/](?<![A-Za-z0-9+/][A-Za-z0-9+/])[A-Za-z0-9+/]{15,}={0,2}(?![A-Za-z0-9+/=])",
}
_VALIDATORS: dict[str, Callable[[str], bool]] = {
    "ipv4": _valid_ipv4,
    "ipv6": _public_ipv6,
    "url_password": _valid_url_password,
    "aws_secret": _valid_aws_secret,
    "card": _valid_card,
    "bearer": _valid_bearer,
}
_IBAN_RX = re.compile(_PATTERNS["iban"])
_EMAIL_RX = re.compile(_PATTERNS["email"])
_EMAIL_PCT_RX = re.compile("%40" + _PATTERNS["email"][1:])
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_KV_RX = re.compile(_PATTERNS["kv_secret"])
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "negotiate", "apikey"})
_SCHEME_TAIL = re.compile(r"[ \t]+(?:\[[a-z][a-z0-9_]*:[0-9a-f]{8}\]|[^\s'\",;&}\]\)>]+)")
_AWS_RX = re.compile(_PATTERNS["aws_secret"])
_B64_RX = re.compile(_PATTERNS["b64"])
_IPV4_SHAPE = re.compile(r"(?<![0-9])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9])")
_USERINFO = re.compile(r"[^\s/?#\"'<>\[\]]*")
# Documentation ranges for IPv4 pseudonyms (RFC 5737): valid addresses that are nobody's.
_DOC_NETS = ("192.0.2.", "198.51.100.", "203.0.113.")
_PHONE_RX = re.compile(_PATTERNS["phone"])
_DIGITS_RX = re.compile(r"[0-9]+")


def _phone_ends(s: str, e: int, n: int) -> bool:
    """The phone pattern's lookahead at `e`: not followed by a word character, - or /, or .5 / :5."""
    if e == n:
        return True
    c = s[e]
    if c.isalnum() or c in "_-/":
        return False
    return not (c in ".:" and e + 1 < n and "0" <= s[e + 1] <= "9")


# Datetimes, dataclasses and subclasses of builtins go through `to_jsonable` like everywhere else.
_DUMP_OPTS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)

# Groups of rules that share one document-level check.
_G_JWT, _G_API, _G_BEARER, _G_EMAIL, _G_IBAN, _G_CARD, _G_KEYS, _G_EXTRA = (
    1,
    2,
    4,
    8,
    16,
    32,
    64,
    128,
)
_G_SSN, _G_IPV4, _G_PHONE = 512, 1024, 2048
_G_PEM, _G_AWS, _G_URL, _G_KV, _G_IPV6, _G_TEL, _G_B64 = (
    1 << 12,
    1 << 13,
    1 << 14,
    1 << 15,
    1 << 16,
    1 << 17,
    1 << 18,
)
_G_DIGITS = _G_CARD | _G_SSN | _G_IPV4 | _G_PHONE
_RISKY = 256  # not a group: `canonical` cannot return orjson's bytes as they are
_RULE_GROUP = {
    "jwt": _G_JWT,
    "api_key": _G_API,
    "bearer": _G_BEARER,
    "email": _G_EMAIL,
    "iban": _G_IBAN,
    "card": _G_CARD,
    "ssn": _G_SSN,
    "ipv4": _G_IPV4,
    "phone": _G_PHONE,
    "pem": _G_PEM,
    "aws_secret": _G_AWS,
    "url_password": _G_URL,
    "kv_secret": _G_KV,
    "ipv6": _G_IPV6,
    "tel": _G_TEL,
    "b64": _G_B64,
}

# Document-level checks. Each one is a superset of its rules on the same text, cheap enough to run
# over every recorded value: single-byte searches (memchr), literal-prefix regexes, and two byte
# translations. None relies on a lookaround that a JSON escape next to a match could change.
#
# _CLASS: digits -> '0', A-Z -> 'A', the separators of phones and cards (space - / ( ) . _) -> '_',
# '+' and 'e' kept, ':' ',' '[' (what precedes a JSON number) -> 'n', everything else -> '!'. Same
# length as the input, so positions map back. For the existence check g-z are deleted first: no
# digit or IBAN rule can match one, and the text to search shrinks by half (a-f stay, so hex ids
# do not merge into digit runs).
_CLASS = bytes(
    48
    if 48 <= i <= 57
    else 65
    if 65 <= i <= 90
    else 95
    if i in b" -/()._"
    else 43
    if i == 43
    else 101
    if i == 101
    else 110
    if i in b":,["
    else 33
    for i in range(256)
)
_G_TO_Z = bytes(range(103, 123))
# _FOLD: A-Z -> a-z and '-' -> '_' (secret key names, 'bearer', API key prefixes). Spaces stay
# spaces so the reversed API check below, which starts at '_', is not tried at every space.
_FOLD = bytes(i + 32 if 65 <= i <= 90 else 95 if i == 45 else i for i in range(256))
_KEY_FOLD = str.maketrans({**{chr(c): chr(c + 32) for c in range(65, 91)}, "-": "_", " ": "_"})

_ESC_U = re.compile(rb"\\u")
_AT = re.compile(rb"@")
_JWT_D = re.compile(rb"eyJ")
_API_I = re.compile(rb"I(?:A(?<=AKIA|ASIA)|za(?<=AIza))")
# On the reversed fold: sk- sk_ rk_ (-> "_ks" "_kr"), gh?_, github_pat_, xox?- .
_API_R = re.compile(rb"_(?:k[sr]|[pousr]hg|tap_buhtig|[abposre]xox)")
_BEARER_D = re.compile(rb"bearer|basic")
# A separator, then either two more separators or at least 5 more digits in 2+ groups: national
# phones, SSN, grouped cards, IPv4. Not an ISO date (2024-05-01: only 4 digits after the first).
_R2 = re.compile(rb"0_(?:0+_0+_0|_?(?:00_000|000+_00))")
_R3 = re.compile(rb"\+0(?:_{0,2}0){9}")  # international phone
_IBAN_D = re.compile(rb"AA00(?:_?[A0]){11}")
# Lowercase IBANs (de89 3704 ...): on a translation with a-z -> 'a', A-Z -> 'A', digits -> '0',
# space kept, the rest -> '!': two letters at a token start, two check digits, 11+ characters.
_LOWER_CLASS = bytes(
    48
    if 48 <= i <= 57
    else 97
    if 97 <= i <= 122
    else 65
    if 65 <= i <= 90
    else 32
    if i == 32
    else 33
    for i in range(256)
)
_IBAN_LOWER_D = re.compile(rb"00(?<=[aA][aA]00)(?<![aA0][aA][aA]00)(?: ?[aA0]){11}")
_TEN_D = re.compile(rb"0(?<!00)0{9}(?!0)")  # exactly ten digits: then _ten_runs decides
_PEM_D = b"PRIVATE KEY"
_YA29_D = b"ya29."
_AWS_D = re.compile(rb"aws|akia|asia")
_TEL_D = b"tel:"
_TEL_RX = re.compile(
    re.escape(_TEL_D)
)  # `re`'s literal search beats `in` on text full of 't' and 'e'
# IPv6 with "::" or with four groups (not a clock time 10:30:00).
_IPV6_D = re.compile(rb":(?::|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f])")
# A whole JSON string that is base64 (16+ characters), or bytes tagged {"$bytes": ...}.
# Base64 runs: base64 characters -> 'b', the rest -> ' ', then a substring test for 16 b's.
_B64_CLS = bytes(
    98 if (48 <= i <= 57 or 65 <= i <= 90 or 97 <= i <= 122 or i in b"+/") else 32
    for i in range(256)
)
_B64_RUN = b"b" * 16
_B64_RUNS = re.compile(rb"bbbbbbbbbbbbbbbb+")  # a literal prefix: `re` searches it like memmem


def _mixed_case(token: str | bytes) -> bool:
    """Base64 of 16+ characters of text has upper- and lowercase letters; a path or an id rarely."""
    return not token.islower() and not token.isupper()


def _b64_runs(raw: bytes, cls: bytes) -> Iterator[int]:
    """Starts of base64 tokens the b64 rule would decode: 16+ characters (with padding a multiple of
    4), both upper- and lowercase (not a URL path, a word or a hex id)."""
    n = len(raw)
    for m in _B64_RUNS.finditer(cls):
        i, j = m.span()
        while j < n and j - m.end() < 2 and raw[j] == 61:  # '=' padding
            j += 1
        if (j - i) % 4 == 0 and _mixed_case(raw[i:j]):
            yield i


def _has_b64_run(raw: bytes, cls: bytes) -> bool:
    """`_b64_runs` finds one (a plain loop: cheaper than the generator on the hot path)."""
    n = len(raw)
    for m in _B64_RUNS.finditer(cls):
        i, j = m.span()
        e = j
        while j < n and j - e < 2 and raw[j] == 61:
            j += 1
        if (j - i) % 4 == 0:
            run = raw[i:j]
            if not run.islower() and not run.isupper():
                return True
    return False


_B64_WHOLE = re.compile(r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# Up to two trailing form tokens (reversed, folded), each with an optional separator: a trie, so
# each position costs one character lookup. Built after _reversed_trie is defined (see below).
_FORM_REV = b""


_B64_RUN40 = b"b" * 40
_BYTES_KEY = b'"$bytes":'
_SCHEME_D = re.compile(rb"://")
_Z13 = b"0" * 13  # an ungrouped card or an int: then _card_runs decides
# A JSON number that orjson writes differently from json (1e16 vs 1e+16, 0.00001 vs 1e-05): the
# cases where `canonical` must fall back to hashing.canonical_bytes.
_RISKY_FLOAT = re.compile(rb"n_?0+(?:_0+)?e")  # plus b"0.0000" in the raw bytes
_DIGIT_RUN = re.compile(rb"0000000000000(?:0{0,6})(?!0)")

_PLACEHOLDER = re.compile(
    r"\[[a-z][a-z0-9_]*:[0-9a-f]{8}\]|u[0-9a-f]{8}@redacted\.invalid|\[REDACTED:secret\]"
    r"|redacted-[0-9a-f]{8}|REDACTED"
)


def _ten_runs(cls: bytes, raw: bytes) -> Iterator[int]:
    """Starts of exactly-ten-digit runs shaped like a NANP phone, inside a string (not a number)."""
    for m in _TEN_D.finditer(cls):
        i = m.start()
        if raw[i] in b"23456789" and raw[i + 3] in b"23456789":
            # Not a JSON number ("n": 4155550100 is an id or a count; phones are strings).
            if i >= 2 and cls[i - 1] == 110 and (raw[i - 1] != 58 or raw[i - 2] == 34):
                continue
            yield i


def _card_runs(cls: bytes, raw: bytes) -> Iterator[int]:
    """Starts of maximal 13-19 digit runs that begin with 2-6 (what the card rule can match)."""
    for m in _DIGIT_RUN.finditer(cls):
        i = m.start()
        if (i == 0 or cls[i - 1] != 48) and raw[i] in b"23456":
            yield i


def _reversed_trie(words: list[bytes]) -> bytes:
    """A regex alternation of `words` as a trie; '_' also matches a space."""
    groups: dict[bytes, list[bytes]] = {}
    for w in words:
        groups.setdefault(w[:1], []).append(w[1:])
    alts = []
    for head, tails in sorted(groups.items()):
        if head == b"":
            continue
        atom = b"[_ ]" if head == b"_" else re.escape(head)
        rest = [t for t in tails if t]
        if not rest:
            alts.append(atom)
        elif len(rest) < len(tails):
            alts.append(atom + b"(?:" + _reversed_trie(rest) + b")?")
        else:
            alts.append(atom + _reversed_trie(rest))
    return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"


_FORM_REV = (
    b"(?:(?:[0-9]+|"
    + _reversed_trie(sorted({w.encode()[::-1] for w in SECRET_FORM_TOKENS}))
    + b")[^a-z0-9\"'\\\\]?){0,2}"
)


# A substring every match of the rule contains: a cheap test before running the regex.
_GATES = {
    "jwt": ".",
    "email": "",
    "ssn": "-",
    "ipv4": ".",
    "pem": "PRIVATE KEY",
    "url_password": "://",
    "ipv6": ":",
}


class _Rule:
    __slots__ = ("custom", "gate", "group", "name", "part", "regex", "validate")

    def __init__(
        self,
        name: str,
        group: int,
        regex: re.Pattern[str],
        validate: Callable[[str], bool] | None = None,
    ) -> None:
        self.name, self.group, self.regex, self.validate = name, group, regex, validate
        self.part = "v" if "v" in regex.groupindex else None
        # Rules with their own matching loop (see Redactor._iban, _email, _phone).
        self.custom = (
            name if group in (_G_IBAN, _G_EMAIL, _G_PHONE, _G_AWS, _G_KV, _G_B64, _G_IPV6) else ""
        )
        self.gate = _GATES.get(name, "") if group != _G_EXTRA else ""


# What a match of a default rule can end with (left of a placeholder) or start with (right of it).
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_ENDS_MATCH = frozenset(_ALNUM + "=_-")
_STARTS_MATCH = frozenset(_ALNUM + "+(")


def _touches(s: str, start: int, end: int) -> bool:
    """Whether replacing s[start:end] could let a match of another rule appear next to it."""
    return (start > 0 and s[start - 1] in _ENDS_MATCH) or (end < len(s) and s[end] in _STARTS_MATCH)


def _joined(out: list[str], s: str, last: int) -> str:
    """`s` rebuilt from the spliced pieces in `out` and its rest from `last` (`s` itself if none)."""
    if not out:
        return s
    out.append(s[last:])
    return "".join(out)


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Conversation memo (Redactor._canonical_memo): dicts at least this big, cache at most this big.
_MEMO_MIN_BYTES = 4096
_MEMO_MAX_BYTES = 32 * 1024 * 1024
_MEMO_LETTERS = "ghijklmnopqrstuvwxyz"  # no rule matches a run of these letters and '$'


def _memo_token(n: int) -> str:
    digits = []
    for _ in range(4):
        n, r = divmod(n, 20)
        digits.append(_MEMO_LETTERS[r])
    return "$replaymemo$" + "".join(digits) + "$qzxv$"


_IPV6_RX = re.compile(_PATTERNS["ipv6"])


def _in_userinfo(s: str, start: int, at: int) -> bool:
    """Whether s[start:at] (before an '@') is the userinfo of a URL: ``scheme://user:pass@``."""
    p = s.rfind("://", 0, start + 1)
    return p >= 0 and _USERINFO.fullmatch(s, p + 3, at) is not None


_PLUS_ONE = (1).__add__


def _path_key(path: str, key: str) -> str:
    if _IDENT.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


class Redactor:
    """Map plain JSON (dict, list, str, int, float, bool, None) to a new, redacted copy.

    Args:
        key: the per-store HMAC key that makes pseudonyms consistent within a store.
        config: extra rules, allow-list, disabled rules; the defaults when None.

    Raises:
        TypeError: ``key`` is not bytes.
        ValueError: the config holds a bad regex (see `RedactionConfig`).
    """

    def __init__(self, key: bytes, config: RedactionConfig | None = None) -> None:
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError(
                f"Redactor key must be bytes, got {type(key).__name__}: pass store.secret_key "
                "or e.g. secrets.token_bytes(32)"
            )
        self.config = config if config is not None else RedactionConfig()
        cfg = self.config
        self._mac = hmac.new(bytes(key), digestmod=hashlib.sha256)
        #: `replay.keys.fingerprint` of the key: what runs and cassettes carry, never the key
        self.key_fingerprint = hmac.new(
            bytes(key), b"agent-replay/key-fingerprint/v1", hashlib.sha256
        ).hexdigest()[:16]
        self._allow = frozenset(cfg.allow)
        self._cache: dict[tuple[str, str], str] = {}
        self._names: dict[str, str] = {}
        self._heavy: Callable[[str], list[str]] | None = (
            None  # `replay scan --deep` (detect-secrets)
        )
        self._memo: dict[bytes, bytes] = {}  # element canonical bytes -> redacted canonical bytes
        self._memo_bytes = 0

        rules = [
            _Rule(name, _RULE_GROUP[name], re.compile(_PATTERNS[name]), _VALIDATORS.get(name))
            for name in DEFAULT_RULES
            if name not in cfg.disabled
        ]
        for name, pattern in cfg.extra_patterns.items():
            rules.append(_Rule(name, _G_EXTRA, _compile_extra(name, pattern, cfg.disabled)))
        self._rules = tuple(rules)
        self._enabled = 0
        for r in rules:
            self._enabled |= r.group
        self._by_mask: dict[int, tuple[_Rule, ...]] = {}

        names = set(SECRET_KEYS) | {k.translate(_KEY_FOLD) for k in cfg.extra_keys}
        suffixes = names | {n.replace("_", "") for n in names}
        suffixes.discard("")
        self._suffixes = tuple(sorted(suffixes))
        self._suffixes_flat = tuple(sorted({x.replace("_", "") for x in suffixes} - {""}))
        self._key_cache: dict[str, bool] = {}
        # The document-level key check looks for `<name>":` in the folded JSON, reversed so the
        # regex starts with the literal `:"`. Names with characters JSON may escape cannot be
        # found that way: then keys are always looked at.
        # Keys secret by token (`_is_secret_key`) end with a last-token word, maybe followed by
        # form tokens (`_FORM_REV`). The text check (`key=value`, `key: value`, `'key': 'value'`)
        # is the same search after `=` or `:` and up to three quotes or spaces.
        words = suffixes | SECRET_LAST_TOKENS
        minimal = [s for s in words if not any(s != o and s.endswith(o) for o in words)]
        if all(re.fullmatch(r"[a-z0-9_.:/+@$]+", s) for s in minimal):
            trie = _FORM_REV + _reversed_trie([s.encode()[::-1] for s in minimal])
            quotes = b"[\"' \\\\]{0,3}"
            self._keys_rx: re.Pattern[bytes] | None = re.compile(b':"' + trie)
            # Regexes that each start with a literal (`re` then skips ahead in C). In JSON text a
            # key's own separator (`"key":`, reversed `:"k`) is the key check's business: the text
            # check skips it, so it is tried only at the few '=' and ':' inside strings.
            self._kv_text: tuple[re.Pattern[bytes], ...] = (
                re.compile(b"=" + quotes + trie),
                re.compile(b":" + quotes + trie),
            )
            self._kv_json: tuple[re.Pattern[bytes], ...] = (
                self._kv_text[0],
                re.compile(b':(?!"[^\\\\])' + quotes + trie),
            )
        else:
            self._keys_rx = None
            self._kv_text = self._kv_json = ()

    # --- public API ---------------------------------------------------------------------------

    @property
    def rules(self) -> tuple[str, ...]:
        """Names of the active pattern rules, in the order they are applied."""
        return tuple(r.name for r in self._rules)

    def __call__(self, value: Any) -> Any:
        """Return a new, redacted copy of `value` (plain JSON; other values via `to_jsonable`)."""
        t = type(value)
        if t is dict or t is list or t is tuple:
            try:
                raw = orjson.dumps(value, option=_DUMP_OPTS)
            except (TypeError, orjson.JSONEncodeError):
                mask = self._enabled | _G_KEYS
            else:
                mask = self._detect(raw, json_text=True)
                if not mask:
                    return orjson.loads(raw)
            return self._redact_tree(value, mask)
        if t is str:
            return self.redact_text(value)
        if t is int:
            return self._int(value) if self._enabled & _G_CARD else value
        if t is float:
            return value if math.isfinite(value) else None
        if value is None or t is bool:
            return value
        return self(to_jsonable(value))

    def canonical(self, value: Any, size_hint: int | None = None) -> bytes:
        """``canonical_bytes(self(value))``, cheaper: the recorder's redact-then-hash step (see `checked`)."""
        return self.checked(value, size_hint)[0]

    def checked(self, value: Any, size_hint: int | None = None) -> tuple[bytes, bool]:
        """(`canonical` of `value`, True when redaction found nothing to change in it).

        True is only said when the detector ran over the whole value and found nothing; False may
        also mean "not known" (scalars, the per-message path), never "nothing changed" wrongly.

        When nothing needs redacting, the sorted orjson bytes made for the check are returned as
        they are: no copy of `value` is built and nothing is serialized twice. ``size_hint`` (the
        size of the value's JSON, when the caller knows it) picks the per-message path for big
        dicts such as a model call's conversation history without serializing twice.
        """
        t = type(value)
        if t is dict and size_hint is not None and size_hint >= _MEMO_MIN_BYTES:
            spliced = self._canonical_memo(value)
            if spliced is not None:
                return spliced, False
            size_hint = 0  # nothing to splice: the ordinary path, no second attempt
        if t is dict or t is list or t is tuple:
            try:
                raw = orjson.dumps(value, option=_DUMP_OPTS | orjson.OPT_SORT_KEYS)
            except (TypeError, orjson.JSONEncodeError):
                return canonical_bytes(self(value)), False
            if t is dict and size_hint is None and len(raw) >= _MEMO_MIN_BYTES:
                spliced = self._canonical_memo(value)
                if spliced is not None:
                    return spliced, spliced == raw  # equal bytes: the messages needed nothing
            mask = self._detect(raw, json_text=True, risky=True)
            if not mask:
                return raw, True
            if mask == _RISKY:
                return canonical_bytes(self(value)), False
            return canonical_bytes(self._redact_tree(value, mask & ~_RISKY)), False
        return canonical_bytes(self(value)), False

    def checked_pair(
        self, first: Any, second: Any, first_hint: int | None = None
    ) -> tuple[tuple[bytes, bool], tuple[bytes, bool]]:
        """(``checked(first, first_hint)``, ``checked(second)``): a step's args and output.

        When both are small JSON containers, one detector pass runs over both (joined by a
        newline, which no rule matches across): a clean step pays the detector's fixed cost once.
        Any candidate sends each value through `checked` on its own, so results are identical.
        """
        if first_hint is None or first_hint < _MEMO_MIN_BYTES:
            raw_a = self._sorted_small(first)
            raw_b = self._sorted_small(second) if raw_a is not None else None
            if raw_b is not None and raw_a is not None:
                if not self._detect(raw_a + b"\n" + raw_b, json_text=True, risky=True):
                    return (raw_a, True), (raw_b, True)
        return self.checked(first, first_hint), self.checked(second)

    def _sorted_small(self, value: Any) -> bytes | None:
        """Sorted orjson bytes of a dict or list below the memo size, else None (see `checked`)."""
        t = type(value)
        if t is not dict and t is not list and t is not tuple:
            return None
        try:
            raw = orjson.dumps(value, option=_DUMP_OPTS | orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            return None
        return raw if len(raw) < _MEMO_MIN_BYTES else None

    def _canonical_memo(self, value: dict[Any, Any]) -> bytes | None:
        """`canonical` of a dict whose list values (a conversation's messages) are redacted per element.

        A model call's args carry the whole history, so each call would redact every earlier message
        again (quadratic in the turns). Redaction is element-wise, so the redacted canonical bytes of
        ``[m1, m2, ...]`` are ``[`` + the elements' bytes joined by ``,`` + ``]``: each element's bytes
        are kept in a cache keyed by its own canonical (unredacted) bytes, and the list is spliced
        into the redacted dict at a placeholder. The result is byte-identical to `canonical`;
        None (use the ordinary path) when there is nothing to splice or the placeholder moved.
        """
        sentinels: list[tuple[bytes, list[bytes]]] = []
        shallow: dict[Any, Any] = {}
        opts = _DUMP_OPTS | orjson.OPT_SORT_KEYS
        memo = self._memo
        for k, v in value.items():
            if type(v) is list and len(v) >= 4:
                parts: list[bytes] = []
                for e in v:
                    try:
                        eb = orjson.dumps(e, option=opts)
                    except (TypeError, orjson.JSONEncodeError):
                        return None
                    red = memo.get(eb)
                    if red is None:
                        red = self.canonical(e)
                        self._memo_put(eb, red)
                    parts.append(red)
                token = _memo_token(len(sentinels))
                shallow[k] = token
                sentinels.append((b'"' + token.encode() + b'"', parts))
            else:
                shallow[k] = v
        if not sentinels:
            return None
        out = self.canonical(shallow)
        # One join: the pieces of `out` between the placeholders, and each list's elements.
        located: list[tuple[int, bytes, list[bytes]]] = []
        for token, parts in sentinels:
            i = out.find(token)
            if i < 0 or out.find(token, i + 1) >= 0:
                return None  # under a secret key, or a user pattern changed it: the ordinary path
            located.append((i, token, parts))
        located.sort(key=lambda x: x[0])
        pieces: list[bytes] = []
        last = 0
        for i, token, parts in located:
            pieces += [out[last:i], b"[", b",".join(parts), b"]"]
            last = i + len(token)
        pieces.append(out[last:])
        return b"".join(pieces)

    def _memo_put(self, key: bytes, red: bytes) -> None:
        self._memo_bytes += len(key) + len(red)
        if self._memo_bytes > _MEMO_MAX_BYTES:
            self._memo.clear()
            self._memo_bytes = len(key) + len(red)
        self._memo[key] = red

    def redact(self, value: Any) -> Any:
        """The same as calling the redactor: a redacted copy of `value` with dict key order kept.

        Dicts come back with their keys in the input's order (a key renamed by a rule stays in its
        place), lists in order; ``canonical_bytes(redact(x)) == canonical(x)``. Writers that store a
        body in the tool's own key order use this and hash the canonical form.
        """
        return self(value)

    def redact_name(self, name: str) -> str:
        """A name (tool, agent, label) redacted like text; cached, so matching by name stays cheap."""
        out = self._names.get(name)
        if out is None:
            out = self.redact_text(name)
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[name] = out
        return out

    def redact_token(self, value: str) -> str:
        """A lowercase identifier (a user-defined stop reason): kept, or ``redacted_<8hex>`` if a rule hits."""
        if self.redact_name(value) == value:
            return value
        mac = self._mac.copy()
        mac.update(f"token:{value}".encode("utf-8", "surrogatepass"))
        return f"redacted_{mac.hexdigest()[:8]}"

    def redact_text(self, text: str) -> str:
        """Redact the pattern rules in one string (a log line, an exception message)."""
        mask = self._detect(text.encode("utf-8", "surrogatepass"), json_text=False) if text else 0
        if not mask:
            return text
        return self._apply(text, self._rules_for(mask))

    def scan(self, value: Any, path: str = "$") -> list[Hit]:
        """What redaction would catch in `value`: one `Hit` (path, rule) each, never the value.

        A dict key that would be pseudonymized shows in paths as ``[<key N>]`` (its position).
        ``scan(redactor(x))`` is empty.
        """
        hits: list[Hit] = []
        self._scan(value, path, hits)
        return hits

    # --- detection ----------------------------------------------------------------------------

    def _detect(self, raw: bytes, json_text: bool, risky: bool = False) -> int:
        """The groups whose rules could match somewhere in `raw` (a superset).

        With ``risky``, also `_RISKY` when a number in `raw` (orjson's output) may differ from json's.
        """
        en = self._enabled
        if json_text and b"\\" in raw and _ESC_U.search(raw):
            # \u00XX escapes put hex digits next to text: look at every leaf instead.
            return en | _G_KEYS | (_RISKY if risky else 0)
        mask = en & _G_EXTRA  # user patterns have no prefilter
        if en & _G_EMAIL and (b"@" in raw or (b"%" in raw and b"%40" in raw)):
            mask |= _G_EMAIL
        if en & _G_JWT and b"J" in raw and _JWT_D.search(raw):
            mask |= _G_JWT
        # Multi-byte literals behind a single-byte test (memchr) of a rare byte they contain.
        if en & _G_PEM and b"V" in raw and _PEM_D in raw:
            mask |= _G_PEM
        if en & _G_URL and b"@" in raw and b"://" in raw:
            mask |= _G_URL
        if en & _G_IPV6 and b":" in raw and _IPV6_D.search(raw):
            mask |= _G_IPV6
        # Base64 runs need an uppercase letter: text without one (raw.islower()) has none.
        b64cls = raw.translate(_B64_CLS) if en & (_G_B64 | _G_AWS) and not raw.islower() else b""
        if en & _G_B64 and (
            (json_text and b"$" in raw and _BYTES_KEY in raw)
            or (_B64_RUN in b64cls and _has_b64_run(raw, b64cls))
        ):
            mask |= _G_B64
        if en & (_G_API | _G_BEARER | _G_AWS | _G_TEL | _G_KV) or json_text:
            fold = raw.translate(_FOLD)
            if en & _G_BEARER and _BEARER_D.search(fold):  # one pass, not two substring tests
                mask |= _G_BEARER
            # An AWS secret is a 40-character base64 run: look for its context only then.
            if (
                en & _G_AWS
                and _B64_RUN40 in b64cls
                and (b"aws" in fold or b"akia" in fold or b"asia" in fold)
            ):
                mask |= _G_AWS
            if en & _G_TEL and _TEL_RX.search(fold):
                mask |= _G_TEL
            rfold = fold[::-1]
            if en & _G_API and (
                (b"I" in raw and _API_I.search(raw)) or _API_R.search(rfold) or _YA29_D in raw
            ):
                mask |= _G_API
            if self._keys_rx is None:
                mask |= (_G_KEYS if json_text else 0) | (en & _G_KV)
            else:
                if json_text and self._keys_rx.search(rfold):
                    mask |= _G_KEYS
                if en & _G_KV:
                    kv_eq, kv_colon = self._kv_json if json_text else self._kv_text
                    if (b"=" in raw and kv_eq.search(rfold)) or kv_colon.search(rfold):
                        mask |= _G_KV
        if en & (_G_DIGITS | _G_IBAN) or risky:
            small = raw.translate(_CLASS, _G_TO_Z)
            # Every match of _RISKY_FLOAT ends with "0e": a two-byte literal search first.
            if risky and (b"0.0000" in raw or (b"0e" in small and _RISKY_FLOAT.search(small))):
                mask |= _RISKY
            # The lowercase IBAN regex starts with the literal "00": `re` skips ahead in C to
            # the few digit pairs (cheaper than a looser gate on `small` that tries every one).
            if en & _G_IBAN and (
                _IBAN_D.search(small) or _IBAN_LOWER_D.search(raw.translate(_LOWER_CLASS))
            ):
                mask |= _G_IBAN
            if en & _G_DIGITS:
                if _R2.search(small):
                    mask |= en & _G_DIGITS
                else:
                    if en & _G_PHONE and b"+" in raw and _R3.search(small):
                        mask |= _G_PHONE
                    if (
                        en & _G_CARD
                        and _Z13 in small
                        and next(_card_runs(raw.translate(_CLASS), raw), -1) >= 0
                    ):
                        mask |= _G_CARD
                    if (
                        en & _G_PHONE
                        and not mask & _G_PHONE
                        and b"0000000000" in small
                        and next(_ten_runs(raw.translate(_CLASS), raw), -1) >= 0
                    ):
                        mask |= _G_PHONE
        return mask

    def _locate(self, raw: bytes, starts: list[int], mask: int, flags: dict[int, int]) -> None:
        """Mark, per string index, the groups with a candidate in that string."""
        bisect_right = bisect.bisect_right
        hits: list[tuple[int, int]] = []
        if mask & _G_EMAIL:
            hits += [(m.start(), _G_EMAIL) for m in _AT.finditer(raw)]
            if b"%40" in raw:
                hits += [(m.start(), _G_EMAIL) for m in re.finditer(rb"%40", raw)]
        if mask & _G_JWT:
            hits += [(m.start(), _G_JWT) for m in _JWT_D.finditer(raw)]
        if mask & _G_PEM:
            hits += [(m.start(), _G_PEM) for m in re.finditer(re.escape(_PEM_D), raw)]
        if mask & _G_URL:
            hits += [(m.start(), _G_URL) for m in _SCHEME_D.finditer(raw)]
        if mask & _G_IPV6:
            hits += [(m.start(), _G_IPV6) for m in _IPV6_D.finditer(raw)]
        if mask & _G_B64:
            hits += [(i, _G_B64) for i in _b64_runs(raw, raw.translate(_B64_CLS))]
        if mask & (_G_API | _G_BEARER | _G_AWS | _G_TEL | _G_KV):
            fold = raw.translate(_FOLD)
            n = len(raw)
            if mask & _G_BEARER:
                hits += [(m.start(), _G_BEARER) for m in _BEARER_D.finditer(fold)]
            if mask & _G_AWS:
                hits += [(m.start(), _G_AWS) for m in _AWS_D.finditer(fold)]
            if mask & _G_TEL:
                hits += [(m.start(), _G_TEL) for m in re.finditer(re.escape(_TEL_D), fold)]
            if mask & _G_KV:
                if not self._kv_text:
                    hits += [(i, _G_KV) for i in starts[:-1]]
                else:
                    rf = fold[::-1]
                    for rx in self._kv_text:
                        hits += [(n - m.end(), _G_KV) for m in rx.finditer(rf)]
            if mask & _G_API:
                hits += [(m.start(), _G_API) for m in _API_I.finditer(raw)]
                hits += [(n - m.end(), _G_API) for m in _API_R.finditer(fold[::-1])]
                hits += [(m.start(), _G_API) for m in re.finditer(re.escape(_YA29_D), raw)]
        if mask & (_G_DIGITS | _G_IBAN):
            cls = raw.translate(_CLASS)
            if mask & _G_IBAN:
                hits += [(m.start(), _G_IBAN) for m in _IBAN_D.finditer(cls)]
                hits += [
                    (m.start(), _G_IBAN)
                    for m in _IBAN_LOWER_D.finditer(raw.translate(_LOWER_CLASS))
                ]
            if mask & _G_DIGITS:
                hits += [(m.start(), mask & _G_DIGITS) for m in _R2.finditer(cls)]
            if mask & _G_PHONE:
                hits += [(m.start(), _G_PHONE) for m in _R3.finditer(cls)]
                hits += [(i, _G_PHONE) for i in _ten_runs(cls, raw)]
            if mask & _G_CARD:
                hits += [(i, _G_CARD) for i in _card_runs(cls, raw)]
        for pos, group in hits:
            i = bisect_right(starts, pos) - 1
            flags[i] = flags.get(i, 0) | group

    def _rules_for(self, mask: int) -> tuple[_Rule, ...]:
        rules = self._by_mask.get(mask)
        if rules is None:
            rules = self._by_mask[mask] = tuple(r for r in self._rules if r.group & mask)
        return rules

    # --- the tree -----------------------------------------------------------------------------

    def _redact_tree(self, value: Any, mask: int) -> Any:
        slots: list[tuple[Any, Any, str, bool]] = []
        out = self._walk(value, slots, bool(mask & _G_KEYS), bool(mask & _G_CARD))
        string_mask = mask & ~_G_KEYS
        if not slots or not string_mask:
            return out
        strs = [s[2] for s in slots]
        joined = "\x00".join(strs)
        if joined.isascii():
            raw = joined.encode("ascii")
            lengths: Iterator[int] = map(len, strs)
        else:
            raw = joined.encode("utf-8", "surrogatepass")
            lengths = (len(s.encode("utf-8", "surrogatepass")) for s in strs)
        # Each string is followed by one separator byte.
        starts = list(itertools.accumulate(map(_PLUS_ONE, lengths), initial=0))
        flags: dict[int, int] = {}
        self._locate(raw, starts, string_mask, flags)
        if string_mask & _G_EXTRA:
            for i in range(len(strs)):
                flags[i] = flags.get(i, 0) | _G_EXTRA
        renames: dict[int, tuple[dict[Any, Any], list[tuple[str, str]]]] = {}
        for i in sorted(flags):
            container, k, s, is_key = slots[i]
            new = self._apply(s, self._rules_for(flags[i]))
            if new == s:
                continue
            if is_key:
                renames.setdefault(id(container), (container, []))[1].append((s, new))
            else:
                container[k] = new
        if string_mask & _G_B64:
            # Bytes (tagged {"$bytes": base64} in canonical form): decoded, redacted, encoded again.
            for container, k, s, is_key in slots:
                if k == BYTES_TAG and not is_key and type(container) is dict:
                    cur = container[k]
                    new = self._b64(cur, None, min_len=4)
                    if new != cur:
                        container[k] = new
        for container, pairs in renames.values():
            mapping = dict(pairs)
            items = list(container.items())
            container.clear()
            for k, v in items:
                container[mapping.get(k, k)] = v
        return out

    def _walk(self, v: Any, slots: list[tuple[Any, Any, str, bool]], keys: bool, ints: bool) -> Any:
        t = type(v)
        if t is dict:
            out: dict[Any, Any] = {}
            append = slots.append
            mark = len(slots)
            for k, x in v.items():
                if type(k) is not str:
                    del slots[mark:]
                    return self._walk(to_jsonable(v), slots, keys, ints)
                append((out, k, k, True))
                if keys:
                    secret = self._key_cache.get(k)
                    if secret is None:
                        secret = self._is_secret_key(k)
                    if secret:
                        out[k] = x if type(x) is str and x in self._allow else SECRET_MARKER
                        continue
                tx = type(x)
                if tx is str:
                    out[k] = x
                    append((out, k, x, False))
                elif tx is dict or tx is list:
                    out[k] = self._walk(x, slots, keys, ints)
                elif tx is int:
                    out[k] = self._int(x) if ints else x
                elif tx is float:
                    out[k] = x if math.isfinite(x) else None
                elif x is None or tx is bool:
                    out[k] = x
                else:
                    out[k] = self._walk(to_jsonable(x), slots, keys, ints)
            return out
        if t is list or t is tuple:
            lst: list[Any] = []
            for i, x in enumerate(v):
                tx = type(x)
                if tx is str:
                    lst.append(x)
                    slots.append((lst, i, x, False))
                elif tx is dict or tx is list:
                    lst.append(self._walk(x, slots, keys, ints))
                elif tx is int:
                    lst.append(self._int(x) if ints else x)
                elif tx is float:
                    lst.append(x if math.isfinite(x) else None)
                elif x is None or tx is bool:
                    lst.append(x)
                else:
                    lst.append(self._walk(to_jsonable(x), slots, keys, ints))
            return lst
        if t is str:
            # Only reached for a str at the top of a non-plain value converted by to_jsonable.
            return self.redact_text(v)
        if t is int:
            return self._int(v) if ints else v
        if t is float:
            return v if math.isfinite(v) else None
        if v is None or t is bool:
            return v
        return self._walk(to_jsonable(v), slots, keys, ints)

    def _is_secret_key_cached(self, k: str) -> bool:
        secret = self._key_cache.get(k)
        return self._is_secret_key(k) if secret is None else secret

    def _is_secret_key(self, k: str) -> bool:
        """A secret key name: by suffix (``x_api_key``, ``clientSecret``) or by token (``pwd``,
        ``private_key_pem``, ``X-Session``, ``db_pass``; not ``pass_rate`` or ``max_tokens``)."""
        folded = k.translate(_KEY_FOLD)
        secret = folded.endswith(self._suffixes)
        if not secret:
            toks = [t.lower() for t in _KEY_TOKEN.findall(k)]
            n = len(toks)
            # Set aside up to two trailing form tokens (pem, hash, b64, digits ...).
            while (
                n > 0
                and len(toks) - n < 2
                and (toks[n - 1] in SECRET_FORM_TOKENS or toks[n - 1].isdigit())
            ):
                n -= 1
            if n > 0:
                core = toks[:n]
                secret = core[-1] in SECRET_LAST_TOKENS or "".join(core).endswith(
                    self._suffixes_flat
                )
        if len(self._key_cache) >= 4096:
            self._key_cache.clear()
        self._key_cache[k] = secret
        return secret

    def _int(self, v: int) -> Any:
        if 10**12 <= v < 10**19:
            s = str(v)
            if s[0] in "23456" and _luhn(s) and s not in self._allow:
                return self._pseudo("card", s)
        return v

    # --- strings ------------------------------------------------------------------------------

    def _apply(self, s: str, rules: tuple[_Rule, ...], hits: list[str] | None = None) -> str:
        """Run `rules` over `s` until nothing changes (idempotence by construction).

        A replacement can only let another match appear right next to it (a lookaround that saw
        the replaced text now sees the placeholder). So another pass runs only when a replacement
        touches a character a match can end (left) or start (right) with, and then only the rules
        whose groups still have a candidate in the new text.
        """
        if s in self._allow:
            return s
        sticky = [bool(self._enabled & _G_EXTRA)]  # user patterns: always check again
        for _ in range(4):
            new = s
            for rule in rules:
                if rule.gate not in new:
                    continue
                if rule.custom == "email":
                    new = self._email(new, hits, sticky)
                elif rule.custom == "kv_secret":
                    new = self._kv(new, hits, sticky)
                elif rule.custom == "ipv6":
                    new = self._ipv6(new, hits, sticky)
                elif rule.custom == "aws_secret":
                    low = new.lower()
                    if "aws" in low or "akia" in low or "asia" in low:
                        new = self._sub(rule, new, hits, sticky)
                elif rule.custom == "b64":
                    new = self._b64(new, hits)
                elif rule.custom == "phone":
                    new = self._phone(new, hits, sticky)
                elif rule.custom == "iban":
                    new = self._iban(new, hits, sticky)
                else:
                    new = self._sub(rule, new, hits, sticky)
            if new == s or not sticky[0]:
                return new
            s = new
            sticky[0] = bool(self._enabled & _G_EXTRA)
            mask = self._detect(s.encode("utf-8", "surrogatepass"), json_text=False)
            if not mask:
                break
            rules = self._rules_for(mask)
        return s

    def _sub(self, rule: _Rule, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        part, validate, allow, name = rule.part, rule.validate, self._allow, rule.name
        guard = rule.group == _G_EXTRA  # default rules never match a placeholder
        spans: list[tuple[int, int]] | None = None

        def repl(m: re.Match[str]) -> str:
            nonlocal spans
            start, end = m.span()
            if start == end:
                return ""
            if guard:
                # A user pattern may match inside an earlier placeholder: leave those alone.
                if spans is None:
                    has = "[" in s or "@redacted.invalid" in s
                    spans = [x.span() for x in _PLACEHOLDER.finditer(s)] if has else []
                if spans and any(a < end and start < b for a, b in spans):
                    return m.group(0)
            vs, ve = m.span(part) if part else (start, end)
            if vs < 0:
                vs, ve = start, end
            value = s[vs:ve]
            if (validate is not None and not validate(value)) or value in allow:
                return m.group(0)
            if hits is not None:
                hits.append(name)
            if not sticky[0]:
                sticky[0] = _touches(s, vs, ve)
            ph = self._pseudo(name, value)
            return s[start:vs] + ph + s[ve:end] if part else ph

        return rule.regex.sub(repl, s)

    def _email(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """Emails: the domain by regex from each '@', the local part scanned back from it.

        A URL-encoded '@' (``jane%40example.com`` in a query string) counts as one too.
        """
        s = self._email_with(_EMAIL_RX, s, hits, sticky)
        if "%40" in s:
            s = self._email_with(_EMAIL_PCT_RX, s, hits, sticky)
        return s

    def _email_with(
        self, rx: re.Pattern[str], s: str, hits: list[str] | None, sticky: list[bool]
    ) -> str:
        out: list[str] = []
        last = 0
        for m in rx.finditer(s):
            at, end = m.span()
            start = at
            while start > last and (
                s[start - 1] in _EMAIL_LOCAL or (s[start - 1] > "\x7f" and s[start - 1].isalnum())
            ):
                start -= 1
            if s.startswith("redacted.invalid", start) and s[start - 1 : start] == "@":
                start += 16  # the scan ran into the tail of an email placeholder
            if start >= at:
                continue
            if "://" in s and _in_userinfo(s, start, at):
                continue  # user@host of a URL (postgres://user:pass@db): url_password's business
            value = s[start:end]
            if value in self._allow:
                continue
            self._put(out, s, last, start, end, "email", value, hits, sticky)
            last = end
        return _joined(out, s, last)

    def _put(
        self,
        out: list[str],
        s: str,
        last: int,
        start: int,
        end: int,
        rule: str,
        value: str,
        hits: list[str] | None,
        sticky: list[bool],
    ) -> None:
        """Splice the pseudonym of `value` (``s[start:end]``) into `out`, noting the hit."""
        if hits is not None:
            hits.append(rule)
        if not sticky[0]:
            sticky[0] = _touches(s, start, end)
        out.append(s[last:start])
        out.append(self._pseudo(rule, value))

    def _phone(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """Phones: the shortest run of digit groups from a match start that is a whole number.

        The regex is greedy, so "(200) 200-0000 000 0000" would be one 17-digit candidate; cutting
        at the first group end with 10-15 digits (3+ groups unless it starts with '+') finds both.
        """
        out: list[str] = []
        last = pos = 0
        n = len(s)
        while (m := _PHONE_RX.search(s, pos)) is not None:
            start, end = m.span()
            pos = start + 1
            intl = s[start] == "+"
            digits = 0
            stop = -1
            for groups, run in enumerate(_DIGITS_RX.finditer(s, start, end), 1):
                digits += run.end() - run.start()
                if digits > 15:
                    break
                if (
                    digits >= 10
                    and (intl or groups >= 3 or (groups == 1 and digits == 10))
                    and _phone_ends(s, run.end(), n)
                ):
                    stop = run.end()
                    break
            if stop < 0:
                continue
            value = s[start:stop]
            if "." in value and _IPV4_SHAPE.search(value):
                continue  # a dotted quad is an address (kept or pseudonymized by the ipv4 rule)
            if value in self._allow:
                continue
            self._put(out, s, last, start, stop, "phone", value, hits, sticky)
            last = pos = stop
        return _joined(out, s, last)

    def _iban(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """IBANs: the country's length decides where one ends, then mod 97 must hold."""
        out: list[str] = []
        last = pos = 0
        # The regex may run on into a neighbouring IBAN: search again from where this one stops.
        while (m := _IBAN_RX.search(s, pos)) is not None:
            start = m.start()
            pos = start + 1
            text = m.group(0)
            length = _IBAN_LENGTHS.get(text[:2].upper())
            if length is None and not text[:2].isupper():
                continue  # a lowercase run is an IBAN only with a known country code
            compact_pos = [i for i, c in enumerate(text) if c != " "]
            if length is None:
                length = len(compact_pos) if 15 <= len(compact_pos) <= 34 else 0
            if not length or len(compact_pos) < length:
                continue
            stop = start + compact_pos[length - 1] + 1
            if stop < len(s) and s[stop].isalnum():
                continue
            value = s[start:stop]
            if not _iban_mod97(value.replace(" ", "").upper()) or value in self._allow:
                continue
            pos = stop
            self._put(out, s, last, start, stop, "iban", value, hits, sticky)
            last = stop
        return _joined(out, s, last)

    def _kv(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """``key=value`` / ``key: value`` / ``'key': 'value'`` in text: the value of a secret key goes.

        In a URL query (``?api_key=...&``) the value becomes ``REDACTED`` so the URL stays a URL;
        elsewhere `SECRET_MARKER`.
        """
        out: list[str] = []
        last = pos = 0
        while (m := _KV_RX.search(s, pos)) is not None:
            if not self._is_secret_key_cached(m.group("k")):
                pos = m.end("sep")
                continue
            ks = m.start("k")
            if ks > 0 and s[ks - 1] == "[" and _PLACEHOLDER.match(s, ks - 1):
                pos = m.end("sep")  # the rule name inside a placeholder: [api_key:1a2b3c4d]
                continue
            vname = "v1" if m.group("v1") is not None else "v2"
            vs, ve = m.span(vname)
            pos = m.end()
            value = s[vs:ve]
            if value == "REDACTED" or _PLACEHOLDER.match(s, vs) or value in self._allow:
                continue
            if vname == "v2" and value.lower() in _AUTH_SCHEMES:
                # "Authorization: Bearer abc": the credentials after the scheme go too.
                more = _SCHEME_TAIL.match(s, ve)
                if more is not None:
                    ve = pos = more.end()
            marker = (
                "REDACTED"
                if ks > 0 and s[ks - 1] in "?&;" and m.group("sep") == "="
                else SECRET_MARKER
            )
            if hits is not None:
                hits.append("kv_secret")
            out.append(s[last:vs])
            out.append(marker)
            last = ve
        return _joined(out, s, last)

    def _ipv6(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """Public IPv6 addresses -> an address in 2001:db8::/32; others (loopback, ULA, ...) kept."""
        out: list[str] = []
        last = 0
        for m in _IPV6_RX.finditer(s):
            start, end = m.span()
            value = s[start:end]
            while value.endswith(".") or (value.endswith(":") and not value.endswith("::")):
                value = value[:-1]
                end -= 1
            if value.count(":") < 2 or not _public_ipv6(value) or value in self._allow:
                continue
            self._put(out, s, last, start, end, "ipv6", value, hits, sticky)
            last = end
        return _joined(out, s, last)

    def _b64(self, s: str, hits: list[str] | None, min_len: int = 16) -> str:
        """Base64 whose decoded text holds something to redact: that text, redacted, encoded again.

        Tokens of 16+ base64 characters in any string; with a smaller `min_len` (bytes, tagged
        ``{"$bytes": ...}``) the whole string.
        """
        if min_len < 16:
            return self._b64_whole(s, hits, min_len)
        out: list[str] = []
        last = 0
        for m in _B64_RX.finditer(s):
            start, end = m.span()
            if (end - start) % 4 or not _mixed_case(s[start:end]):
                continue
            new = self._b64_whole(s[start:end], hits, 16)
            if new is not s[start:end] and new != s[start:end]:
                out.append(s[last:start])
                out.append(new)
                last = end
        return _joined(out, s, last)

    def _b64_whole(self, s: str, hits: list[str] | None, min_len: int) -> str:
        if len(s) < min_len or len(s) % 4 or not _B64_WHOLE.fullmatch(s):
            return s
        try:
            text = base64.b64decode(s, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return s
        if not text or not (
            text.isprintable() or all(c.isprintable() or c in "\n\r\t" for c in text)
        ):
            return s
        inner = (
            self._apply(text, self._rules) if self._enabled & _G_EXTRA else self.redact_text(text)
        )
        if inner == text:
            return s
        if hits is not None:
            hits.append("b64")
        return base64.b64encode(inner.encode("utf-8")).decode("ascii")

    def _pseudo(self, rule: str, value: str) -> str:
        key = (rule, value)
        ph = self._cache.get(key)
        if ph is None:
            mac = self._mac.copy()
            mac.update(f"{rule}:{value}".encode("utf-8", "surrogatepass"))
            hx = mac.hexdigest()[:8]
            if rule == "email":
                ph = f"u{hx}@redacted.invalid"
            elif rule == "ipv4":
                # A valid address from a documentation range (RFC 5737), kept by the rule itself.
                ph = f"{_DOC_NETS[int(hx[:2], 16) % 3]}{int(hx[2:4], 16)}"
            elif rule == "ipv6":
                ph = str(ipaddress.IPv6Address(f"2001:db8:{hx[:4]}:{hx[4:]}::1"))
            elif rule == "url_password":
                ph = f"redacted-{hx}"
            else:
                ph = f"[{rule}:{hx}]"
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[key] = ph
        return ph

    # --- scan ---------------------------------------------------------------------------------

    def _scan_text(self, s: str) -> list[str]:
        hits: list[str] = []
        if s and s not in self._allow:
            self._apply(s, self._rules, hits)
            if self._heavy is not None and not hits:
                hits.extend(self._heavy(s))
        return list(dict.fromkeys(hits))

    def _scan(self, v: Any, path: str, hits: list[Hit]) -> None:
        t = type(v)
        if t is dict:
            for n, (k, x) in enumerate(v.items()):
                if not isinstance(k, str):
                    k = str(k)
                key_rules = self._scan_text(k)
                if key_rules:
                    child = f"{path}[<key {n}>]"
                    hits.extend(Hit(child, r) for r in key_rules)
                else:
                    child = _path_key(path, k)
                secret = self._key_cache.get(k)
                if secret is None:
                    secret = self._is_secret_key(k)
                if secret:
                    if x != SECRET_MARKER and not (isinstance(x, str) and x in self._allow):
                        hits.append(Hit(child, "secret"))
                    continue
                self._scan(x, child, hits)
        elif t is list or t is tuple:
            for i, x in enumerate(v):
                self._scan(x, f"{path}[{i}]", hits)
        elif t is str:
            hits.extend(Hit(path, r) for r in self._scan_text(v))
        elif t is int:
            if self._enabled & _G_CARD and self._int(v) is not v:
                hits.append(Hit(path, "card"))
        elif t is float or t is bool or v is None:
            return
        else:
            self._scan(to_jsonable(v), path, hits)


# --- files -------------------------------------------------------------------------------------


# detect-secrets plugins left out of the heavier scan: entropy detectors flag every sha and
# pseudonym a store holds, the keyword detector flags "password": "[REDACTED:secret]", and the
# public-IP detector flags the documentation-range addresses pseudonyms use.
_HEAVY_EXCLUDED = frozenset(
    {"HexHighEntropyString", "Base64HighEntropyString", "KeywordDetector", "IPPublicDetector"}
)


def heavy_detector() -> Callable[[str], list[str]] | None:
    """detect-secrets' provider plugins as a text check (``agent-replay[scan]``), or None if not installed.

    The returned function gives rule names ``detect-secrets:<type>`` for a text (never the value).
    It needs detect-secrets' settings active: use it inside `heavy_settings()`. About 1-3 ms per
    KB: for ``replay scan``, never on the recording path.
    """
    try:
        from detect_secrets.core.scan import scan_line
    except ImportError:
        return None

    def detect(text: str) -> list[str]:
        found: list[str] = []
        for line in text.splitlines() or [text]:
            if len(line) >= 8:
                found.extend(f"detect-secrets:{s.type}" for s in scan_line(line))
        return list(dict.fromkeys(found))

    return detect


@contextlib.contextmanager
def heavy_settings() -> Iterator[None]:
    """detect-secrets configured with its provider plugins (see `heavy_detector`)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.settings import transient_settings

    names = sorted(
        {c.__name__ for c in get_mapping_from_secret_type_to_class().values()} - _HEAVY_EXCLUDED
    )
    with transient_settings({"plugins_used": [{"name": n} for n in names]}):
        yield


def _scanner(config: RedactionConfig | None, heavy: bool = False) -> Redactor:
    # Scanning reports rules and paths, never pseudonyms: any key will do.
    red = Redactor(b"scan", config)
    if heavy:
        red._heavy = heavy_detector()
    return red


def scan_json_file(
    path: str | Path, config: RedactionConfig | None = None, heavy: bool = False
) -> list[FileHit]:
    """Scan a cassette or any JSON (or JSON Lines) file for what redaction would catch.

    Returns one `FileHit` per hit, with the JSON path as location (``line N, $.path`` for JSON
    Lines). Never the value. ``heavy`` adds detect-secrets' provider plugins (see
    `heavy_detector`; run it inside `heavy_settings()`).

    Raises:
        FileNotFoundError: no such file.
        CassetteDecodeError: the file is neither JSON nor JSON Lines.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="surrogateescape")
    red = _scanner(config, heavy)
    try:
        docs: list[tuple[str, Any]] = [("", json.loads(text))]
    except json.JSONDecodeError as first:
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append((f"line {n}, ", json.loads(line)))
            except json.JSONDecodeError:
                raise CassetteDecodeError(
                    str(p),
                    f"not JSON ({first.msg} at line {first.lineno} column {first.colno}) "
                    "and not JSON Lines; scan reads JSON files and SQLite stores",
                ) from None
    return [
        FileHit(str(p), prefix + hit.path, hit.rule)
        for prefix, doc in docs
        for hit in red.scan(doc)
    ]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cell_text(value: bytes) -> str | None:
    if value[:2] == b"\x1f\x8b":
        try:
            value = gzip.decompress(value)
        except (OSError, EOFError):
            return None
    elif value[:1] == b"\x78":
        try:
            value = zlib.decompress(value)
        except zlib.error:
            pass
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _scan_cell(red: Redactor, value: Any) -> list[Hit]:
    if isinstance(value, bytes):
        text = _cell_text(value)
        if text is None:
            return []
        value = text
    if isinstance(value, str):
        head = value.lstrip()[:1]
        if head in ("{", "["):
            try:
                return red.scan(json.loads(value))
            except (json.JSONDecodeError, RecursionError):
                pass
        return [Hit("", r) for r in red._scan_text(value)]
    if isinstance(value, int) and red.scan(value):
        return [Hit("", "card")]
    return []


def scan_sqlite(
    path: str | Path, config: RedactionConfig | None = None, heavy: bool = False
) -> list[FileHit]:
    """Scan every text and blob cell of every table of a SQLite file, opened read-only.

    Cells holding JSON (text, or UTF-8 / gzip / zlib blobs) are parsed and walked. Location:
    ``table runs, rowid 12, column input, $.customer.email``. A column with a secret-looking name
    reports its non-empty values as rule ``secret``. Never the value.

    Raises:
        FileNotFoundError: no such file.
        StoreError: the file is not a SQLite database or cannot be read.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"no SQLite file at {p}: pass the path of a replay store (e.g. replay.db)"
        )
    red = _scanner(config, heavy)
    uri = p.resolve().as_uri() + "?mode=ro"
    hits: list[FileHit] = []
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {p} read-only: {e}") from None
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        for table in tables:
            q = _quote_ident(table)
            try:
                cur = con.execute(f"SELECT rowid, * FROM {q}")
                has_rowid = True
            except sqlite3.OperationalError:
                cur = con.execute(f"SELECT * FROM {q}")
                has_rowid = False
            columns = [d[0] for d in cur.description][1 if has_rowid else 0 :]
            secret_cols = {c for c in columns if red._is_secret_key(c)}
            for n, row in enumerate(cur, 1):
                rowid, cells = (row[0], row[1:]) if has_rowid else (n, row)
                where = f"table {table}, {'rowid' if has_rowid else 'row'} {rowid}"
                for col, cell in zip(columns, cells):
                    if cell is None:
                        continue
                    if col in secret_cols:
                        if cell not in ("", b"", SECRET_MARKER):
                            hits.append(FileHit(str(p), f"{where}, column {col}", "secret"))
                        continue
                    for hit in _scan_cell(red, cell):
                        loc = f"{where}, column {col}" + (f", {hit.path}" if hit.path else "")
                        hits.append(FileHit(str(p), loc, hit.rule))
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"cannot read {p} as SQLite ({e}): scan_sqlite reads replay stores; "
            "use scan_json_file for cassettes"
        ) from None
    finally:
        con.close()
    return hits
