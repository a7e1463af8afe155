"""Which parameters train: PEFT configs (one switch on ``method``) and the freeze method.

``build_peft_config`` and ``apply_freeze`` are shared by ``steps.training.trainer`` (stages sft, pt,
cls) and ``steps.training.rlhf.build`` (preference and RL stages).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from steps.core.config import ConfigError

if TYPE_CHECKING:  # annotations only: training sits above models
    from steps.training.config import TrainConfig

LORA_METHODS = ("lora", "qlora", "dora")  # the methods train.lora configures
PEFT_METHODS = (*LORA_METHODS, "prefix", "prompt", "ia3")


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of the model's linear layers (``q_proj``, ``down_proj``...), output head excluded."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    return sorted(names - {"score", "classifier"})


def _target_modules(cfg: TrainConfig, model: Any) -> str | list[str]:
    """``all-linear`` or the checked ``train.lora.target_modules``; an unknown name fails before training."""
    targets = cfg.lora.target_modules
    if targets == "all-linear":
        return targets
    known = linear_module_names(model)
    full = [n for n, _ in model.named_modules()]
    wanted = [targets] if isinstance(targets, str) else list(targets)
    for name in wanted:
        hit = any(re.fullmatch(name, n) for n in full) if isinstance(targets, str) else any(
            n == name or n.endswith("." + name) for n in full
        )
        if not hit:
            raise ConfigError(
                f"train.lora.target_modules: '{name}' is not a module of {type(model).__name__}; "
                f"its linear modules are {', '.join(known)} (or use all-linear)"
            )
    return targets if isinstance(targets, str) else wanted


def build_peft_config(cfg: TrainConfig, model: Any) -> Any:
    """The PEFT config for ``cfg.method``; None for full and freeze (no adapter)."""
    if cfg.method not in PEFT_METHODS:
        return None
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType

    task = TaskType.SEQ_CLS if type(model).__name__.endswith("ForSequenceClassification") else TaskType.CAUSAL_LM
    if cfg.method in LORA_METHODS:
        lora = cfg.lora
        return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none", task_type=task,
                          target_modules=_target_modules(cfg, model), use_dora=cfg.method == "dora")  # fmt: skip
    if cfg.method == "prefix":
        return PrefixTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type=task)
    if cfg.method == "prompt":
        return PromptTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type=task, prompt_tuning_init="RANDOM")
    # ia3: the paper's choice (keys, values, and the input of the second feed-forward layer) where PEFT
    # knows the architecture, else all linear layers; feed-forward modules must be a subset of the targets.
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    kind = model.config.model_type
    targets = _target_modules(cfg, model)
    targets = list(TARGETS.get(kind) or linear_module_names(model)) if targets == "all-linear" else targets
    if isinstance(targets, str):
        raise ConfigError("train.lora.target_modules: ia3 needs a list of module names, not a pattern; use a list or all-linear")
    ff_names = FF.get(kind) or [n for n in targets if "down" in n or n in ("fc2", "c_proj", "wo")]
    return IA3Config(target_modules=targets, feedforward_modules=[n for n in targets if n in ff_names], task_type=task)


def apply_freeze(model: Any, n: int) -> None:
    """Train only the top ``n`` decoder layers and the final norm (and a classification head, if any)."""
    import torch

    layers = next(
        (m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == model.config.num_hidden_layers),
        None,
    )
    if layers is None:
        raise ConfigError(f"train.method: freeze cannot find the decoder layers of {type(model).__name__}; use lora or full")
    if not 1 <= n <= len(layers):
        raise ConfigError(f"train.freeze_trainable_layers: the model has {len(layers)} layers; got {n} — use 1..{len(layers)}")
    model.requires_grad_(False)
    layers[len(layers) - n :].requires_grad_(True)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for part in (getattr(decoder, "norm", None), getattr(model, "score", None), getattr(model, "classifier", None)):
        if part is not None:
            part.requires_grad_(True)


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; PEFT counts 4-bit weights at their real size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
