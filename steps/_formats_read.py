"""Reading raw dataset files (JSONL, JSON, CSV, Parquet) into numbered rows.

Readers yield ``(row, value)`` where ``row`` is the line number for JSONL and
CSV (what an editor shows) and the 1-based record index for JSON and Parquet.
A value that cannot be read is a ``RecordError`` in place of the dict, so the
caller quarantines it and goes on; a file that cannot be read at all raises
``FileError``. Split out of steps/_formats.py, which re-exports ``read_rows``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steps._formats_errors import FileError, RecordError

# Fields that may hold JSON inside a CSV cell.
_JSON_FIELDS = ("conversations", "messages", "history", "chosen", "rejected", "completion", "prompt", "tools")


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileError(f"{path}: file not found; check ingest.datasets[].path in params.yaml (did you `dvc pull`?)")
    if suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    elif suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise FileError(f"{path}: unknown file type '{suffix}'; use .json, .jsonl, .csv or .parquet")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, RecordError("(line)", f"not valid JSON: {exc.msg} at column {exc.colno}", "fix the line's JSON", line.rstrip("\n"))
                continue
            yield n, value if isinstance(value, dict) else RecordError(
                "(line)", f"expected a JSON object, got {type(value).__name__}", "write one object per line", line.rstrip("\n")
            )


def _read_json(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileError(f"{path}: not valid JSON ({exc}); fix the file or save it as JSONL, one record per line") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise FileError(f"{path}: expected a JSON list of records (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise FileError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for n, value in enumerate(data, 1):
        yield n, value if isinstance(value, dict) else RecordError(
            "(record)", f"expected a JSON object, got {type(value).__name__}", "make every list item an object"
        )


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh, restkey="\0extra", restval=None)
        header = reader.fieldnames or []
        if not header:
            raise FileError(f"{path}: empty CSV or no header row; the first line must name the columns")
        for row in reader:
            n = reader.line_num
            if "\0extra" in row or any(v is None for v in row.values()):
                got = len(header) + len(row.get("\0extra") or ()) - sum(v is None for v in row.values())
                raw = ",".join(str(v) for k, v in row.items() if k != "\0extra" and v is not None)
                raw = ",".join([raw, *row.get("\0extra", [])])
                yield n, RecordError("(row)", f"has {got} fields, the header has {len(header)}", "quote fields that hold commas", raw)
                continue
            yield n, {k: _maybe_json(k, v) for k, v in row.items()}


def _maybe_json(key: str, value: str) -> Any:
    if key in _JSON_FIELDS and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise FileError(f"{path}: not a readable Parquet file ({exc})") from exc
    yield from enumerate(rows, 1)
