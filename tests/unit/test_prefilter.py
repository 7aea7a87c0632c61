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
