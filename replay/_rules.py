"""The rules of redaction: secret key names, pattern rules (regexes) and their validators.

What `replay.redaction.Redactor` applies: the key-name vocabulary (`SECRET_KEYS`, matched by
suffix and by token), the pattern of each default rule (`PATTERNS`, in `DEFAULT_RULES` order) and
the checks a match must pass (`VALIDATORS`: Luhn, mod-97, public addresses ...), plus the small
text helpers the rules' own matching loops share.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

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
KEY_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+")


# --- validators --------------------------------------------------------------------------------

DOUBLED = "0246813579"  # the Luhn value of a digit in a doubled position


def luhn(digits: str) -> bool:
    b = (digits[-1::-2] + digits[-2::-2].translate(LUHN_TABLE)).encode("ascii")
    return (sum(b) - 48 * len(b)) % 10 == 0


LUHN_TABLE = str.maketrans("0123456789", DOUBLED)


def valid_card(value: str) -> bool:
    digits = value.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn(digits)


def valid_ipv4(value: str) -> bool:
    """A well-formed public IPv4 address: loopback, private, link-local, documentation are kept."""
    if not all(len(o) == 1 or (o[0] != "0" and int(o) <= 255) for o in value.split(".")):
        return False
    return ipaddress.IPv4Address(value).is_global


def public_ipv6(value: str) -> bool:
    """A public IPv6 address (not loopback, ULA fc00::/7, link-local, 2001:db8::/32 docs)."""
    try:
        ip = ipaddress.IPv6Address(value)
    except ValueError:
        return False
    if ip.ipv4_mapped is not None:
        return False  # the IPv4 rule sees the dotted tail
    return ip.is_global


REDACTED_PASSWORD = re.compile(r"redacted-[0-9a-f]{8}")


def valid_url_password(value: str) -> bool:
    return REDACTED_PASSWORD.fullmatch(value) is None


def valid_aws_secret(value: str) -> bool:
    # 40 characters of base64 with upper, lower and digits; a hex SHA-1 is not one.
    return (
        any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
        and not all(c in "0123456789abcdefABCDEF" for c in value)
    )


def valid_bearer(value: str) -> bool:
    # "Bearer authentication" in prose is not a token; real tokens carry digits or are long.
    return len(value) >= 20 or any(c.isdigit() for c in value)


# SWIFT IBAN registry lengths; other country codes need a mod-97-valid run of 15-34 characters.
IBAN_LENGTHS: dict[str, int] = {
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


IBAN_DIGITS = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})  # A -> 10 ... Z -> 35


def iban_mod97(compact: str) -> bool:
    return int((compact[4:] + compact[:4]).translate(IBAN_DIGITS)) % 97 == 1


# --- rules -------------------------------------------------------------------------------------

# Leaf-level rules. Lookarounds keep them off neighbouring text; none of them can match a
# placeholder ([rule:1a2b3c4d], u1a2b3c4d@redacted.invalid, [REDACTED:secret]).
# Every pattern starts with a literal or a character class and checks the character before it with
# a lookbehind placed after that first character: then `re` skips ahead to candidate positions in
# C instead of trying the pattern at every position (3-10x faster on ordinary text).
NOT_TOKEN = r"[A-Za-z0-9_\-]"
PATTERNS: dict[str, str] = {
    "jwt": rf"eyJ(?<!{NOT_TOKEN}eyJ)[A-Za-z0-9_\-]{{2,}}\.eyJ[A-Za-z0-9_\-]{{2,}}\.[A-Za-z0-9_\-]*",
    "pem": (
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)"
    ),
    "api_key": (
        rf"(?:sk-(?<!{NOT_TOKEN}sk-)[A-Za-z0-9_\-]{{20,}}"
        rf"|ya29\.(?<!{NOT_TOKEN}ya29\.)[A-Za-z0-9_\-]{{20,}}"
        rf"|sk_(?<!{NOT_TOKEN}sk_)(?:live|test)_[A-Za-z0-9]{{16,}}"
        rf"|rk_(?<!{NOT_TOKEN}rk_)(?:live|test)_[A-Za-z0-9]{{16,}}"
        rf"|AKIA(?<!{NOT_TOKEN}AKIA)[0-9A-Z]{{16}}(?![0-9A-Z])"
        rf"|ASIA(?<!{NOT_TOKEN}ASIA)[0-9A-Z]{{16}}(?![0-9A-Z])"
        rf"|gh[pousr]_(?<!{NOT_TOKEN}gh[pousr]_)[A-Za-z0-9]{{30,}}"
        rf"|github_pat_(?<!{NOT_TOKEN}github_pat_)[A-Za-z0-9_]{{22,}}"
        rf"|xox[abposre]-(?<!{NOT_TOKEN}xox[abposre]-)[A-Za-z0-9\-]{{10,}}"
        rf"|AIza(?<!{NOT_TOKEN}AIza)[0-9A-Za-z_\-]{{35}})"
    ),
    # Only with AWS context in the same string (see Redactor._aws): 40 characters of base64.
    "aws_secret": (
        r"[A-Za-z0-9/+](?<![A-Za-z0-9/+=][A-Za-z0-9/+])[A-Za-z0-9/+]{39}(?![A-Za-z0-9/+=])"
    ),
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
    # Candidates only: Python's ipaddress decides (see public_ipv6).
    "ipv6": (
        r"[0-9A-Fa-f:](?<![\w:.%][0-9A-Fa-f:])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*[0-9A-Fa-f:](?![\w:%])"
    ),
    # Octet values (<= 255, no leading zero) and being public are checked by valid_ipv4.
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
    "b64": (
        r"[A-Za-z0-9+/](?<![A-Za-z0-9+/][A-Za-z0-9+/])[A-Za-z0-9+/]{15,}={0,2}(?![A-Za-z0-9+/=])"
    ),
}
VALIDATORS: dict[str, Callable[[str], bool]] = {
    "ipv4": valid_ipv4,
    "ipv6": public_ipv6,
    "url_password": valid_url_password,
    "aws_secret": valid_aws_secret,
    "card": valid_card,
    "bearer": valid_bearer,
}
IBAN_RX = re.compile(PATTERNS["iban"])
EMAIL_RX = re.compile(PATTERNS["email"])
EMAIL_PCT_RX = re.compile("%40" + PATTERNS["email"][1:])
EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
KV_RX = re.compile(PATTERNS["kv_secret"])
AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "negotiate", "apikey"})
SCHEME_TAIL = re.compile(r"[ \t]+(?:\[[a-z][a-z0-9_]*:[0-9a-f]{8}\]|[^\s'\",;&}\]\)>]+)")
AWS_RX = re.compile(PATTERNS["aws_secret"])
B64_RX = re.compile(PATTERNS["b64"])
IPV4_SHAPE = re.compile(r"(?<![0-9])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9])")
USERINFO = re.compile(r"[^\s/?#\"'<>\[\]]*")
# Documentation ranges for IPv4 pseudonyms (RFC 5737): valid addresses that are nobody's.
DOC_NETS = ("192.0.2.", "198.51.100.", "203.0.113.")
PHONE_RX = re.compile(PATTERNS["phone"])
DIGITS_RX = re.compile(r"[0-9]+")


def phone_ends(s: str, e: int, n: int) -> bool:
    """The phone pattern's lookahead at `e`: not followed by a word character, - or /, .5, :5."""
    if e == n:
        return True
    c = s[e]
    if c.isalnum() or c in "_-/":
        return False
    return not (c in ".:" and e + 1 < n and "0" <= s[e + 1] <= "9")


