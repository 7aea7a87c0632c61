"""The prefilters of redaction: cheap document-level checks that say which rules could match.

Each check is a superset of its rules on the same text, cheap enough to run over every recorded
value: single-byte searches (memchr), literal-prefix regexes (``re`` skips ahead in C) and a few
byte translations (``bytes.translate``): digits to ``0`` and separators to ``_`` for cards, SSNs,
IPv4 addresses, phones and IBANs; a case fold, reversed, for secret key names, ``bearer`` and
API-key prefixes; base64 runs. `Prefilter.detect` gives the groups (`G_*` bits) that may match in
a whole value; `Prefilter.locate` which strings of a walked value hold a candidate. Only those
strings run the rules (`replay.redaction`). No check relies on a lookaround that a JSON escape next
to a match could change.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator

from replay._rules import SECRET_FORM_TOKENS, SECRET_LAST_TOKENS

# Groups of rules that share one document-level check.
G_JWT, G_API, G_BEARER, G_EMAIL, G_IBAN, G_CARD, G_KEYS, G_EXTRA = (
    1,
    2,
    4,
    8,
    16,
    32,
    64,
    128,
)
G_SSN, G_IPV4, G_PHONE = 512, 1024, 2048
G_PEM, G_AWS, G_URL, G_KV, G_IPV6, G_TEL, G_B64 = (
    1 << 12,
    1 << 13,
    1 << 14,
    1 << 15,
    1 << 16,
    1 << 17,
    1 << 18,
)
G_DIGITS = G_CARD | G_SSN | G_IPV4 | G_PHONE
RISKY = 256  # not a group: `canonical` cannot return orjson's bytes as they are
RULE_GROUP = {
    "jwt": G_JWT,
    "api_key": G_API,
    "bearer": G_BEARER,
    "email": G_EMAIL,
    "iban": G_IBAN,
    "card": G_CARD,
    "ssn": G_SSN,
    "ipv4": G_IPV4,
    "phone": G_PHONE,
    "pem": G_PEM,
    "aws_secret": G_AWS,
    "url_password": G_URL,
    "kv_secret": G_KV,
    "ipv6": G_IPV6,
    "tel": G_TEL,
    "b64": G_B64,
}

# Document-level checks. Each one is a superset of its rules on the same text, cheap enough to run
# over every recorded value: single-byte searches (memchr), literal-prefix regexes, and two byte
# translations. None relies on a lookaround that a JSON escape next to a match could change.
#
# CLASS: digits -> '0', A-Z -> 'A', the separators of phones and cards (space - / ( ) . _) -> '_',
# '+' and 'e' kept, ':' ',' '[' (what precedes a JSON number) -> 'n', everything else -> '!'. Same
# length as the input, so positions map back. For the existence check g-z are deleted first: no
# digit or IBAN rule can match one, and the text to search shrinks by half (a-f stay, so hex ids
# do not merge into digit runs).
CLASS = bytes(
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
G_TO_Z = bytes(range(103, 123))
# FOLD: A-Z -> a-z and '-' -> '_' (secret key names, 'bearer', API key prefixes). Spaces stay
# spaces so the reversed API check below, which starts at '_', is not tried at every space.
FOLD = bytes(i + 32 if 65 <= i <= 90 else 95 if i == 45 else i for i in range(256))
KEY_FOLD = str.maketrans({**{chr(c): chr(c + 32) for c in range(65, 91)}, "-": "_", " ": "_"})

ESC_U = re.compile(rb"\\u")
AT = re.compile(rb"@")
JWT_D = re.compile(rb"eyJ")
API_I = re.compile(rb"I(?:A(?<=AKIA|ASIA)|za(?<=AIza))")
# On the reversed fold: sk- sk_ rk_ (-> "_ks" "_kr"), gh?_, github_pat_, xox?- .
API_R = re.compile(rb"_(?:k[sr]|[pousr]hg|tap_buhtig|[abposre]xox)")
BEARER_D = re.compile(rb"bearer|basic")
# A separator, then either two more separators or at least 5 more digits in 2+ groups: national
# phones, SSN, grouped cards, IPv4. Not an ISO date (2024-05-01: only 4 digits after the first).
R2 = re.compile(rb"0_(?:0+_0+_0|_?(?:00_000|000+_00))")
R3 = re.compile(rb"\+0(?:_{0,2}0){9}")  # international phone
IBAN_D = re.compile(rb"AA00(?:_?[A0]){11}")
# Lowercase IBANs (de89 3704 ...): on a translation with a-z -> 'a', A-Z -> 'A', digits -> '0',
# space kept, the rest -> '!': two letters at a token start, two check digits, 11+ characters.
LOWER_CLASS = bytes(
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
IBAN_LOWER_D = re.compile(rb"00(?<=[aA][aA]00)(?<![aA0][aA][aA]00)(?: ?[aA0]){11}")
TEN_D = re.compile(rb"0(?<!00)0{9}(?!0)")  # exactly ten digits: then ten_runs decides
PEM_D = b"PRIVATE KEY"
YA29_D = b"ya29."
AWS_D = re.compile(rb"aws|akia|asia")
TEL_D = b"tel:"
TEL_RX = re.compile(
    re.escape(TEL_D)
)  # `re`'s literal search beats `in` on text full of 't' and 'e'
# IPv6 with "::" or with four groups (not a clock time 10:30:00).
IPV6_D = re.compile(rb":(?::|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f])")
# A whole JSON string that is base64 (16+ characters), or bytes tagged {"$bytes": ...}.
# Base64 runs: base64 characters -> 'b', the rest -> ' ', then a substring test for 16 b's.
B64_CLS = bytes(
    98 if (48 <= i <= 57 or 65 <= i <= 90 or 97 <= i <= 122 or i in b"+/") else 32
    for i in range(256)
)
B64_RUN = b"b" * 16


def mixed_case(token: str | bytes) -> bool:
    """Base64 of 16+ characters of text has upper- and lowercase letters; a path or an id rarely."""
    return not token.islower() and not token.isupper()


def _runs16(cls: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each maximal run of 16+ ``b`` in `cls` (`B64_CLS`), left to right.

    Substring searches in C (`bytes.find`: 16 ``b``, then the next space by memchr), several
    times cheaper than ``re`` on text where most words are short runs of ``b``.
    """
    pos = 0
    while (i := cls.find(B64_RUN, pos)) >= 0:
        j = cls.find(b" ", i + 16)
        if j < 0:
            j = len(cls)
        yield i, j
        pos = j


