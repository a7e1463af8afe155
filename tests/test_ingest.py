"""ingest: every format into the canonical schema, quarantine without loss, leakage-safe split."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps import ingest
from steps.core.config import ConfigError, load_section
from steps.core.io import read_jsonl
from steps.core.schema import KINDS, ROLES
from steps.data.config import DatasetSpec, IngestConfig
from steps.data.load import load_dataset


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _one(tmp_path: Path, spec: DatasetSpec) -> list[dict]:
    loaded = load_dataset(spec, tmp_path)
    assert loaded.bad == []
    good = loaded.good
    for rec in good:
        assert rec["kind"] in KINDS
        for key in ("messages", "chosen", "rejected", "completion"):
            assert all(m["role"] in ROLES and m["content"] for m in rec[key] or [])
        assert rec["meta"]["source"] == spec.path and rec["meta"]["hash"]
    return good


def test_alpaca_json_with_system_and_history(tmp_path):
    rows = [{"instruction": "Add", "input": "2 and 3", "output": "5", "system": "Be terse.",
             "history": [["Hi", "Hello!"]]}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (rec,) = _one(tmp_path, DatasetSpec(path="a.json"))
    assert rec["kind"] == "sft" and rec["meta"]["format"] == "alpaca"
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert rec["messages"][3]["content"] == "Add\n\n2 and 3"


def test_sharegpt_with_tools_and_custom_tags(tmp_path):
    conv = [{"from": "system", "value": "sys"}, {"from": "user", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "w"}'}, {"from": "observation", "value": "sunny"},
            {"from": "bot", "value": "It is sunny."}]
    _jsonl(tmp_path / "s.jsonl", [{"conversations": conv, "tools": [{"name": "w"}]}])
    (rec,) = _one(tmp_path, DatasetSpec(path="s.jsonl", tags={"user_tag": "user", "assistant_tag": "bot"}))
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "function_call", "tool", "assistant"]
    assert json.loads(rec["tools"]) == [{"name": "w"}]


def test_openai_messages_with_tool_calls_and_parts(tmp_path):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "f"}}]},
            {"role": "tool", "content": "ok"}, {"role": "assistant", "content": "done"}]
    _jsonl(tmp_path / "o.jsonl", [{"messages": msgs}])
    (rec,) = _one(tmp_path, DatasetSpec(path="o.jsonl"))
    assert rec["meta"]["format"] == "openai"
    assert [m["role"] for m in rec["messages"]] == ["user", "function_call", "tool", "assistant"]
    assert rec["messages"][0]["content"] == "hi"


def test_preference_as_text_and_as_messages(tmp_path):
    _jsonl(tmp_path / "p.jsonl", [
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": [{"role": "user", "content": "q2"}], "chosen": [{"role": "assistant", "content": "g"}],
         "rejected": {"role": "assistant", "content": "b"}},
    ])
    recs = _one(tmp_path, DatasetSpec(path="p.jsonl"))
    assert {r["kind"] for r in recs} == {"preference"}
    assert recs[0]["messages"] == [{"role": "user", "content": "q"}]
    assert recs[1]["chosen"] == [{"role": "assistant", "content": "g"}]


def test_feedback_csv_labels(tmp_path):
    with open(tmp_path / "k.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "completion", "label"])
        w.writerows([["q", "a, with comma", "true"], ["q", "meh", "0"]])
    recs = _one(tmp_path, DatasetSpec(path="k.csv"))
    assert [(r["kind"], r["label"]) for r in recs] == [("feedback", True), ("feedback", False)]
    assert recs[0]["completion"][0]["content"] == "a, with comma"


def test_text_parquet_and_cls_with_column_mapping(tmp_path):
    pq.write_table(pa.table({"body": ["plain text one", "plain text two"]}), tmp_path / "t.parquet")
    recs = _one(tmp_path, DatasetSpec(path="t.parquet", columns={"text": "body"}))
    assert [r["text"] for r in recs] == ["plain text one", "plain text two"] and recs[0]["kind"] == "text"
    _jsonl(tmp_path / "c.jsonl", [{"sentence": "great", "y": "pos"}, {"sentence": "awful", "y": 0}])
    recs = _one(tmp_path, DatasetSpec(path="c.jsonl", format="cls", columns={"text": "sentence", "label": "y"}))
    assert [(r["kind"], r["label"]) for r in recs] == [("cls", "pos"), ("cls", 0)]


def test_five_percent_malformed_lines_are_quarantined_and_no_good_line_is_lost(tmp_path):
    random.seed(3)
    lines, bad_lines = [], set()
    for i in range(200):
        if i % 20 == 7:  # exactly 5% bad, of several kinds
            bad_lines.add(i + 1)
            lines.append(random.choice(['{"instruction": "x", "output": ', "[1, 2]", '{"instruction": "", "output": "y"}',
                                        '{"output": "no instruction"}']))
        else:
            lines.append({"instruction": f"question number {i} about kettles", "output": f"answer {i}"})
    _jsonl(tmp_path / "d.jsonl", lines)
    cfg = IngestConfig(datasets=(DatasetSpec(path="d.jsonl", format="alpaca"),), max_bad_fraction=0.05)
    result = ingest.run(cfg, tmp_path / "out", root=tmp_path)
    assert result.passed
    quarantine = read_jsonl(tmp_path / "out" / "quarantine.jsonl")
    assert {q["row"] for q in quarantine} == bad_lines
    assert all(q["file"] == "d.jsonl" and q["field"] and q["reason"] and q["fix"] for q in quarantine)
    kept = [r for s in ingest.SPLITS for r in read_jsonl(tmp_path / "out" / f"{s}.jsonl")]
    assert sorted(r["meta"]["row"] for r in kept) == sorted(set(range(1, 201)) - bad_lines)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["metrics"]["counts"]["quarantined"] == 10 and manifest["output_digests"]["train"]


def test_too_many_bad_records_fail_the_step(tmp_path):
    _jsonl(tmp_path / "d.jsonl", ["nope"] * 3 + [{"text": "fine text"}] * 7)
    (tmp_path / "params.yaml").write_text("ingest:\n  datasets: [{path: %s}]\n  max_bad_fraction: 0.1\n" % (tmp_path / "d.jsonl"))
    assert ingest.main([str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")]) == 1
    assert not (tmp_path / "out").exists()  # nothing published
    assert len(read_jsonl(tmp_path / "out.rejected" / "quarantine.jsonl")) == 3


def _paraphrase(text: str, rng: random.Random) -> str:
    words = text.split()
    words[rng.randrange(len(words))] = "changed"
    return " ".join(words)


def test_duplicate_groups_never_span_two_splits_and_split_is_deterministic(tmp_path):
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    rows, group_of = [], {}
    for g in range(150):
        base = " ".join(rng.choices(vocab, k=40))  # one changed word: Jaccard ~0.85
        copies = [base, base, _paraphrase(base, rng)] if g % 3 == 0 else [base]
        for c in copies:
            group_of[len(rows) + 1] = g
            rows.append({"instruction": c, "output": "ok"})
    _jsonl(tmp_path / "d.jsonl", rows)
    cfg = IngestConfig(datasets=(DatasetSpec(path="d.jsonl"),))
    ingest.run(cfg, tmp_path / "a", root=tmp_path)
    split_of_group: dict[int, set] = {}
    sizes = {}
    for s in ingest.SPLITS:
        recs = read_jsonl(tmp_path / "a" / f"{s}.jsonl")
        sizes[s] = len(recs)
        for r in recs:
            split_of_group.setdefault(group_of[r["meta"]["row"]], set()).add(s)
    assert all(len(v) == 1 for v in split_of_group.values())
    assert sizes["validation"] > 0 and sizes["test"] > 0 and sizes["train"] > 0.6 * len(rows)
    ingest.run(cfg, tmp_path / "b", root=tmp_path)
    for s in ingest.SPLITS:
        assert (tmp_path / "a" / f"{s}.jsonl").read_bytes() == (tmp_path / "b" / f"{s}.jsonl").read_bytes()


def test_time_split_puts_newest_records_in_test(tmp_path):
    rows = [{"text": f"document number {i} " + "filler " * 5 + str(i * 7919), "timestamp": f"2024-01-{i + 1:02d}"}
            for i in range(20)]
    _jsonl(tmp_path / "t.jsonl", rows)
    ingest.run(IngestConfig(datasets=(DatasetSpec(path="t.jsonl"),)), tmp_path / "o", root=tmp_path)
    test_days = sorted(r["meta"]["timestamp"] for r in read_jsonl(tmp_path / "o" / "test.jsonl"))
    train_days = sorted(r["meta"]["timestamp"] for r in read_jsonl(tmp_path / "o" / "train.jsonl"))
    assert len(train_days) == 16 and test_days and max(train_days) < min(test_days)


def test_replay_data_always_trains_and_leaves_the_task_split_as_it_was(tmp_path):
    """General data mixed in against forgetting (replay: true) trains, with anything that copies it; the task's
    own records split as they did without it, by date too (replay rows carry no timestamp)."""
    task = [{"text": f"task document {i} " + "filler " * 5 + str(i * 7919), "timestamp": f"2024-01-{i + 1:02d}"} for i in range(20)]
    general = [{"messages": [{"role": "user", "content": f"general question {i} " + "word " * 6 + str(i * 104729)},
                             {"role": "assistant", "content": f"general answer {i}"}]} for i in range(30)]
    _jsonl(tmp_path / "t.jsonl", task)
    _jsonl(tmp_path / "g.jsonl", general)
    alone = IngestConfig(datasets=(DatasetSpec(path="t.jsonl"),))
    mixed = IngestConfig(datasets=(DatasetSpec(path="t.jsonl"), DatasetSpec(path="g.jsonl", format="openai", replay=True)))
    ingest.run(alone, tmp_path / "a", root=tmp_path)
    ingest.run(mixed, tmp_path / "b", root=tmp_path)
    for s in ("validation", "test"):
        assert (tmp_path / "a" / f"{s}.jsonl").read_bytes() == (tmp_path / "b" / f"{s}.jsonl").read_bytes()
    train = read_jsonl(tmp_path / "b" / "train.jsonl")
    assert sum(bool(r["meta"].get("replay")) for r in train) == 30 and len(train) == 16 + 30
    assert not any(r["meta"].get("replay") for r in read_jsonl(tmp_path / "a" / "train.jsonl"))


def test_unknown_format_and_unknown_key_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="format 'alpacca' unknown"):
        DatasetSpec(path="x.json", format="alpacca")
    with pytest.raises(ConfigError, match="unknown key 'max_bad_fracton'.*did you mean 'max_bad_fraction'"):
        load_section(IngestConfig, "ingest", {"ingest": {"datasets": [{"path": "x"}], "max_bad_fracton": 0.2}})


def test_undetectable_format_names_the_file_and_the_fix(tmp_path):
    _jsonl(tmp_path / "u.jsonl", [{"foo": 1}])
    with pytest.raises(ValueError, match="u.jsonl: cannot tell the format.*declare `format:`"):
        load_dataset(DatasetSpec(path="u.jsonl"), tmp_path)
