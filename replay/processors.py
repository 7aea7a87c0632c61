"""Deprecated module path, kept for one release: redaction moved to `replay.redaction`, scanning
to `replay.scan`.

This is a plain re-export of the public names that lived here (no warning). Import them from
`replay.redaction` (`Redactor`, `RedactionConfig`, `Hit`, `DEFAULT_RULES`, `SECRET_KEYS`,
`SECRET_MARKER`) and `replay.scan` (`FileHit`, `scan_json_file`, `scan_sqlite`, `heavy_detector`,
`heavy_settings`) instead.
"""

from __future__ import annotations

from replay.redaction import (
    DEFAULT_RULES,
    SECRET_KEYS,
    SECRET_MARKER,
    Hit,
    RedactionConfig,
    Redactor,
)
from replay.scan import FileHit, heavy_detector, heavy_settings, scan_json_file, scan_sqlite

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
