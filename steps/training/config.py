"""The train step's settings: stage, method, schedule and the per-stage sub-sections of train:."""

from __future__ import annotations

from dataclasses import dataclass, field

from steps.core.config import ConfigError
from steps.models.loading import DEFAULT_BASE_MODEL

STAGES = ("sft", "pt", "cls", "dpo", "kto", "orpo", "rm", "grpo", "rloo", "ppo")


METHODS = ("full", "freeze", "lora", "qlora", "dora", "prefix", "prompt", "ia3")


PROMPT_LEARNING = ("prefix", "prompt")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32  # alpha / r = 2 scales the adapter's update, the common choice for r = 16
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"  # or module names (q_proj, v_proj...), or one regex
    # LoRA+ (Hayou et al. 2024; LLaMA-Factory's loraplus_lr_ratio): the B matrices learn at plus_ratio x the
    # learning rate. null: one learning rate for both.
    plus_ratio: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not isinstance(self.target_modules, (str, tuple)) or not self.target_modules:
            raise ConfigError(f"train.lora.target_modules: give all-linear or a list of module names; got {self.target_modules!r}")
        if self.r < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"train.lora: need r >= 1 and 0 <= dropout < 1; got r={self.r}, dropout={self.dropout}")
        if self.plus_ratio is not None and self.plus_ratio <= 0:
            raise ConfigError(f"train.lora.plus_ratio: need a ratio > 0 (16 in the LoRA+ paper) or null; got {self.plus_ratio}")


@dataclass(frozen=True)
class PreferenceSettings:
    beta: float = 0.1  # strength of the pull towards the reference model (DPO/KTO/ORPO)
    loss_type: str = "sigmoid"


@dataclass(frozen=True)
class RLSettings:
    reward_model: str | None = None  # a train output folder of stage rm
    num_generations: int = 4  # completions per prompt: the group GRPO/RLOO compare
    max_completion_length: int = 64
    temperature: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    base_model: str = DEFAULT_BASE_MODEL  # from base:
    seed: int = 42  # from base:
    stage: str = "sft"
    method: str = "lora"
    init_from: str | None = None
    chat_template: str | None = None
    assistant_only_loss: bool = True
    max_length: int = 1024
    packing: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)
    freeze_trainable_layers: int = 2
    num_virtual_tokens: int = 16
    quant: str = "auto"
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 2.0e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    gradient_checkpointing: bool = False
    # NEFTune (Jain et al. 2023; TrainingArguments.neftune_noise_alpha, LLaMA-Factory's neftune_noise_alpha): uniform
    # noise of scale alpha / sqrt(length x hidden) on the input embeddings while training (length: the packed row's
    # when packing, so the same alpha adds less noise than on one padded example). null: off.
    neftune_alpha: float | None = None
    optim: str = "auto"
    precision: str = "auto"
    logging_steps: int = 5
    eval_steps: int = 50
    save_steps: int = 50
    save_total_limit: int = 2
    early_stopping_patience: int | None = None
    tracking: str = "wandb"
    preference: PreferenceSettings = field(default_factory=PreferenceSettings)
    rl: RLSettings = field(default_factory=RLSettings)

    def __post_init__(self) -> None:
        _choice("stage", self.stage, STAGES)
        _choice("method", self.method, METHODS)
        _choice("quant", self.quant, ("auto", "none", "nf4"))
        _choice("precision", self.precision, ("auto", "bf16", "fp16", "fp32"))
        _choice("tracking", self.tracking, ("wandb", "none"))
        if self.method == "qlora" and self.quant == "none":
            raise ConfigError("train.quant: qlora needs 4-bit quantisation; got method=qlora, quant=none — set quant: nf4 or auto")
        if self.quant == "nf4" and self.method != "qlora":
            raise ConfigError(f"train.quant: nf4 is only used by method qlora; got method={self.method}, quant=nf4 — set quant: auto or method: qlora")
        if self.method in (*PROMPT_LEARNING, "ia3") and self.stage not in ("sft", "pt"):
            raise ConfigError(f"train.method: {self.method} is supported for stages sft and pt; got stage={self.stage} — use lora, dora, qlora, freeze or full")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError(f"train.epochs: need epochs > 0 or max_steps > 0; got epochs={self.epochs}, max_steps={self.max_steps}")
        if min(self.batch_size, self.grad_accum, self.max_length, self.freeze_trainable_layers, self.num_virtual_tokens) < 1:
            raise ConfigError("train: batch_size, grad_accum, max_length, freeze_trainable_layers and num_virtual_tokens must be >= 1")
        if not 0 <= self.warmup_ratio < 1 or self.learning_rate <= 0:
            raise ConfigError(f"train: need 0 <= warmup_ratio < 1 and learning_rate > 0; got {self.warmup_ratio}, {self.learning_rate}")
        if self.neftune_alpha is not None and not self.neftune_alpha > 0:
            raise ConfigError(f"train.neftune_alpha: the noise scale must be > 0 (5 is the paper's), or null for none; got {self.neftune_alpha}")
        if self.early_stopping_patience is not None and self.save_steps % self.eval_steps:
            raise ConfigError(f"train.save_steps: early stopping keeps the best checkpoint, so save_steps must be a multiple of eval_steps; got {self.save_steps} and {self.eval_steps}")
        if self.save_total_limit < (3 if self.early_stopping_patience is not None else 2):
            raise ConfigError(f"train.save_total_limit: the Trainer deletes old checkpoints before the new one is complete, so a run resumes "
                              f"from the one before it; keep >= 2 (>= 3 with early stopping, which also keeps the best); got {self.save_total_limit}")  # fmt: skip
        if self.stage in ("grpo", "rloo", "ppo") and self.rl.num_generations < 2:
            raise ConfigError(f"train.rl.num_generations: {self.stage} compares completions of a prompt, so it needs >= 2; got {self.rl.num_generations}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"train.{key}: unknown value {value!r}; use one of {', '.join(allowed)}")
