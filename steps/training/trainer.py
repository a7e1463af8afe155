"""The trainer for a stage, and the run around it: seeds, deterministic kernels, W&B tracking.

``build_trainer`` is the one switch on ``stage``: SFTTrainer (``steps.training.loss``) for sft/pt, Trainer for cls,
``steps.training.rlhf.build`` for the preference and RL stages; model, adapter and schedule come from
``steps.models.builders`` and ``steps.models.adapters`` so every stage builds them the same way.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.schema import MODEL_ROLES
from steps.models.adapters import LORA_METHODS, apply_freeze, build_peft_config
from steps.models.builders import build_model, common_args
from steps.training.config import TrainConfig


def build_trainer(cfg: TrainConfig, train_records: list[dict[str, Any]], eval_records: list[dict[str, Any]], out_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Model, adapter and trainer for ``cfg.stage``: SFTTrainer for sft/pt, Trainer for cls, steps.training.rlhf for the rest.

    Returns:
        The trainer, the tokenizer to save with the model, and data counts for the manifest.
    """
    from transformers import EarlyStoppingCallback

    rlhf = None
    if cfg.stage not in ("sft", "pt", "cls"):
        try:
            from steps.training.rlhf import build as rlhf
        except ImportError as exc:
            raise ConfigError(f"train.stage: {cfg.stage} needs steps/training/rlhf/build.py, which this checkout lacks ({exc}); use sft, pt or cls") from exc
        rlhf.check_records(cfg.stage, train_records)  # wrong kind of data fails before any model is loaded
    labels = sorted({str(r["label"]) for r in train_records if r.get("kind") == "cls" and r.get("label") is not None})
    model, tokenizer = build_model(cfg, cfg.stage, labels if cfg.stage == "cls" else None)
    if cfg.chat_template:
        tokenizer.chat_template = resolve_chat_template(cfg.chat_template)  # trained with, and saved to serve with
    if cfg.method == "freeze":
        apply_freeze(model, cfg.freeze_trainable_layers)
    if cfg.stage not in ("pt", "cls"):
        check_chat_sample(tokenizer, train_records)
    peft_config = build_peft_config(cfg, model)
    common = common_args(cfg, out_dir)
    if not eval_records:
        common |= {"eval_strategy": "no", "load_best_model_at_end": False, "metric_for_best_model": None}
    if rlhf is not None:
        trainer, stats = rlhf.build_stage_trainer(cfg, model, tokenizer, train_records, eval_records, common, peft_config), {}
    elif cfg.stage == "cls":
        trainer, stats = _cls_trainer(cfg, model, tokenizer, train_records, eval_records, common, peft_config)
    else:
        trainer, stats = _lm_trainer(cfg, model, tokenizer, train_records, eval_records, common, peft_config)
    if cfg.lora.plus_ratio is not None and cfg.method in LORA_METHODS:
        trainer.optimizer = loraplus_optimizer(trainer, cfg.lora.plus_ratio)
    if cfg.early_stopping_patience is not None:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    return trainer, tokenizer, stats


def loraplus_optimizer(trainer: Any, ratio: float) -> Any:
    """The optimizer the Trainer would build (its class and settings), with the LoRA B matrices at ``ratio`` x the rate."""
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    return create_loraplus_optimizer(trainer.model, cls, lr=trainer.args.learning_rate, loraplus_lr_ratio=ratio,
                                     loraplus_weight_decay=trainer.args.weight_decay, **kwargs)  # fmt: skip


def check_chat_sample(tokenizer: Any, records: list[dict[str, Any]]) -> None:
    """Prove on the first conversation that training renders it as serving will (steps.models.template)."""
    from steps.models.template import check_template_parity

    for r in records:
        reply = r.get("chosen") or r.get("completion") or []
        conversation = [*(r.get("messages") or []), *reply]
        if any(m["role"] in MODEL_ROLES for m in conversation):
            check_template_parity(tokenizer, conversation, r.get("tools"))
            return


