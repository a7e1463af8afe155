"""Preference and RL stages on tiny real models with the real TRL trainers: two steps each.

Every training test asserts that a loss (or reward) was logged and that trainable parameters
moved. The reward model the RL tests score with is the output of an rm run (a LoRA adapter on
a saved tiny base), so the chain rm -> grpo/rloo is exercised through ``load_reward_model``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from steps.core.config import ConfigError
from steps.core.schema import make_record
from tests.tiny import tiny_causal_lm, tiny_seq_cls, tiny_tokenizer

torch = pytest.importorskip("torch")
train_mod = pytest.importorskip("steps.train")
rlhf = pytest.importorskip("steps.training.rlhf.build")
from steps.models.adapters import build_peft_config  # noqa: E402
from steps.models.builders import common_args  # noqa: E402
from steps.training.config import LoraSettings, PreferenceSettings, RLSettings, TrainConfig  # noqa: E402

QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris.", "I do not know."),
    ("Say hello.", "Hello! How can I help you today?", "No."),
    ("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
    ("Is the fox quick?", "Yes, the quick brown fox jumps.", "The dog is lazy."),
]


def _msg(role: str, content: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


def preference_records() -> list[dict]:
    return [
        make_record("preference", dataset="t", source="p", row=i, fmt="t", messages=_msg("user", q),
                    chosen=_msg("assistant", good), rejected=_msg("assistant", bad))
        for i, (q, good, bad) in enumerate(QUESTIONS)
    ]  # fmt: skip


def feedback_records() -> list[dict]:
    return [
        make_record("feedback", dataset="t", source="f", row=2 * i + ok, fmt="t", messages=_msg("user", q),
                    completion=_msg("assistant", good if ok else bad), label=bool(ok))
        for i, (q, good, bad) in enumerate(QUESTIONS) for ok in (1, 0)
    ]  # fmt: skip


def sft_records() -> list[dict]:
    return [
        make_record("sft", dataset="t", source="s", row=i, fmt="t",
                    messages=_msg("user", q) + _msg("assistant", good))
        for i, (q, good, _) in enumerate(QUESTIONS)
    ]  # fmt: skip


def make_cfg(stage: str, method: str = "lora", **rl: object) -> object:
    """A TrainConfig sized for two CPU steps; the learning rate is high so two steps visibly move weights."""
    return TrainConfig(
        stage=stage, method=method, max_steps=2, batch_size=2, learning_rate=1e-2, warmup_ratio=0.0,
        lr_scheduler="constant", logging_steps=1, eval_steps=2, save_steps=100, max_length=128,
        tracking="none", precision="fp32", lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        rl=RLSettings(**{"num_generations": 2, "max_completion_length": 8, **rl}),
    )  # fmt: skip


def build(cfg, model, tok, train, tmp_path, evals=None):  # noqa: ANN001, ANN201
    common = common_args(cfg, tmp_path / "out")
    return rlhf.build_stage_trainer(cfg, model, tok, train, evals, common, build_peft_config(cfg, model))


def trainable(model) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_and_check(trainer, key: str = "loss") -> list[dict]:  # noqa: ANN001
    """Train; assert ``key`` was logged as a finite number and that some trainable weight changed."""
    before = trainable(trainer.model)
    assert before, "nothing is trainable"
    trainer.train()
    logs = [row for row in trainer.state.log_history if key in row]
    assert logs and all(torch.isfinite(torch.tensor(float(row[key]))) for row in logs), trainer.state.log_history
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before), "no trainable parameter changed"
    return logs


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def rm_run(tiny_model_dir, tmp_path_factory):
    """Train a LoRA reward model on the tiny base for two steps and save it like a train output: adapter + tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("rm")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    cfg = make_cfg("rm")
    trainer = build(cfg, model, tok, preference_records(), out, evals=preference_records()[:2])
    before = trainable(trainer.model)
    trainer.train()
    trainer.save_model(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    return trainer, before, out / "model"


def test_available_stages_match_the_pinned_trl():
    # trl==1.16.0 (constraints.txt): every stage but ppo (TRL 1.13+ ships no PPOTrainer), in RLHF_STAGES order.
    assert rlhf.available_stages() == ("dpo", "kto", "orpo", "rm", "grpo", "rloo")


def test_ppo_fails_with_the_fix(tok):
    with pytest.raises(ConfigError, match=r"stage ppo needs a TRL with PPOTrainer.*use grpo or rloo"):
        rlhf.build_stage_trainer(make_cfg("ppo"), None, tok, sft_records(), [], {}, None)


@pytest.mark.parametrize("stage", ["dpo", "orpo", "rm", "kto"])
def test_wrong_data_fails_before_training(stage, tok):
    if stage not in rlhf.available_stages():
        pytest.skip(f"{stage} unavailable in this TRL")
    with pytest.raises(ConfigError, match=rf"train\.stage: stage {stage} trains on .*has none \(4 sft\).*set train\.stage"):
        rlhf.build_stage_trainer(make_cfg(stage), None, tok, sft_records(), [], {}, None)


@pytest.mark.parametrize("path", [None, "does/not/exist"])
def test_grpo_without_reward_model_names_the_key_and_fix(path, tok, tmp_path):
    cfg = make_cfg("grpo", reward_model=path)
    with pytest.raises(ConfigError, match=r"train\.rl\.reward_model.*run the rm stage first"):
        build(cfg, tiny_causal_lm(tok), tok, sft_records(), tmp_path)


def test_rl_batch_must_hold_whole_groups(tok, tmp_path, rm_run):
    cfg = make_cfg("grpo", reward_model=str(rm_run[2]), num_generations=4)  # batch 2 x accum 1 = 2
    with pytest.raises(ConfigError, match=r"train\.rl\.num_generations.*multiple"):
        build(cfg, tiny_causal_lm(tok), tok, sft_records(), tmp_path)


def test_dpo_lora_uses_the_disabled_adapter_as_reference(tok, tmp_path):
    trainer = build(make_cfg("dpo"), tiny_causal_lm(tok), tok, preference_records(), tmp_path,
                    evals=preference_records()[:2])  # fmt: skip
    assert trainer.ref_model is None
    train_and_check(trainer)
    assert any("eval_loss" in row for row in trainer.state.log_history)


def test_dpo_full_trains_against_a_frozen_copy(tok, tmp_path):
    model = tiny_causal_lm(tok)
    trainer = build(make_cfg("dpo", method="full"), model, tok, preference_records(), tmp_path, evals=sft_records())
    assert trainer.eval_dataset is None  # validation holds no pairs: evaluation is off rather than failing
    ref_before = trainable(model)  # the policy's start weights
    train_and_check(trainer)
    ref = dict(trainer.ref_model.named_parameters())
    assert all(torch.equal(ref_before[n], ref[n]) for n in ref_before), "the reference model moved"


@pytest.mark.parametrize("records", [feedback_records, preference_records], ids=["feedback", "from-pairs"])
def test_kto(records, tok, tmp_path):
    trainer = build(make_cfg("kto"), tiny_causal_lm(tok), tok, records(), tmp_path)
    train_and_check(trainer)


def test_kto_rejects_a_dpo_loss(tok, tmp_path):
    cfg = dataclasses.replace(make_cfg("kto"), preference=PreferenceSettings(loss_type="hinge"))
    with pytest.raises(ConfigError, match=r"train\.preference\.loss_type"):
        build(cfg, tiny_causal_lm(tok), tok, preference_records(), tmp_path)


def test_orpo(tok, tmp_path):
    if "orpo" not in rlhf.available_stages():
        pytest.skip("trl.experimental.orpo does not import in this TRL")
    trainer = build(make_cfg("orpo"), tiny_causal_lm(tok), tok, preference_records(), tmp_path)
    train_and_check(trainer)


def test_rm_trains_a_scalar_reward(rm_run, tok):
    trainer, before, _ = rm_run
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert logs and any("eval_loss" in row for row in trainer.state.log_history)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)
    from steps.training.rlhf.online import load_reward_model

    reward, reward_tok = load_reward_model(str(rm_run[2]))
    batch = reward_tok(["Hello!", "The capital of France is Paris."], padding=True, return_tensors="pt")
    assert reward(**batch).logits.shape == (2, 1)  # one score per sequence


