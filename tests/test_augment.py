"""The augment step: English and Chinese records augment with format and labels kept, code survives,
nothing leaks into validation or test, drifted paraphrases are dropped, and the step is deterministic."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from steps import augment
from steps.augmentation import filters as gates
from steps.augmentation.config import AugmentConfig
from steps.augmentation.methods import Candidate
from steps.augmentation.text import span_pattern
from steps.core.config import ConfigError, load_section
from steps.core.io import atomic_write_jsonl, read_jsonl
from steps.core.schema import make_record
from steps.data.minhash import minhash_signatures
from steps.data.splits import load_splits
from steps.gates.dedup import content_text, leakage_columns
from steps.gates.format import format_problems
from steps.gates.records import record_frame

HAS_WORDNET = Path("/usr/share/wordnet/index.noun").is_file()
HAS_APERTIUM = shutil.which("apertium") is not None
needs_wordnet = pytest.mark.skipif(not HAS_WORDNET, reason="English EDA needs WordNet: apt-get install -y wordnet-base")
needs_apertium = pytest.mark.skipif(not HAS_APERTIUM, reason="needs Apertium: apt-get install -y apertium apertium-eng-spa")

CODE = "```python\ndef boil(litres):\n    return litres * 2  # minutes\n```"
EN_QUESTIONS = [
    "How do I clean the limescale from the bottom of my kettle without damaging the heating plate?",
    "Why does the kettle switch off before the water reaches a full rolling boil in the morning?",
    "Can I leave water standing in the kettle overnight, or should I empty it after every use?",
    "What does the blinking orange light on the front of the base mean when the kettle is idle?",
    f"My script to log the temperature fails. Can you fix it?\n\n{CODE}\n\nIt should print 1.7 litres.",
    "Is the Lumo Hearth safe to use on a boat with an inverter that gives 230 volts?",
]
ZH_QUESTIONS = ["请问如何清洗电水壶底部的水垢？", "电水壶的指示灯一直闪烁是什么原因？", "水壶烧水时发出很大的噪音，正常吗？"]


def sft(question: str, answer: str, row: int, dataset: str = "support") -> dict:
    return make_record("sft", dataset=dataset, source=f"{dataset}.jsonl", row=row, fmt="sharegpt",
                       messages=[{"role": "system", "content": "You are Lumo's support assistant."},
                                 {"role": "user", "content": question}, {"role": "assistant", "content": answer}])


def train_records() -> list[dict]:
    recs = [sft(q, "Descale it monthly.", i) for i, q in enumerate(EN_QUESTIONS)]
    recs += [sft(q, "请按说明书操作，如有问题请联系客服。", 100 + i, "support_zh") for i, q in enumerate(ZH_QUESTIONS)]
    recs.append(make_record("cls", dataset="intent", source="intent.csv", row=0, fmt="cls", label="complaint",
                            text="The kettle lid broke after two weeks and the shop will not replace it."))
    recs.append(make_record("preference", dataset="prefs", source="prefs.jsonl", row=0, fmt="preference",
                            messages=[{"role": "user", "content": "Should I descale the kettle with vinegar or with citric acid?"}],
                            chosen=[{"role": "assistant", "content": "Citric acid: it leaves no smell."}],
                            rejected=[{"role": "assistant", "content": "Bleach works best."}]))
    return recs


def eval_records(name: str) -> list[dict]:
    return [sft(f"{name} question about the warranty period of item {i} and the postal return address", "Two years.",
                i, f"eval_{name}") for i in range(3)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "validated"
    atomic_write_jsonl(d / "train.jsonl", train_records())
    for name in ("validation", "test", "heldout"):
        atomic_write_jsonl(d / f"{name}.jsonl", eval_records(name))
    return d


def config(**augment_section) -> AugmentConfig:
    """The augment section as params.yaml would give it (through the real loader, base: merged)."""
    section = {"methods": ["eda"], "min_similarity": None, "max_fraction": 1.0,
               "protect_terms": ["Lumo Hearth"], **augment_section}
    return load_section(AugmentConfig, "augment", {"base": {"seed": 42, "leak_threshold": 0.8},
                                                          "augment": section})


def augmented(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "train.jsonl") if "origin" in r["meta"]]


@needs_wordnet
def test_english_and_chinese_records_augment_with_format_and_labels_preserved(data_dir, tmp_path):
    out = tmp_path / "augmented"
    result = augment.run(config(eda={"num_aug": 2}), data_dir, out)
    originals = {r["id"]: r for r in train_records()}
    new = augmented(out)
    assert result.report["augmented"] == len(new) > 0
    langs = {originals[r["meta"]["origin"]]["meta"]["dataset"] for r in new}
    assert {"support", "support_zh", "intent", "prefs"} <= langs  # English, Chinese, cls and preference records
    for rec in new:
        origin = originals[rec["meta"]["origin"]]
        assert rec["id"] not in originals and rec["meta"]["augment"] == "eda" and rec["meta"]["augment_op"]
        assert format_problems(rec) == {}
        for key in ("kind", "label", "chosen", "rejected", "completion", "tools"):
            assert rec[key] == origin[key], key
        assert [m["role"] for m in rec["messages"]] == [m["role"] for m in origin["messages"]]
        for m, o in zip(rec["messages"], origin["messages"]):
            if m["role"] != "user":
                assert m == o  # system and assistant turns untouched
        changed = [m["content"] for m, o in zip(rec["messages"], origin["messages"]) if m != o]
        assert changed or rec["text"] != origin["text"]
    for name in ("validation", "test", "heldout"):
        assert (out / f"{name}.jsonl").read_bytes() == (data_dir / f"{name}.jsonl").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["step"] == "augment" and manifest["metrics"]["augmented"] == len(new)
    assert json.loads((out / "report.json").read_text())["methods"]["eda"]["records_per_s"] > 0


@needs_wordnet
def test_code_blocks_numbers_and_entities_survive_untouched(data_dir, tmp_path):
    out = tmp_path / "augmented"
    eda = {"num_aug": 8, "synonym": 0.5, "insert": 0.5, "swap": 0.5, "delete": 0.5}
    augment.run(config(eda=eda), data_dir, out)
    with_code = [r for r in augmented(out) if r["meta"]["origin"] == train_records()[4]["id"]]
    assert len(with_code) >= 4  # heavy rewrites (half the words), yet every variant keeps the block byte for byte
    for rec in with_code:
        user = rec["messages"][1]["content"]
        assert CODE in user and "1.7" in user and user != EN_QUESTIONS[4]
    hearth = [r for r in augmented(out) if r["meta"]["origin"] == train_records()[5]["id"]]
    assert hearth and all("Lumo Hearth" in r["messages"][1]["content"] and "230" in r["messages"][1]["content"]
                          for r in hearth)


def _leak_free(out: Path, cfg: AugmentConfig) -> None:
    """Validate's own leakage columns on the step's output: no augmented train record leaks."""
    splits = load_splits(out, "python -m steps.augment")
    df = record_frame(splits)
    texts = [content_text(r) for recs in splits.values() for r in recs]
    train, evals = df.index[df.split == "train"], df.index[df.split != "train"]
    leakage_columns(df, train, evals, texts, minhash_signatures(texts), {}, cfg)
    ids = {r["id"] for r in augmented(out)}
    assert not df[(df.leaked == 1) & df.id.isin(ids)].size


@needs_wordnet
def test_an_augmented_record_never_leaks_into_validation_or_test(data_dir, tmp_path):
    cfg = config()
    first = augment.run(cfg, data_dir, tmp_path / "first")
    assert first.report["augmented"] > 0
    # Plant a test record that is exactly what EDA made of the long limescale question.
    victim = next(r for r in augmented(tmp_path / "first") if r["meta"]["origin"] == train_records()[0]["id"])
    planted = sft(victim["messages"][1]["content"], "Use the descaler in the box.", 7, "eval_test")
    atomic_write_jsonl(data_dir / "test.jsonl", eval_records("test") + [planted])
    out = tmp_path / "second"
    augment.run(cfg, data_dir, out)
    rejected = {row["record"]["id"]: row for row in read_jsonl(out / "rejected.jsonl")}
    assert rejected[victim["id"]]["reason"] == "leak" and planted["id"] in rejected[victim["id"]]["detail"]
    assert victim["id"] not in {r["id"] for r in augmented(out)}
    _leak_free(out, cfg)


def test_similarity_filter_drops_a_drifted_paraphrase():
    origin = sft("How do I descale my kettle with citric acid?", "Fill, boil, rinse.", 0)

    def cand(text: str, k: int) -> Candidate:
        rec = json.loads(json.dumps(origin))
        rec["messages"][1]["content"], rec["id"] = text, f"c{k}"
        return Candidate(rec, origin, "backtranslate", "test", [("messages", 1)])

    faithful = cand("How can I descale my kettle using citric acid?", 0)
    drifted = cand("What is the capital city of France?", 1)
    verdicts = gates.similarity_rule([faithful, drifted], 0.7, gates.load_encoder)
    assert verdicts[0] == "" and faithful.record["meta"]["augment_similarity"] > 0.8
    assert "below min_similarity 0.7" in verdicts[1]


@needs_wordnet
def test_the_step_is_deterministic_under_a_seed(data_dir, tmp_path):
    cfg = config(eda={"num_aug": 2})
    augment.run(cfg, data_dir, tmp_path / "a")
    shuffled = list(reversed(read_jsonl(data_dir / "train.jsonl")))  # per-record RNG: order does not matter
    atomic_write_jsonl(data_dir / "train.jsonl", shuffled)
    augment.run(cfg, data_dir, tmp_path / "b")
    by_id = lambda out: {r["id"]: r for r in augmented(out)}  # noqa: E731
    assert by_id(tmp_path / "a") == by_id(tmp_path / "b")
    augment.run(config(eda={"num_aug": 2}, seed=7), data_dir, tmp_path / "c")
    assert by_id(tmp_path / "c") != by_id(tmp_path / "a")


@needs_wordnet
def test_replay_data_is_kept_as_it_is(data_dir, tmp_path):
    """Records of a replay dataset (general data against forgetting) are trained as they are, never rewritten,
    and do not raise the cap on augmented records."""
    recs = read_jsonl(data_dir / "train.jsonl")
    for r in recs[:3]:
        r["meta"]["replay"] = True
    atomic_write_jsonl(data_dir / "train.jsonl", recs)
    result = augment.run(config(), data_dir, tmp_path / "out")
    origins = {r["meta"]["origin"]["id"] if isinstance(r["meta"]["origin"], dict) else r["meta"]["origin"]
               for r in augmented(tmp_path / "out")}
    assert origins and not origins & {r["id"] for r in recs[:3]}
    assert result.report["skipped"]["replay data (ingest.datasets replay: true), kept as it is"] == 3


def test_disabled_copies_every_split_through_unchanged(data_dir, tmp_path):
    out = tmp_path / "augmented"
    result = augment.run(config(enabled=False), data_dir, out)
    for name in ("train", "validation", "test", "heldout"):
        assert (out / f"{name}.jsonl").read_bytes() == (data_dir / f"{name}.jsonl").read_bytes()
    assert result.report["augmented"] == 0 and not result.report["enabled"]
    assert (out / "rejected.jsonl").read_text() == "" and (out / "manifest.json").is_file()


@needs_wordnet
def test_cap_keeps_first_variants_and_rejects_the_rest_with_reason(data_dir, tmp_path):
    out = tmp_path / "augmented"
    result = augment.run(config(eda={"num_aug": 3}, max_fraction=0.2), data_dir, out)
    limit = int(0.2 * len(train_records()) / 0.8)  # augmented records are at most 20% of the output train split
    assert result.report["augmented"] == limit and result.report["augmented_fraction"] <= 0.2
    assert result.report["rejected"]["cap"] > 0
    assert len({r["meta"]["origin"] for r in augmented(out)}) == limit  # one per origin before any second


@needs_apertium
def test_apertium_back_translation_round_trips_english_and_skips_chinese(data_dir, tmp_path):
    out = tmp_path / "augmented"
    result = augment.run(config(methods=["backtranslate"]), data_dir, out)
    new = augmented(out)
    assert new and all(r["meta"]["augment_op"] == "apertium:en>es>en" for r in new)
    code = [r for r in new if r["meta"]["origin"] == train_records()[4]["id"]]
    assert code and CODE in code[0]["messages"][1]["content"] and "1.7" in code[0]["messages"][1]["content"]
    assert any("apertium has no round trip for zh" in k for k in result.report["skipped"])


def test_config_errors_name_the_key_and_the_fix():
    with pytest.raises(ConfigError, match="augment.methods: unknown"):
        config(methods=["magic"])
    with pytest.raises(ConfigError, match="max_fraction: is a fraction"):
        config(max_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown key 'min_similarty'"):
        config(min_similarty=0.5)
    with pytest.raises(ConfigError, match="self_instruct: enabled needs base_url"):
        config(self_instruct={"enabled": True})
    with pytest.raises(ConfigError, match="protect_patterns"):
        config(protect_patterns=["(unclosed"])


def test_protected_spans_cover_code_numbers_placeholders_and_terms():
    pattern = span_pattern(terms=["Lumo Hearth", "电水壶"])
    text = "Run `make`, mail [EMAIL] about the Lumo Hearth v1.2 at https://lumo.example/x: 30秒 电水壶"
    spans = pattern.findall(text)
    assert spans == ["`make`", "[EMAIL]", "Lumo Hearth", "v1.2", "https://lumo.example/x", "30", "电水壶"]


# ---------------------------------------------------------------- a live OpenAI-compatible endpoint

EN_ES = {"how": "cómo", "do": "hago", "i": "yo", "clean": "limpio", "the": "el", "kettle": "hervidor",
         "limescale": "cal", "why": "por qué", "does": "hace", "switch": "apaga", "off": "fuera"}
ES_EN = {"cómo": "how", "hago": "do", "yo": "I", "limpio": "wash", "el": "the", "hervidor": "boiler",
         "cal": "scale", "por qué": "why", "hace": "does", "apaga": "turn", "fuera": "off"}
TASKS = [
    {"instruction": "Explain how to store the kettle during a long holiday away from home.", "input": "",
     "output": "Empty it, dry it and unplug the base."},
    {"instruction": EN_QUESTIONS[0], "input": "", "output": "copy of a seed"},  # not novel: ROUGE-L 1.0
    {"instruction": "Describe the picture of the kettle base.", "input": "", "output": "no"},  # a text model cannot
    {"instruction": "List three ways to reduce limescale in hard water areas.", "input": "", "output": ""},  # empty
]


def _fake_llm(body: dict) -> str:
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    user = body["messages"][-1]["content"]
    if system.startswith("Translate"):
        table = EN_ES if "from English to Spanish" in system else ES_EN
        return " ".join(table.get(w.lower(), w) for w in user.split(" "))
    return "Here you are:\n```json\n" + json.dumps(TASKS) + "\n```"


def _app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> dict:
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": _fake_llm(body)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


@contextlib.contextmanager
def serving() -> Iterator[str]:
    """The fake LLM under a real uvicorn in a thread on a free loopback port; yields its /v1 URL."""
    from tests.openai_server import serving as serve_app

    with serve_app(_app(), lifespan="off") as base:
        yield f"{base}/v1"


def test_llm_back_translation_and_self_instruct_through_a_live_endpoint(data_dir, tmp_path):
    out = tmp_path / "augmented"
    with serving() as url:
        cfg = config(methods=["backtranslate"], languages=["en"],
                     backtranslate={"engine": "openai", "base_url": url, "model": "fake", "pivots": {"en": "es"}},
                     self_instruct={"enabled": True, "base_url": url, "model": "fake", "num_prompts": 1})
        result = augment.run(cfg, data_dir, out)
    new = {r["id"]: r for r in augmented(out)}
    bt = [r for r in new.values() if r["meta"]["augment"] == "backtranslate"]
    assert any(r["messages"][1]["content"].lower().startswith("how do i wash the scale from") for r in bt)
    assert all(r["meta"]["augment_op"] == "openai:en>es>en" for r in bt)
    generated = [r for r in read_jsonl(out / "train.jsonl") if r["meta"].get("generated")]
    assert [r["messages"][1]["content"] for r in generated] == [TASKS[0]["output"]]
    assert generated[0]["meta"]["augment"] == "self_instruct" and len(generated[0]["meta"]["seeds"]) == 3
    why = {row["record"]["messages"][0]["content"]: (row["reason"], row["detail"])
           for row in read_jsonl(out / "rejected.jsonl") if row["method"] == "self_instruct"}
    assert why[TASKS[1]["instruction"]][0] == "duplicate" and "ROUGE-L" in why[TASKS[1]["instruction"]][1]
    assert why[TASKS[2]["instruction"]][0] == "format" and why[TASKS[3]["instruction"]][0] == "format"
    assert result.report["methods"]["self_instruct"]["accepted"] == 1
