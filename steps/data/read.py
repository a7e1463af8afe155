"""Reading raw dataset files into numbered rows, streamed and bounded.

``read_rows(path, max_record_chars)`` reads JSONL, JSON, CSV, Parquet and plain text (``.txt``,
one record per line, as Hugging Face ``datasets``' text builder reads it), each optionally
compressed (``.gz``, ``.zst``), and a ``datasets.save_to_disk`` folder. It yields
``(row, value)``: ``row`` is the line number for JSONL, CSV and text (what an editor shows) and
the 1-based record index for JSON, Parquet and Arrow. ``value`` is the row's dict, a
``RecordError`` for a row that cannot be read (the caller quarantines it and goes on), or a
``Skipped`` for a line that holds no record (a blank line), so every line read is counted.
A file that cannot be read at all raises ``FileError``.

Bytes are decoded strictly: a line that is not valid UTF-8 is quarantined with its byte offset,
never repaired. A leading UTF-8 byte-order mark (Excel's CSV) is accepted. Line formats are read
a bounded chunk at a time, so a giant line costs at most about ``4 * max_record_chars`` bytes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from steps.data.errors import FileError, RecordError

# Fields that may hold JSON inside a CSV cell.
_JSON_FIELDS = ("conversations", "messages", "history", "chosen", "rejected", "completion", "prompt", "tools")
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
COMPRESSIONS = (".gz", ".zst")
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16

Row = tuple[int, "dict[str, Any] | RecordError | Skipped"]


@dataclass(frozen=True)
class Skipped:
    """A line that holds no record (a blank line): counted, not quarantined."""

    reason: str


def read_rows(path: Path, max_record_chars: int = 0) -> Iterator[Row]:
    """Numbered rows of one raw file or ``save_to_disk`` folder; ``max_record_chars`` 0 means no bound."""
    limit = max_record_chars or None
    if path.is_dir():
        yield from _bounded(_read_arrow_dir(path), limit)
        return
    if not path.is_file():
        raise FileError(f"{path}: file not found; check ingest.datasets[].path in params.yaml (did you `dvc pull`?)")
    suffix, compression = file_kind(path)
    if suffix not in SUFFIXES:
        known = ", ".join(SUFFIXES)
        raise FileError(f"{path}: unknown file type '{suffix}'; use {known} (optionally .gz or .zst), or a save_to_disk folder")
    if suffix == ".parquet":
        if compression:
            raise FileError(f"{path}: Parquet compresses itself; decompress the file to .parquet")
        yield from _bounded(_read_parquet(path), limit)
        return
    with _open(path, compression) as fh:
        if suffix == ".jsonl":
            yield from _read_jsonl(fh, limit)
        elif suffix == ".txt":
            yield from _read_text(fh, limit)
        elif suffix == ".csv":
            yield from _read_csv(fh, path, limit)
        else:
            yield from _bounded(_read_json(fh, path), limit)


def file_kind(path: Path) -> tuple[str, str]:
    """The data suffix and the compression suffix ('' when none) of a file name."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSIONS:
        return Path(path.stem).suffix.lower(), suffix
    return suffix, ""


