"""steps.training.loss: logits only at trained positions, the same loss and gradients as full logits.

A padding-free batch of three packed examples (TRL's own collator) on the tiny Llama, with and
without LoRA: the selective loss equals a manual full-logits cross-entropy over the trained tokens
and SFTTrainer's own compute_loss, to 1e-6, with equal gradients; a padded two-row batch falls
back to SFTTrainer.compute_loss.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from steps.training.loss import SelectiveLossSFTTrainer, selective_lm_loss, trained_positions
from tests.tiny import tiny_causal_lm, tiny_tokenizer

# input_ids, labels: prompt tokens masked (-100), the rest trained, as steps.training.datasets builds them
EXAMPLES = [
    {"input_ids": [5, 17, 30, 41, 52, 63, 74], "labels": [-100, -100, -100, 41, 52, 63, 74]},
    {"input_ids": [8, 19, 21, 33, 45], "labels": [-100, -100, 21, 33, 45]},
    {"input_ids": [11, 12, 13, 14, 15, 16, 90, 91, 92], "labels": [-100, -100, -100, -100, 15, 16, 90, 91, 92]},
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def packed_batch(tok) -> dict:
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(EXAMPLES)
    assert batch["input_ids"].shape == (1, 21) and "attention_mask" not in batch
    return batch


def padded_batch(tok) -> dict:
    return DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(EXAMPLES[:2])


def full_logits_loss(model, batch: dict, num_items=None) -> torch.Tensor:
    """The reference: every logit, shift by one, mean cross-entropy over the trained next tokens."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    target = batch["labels"][:, 1:]
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), ignore_index=-100, reduction="sum")
    return total / (target.ne(-100).sum() if num_items is None else num_items)


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def loss_and_grads(model, fn) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.detach(), grads(model)


def assert_same(a: tuple, b: tuple) -> None:
    assert torch.allclose(a[0], b[0], atol=1e-6, rtol=0), (a[0].item(), b[0].item())
    assert a[1].keys() == b[1].keys() and a[1]
    for n in a[1]:
        assert torch.allclose(a[1][n], b[1][n], atol=1e-6, rtol=1e-4), n


def lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False))


def test_trained_positions_skip_boundaries(tok):
    batch = packed_batch(tok)
    labels, pos = batch["labels"], batch["position_ids"]
    assert (labels[pos == 0] == -100).all()  # the collator masks each example's first token: no cross-example target
    keep, targets = trained_positions(labels)
    assert keep.tolist() == [p for p in range(20) if labels[0, p + 1] != -100]
    assert targets.tolist() == [t for ex in EXAMPLES for t in ex["labels"] if t != -100]
    assert len(keep) == 12 < labels.size(1)


@pytest.mark.parametrize("peft", [False, True])
@pytest.mark.parametrize("num_items", [None, 30])
def test_selective_equals_full_logits(tok, peft, num_items):
    model = tiny_causal_lm(tok)
    model = lora(model) if peft else model
    model.train()
    batch = packed_batch(tok)
    seen = []
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    selective = loss_and_grads(model, lambda: selective_lm_loss(model, batch, num_items))
    hook.remove()
    assert seen == [torch.Size([1, 12, len(tok)])]  # logits_to_keep reached the base model, through PEFT too
    assert_same(selective, loss_and_grads(model, lambda: full_logits_loss(model, batch, num_items)))


def trainer_for(tok, model, peft_config=None) -> SelectiveLossSFTTrainer:
    ds = Dataset.from_list(EXAMPLES)
    args = SFTConfig(output_dir="unused", report_to=[], max_length=64, packing=True, packing_strategy="bfd",
                     per_device_train_batch_size=3, use_cpu=True, save_strategy="no")  # fmt: skip
    return SelectiveLossSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)


@pytest.mark.parametrize("num_items", [None, 30])
def test_trainer_loss_matches_sft_trainer(tok, num_items, tmp_path, monkeypatch):
    from peft import LoraConfig

    monkeypatch.chdir(tmp_path)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    trainer = trainer_for(tok, tiny_causal_lm(tok), cfg)
    model = trainer.model
    model.train()
    batch = packed_batch(tok)
    assert trainer._selective(model, batch, return_outputs=False)
    ours = loss_and_grads(model, lambda: trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items))
    assert "entropy" not in trainer._metrics["train"] and trainer._metrics["train"]["num_tokens"] == [21]
    theirs = loss_and_grads(model, lambda: SFTTrainer.compute_loss(trainer, model, dict(batch), num_items_in_batch=num_items))
    assert_same(ours, theirs)
    assert_same(ours, loss_and_grads(model, lambda: full_logits_loss(model, batch, num_items)))


def test_padded_batch_falls_back(tok, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = trainer_for(tok, tiny_causal_lm(tok))
    model = trainer.model
    model.train()
    batch = padded_batch(tok)
    assert batch["input_ids"].shape == (2, 7) and not trainer._selective(model, batch, return_outputs=False)
    calls = []
    real = SFTTrainer.compute_loss
    monkeypatch.setattr(SFTTrainer, "compute_loss", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    ours = loss_and_grads(model, lambda: trainer.compute_loss(model, dict(batch)))
    assert calls == [1] and "entropy" in trainer._metrics["train"]  # TRL's own path ran
    assert_same(ours, loss_and_grads(model, lambda: full_logits_loss(model, batch)))


def test_prompt_learning_falls_back(tok, tmp_path, monkeypatch):
    from peft import PromptTuningConfig

    monkeypatch.chdir(tmp_path)
    trainer = trainer_for(tok, tiny_causal_lm(tok), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert not trainer._selective(trainer.model, packed_batch(tok), return_outputs=False)


def test_loraplus_optimizer_puts_b_at_ratio_times_the_rate(tok, tmp_path, monkeypatch):
    from peft import LoraConfig

    from steps.training.trainer import loraplus_optimizer

    monkeypatch.chdir(tmp_path)
    trainer = trainer_for(tok, tiny_causal_lm(tok), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
    optimizer = loraplus_optimizer(trainer, 16.0)
    rate = trainer.args.learning_rate
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert group["lr"] == pytest.approx(rate * 16 if "lora_B" in names[id(p)] else rate)
    trained = sum(len(g["params"]) for g in optimizer.param_groups)
    assert trained == sum(p.requires_grad for p in trainer.model.parameters()) > 0
    assert type(optimizer).__name__ == "AdamW"  # the Trainer's own choice for these args


def test_neftune_alpha_reaches_the_trainer_and_is_checked():
    from steps.core.config import ConfigError
    from steps.models.builders import common_args
    from steps.training.config import TrainConfig

    assert common_args(TrainConfig(neftune_alpha=5.0), "out")["neftune_noise_alpha"] == 5.0
    assert common_args(TrainConfig(), "out")["neftune_noise_alpha"] is None
    with pytest.raises(ConfigError, match="neftune_alpha"):
        TrainConfig(neftune_alpha=0.0)
