"""The redaction detector's base64 and AWS gates: one scan of base64 runs answers both."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from replay._prefilter import (
    B64_CLS,
    B64_RUN,
    B64_RUN40,
    BYTES_KEY,
    FOLD,
    G_AWS,
    G_B64,
    has_b64_run,
)
from replay.redaction import Redactor

PRE = Redactor(b"k" * 32)._pre

FRAGMENTS = [
    "aB3",
    "Zz9+",
    "/x",
    "abcdefgh",
    "ABCDEFGH",
    "0123456789",
    "==",
    "=",
    " ",
    '"',
    '":',
    ",",
    "aws",
    "AKIA",
    "asia",
    "$bytes",
    '"$bytes":',
    "https://h.example/v2/orders/7",
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
]


def reference_gates(raw: bytes, json_text: bool) -> int:
    """The b64 and AWS bits as `detect` computed them with two substring scans before."""
    en = PRE.enabled
    cls = raw.translate(B64_CLS) if en & (G_B64 | G_AWS) and not raw.islower() else b""
    mask = 0
    if en & G_B64 and (
        (json_text and b"$" in raw and BYTES_KEY in raw)
        or (B64_RUN in cls and has_b64_run(raw, cls))
    ):
        mask |= G_B64
    fold = raw.translate(FOLD)
    if en & G_AWS and B64_RUN40 in cls and (b"aws" in fold or b"akia" in fold or b"asia" in fold):
        mask |= G_AWS
    return mask


@settings(max_examples=400)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40), st.booleans())
@example(["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", " ", "aws"], True)
@example(["abcdefgh", "abcdefgh", "abcdefgh"], False)
@example(["0123456789", "0123456789"], True)
def test_one_run_scan_gives_the_same_b64_and_aws_groups(parts: list[str], json_text: bool) -> None:
    """`detect` flags base64 and AWS candidates exactly as the two separate scans did."""
    raw = "".join(parts).encode()
    assert PRE.detect(raw, json_text=json_text) & (G_B64 | G_AWS) == reference_gates(raw, json_text)


#: Pieces of JSON args, clean and not: what `detect` over args joined by newlines meets.
JOINED_FRAGMENTS = [
    '{"a":"',
    '"}',
    '{"_":"',
    "ticket 12: where is my order?",
    "1234567890123456",
    "ana@example.com",
    "4111 1111 1111 1111",
    "+1 415 555 0100",
    "4155550100",
    "DE89 3704 0044 0532 0130 00",
    "de89370400440532013000",
    '"api_key":"',
    "password: hunter2",
    "Bearer abc.def",
    "tel:+14155550100",
    '":1e16,"',
    '":0.00001,"',
    "eyJhbGciOiJIUzI1NiJ9",
    "sk-live-abc",
    "\\u00e9",
    "2024-05-01",
    "10:30:00",
    "fe80::1",
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo",
    "x",
    " ",
    ":",
]


@settings(max_examples=300)
@given(st.lists(st.lists(st.sampled_from(JOINED_FRAGMENTS), max_size=8), min_size=1, max_size=6))
@example([['{"a":"', "x", '"}'], ['{"_":"', "1234567890123456", '"}']])
def test_detect_over_joined_args_flags_every_group_any_of_them_has(parts: list[list[str]]) -> None:
    """`detect(joined=True)` over texts joined by newlines holds every group `detect` finds in
    any one of them: nothing found there means nothing in each (what batched checks rely on).

    The example is the shortcut a single text may take: text with lowercase letters and no
    uppercase one has no base64 to decode, but a text with no letters at all (16 digits) may.
    """
    texts = ["".join(p).encode() for p in parts]
    joined = PRE.detect(b"\n".join(texts), json_text=True, risky=True, joined=True)
    for text in texts:
        alone = PRE.detect(text, json_text=True, risky=True)
        assert joined | alone == joined, (text, alone, joined)


def test_the_single_text_shortcut_would_hide_a_group_in_joined_texts() -> None:
    """Without ``joined`` the lowercase shortcut skips the base64 scan of both texts."""
    texts = [b'{"a":"x"}', b'{"_":"1234567890123456"}']
    assert PRE.detect(texts[1], json_text=True) & G_B64
    assert not PRE.detect(b"\n".join(texts), json_text=True) & G_B64
    assert PRE.detect(b"\n".join(texts), json_text=True, joined=True) & G_B64
