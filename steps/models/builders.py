"""Builders that turn a ``TrainConfig`` into library objects: model, quantisation, schedule.

``build_quant_config``, ``build_model`` and ``common_args`` (PEFT configs and freezing live in
``steps.models.adapters``) are shared by ``steps.training.trainer``
(stages sft, pt, cls) and ``steps.training.rlhf.build`` (preference and RL stages), so every stage loads,
quantises, adapts and schedules a model the same way. Anchor: trl ``trl/trainer/utils.py``
``get_quantization_config``. The trainer itself is built in ``steps.training.trainer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.models.folders import start_folder
from steps.models.loading import ModelError, tokenizer_from

if TYPE_CHECKING:  # annotations only: training sits above models
    from steps.training.config import TrainConfig

SEQ_CLS_STAGES = ("cls", "rm")
# Existing tokens that can pad when the tokenizer pads with eos; never a new token (that would resize embeddings).
_SPARE_PADS = ("<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>", "<|endoftext|>")


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_precision(cfg: TrainConfig) -> str:
    """``bf16`` on a GPU that supports it, else ``fp32`` (bf16 autocast is ~20x slower on CPU)."""
    if cfg.precision != "auto":
        return cfg.precision
    import torch

    return "bf16" if on_gpu() and torch.cuda.is_bf16_supported() else "fp32"


def build_quant_config(cfg: TrainConfig) -> Any:
    """4-bit NF4 with double quantisation for qlora; None for every other method."""
    if cfg.method != "qlora" or cfg.quant == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if resolve_precision(cfg) == "bf16" else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,  # quantises the quantisation constants too: ~0.4 bit/param saved
        bnb_4bit_compute_dtype=compute,
    )


def build_model(cfg: TrainConfig, stage: str, labels: list[str] | None = None) -> tuple[Any, Any]:
    """Load the model and tokenizer for ``stage``, quantised and checkpointed as ``cfg`` says.

    The start point is ``cfg.init_from`` (a previous train output; an adapter is merged
    into its base first) or ``cfg.base_model``. Stages cls and rm get a sequence
    classification head (one score for rm, one per label for cls).

    Pad token: when the tokenizer has none or pads with eos, an existing spare special
    token (``<|endoftext|>`` for SmolLM2) becomes the pad, so padding masks and
    non-padding token counts never hide the end-of-turn token the model must learn to
    emit. No token is added (that would resize the embeddings); without a spare token
    the pad stays eos, which is still correct because labels mask padding with -100.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    quant = build_quant_config(cfg)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if quant is not None:
        kwargs |= {"quantization_config": quant, "dtype": quant.bnb_4bit_compute_dtype}
        if on_gpu():
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    if stage in SEQ_CLS_STAGES:
        names = ["score"] if stage == "rm" else list(labels or ())
        kwargs |= {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    auto = AutoModelForSequenceClassification if stage in SEQ_CLS_STAGES else AutoModelForCausalLM
    spec = cfg.init_from or cfg.base_model
    where = start_folder(spec)
    try:
        model = auto.from_pretrained(where, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        key = "train.init_from" if cfg.init_from else "base.base_model"
        raise ModelError(f"{key} '{spec}': could not be loaded ({str(exc).splitlines()[0]})") from exc
    tokenizer = tokenizer_from(where)  # our own copy: _set_pad changes it
    _set_pad(tokenizer, model)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # the cache is useless while training and conflicts with checkpointing
    return model, tokenizer


def _set_pad(tokenizer: Any, model: Any) -> None:
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        vocab, template = tokenizer.get_vocab(), tokenizer.chat_template or ""
        taken = {tokenizer.eos_token, tokenizer.bos_token}
        spare = [t for t in (*_SPARE_PADS, tokenizer.unk_token) if t and t in vocab and t not in taken and t not in template]
        tokenizer.pad_token = spare[0] if spare else tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id



def common_args(cfg: TrainConfig, out_dir: Path | str) -> dict[str, Any]:
    """Keyword arguments every TRL ``*Config`` (and ``TrainingArguments``) accepts.

    TRL configs default ``gradient_checkpointing`` and ``bf16`` to True, so both are set
    explicitly (checkpointing under its transformers 5 name, ``activation_checkpointing``). transformers 5 dropped ``warmup_ratio``: a float below 1 in
    ``warmup_steps`` is the same ratio of total steps.
    """
    precision = resolve_precision(cfg)
    early = cfg.early_stopping_patience is not None
    optim = cfg.optim if cfg.optim != "auto" else ("paged_adamw_8bit" if on_gpu() else "adamw_torch")
    return {
        "output_dir": str(Path(out_dir) / "checkpoints"),
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.learning_rate,
        "weight_decay": cfg.weight_decay,
        "warmup_steps": cfg.warmup_ratio,
        "lr_scheduler_type": cfg.lr_scheduler,
        "logging_steps": cfg.logging_steps,
        "logging_first_step": True,
        "eval_strategy": "steps",
        "eval_steps": cfg.eval_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": not on_gpu(),
        "optim": optim,
        "report_to": ["wandb"] if cfg.tracking == "wandb" else "none",
        "run_name": f"{cfg.stage}-{cfg.method}-seed{cfg.seed}",
        "neftune_noise_alpha": cfg.neftune_alpha,
        "activation_checkpointing": cfg.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        "activation_checkpointing_kwargs": {"use_reentrant": False} if cfg.gradient_checkpointing else None,
        "load_best_model_at_end": early,
        "metric_for_best_model": "eval_loss" if early else None,
        "greater_is_better": False if early else None,
        "include_num_input_tokens_seen": "non_padding",
        "dataloader_num_workers": 0,  # in-process loading: the same batches in the same order on every run
        "dataloader_drop_last": False,
        "disable_tqdm": True,
    }
