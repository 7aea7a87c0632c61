"""A generic alignment of two integer (or any hashable) sequences: the matching blocks.

What `replay.diff` aligns two step sequences with, after interning each step's key to an int.
It knows nothing of steps: `align(a, b)` returns difflib-style matching blocks.

How it stays fast on 10,000-element sequences: the common prefix and suffix are trimmed in
O(n), the middle is cut at elements that occur exactly once on both sides (patience diff, a
longest increasing subsequence over those anchors), and only the small gaps between anchors go
through Myers' O(ND) algorithm (difflib past 1,000 edits in one gap).
"""

from __future__ import annotations

import difflib
from bisect import bisect_left
from collections import Counter
from collections.abc import Hashable, Sequence
from itertools import compress, islice, repeat
from operator import add, lt, ne, sub

__all__ = ["Block", "align", "common_prefix", "common_suffix", "myers"]

#: (i in a, j in b, length): a[i:i+n] == b[j:j+n]
Block = tuple[int, int, int]

# Myers is O(ND): beyond this many edits in one gap, difflib is the cheaper fallback.
_MYERS_MAX_D = 1000
# difflib is quadratic on repetitive input: past this many cells (~0.1 s) a gap stays unaligned.
_DIFFLIB_MAX_CELLS = 4_000_000


