"""Redaction: secret keys, pattern rules, keyed pseudonyms, configuration, idempotence."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replay.hashing import canonical_bytes, canonical_json, freeze_lenient, thaw
from replay.processors import (
    DEFAULT_RULES,
    SECRET_KEYS,
    SECRET_MARKER,
    RedactionConfig,
    Redactor,
)
from tests.strategies import json_with_planted, planted_values

KEY = b"k" * 32
R = Redactor(KEY)
PLACEHOLDER = re.compile(r"\[([a-z_]+):([0-9a-f]{8})\]|u([0-9a-f]{8})@redacted\.invalid")
# REPLAY_HYPOTHESIS_EXAMPLES=5000 for a deeper local run.
SLOW = settings(
    max_examples=int(os.environ.get("REPLAY_HYPOTHESIS_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=15,
)


def pseudo(rule: str, value: str, key: bytes = KEY) -> str:
    hx = hmac.new(key, f"{rule}:{value}".encode(), hashlib.sha256).hexdigest()[:8]
    if rule == "email":
        return f"u{hx}@redacted.invalid"
    if rule == "ipv4":
        return f"{('192.0.2.', '198.51.100.', '203.0.113.')[int(hx[:2], 16) % 3]}{int(hx[2:4], 16)}"
    if rule == "ipv6":
        return str(ipaddress.IPv6Address(f"2001:db8:{hx[:4]}:{hx[4:]}::1"))
    if rule == "url_password":
        return f"redacted-{hx}"
    return f"[{rule}:{hx}]"


def oracle(r: Redactor, v):
    """Every rule on every string and key, with no document-level prefilter."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            nk = r._apply(k, r._rules)
            allowed = isinstance(x, str) and x in r._allow
            out[nk] = SECRET_MARKER if r._is_secret_key(k) and not allowed else oracle(r, x)
        return out
    if isinstance(v, list):
        return [oracle(r, x) for x in v]
    if isinstance(v, str):
        return r._apply(v, r._rules)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if type(v) is int:
        return r._int(v)
    return v


# --- pattern rules: caught ------------------------------------------------------------------

