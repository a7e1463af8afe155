"""Builders for the offline preference stages: dpo, kto, orpo and rm (the reward model).

Each turns canonical records into the dataset its TRL trainer wants (via ``steps.training.datasets``) and
the shared ``common_args`` into that trainer's config, checking the settings that cannot work
with it (a DPO loss for kto, kto with batch size 1, rm on a model that is not a one-score
sequence classifier). steps/training/rlhf/build.py dispatches to them by ``cfg.stage``; the online stages
(grpo, rloo, ppo), which generate and score completions, are in ``steps/training/rlhf/online.py``.
"""

from __future__ import annotations

from typing import Any

from steps.core.config import ConfigError
from steps.training.config import TrainConfig
from steps.training.rlhf.common import orpo_classes, reference_model, stage_datasets

KTO_LOSSES = ("kto", "apo_zero_unpaired")


def dpo_trainer(cfg: TrainConfig, model: Any, tok: Any, train: list, evals: list, common: dict, peft: Any) -> Any:
    from trl import DPOConfig, DPOTrainer

    from steps.training.datasets import preference_dataset

    args = DPOConfig(**common, beta=cfg.preference.beta, loss_type=cfg.preference.loss_type, max_length=cfg.max_length)
    return DPOTrainer(model=model, ref_model=reference_model(model, peft), args=args, processing_class=tok,
                      peft_config=peft, **stage_datasets(preference_dataset, train, evals, cfg.stage))  # fmt: skip


def kto_trainer(cfg: TrainConfig, model: Any, tok: Any, train: list, evals: list, common: dict, peft: Any) -> Any:
    from trl import KTOConfig, KTOTrainer

    from steps.training.datasets import kto_dataset

    loss = cfg.preference.loss_type
    if loss not in KTO_LOSSES:
        if loss != "sigmoid":  # sigmoid is the shared default (DPO's); anything else was meant for DPO
            raise ConfigError(f"train.preference.loss_type: {loss!r} is a DPO loss; kto takes {' or '.join(KTO_LOSSES)}")
        loss = "kto"
    if loss == "kto" and common["per_device_train_batch_size"] < 2:
        raise ConfigError("train.batch_size: kto estimates its KL term from other completions in the batch, so it needs >= 2; got 1")
    args = KTOConfig(**common, beta=cfg.preference.beta, loss_type=loss, max_length=cfg.max_length)
    return KTOTrainer(model=model, ref_model=reference_model(model, peft), args=args, processing_class=tok,
                      peft_config=peft, **stage_datasets(kto_dataset, train, evals, cfg.stage))  # fmt: skip


def orpo_trainer(cfg: TrainConfig, model: Any, tok: Any, train: list, evals: list, common: dict, peft: Any) -> Any:
    from steps.training.datasets import preference_dataset

    config_cls, trainer_cls = orpo_classes()  # type: ignore[misc]
    args = config_cls(**common, beta=cfg.preference.beta, max_length=cfg.max_length)
    return trainer_cls(model=model, args=args, processing_class=tok, peft_config=peft,
                       **stage_datasets(preference_dataset, train, evals, cfg.stage))  # fmt: skip


def rm_trainer(cfg: TrainConfig, model: Any, tok: Any, train: list, evals: list, common: dict, peft: Any) -> Any:
    from trl import RewardConfig, RewardTrainer

    from steps.training.datasets import preference_dataset

    if getattr(model.config, "num_labels", None) != 1 or not type(model).__name__.endswith("ForSequenceClassification"):
        raise ConfigError(f"train.stage: stage rm trains a sequence classifier with one score; got {type(model).__name__} — build it with build_model(cfg, 'rm')")  # fmt: skip
    args = RewardConfig(**common, max_length=cfg.max_length)  # pairs longer than max_length are dropped, not cut
    return RewardTrainer(model=model, args=args, processing_class=tok, peft_config=peft,
                         **stage_datasets(preference_dataset, train, evals, cfg.stage))  # fmt: skip
