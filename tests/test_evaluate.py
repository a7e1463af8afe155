"""The evaluate step on tiny real models: the table, the gate, the judge over HTTP, the report."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from steps import evaluate
from steps.core.config import from_dict
from steps.core.io import atomic_write_json, atomic_write_jsonl
from steps.core.schema import make_record
from steps.evaluation.config import EvaluateConfig
from tests.openai_server import OpenAIServer

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Say hello.", "Hello! How can I help you today?"),
    ("What is 1 + 2?", "1 + 2 = 3."),
    ("Describe the fox.", "The quick brown fox jumps over the lazy dog."),
]
GOOD_JUDGEMENT = '{"accuracy": 4, "completeness": 3, "fluency": 5, "helpfulness": 4, "reason": "fine"}'
REFERENCE_JUDGEMENT = '{"accuracy": 5, "completeness": 5, "fluency": 5, "helpfulness": 5, "reason": "the reference"}'


def _knowing_judge(body: dict) -> str:
    """A judge that knows the references, so it passes calibration: the reference wins; other answers get
    GOOD_JUDGEMENT, and two answers that are both not the reference tie."""
    text = body["messages"][1]["content"]
    reference = text.split("Reference answer:\n", 1)[1].split("\n\n", 1)[0]
    if "Answer to grade:" in text:
        return REFERENCE_JUDGEMENT if text.split("Answer to grade:\n", 1)[1].startswith(reference + "\n") else GOOD_JUDGEMENT
    first, second = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:\n", 1)
    winner = "A" if first == reference else "B" if second.startswith(reference + "\n") else "tie"
    return json.dumps({"winner": winner, "reason": "by the reference"})


def _conv(q: str, a: str | None) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}] + ([{"role": "assistant", "content": a}] if a else [])


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir) -> Path:
    """Validated data (test + held-out), a tiny base model, an equal candidate and a damaged one."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    rec = lambda i, q, a, ds: make_record("sft", dataset=ds, source=ds, row=i, fmt="openai", messages=_conv(q, a))  # noqa: E731
    atomic_write_jsonl(data / "test.jsonl", [rec(i, q, a, "t") for i, (q, a) in enumerate(QA)])
    held = [rec(i, q, a, "h") for i, (q, a) in enumerate(QA[:2])] + [rec(9, "Tell me a story.", None, "h")]
    atomic_write_jsonl(data / "heldout.jsonl", held)
    base = Path(shutil.copytree(tiny_model_dir, root / "base"))  # the project's own copy: _cfg names it
    manifest = {"config": {"base_model": str(base), "stage": "sft"},
                "metrics": {"curve": {"train_loss": [[1, 5.0], [2, 4.5]], "eval_loss": [[2, 4.7]]}}}  # fmt: skip
    same = root / "same"
    shutil.copytree(base, same)
    atomic_write_json(same / "manifest.json", manifest)
    worse = root / "worse"
    model = AutoModelForCausalLM.from_pretrained(str(base))
    with torch.no_grad():
        torch.manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # heavy noise: every text gets less likely
    model.save_pretrained(str(worse))
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "generation")):
            shutil.copy(f, worse / f.name)
    atomic_write_json(worse / "manifest.json", manifest)
    return root


def _cfg(project: Path, gate: dict, judge: dict | None = None) -> EvaluateConfig:
    values = {"base_model": str(project / "base"), "production": "none", "max_examples": 4, "max_new_tokens": 6,
              "batch_size": 4, "worst_examples": 2, "judge": judge or {"mode": "off"}, "gate": gate}  # fmt: skip
    return from_dict(EvaluateConfig, values, "test")


def test_candidate_worse_than_base_fails_the_gate(project, tmp_path):
    cfg = _cfg(project, {"min_gain_vs_base": {"test_perplexity": 0.0}})
    result = evaluate.run(cfg, project / "data", project / "worse", tmp_path / "out")
    assert not result.passed
    assert any(r.startswith("vs_base: test_perplexity") for r in result.reasons)
    assert result.table["candidate"]["test_perplexity"] > result.table["base"]["test_perplexity"]
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate["passed"] is False and gate["reasons"] == result.reasons
    html = (tmp_path / "out" / "report.html").read_text()
    assert "FAIL" in html and "<svg" in html


def test_forgetting_over_the_threshold_fails(project, tmp_path):
    cfg = _cfg(project, {"max_forgetting": {"heldout_perplexity": 0.10}})
    result = evaluate.run(cfg, project / "data", project / "worse", tmp_path / "out")
    assert not result.passed
    [reason] = result.reasons
    assert reason.startswith("forgetting: heldout_perplexity") and "allowed 10.0%" in reason


