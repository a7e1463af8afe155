"""steps.train on tiny real things: a 2-layer Llama, a local tokenizer, ten records.

Each method (full, freeze, lora, qlora, dora, prefix, prompt, ia3) trains a few steps of sft;
stages pt and cls do the same. Every run must log a loss, change exactly the parameters it
trains (snapshot before and after), and publish model, tokenizer, chat template, generation
config and manifest. Two integration tests do LoRA and QLoRA on the real SmolLM2-135M.
Anchor: trl tests/test_sft_trainer.py::test_train.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from steps.core.config import ConfigError, load_section
from steps.train import main, run
from steps.training.config import TrainConfig
from tests.helpers import cfg_of, record, write_split


class Snapshot(TrainerCallback):
    """Copies every parameter when training starts and ends."""

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kw):
        self.changed = {n for n, p in model.named_parameters() if not torch.equal(self.before[n], p.detach().float())}


@pytest.fixture(scope="module")
def pt_data(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("pt"), [
        record("text", i, text=f"The quick brown fox number {i} jumps over the lazy dog.") for i in range(10)
    ])  # fmt: skip


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory) -> Path:
    words = ["good", "great", "bad", "terrible"]
    return write_split(tmp_path_factory.mktemp("cls"), [
        record("cls", i, text=f"That was {words[i % 4]}!", label="positive" if i % 4 < 2 else "negative") for i in range(10)
    ])  # fmt: skip


def train(cfg: TrainConfig, data: Path, out: Path) -> tuple[dict, Snapshot]:
    snap = Snapshot()
    result = run(cfg, data, out, callbacks=(snap,))
    assert result.out_dir == out
    return result.metrics, snap


def check_common(metrics: dict, snap: Snapshot, out: Path, generative: bool = True) -> dict:
    """Loss logged, exactly the trainable parameters changed, and the output folder complete."""
    assert metrics["train_loss"]["logged"] >= 1 and math.isfinite(metrics["train_loss"]["first"])
    assert metrics["eval_loss"] is not None and math.isfinite(metrics["eval_loss"])
    assert snap.trainable and snap.changed == snap.trainable, sorted(snap.trainable ^ snap.changed)[:5]
    assert 0 < metrics["trainable_params"] <= metrics["total_params"]
    assert metrics["steps"] == 3 and metrics["tokens_seen"] > 0 and metrics["peak_memory_mb"] > 0
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "manifest.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    for ckpt in (out / "checkpoints").glob("checkpoint-*"):  # every checkpoint serves the way it was trained
        wanted = ("tokenizer.json", "chat_template.jinja") + (("generation_config.json",) if generative else ())
        assert all((ckpt / name).is_file() for name in wanted), sorted(p.name for p in ckpt.iterdir())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["step"] == "train" and manifest["metrics"]["train_loss"] == metrics["train_loss"]
    assert not list(out.parent.glob(f".{out.name}.*"))  # the staging folder was swapped in, none left over
    if generative:
        gen = json.loads((out / "generation_config.json").read_text())
        tok = json.loads((out / "tokenizer_config.json").read_text())
        assert tok["pad_token"] == "<|pad|>" and tok["eos_token"] == "<|im_end|>"
        assert gen["eos_token_id"] == 2 and gen["pad_token_id"] == 0  # tiny ids: <|im_end|>, <|pad|>
    return manifest


ADAPTER_PARAM = {"lora": "lora_", "qlora": "lora_", "dora": "lora_magnitude_vector", "prefix": "prompt_encoder",
                 "prompt": "prompt_encoder", "ia3": "ia3_l"}  # fmt: skip


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "qlora", "dora", "prefix", "prompt", "ia3"])
def test_sft_method_trains_what_it_should(method, tiny_model_dir, sft_data, tmp_path):
    out = tmp_path / "out"
    metrics, snap = train(cfg_of(tiny_model_dir, stage="sft", method=method), sft_data, out)
    check_common(metrics, snap, out)
    if method == "full":
        assert snap.trainable == set(snap.before) and metrics["trainable_params"] == metrics["total_params"]
        assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    elif method == "freeze":  # top layer of two, plus the final norm; embeddings (tied lm_head) stay put
        assert snap.trainable == {n for n in snap.before if n.startswith("model.layers.1.") or n == "model.norm.weight"}
        assert (out / "model.safetensors").is_file()
    else:
        assert all(ADAPTER_PARAM[method].split("_")[0] in n for n in snap.trainable)
        assert any(ADAPTER_PARAM[method] in n for n in snap.trainable)
        assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
        assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny_model_dir
    if method == "qlora":  # the base is 4-bit: two weights per uint8, so half the elements, and frozen
        assert metrics["packing"] and 0 < metrics["padding_efficiency"] <= 1
        assert any(n.endswith("q_proj.base_layer.weight") and snap.before[n].numel() < 64 * 64 for n in snap.before)
    if method in ("prefix", "prompt"):
        assert not metrics["packing"]  # prompt learning ignores position_ids, so it pads instead of packing


def test_lora_adapter_reloads_onto_its_base(tiny_model_dir, sft_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    cfg = cfg_of(tiny_model_dir, method="lora", lora={"r": 4, "target_modules": ["q_proj", "v_proj"]})
    metrics, _ = train(cfg, sft_data, out)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    targets = {n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}
    assert targets == {"q_proj", "v_proj"}


def test_init_from_an_adapter_trains_on_the_merged_model(tiny_model_dir, sft_data, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("TUNEGATE_CACHE", str(tmp_path / "cache"))
    train(cfg_of(tiny_model_dir, method="lora"), sft_data, tmp_path / "first")
    metrics, snap = train(cfg_of(tiny_model_dir, method="lora", init_from=str(tmp_path / "first")), sft_data, tmp_path / "second")
    assert snap.changed == snap.trainable
    merged = json.loads((tmp_path / "second" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(merged).parent == tmp_path / "cache" / "merged"  # a folder that outlives the run
    a, b = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoModelForCausalLM.from_pretrained(merged)
    assert not torch.equal(a.model.layers[0].self_attn.q_proj.weight, b.model.layers[0].self_attn.q_proj.weight)


def test_pt_stage(tiny_model_dir, pt_data, tmp_path):
    out = tmp_path / "out"
    metrics, snap = train(cfg_of(tiny_model_dir, stage="pt", method="lora"), pt_data, out)
    check_common(metrics, snap, out)
    assert metrics["packing"] and 0 < metrics["padding_efficiency"] <= 1


@pytest.mark.parametrize("method", ["full", "lora"])
def test_cls_stage(method, tiny_model_dir, cls_data, tmp_path):
    out = tmp_path / "out"
    metrics, snap = train(cfg_of(tiny_model_dir, stage="cls", method=method), cls_data, out)
    check_common(metrics, snap, out, generative=False)
    assert json.loads((out / "labels.json").read_text()) == {"0": "negative", "1": "positive"}
    assert metrics["data"]["labels"] == ["negative", "positive"]
    assert any("score" in n for n in snap.trainable)  # the new head trains, also under LoRA
    if method == "lora":
        assert (out / "adapter_model.safetensors").is_file()


def test_wandb_offline_run_files_and_no_key_in_manifest(tiny_model_dir, sft_data, tmp_path, monkeypatch):
    key = "0123456789abcdef0123456789abcdef01234567"  # a fake key: offline mode never sends it
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    out = tmp_path / "out"
    run(cfg_of(tiny_model_dir, method="lora", tracking="wandb"), sft_data, out)
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    text = (out / "manifest.json").read_text()
    assert key not in text
    assert json.loads(text)["metrics"]["tracking_dir"].startswith(str(tmp_path / "wb"))


# --- wrong params fail with the key named, before any training ---------------------------------


def test_qlora_without_quantisation_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.quant: qlora needs 4-bit.*set quant: nf4 or auto"):
        TrainConfig(method="qlora", quant="none")


def test_unknown_stage_and_key_are_named():
    with pytest.raises(ConfigError, match=r"train\.stage: unknown value 'sfx'"):
        load_section(TrainConfig, "train", {"train": {"stage": "sfx"}})
    with pytest.raises(ConfigError, match=r"unknown key 'rank'"):
        load_section(TrainConfig, "train", {"train": {"lora": {"rank": 8}}})
    with pytest.raises(ConfigError, match=r"train\.method: prefix is supported for stages sft and pt"):
        TrainConfig(stage="cls", method="prefix")


def test_unknown_target_module_fails_before_training(tiny_model_dir, sft_data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        run(cfg_of(tiny_model_dir, method="lora", lora={"target_modules": ["q_proj", "qkv_proj"]}), sft_data, out)
    msg = str(err.value)
    assert "train.lora.target_modules" in msg and "'qkv_proj'" in msg and "q_proj" in msg and "down_proj" in msg
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_main_prints_one_line_and_returns_2(tiny_model_dir, sft_data, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"base: {{base_model: {tiny_model_dir}}}\ntrain: {{method: qlora, quant: none}}\n")
    assert main([str(sft_data), str(tmp_path / "out"), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: train.quant") and "\n" not in err


# --- the real SmolLM2-135M-Instruct ------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_smollm2(method, sft_data, tmp_path):
    out = tmp_path / "out"
    cfg = cfg_of("smollm2-135m-instruct", method=method, max_steps=2, batch_size=2, learning_rate=2e-4, lora={"r": 4})
    metrics, snap = train(cfg, sft_data, out)
    assert metrics["train_loss"]["logged"] == 2 and math.isfinite(metrics["train_loss"]["last"])
    assert snap.changed == snap.trainable and all("lora_" in n for n in snap.trainable)
    tok = json.loads((out / "tokenizer_config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    assert tok["eos_token"] == "<|im_end|>" and tok["pad_token"] == "<|endoftext|>"  # a spare token pads, not eos
    assert gen["eos_token_id"] == 2 and gen["pad_token_id"] == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
