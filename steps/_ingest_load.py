"""Loading one raw dataset for ingest: read its rows, map them to canonical records, quarantine the rest.

``load_dataset`` applies the dataset's ``columns:`` renames, detects the format when it is
``auto`` and converts row by row; a row that cannot be read or mapped becomes a quarantine
entry naming the dataset, file, row, field, reason and fix, so no record is dropped silently.
Kept apart from steps/ingest.py (which re-exports ``load_dataset``) so the step module holds
only its config, ``run()`` and ``main()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps._formats import DEFAULT_TAGS, RecordError, convert, detect_dataset_format, read_rows
from steps._schema import make_record

if TYPE_CHECKING:  # annotation only: steps.ingest imports this module
    from steps.ingest import DatasetSpec


def load_dataset(spec: DatasetSpec, root: Path = Path(".")) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Canonical records and quarantine entries of one dataset, and the format used."""
    path = root / spec.path
    raw = list(read_rows(path))
    rename = {src: dst for dst, src in spec.columns.items()}
    rows = [(n, {rename.get(k, k): v for k, v in r.items()} if isinstance(r, dict) else r) for n, r in raw]
    fmt = spec.format
    if fmt == "auto":
        fmt = detect_dataset_format([r for _, r in rows if isinstance(r, dict)], path)
    tags = {**DEFAULT_TAGS, **spec.tags}
    good, bad = [], []
    for n, row in rows:
        try:
            if isinstance(row, RecordError):
                raise row
            fields = convert(fmt, row, tags)
            ts = row.get("timestamp")
            good.append(make_record(dataset=spec.label, source=spec.path, row=n, fmt=fmt,
                                    timestamp=str(ts) if ts not in (None, "") else None, **fields))  # fmt: skip
        except RecordError as err:
            bad.append({"dataset": spec.label, "file": spec.path, "row": n, "field": err.field,
                        "reason": err.reason, "fix": err.fix, "raw": _snippet(row)})  # fmt: skip
    return good, bad, fmt


def _snippet(row: Any) -> str:
    text = row.raw if isinstance(row, RecordError) else json.dumps(row, ensure_ascii=False, default=str)
    return text if len(text) <= 500 else text[:500] + "..."