CAUGHT = [
    ("email", "bob.smith+tag@example.co.uk", "bob.smith+tag@example.co.uk"),
    ("email", "write to Alice_01@mail.example.com.", "Alice_01@mail.example.com"),
    ("phone", "call +1 415 555 0100 now", "+1 415 555 0100"),
    ("phone", "+14155550100", "+14155550100"),
    ("phone", "+44 20 7946 0958", "+44 20 7946 0958"),
    ("phone", "+1 (415) 555-0100", "+1 (415) 555-0100"),
    ("phone", "(415) 555-0100", "(415) 555-0100"),
    ("phone", "tel 415-555-0100.", "415-555-0100"),
    ("phone", "415.555.0100", "415.555.0100"),
    ("phone", "1-800-555-0100", "1-800-555-0100"),
    ("phone", "020 7946 0958", "020 7946 0958"),
    ("phone", "01 23 45 67 89", "01 23 45 67 89"),
    ("phone", "01234 567 89", "01234 567 89"),
    ("phone", "(030) 1234 5678", "(030) 1234 5678"),
    ("card", "4111111111111111", "4111111111111111"),
    ("card", "card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("card", "5500-0000-0000-0004", "5500-0000-0000-0004"),
    ("card", "amex 3782 822463 10005", "3782 822463 10005"),
    ("card", "6011000990139424", "6011000990139424"),
    ("iban", "DE89370400440532013000", "DE89370400440532013000"),
    ("iban", "IBAN: DE89 3704 0044 0532 0130 00 EUR", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "NL91ABNA0417164300", "NL91ABNA0417164300"),
    ("ssn", "ssn 123-45-6789", "123-45-6789"),
    ("ipv4", "from 81.2.69.160:8080", "81.2.69.160"),
    ("ipv4", "8.8.4.4", "8.8.4.4"),
    ("ipv4", "1.2.3.4", "1.2.3.4"),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    ),
    ("bearer", "sent Bearer abc123def456ghi789", "abc123def456ghi789"),
    ("bearer", "bearer Zm9vYmFyYmF6cXV4cXV1eA==", "Zm9vYmFyYmF6cXV4cXV1eA=="),
    ("bearer", "BEARER\tabc123def456ghi789", "abc123def456ghi789"),
    ("bearer", "?via=Bearer%20abc123def456ghi789", "abc123def456ghi789"),
    (
        "api_key",
        "key=sk-abcdefghijklmnopqrstuvwxyz0123456789",
        "sk-abcdefghijklmnopqrstuvwxyz0123456789",
    ),
    ("api_key", "sk-proj-Ab12_Cd34-Ef56Gh78Ij90Kl12Mn34", "sk-proj-Ab12_Cd34-Ef56Gh78Ij90Kl12Mn34"),
    ("api_key", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    (
        "api_key",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    ),
    (
        "api_key",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    ),
    ("api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
]


@pytest.mark.parametrize(("rule", "text", "value"), CAUGHT)
def test_rule_catches(rule: str, text: str, value: str) -> None:
    """Each default rule replaces the value with its keyed placeholder and keeps the text around
    it.
    """
    out = R.redact_text(text)
    assert value not in out
    assert out == text.replace(value, pseudo(rule, value))


# --- pattern rules: not caught ----------------------------------------------------------------

NOT_CAUGHT = [
    "in 2024 we shipped 1,299 orders",
    "price 19.99 EUR, total $1,299.00",
    "order ORD-2024-000123",
    "ord_000123",
    "550e8400-e29b-41d4-a716-446655440000",
    "12345678-1234-1234-1234-123456789012",
    "2024-05-01T10:30:00Z",
    "2024-05-01T10:30:00.123+02:00",
    "2024-05-01",
    "15.01.2024",
    "v1.2.3",
    "1.2.3",
    "1.2.3.4.5",
    "300.1.1.1",
    "1718000000000",
    "17180000000001234",
    "4111111111111112",
    "1234567890123456",
    "555-0100",
    "1415555010",
    "000-12-3456",
    "666-12-3456",
    "900-12-3456",
    "Bearer authentication is required",
    "use a bearer token",
    "task-force-automation-pipeline-2024",
    "risk_score_threshold_for_accounts",
    "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "score 0.30000000000000004",
    "lat 37.7749295, lon -122.4194155",
    "DE00370400440532013000",
    "support@@example",
    "u1a2b3c4d@redacted.invalid",
    "[phone:1a2b3c4d] [REDACTED:secret]",
    "timeout after 30s, retry 3 of 5",
    "+02:00",
]


@pytest.mark.parametrize("text", NOT_CAUGHT)
def test_ordinary_text_is_kept(text: str) -> None:
    """Years, prices, ids, UUIDs, timestamps, versions and invalid numbers pass unchanged."""
    assert R.redact_text(text) == text
    assert R({"v": text}) == {"v": text}


def test_valid_ipv4_in_version_position_is_caught() -> None:
    """A four-part dotted number that is a valid IPv4 address is redacted even as a
    version string.
    """
    assert R.redact_text("version 1.2.3.4") == f"version {pseudo('ipv4', '1.2.3.4')}"


@pytest.mark.parametrize("n", [4111111111111111, 5500000000000004, 378282246310005])
def test_card_ints_are_redacted(n: int) -> None:
    """An int that is a Luhn-valid 13-19 digit card number becomes a card placeholder string."""
    assert R({"n": n}) == {"n": pseudo("card", str(n))}
    assert R(n) == pseudo("card", str(n))


@pytest.mark.parametrize("n", [1718000000000, 4111111111111112, -4111111111111111, 10**20, 2**70])
def test_other_ints_are_kept(n: int) -> None:
    """Millisecond timestamps, non-Luhn numbers, negatives and huge ints stay ints."""
    assert R({"n": n}) == {"n": n}


# --- secret keys ------------------------------------------------------------------------------

SECRET_SPELLINGS = [
    "password",
    "PASSWORD",
    "passwd",
    "api_key",
    "apiKey",
    "X-Api-Key",
    "x_api_key",
    "API Key",
    "client_secret",
    "clientSecret",
    "access_token",
    "refreshToken",
    "token",
    "Authorization",
    "Cookie",
    "set-cookie",
    "Set-Cookie",
    "private_key",
    "privateKey",
    "aws_secret_access_key",
    "db_password",
    "stripe-secret",
]


@pytest.mark.parametrize("key", SECRET_SPELLINGS)
@pytest.mark.parametrize("value", ["hunter2", 12345, {"nested": "x"}, ["a", 1], None, True])
def test_secret_keys_hide_any_value(key: str, value: object) -> None:
    """A value under a secret-looking key becomes [REDACTED:secret] whatever its type."""
    assert R({key: value, "keep": "me"}) == {key: SECRET_MARKER, "keep": "me"}


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "token_count", "tokens", "keyword", "monkey", "key", "passage", "secretary"],
)
def test_ordinary_keys_are_kept(key: str) -> None:
    """Keys that only contain a secret name somewhere else than at the end are not secret."""
    assert R({key: "value 1"}) == {key: "value 1"}


