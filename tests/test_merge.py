"""merge step: merged logits equal the adapter's, the gate is obeyed, nothing half-published.

Candidates are real PEFT adapters on the tiny Llama of tests/tiny.py, built with non-zero B
(``init_lora_weights=False``) so merging really changes the weights; gates and manifests are
written with the project's own helpers.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from steps.core.config import ConfigError, load_section
from steps.core.io import atomic_write_json, atomic_write_jsonl
from steps.core.manifest import write_manifest
from steps.merge import check_gate, main, run
from steps.models.merge_config import MergeConfig
from steps.models.merging import MergeError
from tests.tiny import CHATML_TEMPLATE, save_tiny_model

CONVERSATION = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]
PROBE = "<|im_start|>user\nHello! How can I help you today?<|im_end|>\n<|im_start|>assistant\nThe capital is Paris.<|im_end|>"


def _lora(**kw):
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM", **kw)


def _peft(kind: str):
    from peft import IA3Config, PrefixTuningConfig

    return {
        "lora": lambda: _lora(),
        "dora": lambda: _lora(use_dora=True),
        "ia3": lambda: IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                                 init_ia3_weights=False, task_type="CAUSAL_LM"),  # fmt: skip
        "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
        "tied": lambda: _lora_on(["q_proj", "lm_head"]),  # lm_head shares its weight with the embeddings
    }[kind]()


def _lora_on(targets, task_type="CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=4, target_modules=targets, init_lora_weights=False, task_type=task_type)


def candidate(tmp: Path, base: str, kind: str = "lora", method: str | None = None, quantized: bool = False) -> Path:
    """A train-step output folder: adapter (or full model), tokenizer, serving files, data, manifest."""
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BitsAndBytesConfig,
        GenerationConfig,
    )

    model_dir, data = tmp / "models" / "train", tmp / "data"
    for split in ("train", "validation", "test"):
        rows = [{"id": f"{split}{i}", "kind": "cls", "text": "good, great", "label": "pos"} if kind == "cls" else
                {"id": f"{split}{i}", "kind": "sft", "messages": CONVERSATION} for i in range(3)]  # fmt: skip
        atomic_write_jsonl(data / f"{split}.jsonl", rows)
    if kind == "full":
        save_tiny_model(model_dir)
        (model_dir / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    elif kind == "cls":  # a classifier: LoRA plus the trained score head (modules_to_save)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2, id2label={0: "neg", 1: "pos"})
        get_peft_model(model, _lora_on("all-linear", task_type="SEQ_CLS")).save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(base).save_pretrained(model_dir)
        (model_dir / "labels.json").write_text(json.dumps(model.config.id2label))
    else:
        nf4 = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch.float32}
        quant = BitsAndBytesConfig(**nf4) if quantized else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, quantization_config=quant)
            get_peft_model(model, _peft(kind)).save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(base).save_pretrained(model_dir)
    (model_dir / "chat_template.jinja").write_text(CHATML_TEMPLATE, encoding="utf-8")
    GenerationConfig(eos_token_id=[2, 3], pad_token_id=0, max_new_tokens=7).save_pretrained(model_dir)  # as train writes it
    inputs = {s: data / f"{s}.jsonl" for s in ("train", "validation")}
    config = {"base_model": base, "stage": "cls" if kind == "cls" else "sft", "method": method or kind, "init_from": None}
    metrics = {"steps": 3, "eval_loss": 1.5, "train_loss": {"last": 1.7}}
    write_manifest(model_dir, "train", config, inputs, {p.name: p for p in model_dir.iterdir()}, metrics, time.time())
    return model_dir


def gate(tmp: Path, model_dir: Path, passed: bool = True, candidate_dir: Path | None = None) -> Path:
    evaluate_dir = tmp / "models" / "evaluate"
    reasons = ["test_perplexity 9.1 <= base 12.3" if passed else "test_perplexity 14.0 > base 12.3"]
    metrics = {"test_perplexity": 9.1, "rougeL": 0.41}
    atomic_write_json(evaluate_dir / "gate.json", {"passed": passed, "reasons": reasons, "candidate_dir": str(candidate_dir or model_dir),
                                               "metrics": metrics})  # fmt: skip
    atomic_write_json(evaluate_dir / "metrics.json", {"candidate": metrics, "base": {"test_perplexity": 12.3},
                                                  "gate": {"passed": passed, "reasons": reasons}})  # fmt: skip
    write_manifest(evaluate_dir, "evaluate", {}, {"candidate": model_dir, "test": tmp / "data" / "test.jsonl"}, {}, {}, time.time())
    return evaluate_dir


def logits(model, text: str = PROBE):
    return model(input_ids=torch.tensor([_ids(text)])).logits


def _ids(text: str) -> list[int]:
    from tests.tiny import tiny_tokenizer

    return tiny_tokenizer()(text, add_special_tokens=False)["input_ids"]


def adapter_model(base: str, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter)).eval()


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3"])
def test_merged_equals_adapter(tmp_path, tiny_model_dir, kind):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model_dir = candidate(tmp_path, tiny_model_dir, kind)
    out = tmp_path / "models" / "merged"
    result = run(MergeConfig(base_model=tiny_model_dir), model_dir, gate(tmp_path, model_dir), out)

    m = result.metrics
    assert m["merged"] is True and m["max_abs_logit_diff"] <= 1e-2 and m["samples_from"].endswith("test.jsonl")
    assert m["max_abs_adapter_effect"] > 100 * m["max_abs_logit_diff"]  # the check can tell a merge from no merge
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    with torch.no_grad():
        want = logits(adapter_model(tiny_model_dir, model_dir))
        assert torch.allclose(logits(merged), want, atol=1e-4, rtol=0)
        assert not torch.allclose(logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir)), want, atol=1e-2)  # the merge changed weights
    assert AutoTokenizer.from_pretrained(out).chat_template == (out / "chat_template.jinja").read_text() == CHATML_TEMPLATE
    assert GenerationConfig.from_pretrained(out).eos_token_id == [2, 3]  # the trained end-of-turn, not the base's
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["step"] == "merge" and manifest["metrics"]["params"] == sum(p.numel() for p in merged.parameters())
    card = (out / "README.md").read_text()
    train_sha = json.loads((model_dir / "manifest.json").read_text())["input_digests"]["train"]
    assert train_sha in card and "test_perplexity 9.1 <= base 12.3" in card


def test_classifier_merges_with_its_head(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model_dir = candidate(tmp_path, tiny_model_dir, "cls", method="lora")
    out = tmp_path / "merged"
    result = run(MergeConfig(base_model=tiny_model_dir), model_dir, gate(tmp_path, model_dir), out)
    assert result.metrics["merged"] and result.metrics["max_abs_logit_diff"] <= 1e-4
    assert json.loads((out / "labels.json").read_text()) == {"0": "neg", "1": "pos"}
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    adapter = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2), str(model_dir)).eval()
    with torch.no_grad():
        assert torch.allclose(logits(merged), logits(adapter), atol=1e-4, rtol=0)
    assert "pipeline_tag: text-classification" in (out / "README.md").read_text()


def test_refuses_without_a_passing_gate(tmp_path, tiny_model_dir):
    model_dir = candidate(tmp_path, tiny_model_dir)
    out = tmp_path / "models" / "merged"
    out.mkdir(parents=True)
    (out / "production.txt").write_text("v1")
    evaluate_dir = tmp_path / "models" / "evaluate"
    cases = {
        "not found": lambda: None,
        "passed is False": lambda: gate(tmp_path, model_dir, passed=False),
        "that verdict is about another model": lambda: gate(tmp_path, model_dir, candidate_dir=tmp_path / "other"),
        "changed after evaluation": lambda: (gate(tmp_path, model_dir), (model_dir / "adapter_model.safetensors").write_bytes(b"x")),
    }
    for expected, make in cases.items():
        make()
        with pytest.raises(MergeError, match=expected) as err:
            run(MergeConfig(base_model=tiny_model_dir), model_dir, evaluate_dir, out)
        assert "gate.json" in str(err.value) or "manifest.json" in str(err.value)
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
        assert [p.name for p in out.iterdir()] == ["production.txt"]


def test_qlora_merges_into_full_precision_base(tmp_path, tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    model_dir = candidate(tmp_path, tiny_model_dir, "lora", method="qlora", quantized=True)  # trained on the NF4 base
    (tmp_path / "data" / "test.jsonl").unlink()  # no test split at hand: fixed sample texts
    out = tmp_path / "merged"
    result = run(MergeConfig(base_model=tiny_model_dir), model_dir, gate(tmp_path, model_dir), out)

    assert result.metrics["merged"] and result.metrics["base_dtype"] == "float32" and result.metrics["samples_from"] == "fixed"
    with torch.no_grad():  # equal to the adapter on the full-precision base
        assert torch.allclose(logits(AutoModelForCausalLM.from_pretrained(out)), logits(adapter_model(tiny_model_dir, model_dir)), atol=1e-4, rtol=0)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.float32}
    assert "QLoRA" in (out / "README.md").read_text()

    quantized = tmp_path / "nf4-base"  # a base stored 4-bit is refused, whatever the method
    shutil.copytree(tiny_model_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    stored_4bit = {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
    (quantized / "config.json").write_text(json.dumps(config | stored_4bit))
    adapter_cfg = json.loads((model_dir / "adapter_config.json").read_text())
    (model_dir / "adapter_config.json").write_text(json.dumps(adapter_cfg | {"base_model_name_or_path": str(quantized)}))
    with pytest.raises(MergeError, match="stored quantized"):
        run(MergeConfig(base_model=tiny_model_dir), model_dir, gate(tmp_path, model_dir), tmp_path / "merged2")
    assert not (tmp_path / "merged2").exists()


def test_keep_adapter_publishes_it_with_its_base(tmp_path, tiny_model_dir):
    model_dir = candidate(tmp_path, tiny_model_dir, "prefix")
    evaluate_dir, out = gate(tmp_path, model_dir), tmp_path / "merged"
    with pytest.raises(MergeError, match="keep_adapter: true"):
        run(MergeConfig(base_model=tiny_model_dir), model_dir, evaluate_dir, out)
    assert not out.exists()

    result = run(MergeConfig(base_model=tiny_model_dir, keep_adapter=True), model_dir, evaluate_dir, out)
    assert result.metrics["merged"] is False and result.metrics["max_abs_logit_diff"] is None
    pointer = json.loads((out / "base_model.json").read_text())
    assert pointer["base_model"] == tiny_model_dir and pointer["base_model_path"] == tiny_model_dir
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (out / name).read_bytes() == (model_dir / name).read_bytes()
    assert (out / "chat_template.jinja").is_file() and "library_name: peft" in (out / "README.md").read_text()
    with torch.no_grad():  # the published pair serves: base from the pointer, adapter from OUT_DIR
        published = adapter_model(pointer["base_model_path"], out)
        assert torch.equal(logits(published), logits(adapter_model(tiny_model_dir, model_dir)))


def test_merge_that_changes_the_model_fails_without_publishing(tmp_path, tiny_model_dir):
    """A LoRA on lm_head, whose weight the tiny model ties to the embeddings: merging changes both."""
    model_dir = candidate(tmp_path, tiny_model_dir, "tied")
    out = tmp_path / "merged"
    with pytest.raises(MergeError, match=r"differ from the adapter model's by \d") as err:
        run(MergeConfig(base_model=tiny_model_dir), model_dir, gate(tmp_path, model_dir), out)
    assert "nothing was published" in str(err.value)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_full_model_published_as_trained_from_the_cli(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    model_dir = candidate(tmp_path, tiny_model_dir, "full", method="full")
    evaluate_dir = gate(tmp_path, model_dir)
    params = tmp_path / "params.yaml"
    params.write_text(f"base:\n  base_model: {model_dir}\nmerge:\n  tolerance: 0.01\n")
    assert main([str(model_dir), str(evaluate_dir), str(tmp_path / "merged"), "--params", str(params)]) == 2  # trained on another base
    assert "config.base_model" in capsys.readouterr().err

    params.write_text(f"base:\n  base_model: {tiny_model_dir}\nmerge:\n  tolerance: 0.01\n")
    assert main([str(model_dir), str(evaluate_dir), str(tmp_path / "merged"), "--params", str(params)]) == 0
    out = tmp_path / "merged"
    assert not (out / "checkpoints").exists() and (out / "chat_template.jinja").is_file()
    assert (out / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    assert json.loads((out / "manifest.json").read_text())["metrics"]["max_abs_logit_diff"] == 0.0


def test_config_is_checked():
    assert load_section(MergeConfig, "merge", {"base": {"base_model": "x", "seed": 1}, "merge": {"keep_adapter": True}}).keep_adapter
    with pytest.raises(ConfigError, match="did you mean 'tolerance'"):
        load_section(MergeConfig, "merge", {"merge": {"tolerence": 0.1}})
    with pytest.raises(ConfigError, match="merge.tolerance"):
        MergeConfig(tolerance=-1.0)


def test_check_gate_returns_the_verdict(tmp_path, tiny_model_dir):
    model_dir = candidate(tmp_path, tiny_model_dir)
    assert check_gate(model_dir, gate(tmp_path, model_dir))["reasons"] == ["test_perplexity 9.1 <= base 12.3"]
