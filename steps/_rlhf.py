"""Trainers for the preference and RL stages: dpo, kto, orpo, rm, grpo, rloo (ppo where TRL ships it).

``build_stage_trainer`` is one switch on ``cfg.stage``; each stage is one small builder that
turns canonical records into the dataset its TRL trainer wants (via ``steps._data``) and the
shared ``common_args`` into that trainer's config. Written against TRL 1.16, whose APIs differ
from older docs: ``DPOConfig``/``KTOConfig`` have no ``max_prompt_length``, ``DPOConfig.loss_type``
is a list, KTO's losses are ``kto``/``apo_zero_unpaired``, ORPO lives in ``trl.experimental.orpo``,
and there is no ``PPOTrainer`` at all (1.12 had one in ``trl.experimental.ppo``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steps._config import ConfigError

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
KTO_LOSSES = ("kto", "apo_zero_unpaired")
_RM_FIX = "run the rm stage first and point train.rl.reward_model at its output folder"


def _trainer_class(module: str, name: str) -> Any:
    try:
        with warnings.catch_warnings():  # probing trl.experimental is not using it: no "unstable API" warning
            warnings.simplefilter("ignore")
            return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _orpo() -> tuple[Any, Any] | None:
    trainer = _trainer_class("trl.experimental.orpo", "ORPOTrainer")
    return (_trainer_class("trl.experimental.orpo", "ORPOConfig"), trainer) if trainer else None


def _ppo() -> tuple[Any, Any] | None:
    for module in ("trl", "trl.experimental.ppo"):
        if trainer := _trainer_class(module, "PPOTrainer"):
            return _trainer_class(module, "PPOConfig"), trainer
    return None


def available_stages() -> tuple[str, ...]:
    """The stages the installed TRL can train: all but ppo on TRL 1.16; orpo while its experimental module imports."""
    missing = {"orpo": _orpo() is None, "ppo": _ppo() is None}
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
    cfg: Any, model: Any, tokenizer: Any, train_records: list[dict[str, Any]],
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
        common: ``_builders.common_args(cfg, out_dir)``.
        peft_config: ``build_peft_config(cfg, model)`` or None (full / freeze). With PEFT, dpo and
            kto use the model with its adapter disabled as the reference; without, a frozen copy.

    Raises:
        ConfigError: a stage this TRL lacks, data of the wrong kind, or settings that cannot work.
    """
    stage = cfg.stage
    if stage not in RLHF_STAGES:
        raise ConfigError(f"train.stage: {stage} is not a preference or RL stage ({', '.join(RLHF_STAGES)})")
    if stage == "ppo" and _ppo() is None:
        raise ConfigError(
            "train.stage: stage ppo needs a TRL with PPOTrainer (1.12 has it in trl.experimental); "
            "the pinned TRL 1.16 has none; use grpo or rloo"
        )
    if stage == "orpo" and _orpo() is None:
        raise ConfigError("train.stage: stage orpo needs trl.experimental.orpo, which does not import here; use dpo")
    check_records(stage, train_records)
    common = dict(common)
    eval_records = [r for r in eval_records or () if r.get("kind") in NEEDS[stage][0]]  # mixed data: evaluate what fits
    if not eval_records:
        eval_records = None
        common |= {"eval_strategy": "no", "load_best_model_at_end": False, "metric_for_best_model": None}
    return _BUILDERS[stage](cfg, model, tokenizer, train_records, eval_records, common, peft_config)


def _datasets(build: Any, train: list[dict[str, Any]], evals: list[dict[str, Any]] | None, stage: str) -> dict[str, Any]:
    return {"train_dataset": build(train, stage=stage, split="train"),
            "eval_dataset": build(evals, stage=stage, split="validation") if evals else None}  # fmt: skip


def _reference(model: Any, peft_config: Any) -> Any:
    """None with PEFT (the adapter switched off is the reference), else a frozen copy of the start model."""
    if peft_config is not None or hasattr(model, "peft_config"):
        return None
    return copy.deepcopy(model).eval().requires_grad_(False)


