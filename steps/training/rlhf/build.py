"""Trainers for the preference and RL stages: dpo, kto, orpo, rm, grpo, rloo (ppo where TRL ships it).

``build_stage_trainer`` is one switch on ``cfg.stage``; each stage is one small builder that
turns canonical records into the dataset its TRL trainer wants (via ``steps.training.datasets``) and the
shared ``common_args`` into that trainer's config. Written against TRL 1.16, whose APIs differ
from older docs: ``DPOConfig``/``KTOConfig`` have no ``max_prompt_length``, ``DPOConfig.loss_type``
is a list, KTO's losses are ``kto``/``apo_zero_unpaired``, ORPO lives in ``trl.experimental.orpo``,
and there is no ``PPOTrainer`` at all (1.12 had one in ``trl.experimental.ppo``).

Where things live, so each module reads in one sitting: this module holds the stage list, the
data each stage needs, ``available_stages``, ``check_records`` and the switch; the offline
builders (dpo, kto, orpo, rm) are in ``steps/training/rlhf/preference.py``; the online ones (grpo,
rloo, ppo) and ``load_reward_model`` in ``steps/training/rlhf/online.py``; TRL probing, datasets and
the reference model, which both use, in ``steps/training/rlhf/common.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from steps.core.config import ConfigError
from steps.training.config import TrainConfig
from steps.training.rlhf.common import orpo_classes, ppo_classes
from steps.training.rlhf.online import online_trainer, ppo_trainer
from steps.training.rlhf.preference import dpo_trainer, kto_trainer, orpo_trainer, rm_trainer

RLHF_STAGES = ("dpo", "kto", "orpo", "rm", "grpo", "rloo", "ppo")
PAIRS = ("preference",)
PROMPTS = ("sft", "preference", "feedback")  # records whose messages hold a prompt to generate from
# Record kinds each stage can train on, and how to say it to a user.
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "dpo": (PAIRS, "preference pairs (chosen/rejected)"),
    "orpo": (PAIRS, "preference pairs (chosen/rejected)"),
    "rm": (PAIRS, "preference pairs (chosen/rejected)"),
    "kto": (("feedback", "preference"), "feedback (completion + label) or preference pairs"),
    **{s: (PROMPTS, "conversations with a user prompt") for s in ("grpo", "rloo", "ppo")},
}


def available_stages() -> tuple[str, ...]:
    """The stages the installed TRL can train: all but ppo on TRL 1.16; orpo while its experimental module imports."""
    missing = {"orpo": orpo_classes() is None, "ppo": ppo_classes() is None}
    return tuple(s for s in RLHF_STAGES if not missing.get(s, False))


def check_records(stage: str, records: list[dict[str, Any]]) -> None:
    """Fail before any model work when the data has no record of a kind ``stage`` trains on."""
    kinds, what = NEEDS[stage]
    if any(r.get("kind") in kinds for r in records):
        return
    have = ", ".join(f"{n} {k}" for k, n in sorted(Counter(r.get("kind") for r in records).items())) or "no records"
    raise ConfigError(
        f"train.stage: stage {stage} trains on {what}, but the training data has none ({have}); "
        f"add such records to the inputs, or set train.stage to one that fits the data (sft for conversations)"
    )


def build_stage_trainer(
    cfg: TrainConfig, model: Any, tokenizer: Any, train_records: list[dict[str, Any]],
    eval_records: list[dict[str, Any]] | None, common: dict[str, Any], peft_config: Any,
) -> Any:  # fmt: skip
    """Build the TRL trainer for ``cfg.stage``, ready for ``.train()``.

    Args:
        cfg: a ``TrainConfig`` (reads stage, max_length, preference, rl).
        model: the policy: a causal LM, except for stage rm, which needs an
            ``AutoModelForSequenceClassification`` with ``num_labels=1`` (``build_model(cfg, "rm")``).
        tokenizer: its tokenizer, with a chat template and a pad token.
        train_records, eval_records: canonical records; eval keeps the kinds the stage trains on,
            and with none left (or none given) evaluation is off.
        common: ``steps.models.builders.common_args(cfg, out_dir)``.
        peft_config: ``build_peft_config(cfg, model)`` or None (full / freeze). With PEFT, dpo and
            kto use the model with its adapter disabled as the reference; without, a frozen copy.

    Raises:
        ConfigError: a stage this TRL lacks, data of the wrong kind, or settings that cannot work.
    """
    stage = cfg.stage
    if stage not in RLHF_STAGES:
        raise ConfigError(f"train.stage: {stage} is not a preference or RL stage ({', '.join(RLHF_STAGES)})")
    if stage == "ppo" and ppo_classes() is None:
        raise ConfigError(
            "train.stage: stage ppo needs a TRL with PPOTrainer (1.12 has it in trl.experimental); "
            "the pinned TRL 1.16 has none; use grpo or rloo"
        )
    if stage == "orpo" and orpo_classes() is None:
        raise ConfigError("train.stage: stage orpo needs trl.experimental.orpo, which does not import here; use dpo")
    check_records(stage, train_records)
    common = dict(common)
    eval_records = [r for r in eval_records or () if r.get("kind") in NEEDS[stage][0]]  # mixed data: evaluate what fits
    if not eval_records:
        eval_records = None
        common |= {"eval_strategy": "no", "load_best_model_at_end": False, "metric_for_best_model": None}
    return _BUILDERS[stage](cfg, model, tokenizer, train_records, eval_records, common, peft_config)


_BUILDERS = {
    "dpo": dpo_trainer,
    "kto": kto_trainer,
    "orpo": orpo_trainer,
    "rm": rm_trainer,
    "grpo": online_trainer("GRPOConfig", "GRPOTrainer"),
    "rloo": online_trainer("RLOOConfig", "RLOOTrainer"),
    "ppo": ppo_trainer,
}
