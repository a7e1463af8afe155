"""The records the gates read: the split files, one frame row per record, and shared constants.

``load_splits`` reads PREPARED_DIR's splits and ``record_frame`` makes the frame every
``*_columns`` function of the other ``steps/_gates_*.py`` modules adds its columns to.
``SPLITS``, ``EXAMPLES``, ``InputError`` and ``_turns`` (a record's turns under one key)
live here, at the bottom of the import graph, because every gate family uses them;
steps/_gates.py re-exports the public ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from steps._config import ConfigError
from steps._io import read_jsonl

SPLITS = ("train", "validation", "test")  # required; heldout.jsonl is optional
EXAMPLES = 5  # failing examples per check kept in report.json (the terminal shows 3 per gate)


class InputError(ConfigError):
    """PREPARED_DIR lacks a split file; the message says which and how to make it."""


def load_splits(prepared_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """train, validation, test (required) and heldout (when present), in file order."""
    splits = {}
    for name in (*SPLITS, "heldout"):
        path = prepared_dir / f"{name}.jsonl"
        if path.is_file():
            splits[name] = read_jsonl(path)
        elif name != "heldout":
            raise InputError(f"{path}: missing; run `python -m steps.ingest {prepared_dir}` first")
    return splits


def record_frame(splits: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per record: split, line in its file, and where it came from."""
    rows = []
    for name, recs in splits.items():
        for line, rec in enumerate(recs, 1):
            meta = rec.get("meta") if isinstance(rec, dict) and isinstance(rec.get("meta"), dict) else {}
            rows.append((name, line, str(meta.get("dataset")), str(meta.get("source")), meta.get("row"),
                         str(rec.get("id") if isinstance(rec, dict) else None), str(meta.get("hash"))))
    return pd.DataFrame(rows, columns=["split", "line", "dataset", "source", "row", "id", "hash"])


def _turns(rec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = rec.get(key)
    return value if isinstance(value, list) else []
