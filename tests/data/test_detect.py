"""Auto-detection never drops a meaningful column; LLaMA-Factory's dataset_info.json maps one to one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps import ingest
from steps.core.config import ConfigError, load_section
from steps.data.config import DatasetSpec, IngestConfig
from steps.data.dataset_info import resolve_datasets
from steps.data.errors import FileError
from steps.data.load import load_dataset

CHAT = [{"role": "user", "content": "Is this kettle safe?"}, {"role": "assistant", "content": "Yes, it is."}]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("declared", ["auto", "feedback"])
def test_messages_with_a_boolean_label_are_feedback(tmp_path, declared):
    _jsonl(tmp_path / "k.jsonl", [{"messages": CHAT, "label": True}, {"messages": CHAT, "label": False}])
    loaded = load_dataset(DatasetSpec(path="k.jsonl", format=declared), tmp_path)
    assert loaded.format == "feedback" and loaded.bad == []
    assert [(r["kind"], r["label"]) for r in loaded.good] == [("feedback", True), ("feedback", False)]
    assert loaded.good[1]["completion"] == CHAT[1:] and loaded.good[1]["messages"] == CHAT[:1]


@pytest.mark.parametrize("extra", [{"label": "spam"}, {"score": 0.3}, {"chosen": "a"}])
def test_a_meaningful_column_a_format_would_ignore_is_refused_with_the_candidates(tmp_path, extra):
    _jsonl(tmp_path / "x.jsonl", [{"messages": CHAT, **extra}])
    with pytest.raises(FileError, match=r"only by ignoring .*declare which format.*candidates: .*openai \(drops"):
        load_dataset(DatasetSpec(path="x.jsonl"), tmp_path)
    assert ingest.main([str(tmp_path / "o"), "--params", str(_params(tmp_path, "{path: x.jsonl}"))]) == 2


def _params(tmp_path: Path, *datasets: str, info: str = "") -> Path:
    p = tmp_path / "params.yaml"
    p.write_text("ingest:\n" + (f"  dataset_info: {info}\n" if info else "") + "  datasets:\n"
                 + "".join(f"    - {d}\n" for d in datasets))  # fmt: skip
    return p


def test_dataset_info_json_names_datasets(tmp_path, monkeypatch):
    lf = tmp_path / "lf"
    lf.mkdir()
    _jsonl(lf / "alpaca.jsonl", [{"q": "Add 2 and 3", "ctx": "quickly", "a": "5", "sys": "Be terse."}])
    _jsonl(lf / "share.jsonl", [{"msgs": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    _jsonl(lf / "rank.jsonl", [{"instruction": "pick", "chosen": "good", "rejected": "bad"}])
    _jsonl(lf / "kto.jsonl", [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "tag": False}])
    info = {
        "al": {"file_name": "alpaca.jsonl", "columns": {"prompt": "q", "query": "ctx", "response": "a", "system": "sys"}},
        "sh": {"file_name": "share.jsonl", "formatting": "sharegpt", "columns": {"messages": "msgs"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
        "rk": {"file_name": "rank.jsonl", "ranking": True},
        "kt": {"file_name": "kto.jsonl", "formatting": "sharegpt", "columns": {"kto_tag": "tag"}},
        "hub": {"hf_hub_url": "someone/data"},
    }  # fmt: skip
    (lf / "dataset_info.json").write_text(json.dumps(info))
    params = _params(tmp_path, "{name: al}", "{name: sh}", "{name: rk}", "{name: kt}", info="lf/dataset_info.json")
    monkeypatch.chdir(tmp_path)
    assert ingest.main(["out", "--params", str(params), ]) == 0
    stats = json.loads((tmp_path / "out" / "manifest.json").read_text())["metrics"]["datasets"]
    assert {k: (v["format"], v["good"]) for k, v in stats.items()} == {
        "al": ("alpaca", 1), "sh": ("sharegpt", 1), "rk": ("preference", 1), "kt": ("feedback", 1)}  # fmt: skip
    cfg = load_section(IngestConfig, "ingest", params)
    al = resolve_datasets(cfg)[0][0]
    rec = load_dataset(al, Path(".")).good[0]
    assert rec["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Add 2 and 3\n\nquickly"},
                               {"role": "assistant", "content": "5"}]  # fmt: skip
    with pytest.raises(FileError, match="'hf_hub_url' is not supported"):
        resolve_datasets(IngestConfig(datasets=(DatasetSpec(name="hub"),), dataset_info="lf/dataset_info.json"))
    with pytest.raises(FileError, match="no dataset named 'nope'"):
        resolve_datasets(IngestConfig(datasets=(DatasetSpec(name="nope"),), dataset_info="lf/dataset_info.json"))
    with pytest.raises(ConfigError, match="have no path; set ingest.dataset_info"):
        IngestConfig(datasets=(DatasetSpec(name="al"),))
