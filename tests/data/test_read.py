"""Raw files people have, and bad records in them: each read, quarantined with a reason, or refused by name."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest
import zstandard

from steps import ingest
from steps.core.io import read_jsonl
from steps.data.config import DatasetSpec, IngestConfig
from steps.data.errors import FileError
from steps.data.load import load_dataset

GOOD = {"instruction": "How hot should the water be?", "output": "Just off the boil."}


def _lines(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def _accounted(loaded) -> None:
    assert loaded.rows == len(loaded.good) + len(loaded.bad) + sum(loaded.dropped.values())


def test_invalid_utf8_is_quarantined_with_its_byte_offset(tmp_path):
    data = _lines([GOOD, b'{"instruction": "caf\xe9?", "output": "yes"}', GOOD | {"output": "again"}])
    (tmp_path / "u.jsonl").write_bytes(data)
    loaded = load_dataset(DatasetSpec(path="u.jsonl"), tmp_path)
    _accounted(loaded)
    (bad,) = loaded.bad
    offset = data.index(b"\xe9")
    assert bad["row"] == 2 and f"byte offset {offset}" in bad["reason"] and "UTF-8" in bad["reason"]
    assert all("\ufffd" not in json.dumps(r) for r in loaded.good) and len(loaded.good) == 2


def test_excel_csv_with_a_bom_keeps_its_first_column(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"\xef\xbb\xbfinstruction,output\r\nWhat is tea?,A drink.\r\n")
    (rec,) = load_dataset(DatasetSpec(path="x.csv"), tmp_path).good
    assert rec["messages"][0]["content"] == "What is tea?"


@pytest.mark.parametrize("value", [4, [1, 2], {"a": 1}, True])
def test_a_non_string_alpaca_input_is_quarantined_not_dropped(tmp_path, value):
    (tmp_path / "a.jsonl").write_bytes(_lines([GOOD | {"input": value}]))
    loaded = load_dataset(DatasetSpec(path="a.jsonl"), tmp_path)
    assert loaded.good == [] and loaded.bad[0]["field"] == "input"


def test_a_list_as_sharegpt_role_is_quarantined_not_a_crash(tmp_path):
    conv = [{"from": ["human"], "value": "hi"}, {"from": "gpt", "value": "hello"}]
    (tmp_path / "s.jsonl").write_bytes(_lines([{"conversations": conv}]))
    (bad,) = load_dataset(DatasetSpec(path="s.jsonl", format="sharegpt"), tmp_path).bad
    assert bad["field"] == "conversations[0].from" and "role name" in bad["reason"]


def test_a_json_file_holding_one_object_is_one_record(tmp_path):
    (tmp_path / "o.json").write_text(json.dumps(GOOD | {"history": [["Hi", "Hello"]]}))
    loaded = load_dataset(DatasetSpec(path="o.json"), tmp_path)
    assert loaded.rows == 1 and len(loaded.good) == 1 and len(loaded.good[0]["messages"]) == 4


def test_jsonl_error_names_line_and_column(tmp_path):
    (tmp_path / "j.jsonl").write_bytes(_lines([GOOD, b'{"instruction": "x",}']))
    (bad,) = load_dataset(DatasetSpec(path="j.jsonl"), tmp_path).bad
    assert bad["row"] == 2 and "line 2, column 21" in bad["reason"]


def test_an_empty_file_fails_plainly(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    result = ingest.run(IngestConfig(datasets=(DatasetSpec(path="e.jsonl", format="alpaca"),)), tmp_path / "o", tmp_path)
    assert not result.passed and "e.jsonl: empty: no records read" in result.problems[0]
    assert "0 of 0" not in " ".join(result.problems)


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_txt_and_compressed_files(tmp_path, suffix):
    data = b"first line of text\n\nsecond line\r\n"
    pack = {"": lambda b: b, ".gz": gzip.compress, ".zst": zstandard.ZstdCompressor().compress}[suffix]
    (tmp_path / f"t.txt{suffix}").write_bytes(pack(data))
    loaded = load_dataset(DatasetSpec(path=f"t.txt{suffix}"), tmp_path)
    assert [r["text"] for r in loaded.good] == ["first line of text", "second line"]
    assert loaded.format == "text" and loaded.dropped == {"blank line": 1} and loaded.rows == 3
    (tmp_path / f"a.jsonl{suffix}").write_bytes(pack(_lines([GOOD])))
    assert len(load_dataset(DatasetSpec(path=f"a.jsonl{suffix}"), tmp_path).good) == 1


def test_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([GOOD, GOOD | {"output": "Two."}]).save_to_disk(str(tmp_path / "ds"))
    loaded = load_dataset(DatasetSpec(path="ds"), tmp_path)
    assert [r["meta"]["row"] for r in loaded.good] == [1, 2] and loaded.format == "alpaca"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([GOOD])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(FileError, match="DatasetDict.*dd/train"):
        load_dataset(DatasetSpec(path="dd"), tmp_path)


def test_a_giant_line_is_quarantined_by_streaming(tmp_path):
    big = b'{"text": "' + b"a" * 50_000_000 + b'"}'
    (tmp_path / "g.jsonl").write_bytes(_lines([{"text": "small one"}, big, {"text": "small two"}]))
    tracemalloc.start()
    loaded = load_dataset(DatasetSpec(path="g.jsonl"), tmp_path, max_record_chars=100_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000  # the 50 MB line was never held whole
    assert [r["text"] for r in loaded.good] == ["small one", "small two"]
    assert loaded.bad[0]["row"] == 2 and "max_record_chars=100000" in loaded.bad[0]["reason"]


def test_exact_duplicates_keep_the_first_copy_and_are_counted(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_lines([GOOD, GOOD | {"output": "Other."}]))
    (tmp_path / "b.jsonl").write_bytes(_lines([GOOD | {"instruction": "HOW hot  should the water be?"}]))
    cfg = IngestConfig(datasets=(DatasetSpec(path="a.jsonl"), DatasetSpec(path="b.jsonl")))
    result = ingest.run(cfg, tmp_path / "o", tmp_path)
    assert result.passed and result.counts["dropped"] == 1
    assert result.datasets["b"]["dropped"] == {"exact duplicate of an earlier record": 1} and result.datasets["b"]["good"] == 0
    (entry,) = read_jsonl(tmp_path / "o" / "dropped.jsonl")
    assert entry["file"] == "b.jsonl" and entry["kept"].startswith("a.jsonl:1")


def test_a_failed_gate_keeps_the_last_good_output_byte_for_byte(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(_lines([GOOD | {"output": f"answer {i}"} for i in range(20)]))
    cfg = IngestConfig(datasets=(DatasetSpec(path="d.jsonl"),), max_bad_fraction=0.01)
    assert ingest.run(cfg, tmp_path / "o", tmp_path).passed
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    (tmp_path / "d.jsonl").write_bytes(_lines([GOOD, "not json", "[1]"]))
    result = ingest.run(cfg, tmp_path / "o", tmp_path)
    assert not result.passed and result.report_dir == tmp_path / "o.rejected"
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == before
    assert len(read_jsonl(tmp_path / "o.rejected" / "quarantine.jsonl")) == 2
    assert "o keeps its last good output" in result.problems[-1] and "o.rejected" in result.problems[-1]
    (tmp_path / "d.jsonl").write_bytes(_lines([GOOD]))
    assert ingest.run(cfg, tmp_path / "o", tmp_path).passed and not (tmp_path / "o.rejected").exists()


def test_manifest_and_summary_account_for_every_row(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_bytes(_lines([GOOD, b"", b"\xff", GOOD, GOOD | {"output": "x"}]))
    result = ingest.run(IngestConfig(datasets=(DatasetSpec(path="m.jsonl"),), max_bad_fraction=0.5), tmp_path / "o", tmp_path)
    s = json.loads((tmp_path / "o" / "manifest.json").read_text())["metrics"]["datasets"]["m"]
    assert (s["rows"], s["good"], s["quarantined"], sum(s["dropped"].values())) == (5, 2, 1, 2)
    ingest.print_summary(result)
    out = capsys.readouterr().out
    assert "rows = good + quarantined + dropped" in out and "dropped 1 (blank line)" in out
