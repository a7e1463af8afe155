"""The records the gates read: one frame row per record, and shared constants.

``record_frame`` makes the frame every ``*_columns`` function of the other steps/gates/ modules
adds its columns to (the splits come from ``steps.data.splits.load_splits``). ``EXAMPLES`` and
``record_turns`` (a record's turns under one key) live here, at the bottom of the import graph,
because every gate family uses them; steps/gates/__init__.py lists the gate families.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

EXAMPLES = 5  # failing examples per check kept in report.json (the terminal shows 3 per gate)


def record_frame(splits: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per record: split, line in its file, and where it came from."""
    rows = []
    for name, recs in splits.items():
        for line, rec in enumerate(recs, 1):
            meta = rec.get("meta") if isinstance(rec, dict) and isinstance(rec.get("meta"), dict) else {}
            rows.append((name, line, str(meta.get("dataset")), str(meta.get("source")), meta.get("row"),
                         str(rec.get("id") if isinstance(rec, dict) else None), str(meta.get("hash"))))
    return pd.DataFrame(rows, columns=["split", "line", "dataset", "source", "row", "id", "hash"])


def record_turns(rec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = rec.get(key)
    return value if isinstance(value, list) else []