def _dpo(cfg, model, tok, train, evals, common, peft):  # noqa: ANN001, ANN202
    from trl import DPOConfig, DPOTrainer

    from steps._data import preference_dataset

    args = DPOConfig(**common, beta=cfg.preference.beta, loss_type=cfg.preference.loss_type, max_length=cfg.max_length)
    return DPOTrainer(model=model, ref_model=_reference(model, peft), args=args, processing_class=tok,
                      peft_config=peft, **_datasets(preference_dataset, train, evals, cfg.stage))  # fmt: skip


def _kto(cfg, model, tok, train, evals, common, peft):  # noqa: ANN001, ANN202
    from trl import KTOConfig, KTOTrainer

    from steps._data import kto_dataset

    loss = cfg.preference.loss_type
    if loss not in KTO_LOSSES:
        if loss != "sigmoid":  # sigmoid is the shared default (DPO's); anything else was meant for DPO
            raise ConfigError(f"train.preference.loss_type: {loss!r} is a DPO loss; kto takes {' or '.join(KTO_LOSSES)}")
        loss = "kto"
    if loss == "kto" and common["per_device_train_batch_size"] < 2:
        raise ConfigError("train.batch_size: kto estimates its KL term from other completions in the batch, so it needs >= 2; got 1")
    args = KTOConfig(**common, beta=cfg.preference.beta, loss_type=loss, max_length=cfg.max_length)
    return KTOTrainer(model=model, ref_model=_reference(model, peft), args=args, processing_class=tok,
                      peft_config=peft, **_datasets(kto_dataset, train, evals, cfg.stage))  # fmt: skip


def _orpo_trainer(cfg, model, tok, train, evals, common, peft):  # noqa: ANN001, ANN202
    from steps._data import preference_dataset

    config_cls, trainer_cls = _orpo()  # type: ignore[misc]
    args = config_cls(**common, beta=cfg.preference.beta, max_length=cfg.max_length)
    return trainer_cls(model=model, args=args, processing_class=tok, peft_config=peft,
                       **_datasets(preference_dataset, train, evals, cfg.stage))  # fmt: skip


def _rm(cfg, model, tok, train, evals, common, peft):  # noqa: ANN001, ANN202
    from trl import RewardConfig, RewardTrainer

    from steps._data import preference_dataset

    if getattr(model.config, "num_labels", None) != 1 or not type(model).__name__.endswith("ForSequenceClassification"):
        raise ConfigError(f"train.stage: stage rm trains a sequence classifier with one score; got {type(model).__name__} — build it with build_model(cfg, 'rm')")  # fmt: skip
    args = RewardConfig(**common, max_length=cfg.max_length)  # pairs longer than max_length are dropped, not cut
    return RewardTrainer(model=model, args=args, processing_class=tok, peft_config=peft,
                         **_datasets(preference_dataset, train, evals, cfg.stage))  # fmt: skip