def b64_runs(raw: bytes, cls: bytes) -> Iterator[int]:
    """Starts of base64 tokens the b64 rule would decode: 16+ characters (with padding a multiple
    of 4), both upper- and lowercase (not a URL path, a word or a hex id)."""
    return b64_starts(raw, _runs16(cls))


def b64_starts(raw: bytes, runs: Iterable[tuple[int, int]]) -> Iterator[int]:
    """`b64_runs` from the runs `_runs16` gave (scanned once, shared with the AWS check)."""
    n = len(raw)
    for i, end in runs:
        j = end
        while j < n and j - end < 2 and raw[j] == 61:  # '=' padding
            j += 1
        if (j - i) % 4 == 0 and mixed_case(raw[i:j]):
            yield i


def has_b64_run(raw: bytes, cls: bytes) -> bool:
    """`b64_runs` finds one."""
    return next(b64_runs(raw, cls), -1) >= 0


B64_RUN40 = b"b" * 40
BYTES_KEY = b'"$bytes":'
SCHEME_D = re.compile(rb"://")
Z13 = b"0" * 13  # an ungrouped card or an int: then card_runs decides
# A JSON number that orjson writes differently from json (1e16 vs 1e+16, 0.00001 vs 1e-05): the
# cases where `canonical` must fall back to hashing.canonical_bytes.
RISKY_FLOAT = re.compile(rb"n_?0+(?:_0+)?e")  # plus b"0.0000" in the raw bytes
DIGIT_RUN = re.compile(rb"0000000000000(?:0{0,6})(?!0)")