def align(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[Block]:
    """Matching blocks of `a` and `b`, sorted and merged, like difflib's (without the sentinel).

    Patience diff: trim the common prefix/suffix, anchor on elements unique in both ranges (the
    longest increasing subsequence of their positions), recurse into the gaps; a gap without
    anchors goes through Myers (difflib when it has too many edits). The per-element work is in
    C (map / compress / Counter): a Python loop over 10,000 steps costs more than the target.
    """
    raw: list[Block] = []
    stack = [(0, len(a), 0, len(b))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        n = common_prefix(a, b, alo, ahi, blo, bhi)
        if n:
            raw.append((alo, blo, n))
            alo, blo = alo + n, blo + n
        n = common_suffix(a, b, alo, ahi, blo, bhi)
        if n:
            ahi, bhi = ahi - n, bhi - n
            raw.append((ahi, bhi, n))
        if alo == ahi or blo == bhi:
            continue
        sa, sb = a[alo:ahi], b[blo:bhi]
        if (ahi - alo) * (bhi - blo) <= 64:  # a small gap: Myers directly, no counting
            pairs = myers(sa, sb, len(sa) + len(sb)) or []
            raw.extend((alo + x, blo + y, 1) for x, y in pairs)
            continue
        ca, cb = Counter(sa), Counter(sb)
        once_a = set(compress(ca.keys(), map((1).__eq__, ca.values())))
        unique = once_a.intersection(compress(cb.keys(), map((1).__eq__, cb.values())))
        if unique:
            mask = list(map(unique.__contains__, sa))
            ii = list(compress(range(alo, ahi), mask))
            posb = dict(zip(sb, range(blo, bhi), strict=True))  # exact for the unique keys
            jj = list(map(posb.__getitem__, compress(sa, mask)))
            if not all(map(lt, jj, islice(jj, 1, None))):
                ii, jj = _lis(ii, jj)
            _add_anchors(ii, jj, (alo, ahi, blo, bhi), raw, stack)
            continue
        if not (ca.keys() & cb.keys()):
            continue  # nothing in common: all deleted and inserted
        found = myers(sa, sb, _MYERS_MAX_D)
        if found is not None:
            raw.extend((alo + x, blo + y, 1) for x, y in found)
        elif len(sa) * len(sb) <= _DIFFLIB_MAX_CELLS:
            sm = difflib.SequenceMatcher(None, sa, sb, autojunk=False)
            raw.extend((alo + x, blo + y, n) for x, y, n in sm.get_matching_blocks() if n)
        # else: two long, repetitive and unrelated stretches: leave them unaligned (reported
        # step by step as changed / extra / missing) rather than spend seconds on difflib.
    raw.sort()
    merged: list[Block] = []
    for i, j, n in raw:
        if merged:
            mi, mj, mn = merged[-1]
            if mi + mn == i and mj + mn == j:
                merged[-1] = (mi, mj, mn + n)
                continue
        merged.append((i, j, n))
    return merged


def common_prefix(
    a: Sequence[Hashable], b: Sequence[Hashable], alo: int, ahi: int, blo: int, bhi: int
) -> int:
    """Length of the common prefix of a[alo:ahi] and b[blo:bhi]; slices compare in C."""
    i, j = alo, blo
    step = 256
    while step:
        while i + step <= ahi and j + step <= bhi and a[i : i + step] == b[j : j + step]:
            i += step
            j += step
        step //= 8
    while i < ahi and j < bhi and a[i] == b[j]:
        i += 1
        j += 1
    return i - alo


def common_suffix(
    a: Sequence[Hashable], b: Sequence[Hashable], alo: int, ahi: int, blo: int, bhi: int
) -> int:
    """Length of the common suffix of a[alo:ahi] and b[blo:bhi]."""
    i, j = ahi, bhi
    step = 256
    while step:
        while i - step >= alo and j - step >= blo and a[i - step : i] == b[j - step : j]:
            i -= step
            j -= step
        step //= 8
    while i > alo and j > blo and a[i - 1] == b[j - 1]:
        i -= 1
        j -= 1
    return ahi - i


def _add_anchors(
    ii: list[int],
    jj: list[int],
    bounds: tuple[int, int, int, int],
    raw: list[Block],
    stack: list[tuple[int, int, int, int]],
) -> None:
    """Record runs of consecutive anchors as blocks and queue the gaps between them."""
    alo, ahi, blo, bhi = bounds
    # Anchors k-1, k are adjacent iff (i + j) grows by exactly 2 (both coordinates increase).
    s = list(map(add, ii, jj))
    breaks = list(compress(range(1, len(s)), map(ne, map(sub, islice(s, 1, None), s), repeat(2))))
    pi, pj = alo, blo
    start = 0
    for end in [*breaks, len(ii)]:
        i, j = ii[start], jj[start]
        if i > pi or j > pj:
            stack.append((pi, i, pj, j))
        n = end - start
        raw.append((i, j, n))
        pi, pj = i + n, j + n
        start = end
    if pi < ahi or pj < bhi:
        stack.append((pi, ahi, pj, bhi))


def _lis(ii: list[int], jj: list[int]) -> tuple[list[int], list[int]]:
    """The longest subsequence of anchors (ii[t], jj[t]) increasing in both coordinates."""
    tails: list[int] = []
    tails_at: list[int] = []
    prev = [-1] * len(jj)
    for t, j in enumerate(jj):
        k = bisect_left(tails, j)
        if k == len(tails):
            tails.append(j)
            tails_at.append(t)
        else:
            tails[k] = j
            tails_at[k] = t
        prev[t] = tails_at[k - 1] if k else -1
    keep: list[int] = []
    t = tails_at[-1]
    while t >= 0:
        keep.append(t)
        t = prev[t]
    keep.reverse()
    return [ii[t] for t in keep], [jj[t] for t in keep]


def myers(a: Sequence[Hashable], b: Sequence[Hashable], max_d: int) -> list[tuple[int, int]] | None:
    """Matched index pairs of a shortest edit script (Myers 1986), or None beyond `max_d` edits."""
    n, m = len(a), len(b)
    limit = min(n + m, max_d)
    off = limit + 1
    v = [0] * (2 * limit + 3)
    trace: list[list[int]] = []
    for d in range(limit + 1):
        trace.append(v[off - d - 1 : off + d + 2])  # v[k] for k in [-d-1, d+1]
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[off + k - 1] < v[off + k + 1]):
                x = v[off + k + 1]
            else:
                x = v[off + k - 1] + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            v[off + k] = x
            if x >= n and y >= m:
                return _backtrack(trace, d, n, m)
    return None


def _backtrack(trace: list[list[int]], dmax: int, x: int, y: int) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for d in range(dmax, 0, -1):
        vp = trace[d]  # state before edit d; vp[k + d + 1] is v[k]
        k = x - y
        if k == -d or (k != d and vp[k - 1 + d + 1] < vp[k + 1 + d + 1]):
            pk = k + 1
        else:
            pk = k - 1
        px = vp[pk + d + 1]
        py = px - pk
        while x > px and y > py:
            x -= 1
            y -= 1
            pairs.append((x, y))
        x, y = px, py
    while x > 0 and y > 0:
        x -= 1
        y -= 1
        pairs.append((x, y))
    pairs.reverse()
    return pairs
