"""Each pattern rule's matching loop, and the keyed pseudonyms that replace what it finds.

`Rule` is one pattern rule (regex, validator, prefilter group, a substring every match contains).
`RuleMatchers` is the part of `replay.redaction.Redactor` that turns one string into its redacted
form: `_apply` runs the rules to a fixed point; emails, phones, IBANs, ``key=value`` secrets, IPv6
and base64 have their own loops; `_pseudo` gives ``HMAC-SHA256(key, rule:value)`` in the shape of
what it replaces (an email stays an email, an IP a documentation-range IP).
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import re
from collections.abc import Callable

from replay._prefilter import (
    G_AWS,
    G_B64,
    G_EMAIL,
    G_EXTRA,
    G_IBAN,
    G_IPV6,
    G_KV,
    G_PHONE,
    Prefilter,
    mixed_case,
)
from replay._rules import (
    AUTH_SCHEMES,
    B64_RX,
    B64_WHOLE,
    DIGITS_RX,
    DOC_NETS,
    EMAIL_LOCAL,
    EMAIL_PCT_RX,
    EMAIL_RX,
    IBAN_LENGTHS,
    IBAN_RX,
    IPV4_SHAPE,
    IPV6_RX,
    KV_RX,
    PHONE_RX,
    PLACEHOLDER,
    SCHEME_TAIL,
    SECRET_MARKER,
    iban_mod97,
    in_userinfo,
    joined,
    phone_ends,
    public_ipv6,
    touches,
)

# A substring every match of the rule contains: a cheap test before running the regex.
GATES = {
    "jwt": ".",
    "email": "",
    "ssn": "-",
    "ipv4": ".",
    "pem": "PRIVATE KEY",
    "url_password": "://",
    "ipv6": ":",
}


class Rule:
    """One pattern rule: its regex, validator, prefilter group and cheap substring gate."""

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
            name if group in (G_IBAN, G_EMAIL, G_PHONE, G_AWS, G_KV, G_B64, G_IPV6) else ""
        )
        self.gate = GATES.get(name, "") if group != G_EXTRA else ""


class RuleMatchers:
    """The string side of `Redactor`; its state is set by `Redactor.__init__`."""

    _allow: frozenset[str]
    _enabled: int
    _rules: tuple[Rule, ...]
    _by_mask: dict[int, tuple[Rule, ...]]
    _cache: dict[tuple[str, str], str]
    _mac: hmac.HMAC
    _pre: Prefilter

    def redact_text(self, text: str) -> str:
        """Redact the pattern rules in one string (defined by `Redactor`)."""
        raise NotImplementedError

    def is_secret_key(self, name: str) -> bool:
        """Whether a value under this key name is secret (defined by `Redactor`)."""
        raise NotImplementedError

    def _rules_for(self, mask: int) -> tuple[Rule, ...]:
        rules = self._by_mask.get(mask)
        if rules is None:
            rules = self._by_mask[mask] = tuple(r for r in self._rules if r.group & mask)
        return rules

    def _apply(self, s: str, rules: tuple[Rule, ...], hits: list[str] | None = None) -> str:
        """Run `rules` over `s` until nothing changes (idempotence by construction).

        A replacement can only let another match appear right next to it (a lookaround that saw
        the replaced text now sees the placeholder). So another pass runs only when a replacement
        touches a character a match can end (left) or start (right) with, and then only the rules
        whose groups still have a candidate in the new text.
        """
        if s in self._allow:
            return s
        sticky = [bool(self._enabled & G_EXTRA)]  # user patterns: always check again
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
            sticky[0] = bool(self._enabled & G_EXTRA)
            mask = self._pre.detect(s.encode("utf-8", "surrogatepass"), json_text=False)
            if not mask:
                break
            rules = self._rules_for(mask)
        return s

    def _sub(self, rule: Rule, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        part, validate, allow, name = rule.part, rule.validate, self._allow, rule.name
        guard = rule.group == G_EXTRA  # default rules never match a placeholder
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
                    spans = [x.span() for x in PLACEHOLDER.finditer(s)] if has else []
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
                sticky[0] = touches(s, vs, ve)
            ph = self._pseudo(name, value)
            return s[start:vs] + ph + s[ve:end] if part else ph

        return rule.regex.sub(repl, s)

    def _email(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """Emails: the domain by regex from each '@', the local part scanned back from it.

        A URL-encoded '@' (``jane%40example.com`` in a query string) counts as one too.
        """
        s = self._email_with(EMAIL_RX, s, hits, sticky)
        if "%40" in s:
            s = self._email_with(EMAIL_PCT_RX, s, hits, sticky)
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
                s[start - 1] in EMAIL_LOCAL or (s[start - 1] > "\x7f" and s[start - 1].isalnum())
            ):
                start -= 1
            if s.startswith("redacted.invalid", start) and s[start - 1 : start] == "@":
                start += 16  # the scan ran into the tail of an email placeholder
            if start >= at:
                continue
            if "://" in s and in_userinfo(s, start, at):
                continue  # user@host of a URL (postgres://user:pass@db): url_password's business
            value = s[start:end]
            if value in self._allow:
                continue
            self._put(out, s, last, start, end, "email", value, hits, sticky)
            last = end
        return joined(out, s, last)

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
            sticky[0] = touches(s, start, end)
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
        while (m := PHONE_RX.search(s, pos)) is not None:
            start, end = m.span()
            pos = start + 1
            intl = s[start] == "+"
            digits = 0
            stop = -1
            for groups, run in enumerate(DIGITS_RX.finditer(s, start, end), 1):
                digits += run.end() - run.start()
                if digits > 15:
                    break
                if (
                    digits >= 10
                    and (intl or groups >= 3 or (groups == 1 and digits == 10))
                    and phone_ends(s, run.end(), n)
                ):
                    stop = run.end()
                    break
            if stop < 0:
                continue
            value = s[start:stop]
            if "." in value and IPV4_SHAPE.search(value):
                continue  # a dotted quad is an address (kept or pseudonymized by the ipv4 rule)
            if value in self._allow:
                continue
            self._put(out, s, last, start, stop, "phone", value, hits, sticky)
            last = pos = stop
        return joined(out, s, last)

    def _iban(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """IBANs: the country's length decides where one ends, then mod 97 must hold."""
        out: list[str] = []
        last = pos = 0
        # The regex may run on into a neighbouring IBAN: search again from where this one stops.
        while (m := IBAN_RX.search(s, pos)) is not None:
            start = m.start()
            pos = start + 1
            text = m.group(0)
            length = IBAN_LENGTHS.get(text[:2].upper())
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
            if not iban_mod97(value.replace(" ", "").upper()) or value in self._allow:
                continue
            pos = stop
            self._put(out, s, last, start, stop, "iban", value, hits, sticky)
            last = stop
        return joined(out, s, last)

    def _kv(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """``key=value`` / ``key: value`` / ``'key': 'value'`` in text: a secret key's value goes.

        In a URL query (``?api_key=...&``) the value becomes ``REDACTED`` so the URL stays a URL;
        elsewhere `SECRET_MARKER`.
        """
        out: list[str] = []
        last = pos = 0
        while (m := KV_RX.search(s, pos)) is not None:
            if not self.is_secret_key(m.group("k")):
                pos = m.end("sep")
                continue
            ks = m.start("k")
            if ks > 0 and s[ks - 1] == "[" and PLACEHOLDER.match(s, ks - 1):
                pos = m.end("sep")  # the rule name inside a placeholder: [api_key:1a2b3c4d]
                continue
            vname = "v1" if m.group("v1") is not None else "v2"
            vs, ve = m.span(vname)
            pos = m.end()
            value = s[vs:ve]
            if value == "REDACTED" or PLACEHOLDER.match(s, vs) or value in self._allow:
                continue
            if vname == "v2" and value.lower() in AUTH_SCHEMES:
                # "Authorization: Bearer abc": the credentials after the scheme go too.
                more = SCHEME_TAIL.match(s, ve)
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
        return joined(out, s, last)

    def _ipv6(self, s: str, hits: list[str] | None, sticky: list[bool]) -> str:
        """Public IPv6 addresses -> one in 2001:db8::/32; others (loopback, ULA, ...) kept."""
        out: list[str] = []
        last = 0
        for m in IPV6_RX.finditer(s):
            start, end = m.span()
            value = s[start:end]
            while value.endswith(".") or (value.endswith(":") and not value.endswith("::")):
                value = value[:-1]
                end -= 1
            if value.count(":") < 2 or not public_ipv6(value) or value in self._allow:
                continue
            self._put(out, s, last, start, end, "ipv6", value, hits, sticky)
            last = end
        return joined(out, s, last)

    def _b64(self, s: str, hits: list[str] | None, min_len: int = 16) -> str:
        """Base64 whose decoded text holds something to redact: that text, redacted, encoded again.

        Tokens of 16+ base64 characters in any string; with a smaller `min_len` (bytes, tagged
        ``{"$bytes": ...}``) the whole string.
        """
        if min_len < 16:
            return self._b64_whole(s, hits, min_len)
        out: list[str] = []
        last = 0
        for m in B64_RX.finditer(s):
            start, end = m.span()
            if (end - start) % 4 or not mixed_case(s[start:end]):
                continue
            new = self._b64_whole(s[start:end], hits, 16)
            if new is not s[start:end] and new != s[start:end]:
                out.append(s[last:start])
                out.append(new)
                last = end
        return joined(out, s, last)

    def _b64_whole(self, s: str, hits: list[str] | None, min_len: int) -> str:
        if len(s) < min_len or len(s) % 4 or not B64_WHOLE.fullmatch(s):
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
            self._apply(text, self._rules) if self._enabled & G_EXTRA else self.redact_text(text)
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
                ph = f"{DOC_NETS[int(hx[:2], 16) % 3]}{int(hx[2:4], 16)}"
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