def ten_runs(cls: bytes, raw: bytes) -> Iterator[int]:
    """Starts of exactly-ten-digit runs shaped like a NANP phone, inside a string (not a number)."""
    for m in TEN_D.finditer(cls):
        i = m.start()
        if raw[i] in b"23456789" and raw[i + 3] in b"23456789":
            # Not a JSON number ("n": 4155550100 is an id or a count; phones are strings).
            if i >= 2 and cls[i - 1] == 110 and (raw[i - 1] != 58 or raw[i - 2] == 34):
                continue
            yield i


def card_runs(cls: bytes, raw: bytes) -> Iterator[int]:
    """Starts of maximal 13-19 digit runs that begin with 2-6 (what the card rule can match)."""
    for m in DIGIT_RUN.finditer(cls):
        i = m.start()
        if (i == 0 or cls[i - 1] != 48) and raw[i] in b"23456":
            yield i


def reversed_trie(words: list[bytes]) -> bytes:
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
            alts.append(atom + b"(?:" + reversed_trie(rest) + b")?")
        else:
            alts.append(atom + reversed_trie(rest))
    return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"


FORM_REV = (
    b"(?:(?:[0-9]+|"
    + reversed_trie(sorted({w.encode()[::-1] for w in SECRET_FORM_TOKENS}))
    + b")[^a-z0-9\"'\\\\]?){0,2}"
)