def _open(path: Path, compression: str) -> IO[bytes]:
    if compression == ".gz":
        return gzip.open(path, "rb")
    if compression == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _lines(fh: IO[bytes], limit: int | None) -> Iterator[tuple[int, int, str | RecordError]]:
    """``(line number, byte offset, text)`` per line; text is a RecordError when the line is too long or not UTF-8.

    A line is read ``_CHUNK`` bytes at a time and given up once it passes ``4 * limit`` bytes (more
    bytes than any ``limit``-character UTF-8 text), so a giant line is never held whole.
    """
    max_bytes = 4 * limit + 2 if limit else None
    offset, n = 0, 0
    while True:
        start = offset
        parts: list[bytes] = []
        size, over = 0, False
        while True:
            chunk = fh.readline(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                over = True
                parts = []
            elif not over:
                parts.append(chunk)
            if chunk.endswith(b"\n"):
                break
        if size == 0:
            return
        n += 1
        offset += size
        if over:
            yield n, start, _too_long(limit, f"over {size} bytes")
            continue
        data = b"".join(parts)
        if n == 1 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield n, start, RecordError("(line)", f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset "
                                        f"{start + exc.start} of the file", "save the file as UTF-8 (or fix that byte)",
                                        data[:500].decode("utf-8", "backslashreplace"))  # fmt: skip
            continue
        if limit and len(text) > limit:
            yield n, start, _too_long(limit, f"{len(text)} characters")
            continue
        yield n, start, text


def _too_long(limit: int | None, size: str) -> RecordError:
    return RecordError("(record)", f"record is {size}, over ingest.max_record_chars={limit}",
                       "split or drop the record, or raise ingest.max_record_chars")  # fmt: skip


def _read_jsonl(fh: IO[bytes], limit: int | None) -> Iterator[Row]:
    for n, _, line in _lines(fh, limit):
        if isinstance(line, RecordError):
            yield n, line
        elif not line.strip():
            yield n, Skipped("blank line")
        else:
            yield n, _object(line, f"line {n}")


def _object(text: str, where: str) -> dict[str, Any] | RecordError:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return RecordError(
            "(line)", f"not valid JSON: {exc.msg} at {where}, column {exc.colno}", "fix the line's JSON", text[:500]
        )
    except RecursionError:
        return RecordError("(line)", f"JSON nested too deep at {where}", "flatten the record", text[:500])
    if isinstance(value, dict):
        return value
    return RecordError("(line)", f"expected a JSON object, got {type(value).__name__}", "write one object per line", text[:500])


def _read_text(fh: IO[bytes], limit: int | None) -> Iterator[Row]:
    for n, _, line in _lines(fh, limit):
        if isinstance(line, RecordError):
            yield n, line
        else:
            yield n, {"text": line} if line.strip() else Skipped("blank line")


def _read_json(fh: IO[bytes], path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    data = fh.read().removeprefix(_BOM)
    if not data.strip():
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError(f"{path}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at byte offset {exc.start}); "
                        "save the file as UTF-8, or as JSONL so only the bad line is quarantined") from exc  # fmt: skip
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FileError(f"{path}: not valid JSON ({exc}); fix the file or save it as JSONL, one record per line") from exc
    if isinstance(value, dict):  # one object is one record, never unwrapped into its fields
        value = [value]
    if not isinstance(value, list):
        raise FileError(f"{path}: expected a JSON list of records (or one record object), got {type(value).__name__}")
    for n, item in enumerate(value, 1):
        yield (
            n,
            item
            if isinstance(item, dict)
            else RecordError(
                "(record)", f"expected a JSON object, got {type(item).__name__}", "make every list item an object", _dump(item)
            ),
        )


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:500]


def _bounded(rows: Iterator[tuple[int, Any]], limit: int | None) -> Iterator[Row]:
    """Quarantine records of whole-file formats whose JSON text is over ``limit`` characters."""
    for n, value in rows:
        if limit and isinstance(value, dict):
            size = len(json.dumps(value, ensure_ascii=False, default=str))
            if size > limit:
                yield n, _too_long(limit, f"{size} characters")
                continue
        yield n, value


class _BadLines(io.TextIOBase):
    """The file's lines for csv.reader; undecodable or too-long lines are noted by line number and read as empty."""

    def __init__(self, fh: IO[bytes], limit: int | None) -> None:
        self.errors_at: dict[int, RecordError] = {}
        self._it = _lines(fh, limit)

    def __iter__(self) -> Iterator[str]:
        for n, _, line in self._it:
            if isinstance(line, RecordError):
                self.errors_at[n] = line
                line = ""
            yield line + "\n"


def _read_csv(fh: IO[bytes], path: Path, limit: int | None) -> Iterator[Row]:
    lines = _BadLines(fh, limit)
    reader = csv.reader(iter(lines))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise FileError(f"{path}: the header row is not valid CSV ({exc})") from exc
    if 1 in lines.errors_at:
        raise FileError(f"{path}: the header row: {lines.errors_at[1].reason}; fix the first line")
    if not header or not any(h.strip() for h in header):
        raise FileError(f"{path}: empty CSV or no header row; the first line must name the columns")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise FileError(f"{path}: the header names {twice} more than once; give every column its own name")
    last = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit
            yield reader.line_num, RecordError("(row)", f"not valid CSV: {exc}", "fix the row's quoting")
            last = reader.line_num
            continue
        n = reader.line_num
        bad = next((lines.errors_at.pop(k) for k in range(last + 1, n + 1) if k in lines.errors_at), None)
        last = n
        if bad is not None:
            yield n, bad
        elif not cells:
            yield n, Skipped("blank line")
        elif len(cells) != len(header):
            yield n, RecordError("(row)", f"has {len(cells)} fields, the header has {len(header)}",
                                 "quote fields that hold commas", ",".join(cells)[:500])  # fmt: skip
        else:
            yield n, {k: _maybe_json(k, v) for k, v in zip(header, cells, strict=True)}


def _maybe_json(key: str, value: str) -> Any:
    if key in _JSON_FIELDS and value[:1] in "[{":
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        n = 0
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                yield n, row
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid and friends
        raise FileError(f"{path}: not a readable Parquet file ({exc})") from exc


def _read_arrow_dir(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """A ``datasets.Dataset.save_to_disk`` folder: state.json lists its Arrow stream files in order."""
    import pyarrow as pa

    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise FileError(f"{path}: a DatasetDict folder; point path at one split: {', '.join(f'{path}/{s}' for s in splits)}")
    state = path / "state.json"
    if not state.is_file():
        raise FileError(f"{path}: a folder but not a datasets.save_to_disk folder (no state.json); point path at a file")
    files = [path / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
    n = 0
    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                for batch in pa.ipc.open_stream(source):
                    for row in batch.to_pylist():
                        n += 1
                        yield n, row
        except (OSError, ValueError) as exc:
            raise FileError(f"{file}: not a readable Arrow file ({exc}); save the dataset again with save_to_disk") from exc