def test_equal_candidate_passes_with_judge_over_http_and_production(project, tmp_path, monkeypatch):
    cfg = _cfg(project, {"min_gain_vs_base": {"test_perplexity": 0.0}, "floors": {"judge_overall": 3.0}},
               judge={"mode": "both", "max_examples": 2, "max_retries": 1})  # fmt: skip
    with OpenAIServer() as server:
        server.respond(_knowing_judge)  # calibrated first (it prefers references), then it judges the models
        monkeypatch.setenv("TUNEGATE_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("TUNEGATE_JUDGE_MODEL", "judge-test-model")
        result = evaluate.run(cfg, project / "data", project / "same", tmp_path / "out", production_dir=project / "same")
    assert result.passed, result.reasons
    cand, base, prod = result.table["candidate"], result.table["base"], result.table["production"]
    assert cand["test_perplexity"] == pytest.approx(base["test_perplexity"]) == pytest.approx(prod["test_perplexity"])
    assert cand["judge_overall"] == 4.0 and cand["judge_failures"] == 0
    assert cand["judge_trusted"] is True and cand["judge_calibration"] == 1.0
    assert cand["pairwise_win_rate"] == 0.5
    for key in ("bleu", "rougeL", "bertscore_f1", "exact_match", "embedding_similarity", "heldout_perplexity",
                "heldout_bertscore_f1", "safety_hits"):  # fmt: skip
        assert cand[key] is not None, key
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gate"]["passed"] and set(metrics) >= {"candidate", "base", "production", "gate", "signatures"}
    assert metrics["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:")  # sacrebleu's signature string
    assert {"rouge1", "rouge2", "rougeL", "bertscore_f1", "heldout_bertscore_f1", "heldout_rougeL"} <= set(metrics["signatures"])
    assert "Metric signatures" in (out / "report.html").read_text()
    assert json.loads((out / "plots" / "train_loss.json").read_text()) == [
        {"step": 1, "train_loss": 5.0}, {"step": 2, "train_loss": 4.5}]  # fmt: skip
    assert len((out / "examples.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "manifest.json").read_text())["step"] == "evaluate"


def test_a_local_judge_that_fails_calibration_judges_nothing(project, tmp_path):
    cfg = _cfg(project, {}, judge={"mode": "pointwise", "max_examples": 2, "max_retries": 1, "max_tokens": 16})
    result = evaluate.run(cfg, project / "data", project / "same", tmp_path / "out")
    cand = result.table["candidate"]  # the random tiny judge's replies parse, but it cannot tell good from bad
    assert cand["judge_trusted"] is False and cand["judge_calibration"] < 0.8 and "judge_overall" not in cand


def test_missing_train_manifest_is_a_clear_error(project, tmp_path):
    from steps.models.loading import ModelError

    with pytest.raises(ModelError, match="run `tunegate train` first"):
        evaluate.run(_cfg(project, {}), project / "data", project / "base", tmp_path / "out")


def test_an_adapter_is_evaluated_on_the_base_it_was_trained_on(project, tmp_path):
    """adapter_config's base when it is there (an sft model for a dpo adapter), else the train config's start."""
    from steps.models.folders import adapter_base

    sft = project / "same"  # stands in for the model an init_from adapter was trained on
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    atomic_write_json(adapter / "manifest.json", {"config": {"base_model": str(project / "base")}})
    atomic_write_json(adapter / "adapter_config.json", {"base_model_name_or_path": str(sft)})
    assert adapter_base(adapter) == str(sft)
    atomic_write_json(adapter / "adapter_config.json", {"base_model_name_or_path": str(tmp_path / "gone")})
    assert Path(adapter_base(adapter)).resolve() == (project / "base").resolve()
    atomic_write_json(adapter / "manifest.json", {"config": {}})
    with pytest.raises(ValueError, match=f"{adapter} is an adapter whose base model is not here .*{tmp_path / 'gone'}"):
        adapter_base(adapter)


def test_probes_are_answered_with_the_test_prompts_and_checked_per_model(project, tmp_path):
    from steps.models.generation import generate_chat
    from steps.models.loading import load_model, load_tokenizer

    suite = tmp_path / "probes.yaml"
    asked = ["What is the capital of France?", "Say hello.", "Tell me a story.", "Name a colour.", "What is 1 + 2?"]
    suite.write_text("probes:\n" + "".join(f"  - id: p{k}\n    prompt: {q}\n    expect: {{max_length: 1000}}\n" for k, q in enumerate(asked)))
    cfg = from_dict(EvaluateConfig, {**dataclasses.asdict(_cfg(project, {})), "probes": str(suite)}, "test")
    result = evaluate.run(cfg, project / "data", project / "worse", tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["probes"]
    assert [r["id"] for r in rows] == [f"p{k}" for k in range(len(asked))]
    assert result.table["candidate"]["probe_pass_rate"] == 1.0
    for name, folder in (("base", project / "base"), ("candidate", project / "worse")):
        model, tok = load_model(str(folder)).eval(), load_tokenizer(str(folder))
        alone = generate_chat(model, tok, [[{"role": "user", "content": q}] for q in asked], max_new_tokens=6, batch_size=1)
        assert [r[name]["answer"] for r in rows] == alone  # one rolling batch with the test prompts, each answer its own