def load_reward_model(path: str | None) -> tuple[Any, Any]:
    """The frozen reward model and its tokenizer from an rm stage output (full weights or a LoRA adapter)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(path) if path else None
    if folder is None:
        raise ConfigError(f"train.rl.reward_model: not set, and RL stages score completions with a reward model; {_RM_FIX}")
    adapter = folder / "adapter_config.json"
    if not (folder / "config.json").is_file() and not adapter.is_file():
        raise ConfigError(f"train.rl.reward_model '{path}': no model there (no config.json or adapter_config.json); {_RM_FIX}")
    load = AutoModelForSequenceClassification.from_pretrained
    if adapter.is_file():
        from peft import PeftModel

        from steps._model import ensure_local_model

        base = json.loads(adapter.read_text())["base_model_name_or_path"]
        try:
            model = PeftModel.from_pretrained(load(ensure_local_model(base), num_labels=1, dtype=torch.float32), str(folder)).merge_and_unload()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"train.rl.reward_model '{path}': its base model '{base}' cannot be loaded ({exc}); {_RM_FIX}") from exc  # fmt: skip
    else:
        model = load(str(folder), num_labels=1, dtype=torch.float32)
    return model.eval().requires_grad_(False), AutoTokenizer.from_pretrained(str(folder))


def _rl_args(cfg: Any, common: dict[str, Any]) -> dict[str, Any]:
    """GRPO/RLOO settings: generation from cfg.rl on the policy itself (no vLLM), batches in whole groups."""
    rl, batch = cfg.rl, common["per_device_train_batch_size"]
    per_step = batch * common["gradient_accumulation_steps"]
    if per_step % rl.num_generations:
        raise ConfigError(
            f"train.rl.num_generations: {cfg.stage} scores groups of {rl.num_generations} completions per prompt, "
            f"so batch_size x grad_accum ({per_step}) must be a multiple of it; change one of them"
        )
    eval_batch = rl.num_generations * max(1, batch // rl.num_generations)  # evaluation also needs whole groups
    return common | {"per_device_eval_batch_size": eval_batch, "num_generations": rl.num_generations,
                     "max_completion_length": rl.max_completion_length, "temperature": rl.temperature,
                     "use_vllm": False, "include_num_input_tokens_seen": False}  # generated batches carry no input_ids  # fmt: skip


@contextlib.contextmanager
def _reloadable(model: Any, peft_config: Any, beta: float) -> Iterator[None]:
    """GRPO/RLOO build their KL reference by reloading ``model.config._name_or_path`` (no ref_model
    argument); for a full fine-tune of a model that path may not exist (in memory, or a merged
    init_from that is gone), so save a copy for the trainer to load while it is built."""
    old = model.config._name_or_path
    if beta == 0 or peft_config is not None or hasattr(model, "peft_config") or (Path(old or "/-") / "config.json").is_file():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="tunegate-reference-") as tmp:
        model.save_pretrained(tmp)
        model.config._name_or_path = tmp
        try:
            yield
        finally:
            model.config._name_or_path = old


def _online(config_name: str, trainer_name: str):  # noqa: ANN202
    def build(cfg, model, tok, train, evals, common, peft):  # noqa: ANN001, ANN202
        import trl

        from steps._data import prompt_dataset

        reward, reward_tok = load_reward_model(cfg.rl.reward_model)
        args = getattr(trl, config_name)(**_rl_args(cfg, common))
        with _reloadable(model, peft, args.beta):
            return getattr(trl, trainer_name)(model=model, reward_funcs=reward, reward_processing_classes=reward_tok,
                                              args=args, processing_class=tok, peft_config=peft,
                                              **_datasets(prompt_dataset, train, evals, cfg.stage))  # fmt: skip

    return build


def _ppo_trainer(cfg, model, tok, train, evals, common, peft):  # noqa: ANN001, ANN202
    """TRL <= 1.12 (trl.experimental.ppo) only, untested here (1.16 has no PPO): the reward model
    doubles as the value model's start; PPO wants tokenized prompts (``input_ids``)."""
    from steps._data import prompt_dataset

    config_cls, trainer_cls = _ppo()  # type: ignore[misc]
    reward, _ = load_reward_model(cfg.rl.reward_model)

    def tokenize(records: list[dict[str, Any]], **where: str) -> Any:
        def ids(row: dict[str, Any]) -> dict[str, Any]:
            text = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
            return {"input_ids": tok(text, add_special_tokens=False)["input_ids"]}

        return prompt_dataset(records, **where).map(ids, remove_columns=["prompt"])

    args = config_cls(**common, response_length=cfg.rl.max_completion_length, temperature=cfg.rl.temperature)
    return trainer_cls(args=args, processing_class=tok, model=model, ref_model=_reference(model, peft),
                       reward_model=reward, value_model=copy.deepcopy(reward).requires_grad_(True), peft_config=peft,
                       **_datasets(tokenize, train, evals, cfg.stage))  # fmt: skip


_BUILDERS = {
    "dpo": _dpo,
    "kto": _kto,
    "orpo": _orpo_trainer,
    "rm": _rm,
    "grpo": _online("GRPOConfig", "GRPOTrainer"),
    "rloo": _online("RLOOConfig", "RLOOTrainer"),
    "ppo": _ppo_trainer,
}