def test_rm_needs_a_one_score_classifier(tok, tmp_path):
    with pytest.raises(ConfigError, match=r"stage rm trains a sequence classifier"):
        build(make_cfg("rm"), tiny_seq_cls(tok, num_labels=2), tok, preference_records(), tmp_path)


@pytest.mark.parametrize("stage, method", [("grpo", "lora"), ("rloo", "lora"), ("rloo", "full")])
def test_online_rl_rewarded_by_the_rm_output(stage, method, rm_run, tok, tmp_path):
    """rloo full needs a KL reference that TRL reloads from the model's path: an in-memory model has none."""
    cfg = make_cfg(stage, method=method, reward_model=str(rm_run[2]))
    model = tiny_causal_lm(tok)
    trainer = build(cfg, model, tok, sft_records() + preference_records(), tmp_path, evals=sft_records()[:2])
    assert trainer.args.use_vllm is False and trainer.args.num_generations == 2
    assert model.config._name_or_path == ""  # the temporary reference copy's path is not left behind
    train_and_check(trainer, key="reward")
    assert any("eval_reward" in row for row in trainer.state.log_history)


@pytest.mark.integration
@pytest.mark.parametrize("sft_method", ["full", "lora"])
def test_chain_sft_rm_grpo_from_params_alone(sft_method, tiny_model_dir, tmp_path, monkeypatch):
    """steps.train.run three times, configured only through params: sft, then rm (LoRA) and grpo
    (LoRA) starting from the sft output, grpo scored by the rm output (an adapter on the sft model)."""
    from steps.core.config import load_section
    from steps.core.io import atomic_write_jsonl

    monkeypatch.setenv("TUNEGATE_CACHE", str(tmp_path / "cache"))  # merged adapters land here, not in ~/.cache
    data = tmp_path / "data"
    records = sft_records() + preference_records()
    atomic_write_jsonl(data / "train.jsonl", records)
    atomic_write_jsonl(data / "validation.jsonl", records[:2] + records[-2:])
    fast = {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-2, "warmup_ratio": 0.0, "logging_steps": 1,
            "eval_steps": 2, "save_steps": 2, "max_length": 128, "tracking": "none",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}  # fmt: skip

    def run(out: str, **train: object) -> dict:
        params = {"base": {"base_model": tiny_model_dir, "seed": 3}, "train": {**fast, **train}}
        result = train_mod.run(load_section(TrainConfig, "train", params), data, tmp_path / out)
        assert result.metrics["train_loss"]["logged"] >= 1, result.metrics
        return result.metrics

    run("sft", stage="sft", method=sft_method)
    rm = run("rm", stage="rm", init_from=str(tmp_path / "sft"))
    assert rm["eval_loss"] is not None
    grpo = run("grpo", stage="grpo", init_from=str(tmp_path / "sft"),
               rl={"reward_model": str(tmp_path / "rm"), "num_generations": 2, "max_completion_length": 8})  # fmt: skip
    assert grpo["steps"] == 2 and grpo["trainable_params"] > 0
    log = json.loads((tmp_path / "grpo" / "manifest.json").read_text())
    assert log["config"]["rl"]["reward_model"] == str(tmp_path / "rm")