def test_secret_keys_constant_lists_the_defaults() -> None:
    """SECRET_KEYS holds the folded default names the key rule ends on."""
    assert {"password", "api_key", "authorization", "set_cookie", "private_key"} <= SECRET_KEYS
    assert all(k == k.lower() and "-" not in k for k in SECRET_KEYS)


def test_secret_key_deep_in_structure() -> None:
    """Secret keys are found at any depth, in lists of dicts too."""
    value = {"a": [{"b": {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}}]}
    assert R(value) == {"a": [{"b": {"headers": {"Authorization": SECRET_MARKER}}}]}


# --- pseudonyms -------------------------------------------------------------------------------


def test_pseudonyms_are_consistent_and_keyed() -> None:
    """The same value gives the same placeholder under one key and a different one under another."""
    other = Redactor(b"another key")
    text = "bob@example.com and 4111111111111111"
    assert R.redact_text(text) == R.redact_text(text) == Redactor(KEY).redact_text(text)
    assert other.redact_text(text) != R.redact_text(text)
    assert other.redact_text(text) == (
        f"{pseudo('email', 'bob@example.com', b'another key')} and "
        f"{pseudo('card', '4111111111111111', b'another key')}"
    )


def test_email_pseudonym_stays_an_email() -> None:
    """An email becomes u<8hex>@redacted.invalid, which agent code can still split and validate."""
    out = R({"to": "bob@example.com"})["to"]
    local, domain = out.split("@")
    assert re.fullmatch(r"u[0-9a-f]{8}", local) and domain == "redacted.invalid"


def test_different_values_get_different_placeholders() -> None:
    """Two emails in one text get two placeholders, so the recording still tells them apart."""
    out = R.redact_text("from a.one@example.com to b.two@example.com")
    assert len(set(PLACEHOLDER.findall(out))) == 2


def test_dict_keys_matching_a_rule_are_pseudonymized_in_place() -> None:
    """A dict keyed by customer email gets pseudonymized keys, in the same order, values kept."""
    value = {"z": 1, "bob@example.com": {"orders": 3}, "a": 2}
    out = R(value)
    assert list(out) == ["z", pseudo("email", "bob@example.com"), "a"]
    assert out[pseudo("email", "bob@example.com")] == {"orders": 3}


# --- configuration ----------------------------------------------------------------------------