B64_WHOLE = re.compile(r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

PLACEHOLDER = re.compile(
    r"\[[a-z][a-z0-9_]*:[0-9a-f]{8}\]|u[0-9a-f]{8}@redacted\.invalid|\[REDACTED:secret\]"
    r"|redacted-[0-9a-f]{8}|REDACTED"
)


# What a match of a default rule can end with (left of a placeholder) or start with (right of it).
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
ENDS_MATCH = frozenset(ALNUM + "=_-")
STARTS_MATCH = frozenset(ALNUM + "+(")


def touches(s: str, start: int, end: int) -> bool:
    """Whether replacing s[start:end] could let a match of another rule appear next to it."""
    return (start > 0 and s[start - 1] in ENDS_MATCH) or (end < len(s) and s[end] in STARTS_MATCH)


def joined(out: list[str], s: str, last: int) -> str:
    """`s` rebuilt from the spliced pieces in `out` and its rest from `last` (`s` if none)."""
    if not out:
        return s
    out.append(s[last:])
    return "".join(out)


IPV6_RX = re.compile(PATTERNS["ipv6"])


def in_userinfo(s: str, start: int, at: int) -> bool:
    """Whether s[start:at] (before an '@') is the userinfo of a URL: ``scheme://user:pass@``."""
    p = s.rfind("://", 0, start + 1)
    return p >= 0 and USERINFO.fullmatch(s, p + 3, at) is not None
