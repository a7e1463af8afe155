"""Builders for the online RL stages: grpo and rloo (and ppo where TRL ships it), and their reward model.

These stages generate completions from the policy and score them with a frozen reward model:
``load_reward_model`` loads the rm stage's output (full weights or a LoRA adapter), ``_rl_args``
adds the generation settings from ``cfg.rl`` and checks that batches hold whole groups, and
``_reloadable`` gives GRPO/RLOO a reference they can reload. steps/training/rlhf/build.py dispatches to
``online_trainer(...)`` and ``ppo_trainer`` by ``cfg.stage``; the offline preference stages are in
``steps/training/rlhf/preference.py``.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.models.folders import load_model_folder, read_adapter_config
from steps.models.loading import tokenizer_from
from steps.training.config import TrainConfig
from steps.training.rlhf.common import ppo_classes, reference_model, stage_datasets

_RM_FIX = "run the rm stage first and point train.rl.reward_model at its output folder"


def load_reward_model(path: str | None) -> tuple[Any, Any]:
    """The frozen reward model and its tokenizer from an rm stage output (full weights or a LoRA adapter)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = Path(path) if path else None
    if folder is None:
        raise ConfigError(f"train.rl.reward_model: not set, and RL stages score completions with a reward model; {_RM_FIX}")
    adapter = read_adapter_config(folder)
    if not (folder / "config.json").is_file() and adapter is None:
        raise ConfigError(f"train.rl.reward_model '{path}': no model there (no config.json or adapter_config.json); {_RM_FIX}")

    def load(where: str) -> Any:
        return AutoModelForSequenceClassification.from_pretrained(where, num_labels=1, dtype=torch.float32)

    try:
        model = load_model_folder(folder, load, merge=True)
    except (OSError, ValueError) as exc:
        if adapter is None:
            raise
        base = adapter.get("base_model_name_or_path")
        raise ConfigError(f"train.rl.reward_model '{path}': its base model '{base}' cannot be loaded ({exc}); {_RM_FIX}") from exc
    return model.eval().requires_grad_(False), tokenizer_from(folder)


def _rl_args(cfg: TrainConfig, common: dict[str, Any]) -> dict[str, Any]:
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


def online_trainer(config_name: str, trainer_name: str):  # noqa: ANN202
    def build(cfg: TrainConfig, model: Any, tok: Any, train: list, evals: list, common: dict, peft: Any) -> Any:
        import trl

        from steps.training.datasets import prompt_dataset

        reward, reward_tok = load_reward_model(cfg.rl.reward_model)
        args = getattr(trl, config_name)(**_rl_args(cfg, common))
        with _reloadable(model, peft, args.beta):
            return getattr(trl, trainer_name)(model=model, reward_funcs=reward, reward_processing_classes=reward_tok,
                                              args=args, processing_class=tok, peft_config=peft,
                                              **stage_datasets(prompt_dataset, train, evals, cfg.stage))  # fmt: skip

    return build


def ppo_trainer(cfg: TrainConfig, model: Any, tok: Any, train: list, evals: list, common: dict, peft: Any) -> Any:
    """TRL <= 1.12 (trl.experimental.ppo) only, untested here (1.16 has no PPO): the reward model
    doubles as the value model's start; PPO wants tokenized prompts (``input_ids``)."""
    from steps.training.datasets import prompt_dataset

    config_cls, trainer_cls = ppo_classes()  # type: ignore[misc]
    reward, _ = load_reward_model(cfg.rl.reward_model)

    def tokenize(records: list[dict[str, Any]], **where: str) -> Any:
        def ids(row: dict[str, Any]) -> dict[str, Any]:
            text = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
            return {"input_ids": tok(text, add_special_tokens=False)["input_ids"]}

        return prompt_dataset(records, **where).map(ids, remove_columns=["prompt"])

    args = config_cls(**common, response_length=cfg.rl.max_completion_length, temperature=cfg.rl.temperature)
    return trainer_cls(args=args, processing_class=tok, model=model, ref_model=reference_model(model, peft),
                       reward_model=reward, value_model=copy.deepcopy(reward).requires_grad_(True), peft_config=peft,
                       **stage_datasets(tokenize, train, evals, cfg.stage))  # fmt: skip