def test_allow_list_keeps_exact_values() -> None:
    """Allowed values survive as whole strings and as matches inside text; others do not."""
    r = Redactor(KEY, RedactionConfig(allow=("support@ourco.com", "public-demo-token")))
    out = r(
        {
            "to": "support@ourco.com",
            "cc": "write support@ourco.com or bob@x.io",
            "token": "public-demo-token",
        }
    )
    assert out == {
        "to": "support@ourco.com",
        "cc": f"write support@ourco.com or {pseudo('email', 'bob@x.io')}",
        "token": "public-demo-token",
    }


def test_extra_patterns_and_keys() -> None:
    """Extra patterns pseudonymize their matches (or the named group v); extra keys hide values."""
    cfg = RedactionConfig(
        extra_patterns={"order": r"ORD-\d{6}", "member": r"member #(?P<v>\d{5,})"},
        extra_keys=("pin", "Security-Answer"),
    )
    r = Redactor(KEY, cfg)
    out = r({"note": "ORD-123456 for member #998877", "card_pin": "1234", "securityAnswer": "blue"})
    assert out == {
        "note": f"{pseudo('order', 'ORD-123456')} for member #{pseudo('member', '998877')}",
        "card_pin": SECRET_MARKER,
        "securityAnswer": SECRET_MARKER,
    }
    assert r(out) == out


def test_disabled_rules_are_off() -> None:
    """A disabled default rule leaves its matches alone; the others still apply."""
    r = Redactor(KEY, RedactionConfig(disabled=("ipv4", "phone")))
    assert (
        r.redact_text("10.0.0.1 +14155550100 bob@x.io")
        == f"10.0.0.1 +14155550100 {pseudo('email', 'bob@x.io')}"
    )
    assert "ipv4" not in r.rules and r.rules[0] == "pem"


def test_default_rule_replaced_by_extra_pattern_of_same_name() -> None:
    """Disabling a default rule lets an extra pattern take its name."""
    r = Redactor(
        KEY, RedactionConfig(disabled=("ipv4",), extra_patterns={"ipv4": r"\b10\.\d+\.\d+\.\d+\b"})
    )
    assert (
        r.redact_text("10.1.2.3 and 192.168.0.1") == f"{pseudo('ipv4', '10.1.2.3')} and 192.168.0.1"
    )


def test_bad_regex_error_names_rule_and_error() -> None:
    """A bad extra regex raises ValueError naming the rule, the regex and what is wrong."""
    with pytest.raises(ValueError) as e:
        RedactionConfig(extra_patterns={"order": "ORD-(\\d+"})
    assert str(e.value) == (
        "extra_patterns['order']: bad regex 'ORD-(\\\\d+': missing ), unterminated subpattern "
        "at position 4; fix the pattern (Python re syntax)"
    )


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"extra_patterns": {"x": "a*"}}, ValueError, "matches the empty string"),
        ({"extra_patterns": {"Bad Name": "a"}}, ValueError, "rule name 'Bad Name' is not valid"),
        ({"extra_patterns": {"email": "a"}}, ValueError, "add 'email' to disabled"),
        (
            {"disabled": ("ip",)},
            ValueError,
            "unknown rule 'ip': the default rules are pem, aws_secret, jwt, api_key",
        ),
        ({"allow": "x@y.com"}, TypeError, "write allow=('x@y.com',)"),
        ({"extra_keys": ("",)}, TypeError, "use non-empty strings"),
        ({"store_args": "raw"}, ValueError, "use 'hash' or 'redacted'"),
    ],
)
def test_config_errors_say_what_and_how_to_fix(kwargs: dict, exc: type, message: str) -> None:
    """Invalid configuration fails when the config is built, with the input and the fix."""
    with pytest.raises(exc, match=re.escape(message)):
        RedactionConfig(**kwargs)


def test_key_must_be_bytes() -> None:
    """A str key is refused with a hint, so pseudonyms are never keyed by accident with text."""
    with pytest.raises(TypeError, match="Redactor key must be bytes, got str"):
        Redactor("secret")  # type: ignore[arg-type]


