"""Reading raw files and mapping each known dataset format to the canonical record.

Readers yield ``(row, value)`` where ``row`` is the line number for JSONL and
CSV (what an editor shows) and the 1-based record index for JSON and Parquet.
A value that cannot be read is a ``RecordError`` in place of the dict, so the
caller quarantines it and goes on. Converters raise ``RecordError`` naming the
field, the reason and the fix.

This module holds the format names, the sharegpt role tags and format detection, and
re-exports the rest so callers import one place: the errors live in steps/_formats_errors.py,
the readers (``read_rows``) in steps/_formats_read.py and the converters (``convert``) in
steps/_formats_convert.py, each small enough to read in one sitting.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from steps._formats_convert import (  # noqa: F401  (re-exported: steps._formats is the formats' public face)
    _bool,
    _messages,
    _need,
    _split_system,
    _str,
    convert,
)
from steps._formats_errors import FileError, RecordError  # noqa: F401  (RecordError re-exported as above)
from steps._formats_read import (  # noqa: F401  (re-exported as above)
    _JSON_FIELDS,
    _maybe_json,
    _read_csv,
    _read_json,
    _read_jsonl,
    _read_parquet,
    read_rows,
)

FORMATS = ("alpaca", "sharegpt", "openai", "preference", "feedback", "text", "cls")
# sharegpt role tags, as LLaMA-Factory's dataset_info.json names them.
DEFAULT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a row's keys suggest, or None."""
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"completion", "label"} <= keys:
        return "feedback"
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        first = (row["messages"] or [None])[0] if isinstance(row["messages"], list) else None
        return "sharegpt" if isinstance(first, dict) and "from" in first else "openai"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"text", "label"} <= keys:
        return "cls"
    if "text" in keys:
        return "text"
    return None


def detect_dataset_format(rows: list[dict[str, Any]], path: Path) -> str:
    votes = Counter(f for f in map(detect_format, rows[:200]) if f)
    if not votes:
        keys = sorted(set().union(*rows[:5])) if rows else []
        raise FileError(
            f"{path}: cannot tell the format from the keys {keys}; declare `format:` "
            f"(one of {', '.join(FORMATS)}) and `columns:` for this dataset in params.yaml"
        )
    return votes.most_common(1)[0][0]
