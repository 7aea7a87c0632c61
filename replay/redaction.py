"""Redaction: plain JSON in, redacted plain JSON out, before anything reaches disk.

`Redactor(key, config)` is a processor in structlog's style (settings in ``__init__``, work in
``__call__``). It replaces

* the value under a secret-looking key (``password``, ``api_key``, ``X-Api-Key``, ``clientSecret``,
  ...; ASCII case-insensitive, ``-``/``_``/space folded, also as a suffix) with
  ``[REDACTED:secret]``, whatever its type;
* every match of a pattern rule inside any string, dict keys included (data keyed by customer email
  is common), with a keyed pseudonym: ``HMAC-SHA256(key, rule + ":" + value)``, first 8 hex. An
  email stays email-shaped (``u1a2b3c4d@redacted.invalid``) so agent code that parses it still runs
  in replay; every other rule gives ``[<rule>:<8hex>]``;
* an int that is a Luhn-valid 13-19 digit card number with the string ``[card:<8hex>]``.

Redaction is idempotent: placeholders never match a rule, and each string is redacted to a fixed
point. Non-finite floats (not JSON) come out as null, as orjson writes them (the recorder records
them as marked placeholders before they get here: `replay.hashing.freeze_lenient`).

Speed (the recorder redacts every tool call; see `replay._prefilter`): a value is serialized once
with orjson and the whole text is checked at C speed for what each group of rules needs: ``@``
(email), ``eyJ`` (JWT), ``sk-``/``AKIA``/``ghp_``/``xox`` (API keys), ``bearer``, secret key names
before ``":``, and, in a byte translation that maps digits to ``0`` and separators to ``_``, the
shapes of cards, SSNs, IPv4 addresses, phones and IBANs. Each check is a superset of its rules. A
value where none fires is copied by ``orjson.loads`` and never walked (`canonical` returns the bytes
themselves); otherwise one walk gathers the strings, the same checks locate which strings hold a
candidate, and only those run the rules. The rule regexes start with a literal or a character class
so that ``re`` skips ahead in C.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import orjson

from replay.hashing import BYTES_TAG, canonical_bytes, thaw, to_jsonable

__all__ = [
    "DEFAULT_RULES",
    "SECRET_KEYS",
    "SECRET_MARKER",
    "Hit",
    "RedactionConfig",
    "Redactor",
]

from replay._matchers import Rule, RuleMatchers
from replay._prefilter import (
    G_B64,
    G_CARD,
    G_EXTRA,
    G_KEYS,
    KEY_FOLD,
    RISKY,
    RULE_GROUP,
    Prefilter,
)
from replay._rules import (
    DEFAULT_RULES,
    KEY_TOKEN,
    PATTERNS,
    SECRET_FORM_TOKENS,
    SECRET_KEYS,
    SECRET_LAST_TOKENS,
    SECRET_MARKER,
    VALIDATORS,
    luhn,
)

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
        store_args: ``"hash"`` (default: a step's args are kept as args_sha only) or
            ``"redacted"`` (their redacted form is stored too, as with
            ``Recorder(store_args="redacted")``; either setting turns it on).

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
            f"extra_patterns[{name!r}]: bad regex {pattern!r}: {e}; "
            "fix the pattern (Python re syntax)"
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


# Datetimes, dataclasses and subclasses of builtins go through `to_jsonable` like everywhere else.
_DUMP_OPTS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


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


_PLUS_ONE = (1).__add__


def _path_key(path: str, key: str) -> str:
    if _IDENT.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


class Redactor(RuleMatchers):
    """Map plain JSON (dict, list, str, int, float, bool, None) to a new, redacted copy.

    Args:
        key: the per-store HMAC key that makes pseudonyms consistent within a store.
        config: extra rules, allow-list, disabled rules; the defaults when None.
        heavy: an extra text detector for scanning only (`replay.scan.heavy_detector`).

    Raises:
        TypeError: ``key`` is not bytes.
        ValueError: the config holds a bad regex (see `RedactionConfig`).
    """

    def __init__(
        self,
        key: bytes,
        config: RedactionConfig | None = None,
        *,
        heavy: Callable[[str], list[str]] | None = None,
    ) -> None:
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
        self._heavy = heavy  # `replay scan --deep` (detect-secrets): `scan_text` only
        self._memo: dict[bytes, bytes] = {}  # element canonical bytes -> redacted canonical bytes
        self._memo_bytes = 0

        rules = [
            Rule(name, RULE_GROUP[name], re.compile(PATTERNS[name]), VALIDATORS.get(name))
            for name in DEFAULT_RULES
            if name not in cfg.disabled
        ]
        for name, pattern in cfg.extra_patterns.items():
            rules.append(Rule(name, G_EXTRA, _compile_extra(name, pattern, cfg.disabled)))
        self._rules = tuple(rules)
        self._enabled = 0
        for r in rules:
            self._enabled |= r.group
        self._by_mask: dict[int, tuple[Rule, ...]] = {}

        names = set(SECRET_KEYS) | {k.translate(KEY_FOLD) for k in cfg.extra_keys}
        suffixes = names | {n.replace("_", "") for n in names}
        suffixes.discard("")
        self._suffixes = tuple(sorted(suffixes))
        self._suffixes_flat = tuple(sorted({x.replace("_", "") for x in suffixes} - {""}))
        self._key_cache: dict[str, bool] = {}
        self._pre = Prefilter(self._enabled, suffixes)

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
                mask = self._enabled | G_KEYS
            else:
                mask = self._pre.detect(raw, json_text=True)
                if not mask:
                    return orjson.loads(raw)
            return self._redact_tree(value, mask)
        if t is str:
            return self.redact_text(value)
        if t is int:
            return self._int(value) if self._enabled & G_CARD else value
        if t is float:
            return value if math.isfinite(value) else None
        if value is None or t is bool:
            return value
        return self(to_jsonable(value))

    def canonical(self, value: Any, size_hint: int | None = None) -> bytes:
        """``canonical_bytes(self(value))``, cheaper: the recorder's redact-then-hash step.

        See `checked`.
        """
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
            return self._finish(value, raw, self._pre.detect(raw, json_text=True, risky=True))
        return canonical_bytes(self(value)), False

    def _finish(self, value: Any, raw: bytes, mask: int) -> tuple[bytes, bool]:
        """`checked`'s end, from the value's sorted bytes and the detector's mask over them."""
        if not mask:
            return raw, True
        if mask == RISKY:
            return canonical_bytes(self(value)), False
        return canonical_bytes(self._redact_tree(value, mask & ~RISKY)), False

    def checked_pair(
        self, first: Any, second: Any, first_hint: int | None = None
    ) -> tuple[tuple[bytes, bool], tuple[bytes, bool]]:
        """(``checked(first, first_hint)``, ``checked(second)``): a step's args and output.

        When both are small JSON containers, one detector pass runs over both (joined by a
        newline, which no rule matches across): a clean step pays the detector's fixed cost once.
        After a candidate, `first` is checked on its own; when it is clean, the pair's groups are
        all `second`'s (a superset of groups redacts the same), else `second` is checked too. The
        results are those of `checked`, byte for byte.
        """
        if first_hint is None or first_hint < _MEMO_MIN_BYTES:
            raw_a = self._sorted_small(first)
            raw_b = self._sorted_small(second) if raw_a is not None else None
            if raw_b is not None and raw_a is not None:
                return self._pair(first, raw_a, second, raw_b)
        return self.checked(first, first_hint), self.checked(second)

    def canonical_frozen(self, frozen: bytes) -> bytes:
        """`canonical` of ``thaw(frozen)``, for args frozen with sorted keys (see
        `checked_frozen_pair`): where the detector finds nothing in them they are returned as
        they are, neither parsed nor serialized again."""
        if len(frozen) < _MEMO_MIN_BYTES and not self._pre.detect(
            frozen, json_text=True, risky=True
        ):
            return frozen
        return self.canonical(thaw(frozen), len(frozen))

    def all_as_they_are(self, frozen: Sequence[bytes]) -> bool:
        """Whether `canonical_frozen` returns each of `frozen` (args frozen with sorted keys) as
        it is, found in one detector pass over them all, joined by newlines (see
        `Prefilter.detect`): many small args checked for the fixed cost of one.

        False also when some are too large to be checked that way; then check each alone.
        """
        if any(len(f) >= _MEMO_MIN_BYTES for f in frozen):
            return False
        return not self._pre.detect(b"\n".join(frozen), json_text=True, risky=True, joined=True)

    def checked_frozen_pair(
        self, frozen_first: bytes, second: Any
    ) -> tuple[tuple[bytes, bool], tuple[bytes, bool]]:
        """`checked_pair` of ``thaw(frozen_first)`` and `second`, for args the agent's path froze
        with sorted keys (``freeze_lenient(..., sort=True)``).

        Such bytes are the canonical form wherever the detector finds nothing (a number orjson
        writes unlike json is one of its findings), so a clean step's args are neither parsed nor
        serialized again; they are parsed only when something in them is to be redacted.
        """
        if len(frozen_first) < _MEMO_MIN_BYTES:
            raw_b = self._sorted_small(second)
            if raw_b is not None:
                return self._pair(frozen_first, frozen_first, second, raw_b, thaw_first=True)
        return self.checked_pair(thaw(frozen_first), second, len(frozen_first))

    def _pair(
        self, first: Any, raw_a: bytes, second: Any, raw_b: bytes, *, thaw_first: bool = False
    ) -> tuple[tuple[bytes, bool], tuple[bytes, bool]]:
        """`checked_pair` from both values' sorted bytes: one detector pass over the two joined by
        a newline (no rule matches across it); `first` is frozen bytes with `thaw_first`."""
        detect = self._pre.detect
        mask = detect(raw_a + b"\n" + raw_b, json_text=True, risky=True, joined=True)
        if not mask:
            return (raw_a, True), (raw_b, True)
        mask_a = detect(raw_a, json_text=True, risky=True)
        mask_b = detect(raw_b, json_text=True, risky=True) if mask_a else mask
        if mask_a and thaw_first:
            first = thaw(first)
        return self._finish(first, raw_a, mask_a), self._finish(second, raw_b, mask_b)

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
        """`canonical` of a dict whose list values (a conversation's messages) are redacted per
        element.

        A model call's args carry the whole history, so each call would redact every earlier
        message again (quadratic in the turns). Redaction is element-wise, so the redacted
        canonical bytes of ``[m1, m2, ...]`` are ``[`` + the elements' bytes joined by ``,`` +
        ``]``: each element's bytes
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
        for needle, parts in sentinels:
            i = out.find(needle)
            if i < 0 or out.find(needle, i + 1) >= 0:
                return None  # under a secret key, or a user pattern changed it: the ordinary path
            located.append((i, needle, parts))
        located.sort(key=lambda x: x[0])
        pieces: list[bytes] = []
        last = 0
        for i, needle, parts in located:
            pieces += [out[last:i], b"[", b",".join(parts), b"]"]
            last = i + len(needle)
        pieces.append(out[last:])
        return b"".join(pieces)

    def _memo_put(self, key: bytes, red: bytes) -> None:
        self._memo_bytes += len(key) + len(red)
        if self._memo_bytes > _MEMO_MAX_BYTES:
            self._memo.clear()
            self._memo_bytes = len(key) + len(red)
        # Exact-size copies: orjson's bytes keep their whole write buffer (4 KB and up), which
        # the cache would hold for as long as it lives (fresh pages, page faults, 5x its bound).
        exact = memoryview(key).tobytes()
        self._memo[exact] = exact if red == key else memoryview(red).tobytes()

    def redact(self, value: Any) -> Any:
        """The same as calling the redactor: a redacted copy of `value` with dict key order kept.

        Dicts come back with their keys in the input's order (a key renamed by a rule stays in its
        place), lists in order; ``canonical_bytes(redact(x)) == canonical(x)``. Writers that store a
        body in the tool's own key order use this and hash the canonical form.
        """
        return self(value)

    def redact_name(self, name: str) -> str:
        """A name (tool, agent, label) redacted like text; cached: matching by name stays cheap."""
        out = self._names.get(name)
        if out is None:
            out = self.redact_text(name)
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[name] = out
        return out

    def redact_token(self, value: str) -> str:
        """A lowercase identifier (a user stop reason): kept, or ``redacted_<8hex>`` on a hit."""
        if self.redact_name(value) == value:
            return value
        mac = self._mac.copy()
        mac.update(f"token:{value}".encode("utf-8", "surrogatepass"))
        return f"redacted_{mac.hexdigest()[:8]}"

    def redact_text(self, text: str) -> str:
        """Redact the pattern rules in one string (a log line, an exception message)."""
        if not text:
            return text
        mask = self._pre.detect(text.encode("utf-8", "surrogatepass"), json_text=False)
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

    # --- the tree -----------------------------------------------------------------------------

    def _redact_tree(self, value: Any, mask: int) -> Any:
        slots: list[tuple[Any, Any, str, bool]] = []
        out = self._walk(value, slots, bool(mask & G_KEYS), bool(mask & G_CARD))
        string_mask = mask & ~G_KEYS
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
        self._pre.locate(raw, starts, string_mask, flags)
        if string_mask & G_EXTRA:
            for i in range(len(strs)):
                flags[i] = flags.get(i, 0) | G_EXTRA
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
        if string_mask & G_B64:
            # Bytes (tagged {"$bytes": base64} in canonical form): decoded, redacted, encoded again.
            for container, k, _s, is_key in slots:
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
            return self._walk_list(v, slots, keys, ints)
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

    def _walk_list(
        self,
        v: list[Any] | tuple[Any, ...],
        slots: list[tuple[Any, Any, str, bool]],
        keys: bool,
        ints: bool,
    ) -> list[Any]:
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

    def is_secret_key(self, name: str) -> bool:
        """Whether a value under this key name becomes `SECRET_MARKER` (cached per name)."""
        secret = self._key_cache.get(name)
        return self._is_secret_key(name) if secret is None else secret

    # The name `replay.http` looks up (kept until it calls `is_secret_key`).
    _is_secret_key_cached = is_secret_key

    def _is_secret_key(self, k: str) -> bool:
        """A secret key name: by suffix (``x_api_key``, ``clientSecret``) or by token (``pwd``,
        ``private_key_pem``, ``X-Session``, ``db_pass``; not ``pass_rate`` or ``max_tokens``)."""
        folded = k.translate(KEY_FOLD)
        secret = folded.endswith(self._suffixes)
        if not secret:
            toks = [t.lower() for t in KEY_TOKEN.findall(k)]
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
            if s[0] in "23456" and luhn(s) and s not in self._allow:
                return self._pseudo("card", s)
        return v

    # --- strings ------------------------------------------------------------------------------

    # --- scan ---------------------------------------------------------------------------------

    def scan_text(self, s: str) -> list[str]:
        """The rules that would redact something in `s` (each once), never the value; with
        ``heavy`` (see `__init__`), detect-secrets' types when the rules found nothing."""
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
                key_rules = self.scan_text(k)
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
            hits.extend(Hit(path, r) for r in self.scan_text(v))
        elif t is int:
            if self._enabled & G_CARD and self._int(v) is not v:
                hits.append(Hit(path, "card"))
        elif t is float or t is bool or v is None:
            return
        else:
            self._scan(to_jsonable(v), path, hits)