def test_default_rules_constant() -> None:
    """DEFAULT_RULES names every default pattern rule in application order."""
    assert DEFAULT_RULES == (
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
    assert R.rules == DEFAULT_RULES


# --- values in, values out --------------------------------------------------------------------


def test_output_is_new_and_input_untouched() -> None:
    """Redaction returns new containers and never mutates its input, clean or not."""
    for value in ({"a": ["b", {"c": 1}]}, {"to": "bob@x.io", "l": [{"password": "p"}]}):
        before = canonical_json(value)
        out = R(value)
        assert canonical_json(value) == before
        assert out is not value and out["l" if "l" in out else "a"] is not value.get(
            "l", value.get("a")
        )


def test_non_json_values_are_normalized() -> None:
    """Tuples become lists, non-finite floats become null, big ints and -0.0 are kept exactly."""
    out = R({"t": (1, "x"), "nan": float("nan"), "inf": float("-inf"), "big": 2**80, "z": -0.0})
    assert out == {"t": [1, "x"], "nan": None, "inf": None, "big": 2**80, "z": -0.0}
    assert math.copysign(1, out["z"]) == -1


def test_scalars_at_top_level() -> None:
    """Strings, numbers, bools and None are handled at the top level too."""
    assert R("mail bob@x.io") == f"mail {pseudo('email', 'bob@x.io')}"
    assert [R(1), R(1.5), R(True), R(None)] == [1, 1.5, True, None]


def test_control_characters_next_to_a_value() -> None:
    """PII next to characters JSON escapes as \\u00XX is still caught."""
    out = R({"m": "\x01" + "4111111111111111" + "\x02", "k": "a\x10b@example.com"})
    assert out == {
        "m": "\x01" + pseudo("card", "4111111111111111") + "\x02",
        "k": "a\x10" + pseudo("email", "b@example.com"),
    }


def test_placeholders_are_never_rewritten() -> None:
    """Placeholders of every rule, alone or in longer text, are left as they are."""
    text = " ".join(pseudo(rule, "v") for rule in DEFAULT_RULES) + f" {SECRET_MARKER} x"
    assert R.redact_text(text) == text
    assert R({"k": text, pseudo("email", "v"): 1}) == {"k": text, pseudo("email", "v"): 1}


# --- properties -------------------------------------------------------------------------------


@SLOW
@given(json_with_planted())
def test_nothing_planted_survives(vp: tuple) -> None:
    """No planted secret or PII value occurs in the canonical JSON of the redacted value."""
    value, planted = vp
    out = canonical_json(R(value))
    assert [p for p in planted if p in out] == []


@SLOW
@given(json_with_planted() | JSON)
def test_idempotent(value: object) -> None:
    """Redacting a redacted value changes nothing."""
    once = R(value[0] if isinstance(value, tuple) else value)
    assert R(once) == once


@SLOW
@given(st.lists(planted_values(keyed=False), min_size=1, max_size=4), st.text(max_size=20))
def test_idempotent_on_text_with_adjacent_values(plants: list, glue: str) -> None:
    """Idempotence holds for planted values glued together by arbitrary text."""
    text = glue.join(p.text for p in plants) + glue
    once = R.redact_text(text)
    assert R.redact_text(once) == once


@SLOW
@given(json_with_planted() | JSON)
def test_prefilters_never_change_the_result(value: object) -> None:
    """The document-level prefilters give exactly what every rule on every string gives."""
    value = value[0] if isinstance(value, tuple) else value
    assert R(value) == oracle(R, value)


@settings(SLOW, max_examples=4 * SLOW.max_examples)
@given(st.text(alphabet='0123456789 +-.()/@eyJAKIZsk_xobearBEIN\x01\\"', max_size=40))
def test_prefilters_on_dense_text(text: str) -> None:
    """On text made of the characters the rules look at, prefilters agree with the full rules."""
    assert R({"t": text, text: 1}) == oracle(R, {"t": text, text: 1})
    assert R.redact_text(text) == R._apply(text, R._rules)


@SLOW
@given(json_with_planted() | JSON | st.just({"f": [1e16, 1.5e-7, 0.00001, -0.0, 1e22]}))
def test_canonical_matches_canonical_bytes_of_redacted(value: object) -> None:
    """Redactor.canonical(x) is byte-identical to canonical_bytes(Redactor(x))."""
    value = value[0] if isinstance(value, tuple) else value
    assert R.canonical(value) == canonical_bytes(R(value))


PAIR_SIDE = (
    st.dictionaries(st.text(max_size=12), JSON, max_size=4)
    | st.lists(JSON, max_size=4)
    | json_with_planted(min_plants=0, max_plants=2).map(lambda vp: vp[0])
)


@SLOW
@given(PAIR_SIDE, PAIR_SIDE)
@example(
    [10**19], {"args": None, "items": []}
)  # digits only: a b64 candidate alone, not in the pair
def test_checked_pair_is_checked_twice_byte_for_byte(first: object, second: object) -> None:
    """The writer's one-pass check of a step's args and output gives exactly the bytes `checked`
    gives each, and calls a value clean only when redaction leaves it as it is.
    """
    (a, a_clean), (b, b_clean) = R.checked_pair(first, second, None)
    assert a == R.checked(first)[0] and b == R.checked(second)[0]
    assert not a_clean or a == canonical_bytes(first)
    assert not b_clean or b == canonical_bytes(second)


def test_checked_pair_redacts_whichever_side_holds_the_pii() -> None:
    """PII in the args only, in the output only, or in both is redacted where it is, and the clean
    side comes back as its own bytes.
    """
    clean = {"order": "ORD-1", "qty": 2}
    dirty = {"to": "jane.doe@example.com", "n": 1}
    for first, second in ((dirty, clean), (clean, dirty), (dirty, dirty)):
        (a, _), (b, _) = R.checked_pair(first, second, None)
        assert (a, b) == (R.canonical(first), R.canonical(second))
        assert b"jane.doe" not in a + b
    (a, a_clean), _ = R.checked_pair(clean, dirty, None)
    assert a_clean and a == canonical_bytes(clean)


@pytest.mark.parametrize(
    "value",
    [
        {"i": 5, "q": "refund"},
        {"messages": [{"role": "user", "content": "write to ann@example.com"}]},
        {"api_key": "not-a-secret-looking-value", "n": 1},
        {"x": 1e-7, "big": 2**70},  # numbers orjson writes unlike json
        {"history": ["refunds take 5 days " * 20] * 30},  # past the per-message memo size
    ],
)
def test_frozen_args_redact_and_hash_as_the_value_does(value: dict[str, object]) -> None:
    """`canonical_frozen` (replay's args_sha) gives `canonical` of the thawed value, byte for
    byte: the frozen bytes are returned as they are only where nothing is to be redacted."""
    frozen, problem = freeze_lenient(value, "args", True)
    assert problem is None
    assert R.canonical_frozen(frozen) == R.canonical(thaw(frozen))
    if "ann@example.com" in str(value):
        assert b"ann@example.com" not in R.canonical_frozen(frozen)


def test_all_as_they_are_says_true_only_when_canonical_frozen_keeps_every_one() -> None:
    """One detector pass over many frozen args: True only when `canonical_frozen` would return
    each as it is; one with PII, a risky number or past the memo size makes it False."""
    clean = [
        freeze_lenient({"i": i, "q": "where is my order?"}, "args", True)[0] for i in range(40)
    ]
    assert R.all_as_they_are(clean)
    assert all(R.canonical_frozen(f) is f for f in clean)
    for odd in (
        {"q": "write to ann@example.com"},
        {"x": 1e-7},
        {"history": ["refunds take 5 days " * 20] * 30},
    ):
        frozen = freeze_lenient(odd, "args", True)[0]
        assert not R.all_as_they_are([*clean[:20], frozen, *clean[20:]])
    assert R.all_as_they_are([])
