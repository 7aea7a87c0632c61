"""Plain-text building blocks of the library's reports: aligned tables, times, durations."""

from __future__ import annotations

import datetime as _dt

__all__ = ["fmt_ms", "fmt_ts", "table"]


def fmt_ts(ms: int | None) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SS`` (UTC); ``-`` when unknown."""
    if ms is None:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ms(ms: int | float | None) -> str:
    """A duration: ``850ms`` below a second, ``1.2s`` from one; ``-`` when unknown."""
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s" if ms >= 1000 else f"{int(ms)}ms"


def table(headers: list[str], rows: list[list[str]], *, right: set[int] | None = None) -> str:
    """A plain aligned text table; the columns in `right` are right-aligned."""
    right = right or set()
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])
