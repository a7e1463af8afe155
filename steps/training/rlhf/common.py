"""Pieces every preference and RL trainer builder shares: TRL probing, datasets, the reference.

``_trainer_class`` imports a trainer or config class by module and name (None when missing,
without trl.experimental's warning), so ``orpo_classes`` and ``ppo_classes`` say whether the installed TRL
has ORPO (``trl.experimental.orpo``) and PPO (not in 1.16); ``stage_datasets`` turns train/eval
records into a trainer's dataset arguments and ``reference_model`` makes the frozen reference model
(None with PEFT). They live here, at the bottom of the import graph, because steps/training/rlhf/build.py
(availability checks), ``steps/training/rlhf/preference.py`` and ``steps/training/rlhf/online.py``
all use them.
"""

from __future__ import annotations

import copy
import importlib
import warnings
from typing import Any


def _trainer_class(module: str, name: str) -> Any:
    try:
        with warnings.catch_warnings():  # probing trl.experimental is not using it: no "unstable API" warning
            warnings.simplefilter("ignore")
            return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def orpo_classes() -> tuple[Any, Any] | None:
    trainer = _trainer_class("trl.experimental.orpo", "ORPOTrainer")
    return (_trainer_class("trl.experimental.orpo", "ORPOConfig"), trainer) if trainer else None


def ppo_classes() -> tuple[Any, Any] | None:
    for module in ("trl", "trl.experimental.ppo"):
        if trainer := _trainer_class(module, "PPOTrainer"):
            return _trainer_class(module, "PPOConfig"), trainer
    return None


def stage_datasets(build: Any, train: list[dict[str, Any]], evals: list[dict[str, Any]] | None, stage: str) -> dict[str, Any]:
    return {"train_dataset": build(train, stage=stage, split="train"),
            "eval_dataset": build(evals, stage=stage, split="validation") if evals else None}  # fmt: skip


def reference_model(model: Any, peft_config: Any) -> Any:
    """None with PEFT (the adapter switched off is the reference), else a frozen copy of the start model."""
    if peft_config is not None or hasattr(model, "peft_config"):
        return None
    return copy.deepcopy(model).eval().requires_grad_(False)
