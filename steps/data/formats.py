"""Reading raw files and mapping each known dataset format to the canonical record.

Readers yield ``(row, value)`` where ``row`` is the line number for JSONL and
CSV (what an editor shows) and the 1-based record index for JSON and Parquet.
A value that cannot be read is a ``RecordError`` in place of the dict, so the
caller quarantines it and goes on. Converters raise ``RecordError`` naming the
field, the reason and the fix.

This module holds the format names, the sharegpt role tags and format detection. The rest
lives beside it, each small enough to read in one sitting: the errors in steps/data/errors.py,
the readers (``read_rows``) in steps/data/read.py and the converters (``convert``) in
steps/data/convert.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from steps.data.errors import FileError

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


# Columns that carry meaning a format may not use: a row that fits a format only by ignoring one of
# them is not guessed (the label of a KTO row, a preference pair, a reward score, tool schemas).
MEANINGFUL = ("label", "chosen", "rejected", "score", "tools")
# The meaningful columns each format reads.
USES = {"alpaca": {"tools"}, "sharegpt": {"tools"}, "openai": {"tools"}, "preference": {"chosen", "rejected"},
        "feedback": {"label"}, "text": set(), "cls": {"label"}}  # fmt: skip
_BOOLS = (True, False, "true", "false", "True", "False")


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a row's keys suggest, or None."""
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"completion", "label"} <= keys:
        return "feedback"
    chat = "conversations" if "conversations" in keys else "messages" if "messages" in keys else None
    if chat and "label" in keys and row["label"] in _BOOLS:  # LLaMA-Factory's kto_tag, TRL's unpaired preference
        return "feedback"
    if chat == "conversations":
        return "sharegpt"
    if chat == "messages":
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
    """The one format the first rows' keys fit without ignoring a meaningful column; FileError otherwise."""
    sample = rows[:200]
    votes = Counter(f for f in map(detect_format, sample) if f)
    keys = sorted(set().union(*sample)) if sample else []
    if not votes:
        raise FileError(
            f"{path}: cannot tell the format from the keys {keys}; declare `format:` "
            f"(one of {', '.join(FORMATS)}) and `columns:` for this dataset in params.yaml"
        )
    fmt = votes.most_common(1)[0][0]
    ignored = sorted(set(keys) & set(MEANINGFUL) - USES[fmt])
    if ignored:
        others = [f for f in FORMATS if USES[f] & set(ignored)]
        lossy = f"{fmt} (drops {', '.join(ignored)})"
        raise FileError(
            f"{path}: the keys {keys} fit {fmt} only by ignoring {', '.join(ignored)}; declare which format this is "
            f"in params.yaml, e.g. {{path: {path.name}, format: {others[0] if others else fmt}, columns: {{...}}}} "
            f"(candidates: {', '.join([*others, lossy])})"
        )
    return fmt
