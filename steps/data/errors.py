"""The two errors of raw-data reading and mapping: one bad record, or one unreadable file.

A ``RecordError`` stands for a single record: the readers yield it in place of the row and the
converters raise it, so ingest quarantines that record (field, reason, fix, raw text) and goes on.
A ``FileError`` stops the whole file with a message naming the file and the fix. They live apart
from steps/data/formats.py so the readers (steps/data/read.py) and the converters
(steps/data/convert.py) can raise them without importing the format detection.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecordError(Exception):
    """One record that cannot be read or mapped: where, why, and how to fix it."""

    field: str
    reason: str
    fix: str
    raw: str = ""  # the unreadable text itself, for the quarantine file

    def __str__(self) -> str:
        return f"{self.field}: {self.reason} ({self.fix})"


class FileError(ValueError):
    """A whole file cannot be read; the message names the file and the fix."""
