"""Random JSON values in every file format and every declared format: no crash, and every row accounted for."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.data.config import DatasetSpec
from steps.data.errors import FileError
from steps.data.formats import FORMATS
from steps.data.load import load_dataset

KEYS = ["instruction", "input", "output", "history", "system", "tools", "conversations", "messages", "from", "value",
        "role", "content", "prompt", "chosen", "rejected", "completion", "label", "text", "score", "timestamp"]  # fmt: skip
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | st.sampled_from(KEYS)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
# Rows shaped like each format (the right keys, messages of random roles and contents), so conversion runs deep.
message = st.dictionaries(st.sampled_from(["from", "value", "role", "content", "tool_calls", "type", "text"]),
                          st.sampled_from(["human", "gpt", "user", "assistant", "system", "tool", "observation"]) | values,
                          min_size=1, max_size=3)  # fmt: skip
field = values | st.text(min_size=1, max_size=10) | st.lists(message, max_size=3) | message
shaped = st.sampled_from([("instruction", "output"), ("conversations",), ("messages",), ("prompt", "chosen", "rejected"),
                          ("prompt", "completion", "label"), ("messages", "label"), ("text",), ("text", "label")]).flatmap(
    lambda keys: st.fixed_dictionaries({k: field for k in keys}, optional={k: field for k in ("input", "history", "system", "tools")}))
records = shaped | st.dictionaries(st.sampled_from(KEYS), values, max_size=6) | values
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(path: Path, expected_rows: int | None) -> int:
    tried = 0
    for fmt in ("auto", *FORMATS):
        try:
            loaded = load_dataset(DatasetSpec(path=path.name, format=fmt), path.parent, max_record_chars=2_000)
        except FileError:  # a whole file refused by name (exit 2), e.g. keys that fit no format
            continue
        tried += loaded.rows
        assert loaded.rows == len(loaded.good) + len(loaded.bad) + sum(loaded.dropped.values())
        if expected_rows is not None:
            assert loaded.rows == expected_rows
        for q in loaded.bad:
            assert q["field"] and q["reason"] and q["fix"] and isinstance(q["row"], int)
            assert not q["reason"].startswith("could not be mapped"), q  # each bad value has its own reason
        for rec in loaded.good:
            json.dumps(rec, ensure_ascii=False).encode("utf-8")  # writable as it will be written
    return tried


@SETTINGS
@given(st.lists(records, max_size=8), st.lists(st.binary(max_size=12), max_size=2))
def test_jsonl_and_json(rows, junk):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.jsonl"
        path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + b"".join(j.replace(b"\n", b"") + b"\n" for j in junk))
        _check(path, len(rows) + len(junk))
        path = Path(d) / "f.json"
        path.write_text(json.dumps(rows))
        _check(path, None)


@SETTINGS
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), values, min_size=1, max_size=5), max_size=8))
def test_csv(rows):
    header = sorted({k for r in rows for k in r}) or ["text"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in rows:
        writer.writerow([v if isinstance(v, str) else json.dumps(r.get(k)) for k, v in ((k, r.get(k)) for k in header)])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.csv"
        path.write_text(buf.getvalue(), encoding="utf-8")
        _check(path, None)


@SETTINGS
@given(st.lists(st.text(max_size=30).map(lambda t: t.replace("\n", " ")), max_size=8))
def test_txt(lines):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.txt"
        path.write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8", "surrogatepass"))
        _check(path, len(lines))