class Prefilter:
    """The document-level checks for one set of enabled rule groups and secret key names.

    Args:
        enabled: the `G_*` bits of the groups whose rules are on (`G_EXTRA` for user patterns).
        suffixes: secret key names, folded (``api_key``, ``apikey`` ...), as `Redactor` matches
            them by suffix.
    """

    def __init__(self, enabled: int, suffixes: set[str]) -> None:
        self.enabled = enabled
        self.keys_rx: re.Pattern[bytes] | None
        self.kv_text: tuple[re.Pattern[bytes], ...]
        self.kv_json: tuple[re.Pattern[bytes], ...]
        # The document-level key check looks for `<name>":` in the folded JSON, reversed so the
        # regex starts with the literal `:"`. Names with characters JSON may escape cannot be
        # found that way: then keys are always looked at.
        # Keys secret by token (`Redactor.is_secret_key`) end with a last-token word, maybe
        # followed by form tokens (`FORM_REV`). The text check (`key=value`, `key: value`,
        # `'key': 'value'`) is the same search after `=` or `:` and up to three quotes or spaces.
        words = suffixes | SECRET_LAST_TOKENS
        minimal = [s for s in words if not any(s != o and s.endswith(o) for o in words)]
        if all(re.fullmatch(r"[a-z0-9_.:/+@$]+", s) for s in minimal):
            trie = FORM_REV + reversed_trie([s.encode()[::-1] for s in minimal])
            quotes = b"[\"' \\\\]{0,3}"
            self.keys_rx = re.compile(b':"' + trie)
            # Regexes that each start with a literal (`re` then skips ahead in C). In JSON text a
            # key's own separator (`"key":`, reversed `:"k`) is the key check's business: the text
            # check skips it, so it is tried only at the few '=' and ':' inside strings.
            self.kv_text = (
                re.compile(b"=" + quotes + trie),
                re.compile(b":" + quotes + trie),
            )
            self.kv_json = (
                self.kv_text[0],
                re.compile(b':(?!"[^\\\\])' + quotes + trie),
            )
        else:
            self.keys_rx = None
            self.kv_text = self.kv_json = ()

    def detect(self, raw: bytes, json_text: bool, risky: bool = False, joined: bool = False) -> int:
        """The groups whose rules could match somewhere in `raw` (a superset).

        With ``risky``, also `RISKY` when a number in `raw` (orjson's output) may differ from
        json's. With ``joined``, `raw` is several texts joined by newlines, and 0 means that
        `detect` finds nothing in any of them: no check matches across a newline or is hidden
        by one (a newline is what a text's start or end is to each lookaround), and the one
        shortcut that holds for a single text only (no uppercase letter: no base64) is not taken.
        """
        en = self.enabled
        if json_text and b"\\" in raw and ESC_U.search(raw):
            # \u00XX escapes put hex digits next to text: look at every leaf instead.
            return en | G_KEYS | (RISKY if risky else 0)
        mask = en & G_EXTRA  # user patterns have no prefilter
        if en & G_EMAIL and (b"@" in raw or (b"%" in raw and b"%40" in raw)):
            mask |= G_EMAIL
        if en & G_JWT and b"J" in raw and JWT_D.search(raw):
            mask |= G_JWT
        # Multi-byte literals behind a single-byte test (memchr) of a rare byte they contain.
        if en & G_PEM and b"V" in raw and PEM_D in raw:
            mask |= G_PEM
        if en & G_URL and b"@" in raw and b"://" in raw:
            mask |= G_URL
        if en & G_IPV6 and b":" in raw and IPV6_D.search(raw):
            mask |= G_IPV6
        # Base64 runs need an uppercase letter: text without one (raw.islower()) has none.
        # The maximal runs of 16+ base64 characters, found in one scan (a `B64_RUN in` test first
        # would scan the same text again), serve the b64 rule and the AWS check (a 40+ run).
        runs = (
            list(_runs16(raw.translate(B64_CLS)))
            if en & (G_B64 | G_AWS) and (joined or not raw.islower())
            else []
        )
        if en & G_B64 and (
            (json_text and b"$" in raw and BYTES_KEY in raw)
            or (runs and next(b64_starts(raw, runs), -1) >= 0)
        ):
            mask |= G_B64
        if en & (G_API | G_BEARER | G_AWS | G_TEL | G_KV) or json_text:
            run40 = any(j - i >= 40 for i, j in runs)
            mask |= self._fold_checks(raw, run40, json_text)
        if en & (G_DIGITS | G_IBAN) or risky:
            mask |= self._class_checks(raw, risky)
        return mask

    def _fold_checks(self, raw: bytes, run40: bool, json_text: bool) -> int:
        """`detect` on the case fold: ``bearer``, AWS context, ``tel:``, API-key prefixes, and
        secret key names (reversed, so each regex starts with a literal). `run40`: `raw` has a
        run of 40+ base64 characters (what an AWS secret is)."""
        en = self.enabled
        mask = 0
        fold = raw.translate(FOLD)
        if en & G_BEARER and BEARER_D.search(fold):  # one pass, not two substring tests
            mask |= G_BEARER
        # An AWS secret is a 40-character base64 run: look for its context only then.
        if en & G_AWS and run40 and (b"aws" in fold or b"akia" in fold or b"asia" in fold):
            mask |= G_AWS
        if en & G_TEL and TEL_RX.search(fold):
            mask |= G_TEL
        rfold = fold[::-1]
        if en & G_API and (
            (b"I" in raw and API_I.search(raw)) or API_R.search(rfold) or YA29_D in raw
        ):
            mask |= G_API
        if self.keys_rx is None:
            return mask | (G_KEYS if json_text else 0) | (en & G_KV)
        if json_text and self.keys_rx.search(rfold):
            mask |= G_KEYS
        if en & G_KV:
            kv_eq, kv_colon = self.kv_json if json_text else self.kv_text
            if (b"=" in raw and kv_eq.search(rfold)) or kv_colon.search(rfold):
                mask |= G_KV
        return mask

    def _class_checks(self, raw: bytes, risky: bool) -> int:
        """`detect` on the class translation (digits, separators): numbers orjson writes unlike
        json, IBANs, and the digit rules (cards, SSNs, IPv4, phones)."""
        en = self.enabled
        mask = 0
        small = raw.translate(CLASS, G_TO_Z)
        # Every match of RISKY_FLOAT ends with "0e": a two-byte literal search first.
        if risky and (b"0.0000" in raw or (b"0e" in small and RISKY_FLOAT.search(small))):
            mask |= RISKY
        # The lowercase IBAN regex starts with the literal "00": `re` skips ahead in C to
        # the few digit pairs (cheaper than a looser gate on `small` that tries every one).
        if en & G_IBAN and (
            IBAN_D.search(small) or IBAN_LOWER_D.search(raw.translate(LOWER_CLASS))
        ):
            mask |= G_IBAN
        if not en & G_DIGITS:
            return mask
        if R2.search(small):
            return mask | (en & G_DIGITS)
        if en & G_PHONE and b"+" in raw and R3.search(small):
            mask |= G_PHONE
        if en & G_CARD and Z13 in small and next(card_runs(raw.translate(CLASS), raw), -1) >= 0:
            mask |= G_CARD
        if (
            en & G_PHONE
            and not mask & G_PHONE
            and b"0000000000" in small
            and next(ten_runs(raw.translate(CLASS), raw), -1) >= 0
        ):
            mask |= G_PHONE
        return mask

    def locate(self, raw: bytes, starts: list[int], mask: int, flags: dict[int, int]) -> None:
        """Mark, per string index, the groups with a candidate in that string."""
        bisect_right = bisect.bisect_right
        hits: list[tuple[int, int]] = []
        if mask & G_EMAIL:
            hits += [(m.start(), G_EMAIL) for m in AT.finditer(raw)]
            if b"%40" in raw:
                hits += [(m.start(), G_EMAIL) for m in re.finditer(rb"%40", raw)]
        if mask & G_JWT:
            hits += [(m.start(), G_JWT) for m in JWT_D.finditer(raw)]
        if mask & G_PEM:
            hits += [(m.start(), G_PEM) for m in re.finditer(re.escape(PEM_D), raw)]
        if mask & G_URL:
            hits += [(m.start(), G_URL) for m in SCHEME_D.finditer(raw)]
        if mask & G_IPV6:
            hits += [(m.start(), G_IPV6) for m in IPV6_D.finditer(raw)]
        if mask & G_B64:
            hits += [(i, G_B64) for i in b64_runs(raw, raw.translate(B64_CLS))]
        if mask & (G_API | G_BEARER | G_AWS | G_TEL | G_KV):
            fold = raw.translate(FOLD)
            n = len(raw)
            if mask & G_BEARER:
                hits += [(m.start(), G_BEARER) for m in BEARER_D.finditer(fold)]
            if mask & G_AWS:
                hits += [(m.start(), G_AWS) for m in AWS_D.finditer(fold)]
            if mask & G_TEL:
                hits += [(m.start(), G_TEL) for m in re.finditer(re.escape(TEL_D), fold)]
            if mask & G_KV:
                if not self.kv_text:
                    hits += [(i, G_KV) for i in starts[:-1]]
                else:
                    rf = fold[::-1]
                    for rx in self.kv_text:
                        hits += [(n - m.end(), G_KV) for m in rx.finditer(rf)]
            if mask & G_API:
                hits += [(m.start(), G_API) for m in API_I.finditer(raw)]
                hits += [(n - m.end(), G_API) for m in API_R.finditer(fold[::-1])]
                hits += [(m.start(), G_API) for m in re.finditer(re.escape(YA29_D), raw)]
        if mask & (G_DIGITS | G_IBAN):
            cls = raw.translate(CLASS)
            if mask & G_IBAN:
                hits += [(m.start(), G_IBAN) for m in IBAN_D.finditer(cls)]
                hits += [
                    (m.start(), G_IBAN) for m in IBAN_LOWER_D.finditer(raw.translate(LOWER_CLASS))
                ]
            if mask & G_DIGITS:
                hits += [(m.start(), mask & G_DIGITS) for m in R2.finditer(cls)]
            if mask & G_PHONE:
                hits += [(m.start(), G_PHONE) for m in R3.finditer(cls)]
                hits += [(i, G_PHONE) for i in ten_runs(cls, raw)]
            if mask & G_CARD:
                hits += [(i, G_CARD) for i in card_runs(cls, raw)]
        for pos, group in hits:
            i = bisect_right(starts, pos) - 1
            flags[i] = flags.get(i, 0) | group
