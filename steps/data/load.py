"""Loading one raw dataset for ingest: read its rows, map them to canonical records, quarantine the rest.

``load_dataset`` applies the dataset's ``columns:`` renames, detects the format when it is
``auto`` and converts row by row. Every row read ends in exactly one place: a good record, a
quarantine entry (dataset, file, row, field, reason, fix) or a counted drop (a blank line), so
``rows == good + quarantined + sum(dropped)``. Any exception while mapping one record
quarantines that record; none stops the run. ``drop_exact_duplicates`` applies ingest's one
rule for exact copies: the first is kept, the rest are dropped and counted.
Kept apart from steps/ingest.py (which calls them) so the step module holds only its config,
``run()`` and ``main()``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.core.schema import make_record
from steps.data.config import DatasetSpec
from steps.data.convert import convert
from steps.data.errors import RecordError
from steps.data.formats import DEFAULT_TAGS, detect_dataset_format
from steps.data.read import Skipped, read_rows

DUPLICATE = "exact duplicate of an earlier record"


@dataclass
class Loaded:
    """One dataset read: its records, quarantine entries, counted drops, and the format used."""

    format: str
    good: list[dict[str, Any]] = field(default_factory=list)
    bad: list[dict[str, Any]] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    rows: int = 0  # every row (line, or record of a whole-file format) read

    def stats(self, spec: DatasetSpec) -> dict[str, Any]:
        """The dataset's line in the manifest and the summary table; rows = good + quarantined + dropped."""
        return {"path": spec.path, "format": self.format, "rows": self.rows, "good": len(self.good),
                "quarantined": len(self.bad), "dropped": dict(self.dropped),
                "bad_fraction": round(len(self.bad) / self.rows, 4) if self.rows else None,
                "kinds": dict(Counter(r["kind"] for r in self.good))}  # fmt: skip


def load_dataset(spec: DatasetSpec, root: Path = Path("."), max_record_chars: int = 0) -> Loaded:
    """Canonical records, quarantine entries and drops of one dataset, and the format used."""
    path = root / spec.path
    rename = {src: dst for dst, src in spec.columns.items()}
    rows = [(n, {rename.get(k, k): v for k, v in r.items()} if isinstance(r, dict) else r)
            for n, r in read_rows(path, max_record_chars)]  # fmt: skip
    fmt = spec.format
    if fmt == "auto":
        dicts = [r for _, r in rows if isinstance(r, dict)]
        fmt = detect_dataset_format(dicts, path) if dicts else "none"
    out = Loaded(format=fmt, rows=len(rows))
    tags = {**DEFAULT_TAGS, **spec.tags}
    for n, row in rows:
        if isinstance(row, Skipped):
            out.dropped[row.reason] += 1
            continue
        try:
            if isinstance(row, RecordError):
                raise row
            fields = convert(fmt, row, tags)
            ts = row.get("timestamp")
            rec = make_record(dataset=spec.label, source=spec.path, row=n, fmt=fmt,
                              timestamp=str(ts) if ts not in (None, "") else None, **fields)  # fmt: skip
            if spec.replay:
                rec["meta"]["replay"] = True
            _check_encodable(rec)
            out.good.append(rec)
        except RecordError as err:
            out.bad.append(_entry(spec, n, err.field, err.reason, err.fix, row))
        except Exception as exc:  # noqa: BLE001 - one record must never stop the run; it is quarantined with the error
            out.bad.append(_entry(spec, n, "(record)", f"could not be mapped: {type(exc).__name__}: {exc}",
                                  "check the record against the format's layout (and report this message)", row))  # fmt: skip
    return out


def drop_exact_duplicates(loaded: dict[str, Loaded], specs: dict[str, DatasetSpec]) -> list[dict[str, Any]]:
    """Keep the first record of each content (meta.hash), in dataset then row order; drop and count the rest.

    Returns one entry per dropped copy (dataset, file, row, reason, and where the kept copy is).
    """
    first: dict[str, dict[str, Any]] = {}
    dropped = []
    for name, ds in loaded.items():
        kept = []
        for rec in ds.good:
            meta = rec["meta"]
            seen = first.setdefault(meta["hash"], meta)
            if seen is meta:
                kept.append(rec)
                continue
            ds.dropped[DUPLICATE] += 1
            dropped.append({"dataset": name, "file": specs[name].path, "row": meta["row"], "reason": DUPLICATE,
                            "kept": f"{seen['source']}:{seen['row']} (dataset {seen['dataset']})", "id": rec["id"]})  # fmt: skip
        ds.good = kept
    return dropped


def _check_encodable(rec: dict[str, Any]) -> None:
    """A JSON escape like \\ud800 (half a surrogate pair) parses, but cannot be written as UTF-8."""
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(
            "(record)",
            f"holds {exc.object[exc.start : exc.end]!a}, half of a UTF-16 surrogate pair, not text",
            "write the character itself, or its full \\uXXXX\\uXXXX pair",
        ) from exc


def _entry(spec: DatasetSpec, n: int, fld: str, reason: str, fix: str, row: Any) -> dict[str, Any]:
    return {"dataset": spec.label, "file": spec.path, "row": n, "field": fld, "reason": reason, "fix": fix, "raw": _snippet(row)}


def _snippet(row: Any) -> str:
    text = row.raw if isinstance(row, RecordError) else json.dumps(row, ensure_ascii=False, default=str)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates, shown escaped
    return text if len(text) <= 500 else text[:500] + "..."