def resolve_chat_template(value: str) -> str:
    """``train.chat_template``: a path to a .jinja/.j2 file (or any existing file), else the Jinja text itself."""
    path = Path(value).expanduser()
    if "{" not in value and (path.suffix in (".jinja", ".j2") or path.is_file()):
        if not path.is_file():
            raise ConfigError(f"train.chat_template: file {value} not found; give a Jinja template file or the template text")
        return path.read_text(encoding="utf-8")
    return value


def packs(cfg: TrainConfig) -> bool:
    """Padding-free BFD packing for sft/pt; prefix/prompt tuning ignore position_ids, so they pad instead."""
    return cfg.packing and cfg.stage in ("sft", "pt") and cfg.method not in ("prefix", "prompt")


def _lm_trainer(cfg: TrainConfig, model: Any, tokenizer: Any, train: list, evals: list, common: dict, peft_config: Any) -> tuple[Any, dict]:
    from trl import SFTConfig

    from steps.models.attention import use_packed_attention
    from steps.training import datasets
    from steps.training.loss import SelectiveLossSFTTrainer

    stats: dict[str, Any] = {}
    if cfg.stage == "sft":

        def build(recs: list, split: str) -> Any:
            ds, stats[split] = datasets.sft_dataset(recs, tokenizer, cfg.max_length, assistant_only=cfg.assistant_only_loss, split=split)
            return ds
    else:
        build = lambda recs, split: datasets.pt_dataset(recs, tokenizer, cfg.max_length, split=split)  # noqa: E731
    # Labels come from steps.training.datasets (assistant-only masks included), so TRL gets input_ids/labels and
    # only packs them: BFD packing is padding-free, and position_ids restart at each example, where
    # steps.models.attention cuts the row: each example attends to itself only, computed on its own.
    # SelectiveLossSFTTrainer (steps.training.loss): the same loss, with logits only at trained positions.
    args = SFTConfig(**common, max_length=cfg.max_length, packing=packs(cfg), packing_strategy="bfd", assistant_only_loss=False)
    if packs(cfg):  # each packed example's attention computed on its own, not the row's masked square
        use_packed_attention(model, cfg.max_length)
    trainer = SelectiveLossSFTTrainer(model=model, args=args, train_dataset=build(train, "train"), processing_class=tokenizer,
                         eval_dataset=build(evals, "validation") if evals else None, peft_config=peft_config)  # fmt: skip
    return trainer, stats


def _cls_trainer(cfg: TrainConfig, model: Any, tokenizer: Any, train: list, evals: list, common: dict, peft_config: Any) -> tuple[Any, dict]:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from steps.training.datasets import cls_dataset

    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    train_ds, names = cls_dataset(train, tokenizer, cfg.max_length)
    eval_ds = None
    if evals:  # cls_dataset numbers a split's own labels: renumber validation by the training names
        eval_ds, eval_names = cls_dataset(evals, tokenizer, cfg.max_length, split="validation")
        if unknown := sorted(set(eval_names) - set(names)):
            raise ConfigError(f"train.stage: cls validation labels {unknown} never occur in train (labels {names}); re-split the data")
        eval_ds = eval_ds.map(lambda row: {"labels": names.index(eval_names[row["labels"]])})
    trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer))  # fmt: skip
    return trainer, {"labels": names}


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed every generator and prefer deterministic kernels (warn-only) while training, then restore."""
    import torch
    from transformers import set_seed

    before, warn_before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic matmuls
    set_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)


def tracking_env(cfg: TrainConfig) -> None:
    """W&B runs offline unless an API key is set; the key itself never reaches a manifest."""
    if cfg.tracking == "wandb":
        os.environ.setdefault("WANDB_PROJECT", "tunegate")
        if not os.environ.get("WANDB_API_KEY"):
            os.environ.setdefault("WANDB_MODE", "offline")


def tracking_dir() -> str | None:
    """The active W&B run's folder, if one runs."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    return str(Path(run.dir).parent) if run is not None else None


def finish_tracking() -> str | None:
    """Close the W&B run (flushing offline files); return its folder, if one ran."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return None
    where = str(Path(run.dir).parent)
    wandb.finish()
    if hasattr(wandb, "teardown"):
        wandb.teardown()  # the next run in this process (a worker, a test session) rereads WANDB_* settings
    return where
