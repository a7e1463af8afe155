"""Train: fine-tune the base model on the validated data with one stage and one method.

``python -m steps.train DATA_DIR OUT_DIR [--params params.yaml]``. DATA_DIR holds
``train.jsonl`` and ``validation.jsonl`` (canonical records that passed validate);
OUT_DIR receives the model (an adapter for PEFT methods, full weights otherwise),
tokenizer, chat template, generation_config.json, checkpoints/ and manifest.json,
swapped in atomically. A killed run, started again, resumes from its last complete
checkpoint (steps._resume). Stages sft, pt and cls are built in steps._trainer;
preference and RL stages come from steps._rlhf.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps import _outputs as O
from steps import _resume as R
from steps import _trainer as T
from steps._cli import step_main
from steps._config import ConfigError
from steps._io import publish_dir
from steps._manifest import write_manifest
from steps._model import DEFAULT_BASE_MODEL, ModelError
from steps._tracking import log_lineage

STAGES = ("sft", "pt", "cls", "dpo", "kto", "orpo", "rm", "grpo", "rloo", "ppo")
METHODS = ("full", "freeze", "lora", "qlora", "dora", "prefix", "prompt", "ia3")
PROMPT_LEARNING = ("prefix", "prompt")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32  # alpha / r = 2 scales the adapter's update, the common choice for r = 16
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"  # or module names (q_proj, v_proj...), or one regex

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not isinstance(self.target_modules, (str, tuple)) or not self.target_modules:
            raise ConfigError(f"train.lora.target_modules: give all-linear or a list of module names; got {self.target_modules!r}")
        if self.r < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"train.lora: need r >= 1 and 0 <= dropout < 1; got r={self.r}, dropout={self.dropout}")


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


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    metrics: dict[str, Any]


def run(cfg: TrainConfig, data_dir: Path | str, out_dir: Path | str, callbacks: tuple[Any, ...] = ()) -> TrainResult:
    """Train ``cfg.stage`` with ``cfg.method`` on DATA_DIR and publish OUT_DIR atomically.

    Checkpoints are written to ``.{OUT_DIR name}.resume/`` beside OUT_DIR, which outlives a killed
    run; started again with the same config and data, the run resumes from its last complete
    checkpoint and ends with the same weights (steps._resume). That folder becomes OUT_DIR at the end.

    Args:
        cfg: the ``train:`` section.
        data_dir: validated data folder with train.jsonl and validation.jsonl.
        out_dir: where the model, tokenizer, checkpoints and manifest land.
        callbacks: extra ``transformers.TrainerCallback`` objects (progress reporting, tests).
    """
    from steps._data import read_split

    started = time.time()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    inputs = {"train": data_dir / "train.jsonl", "validation": data_dir / "validation.jsonl"}
    train_records, eval_records = read_split(data_dir, "train"), read_split(data_dir, "validation")
    if cfg.early_stopping_patience is not None and not eval_records:
        raise ConfigError(f"train.early_stopping_patience: {data_dir}/validation.jsonl is empty, so there is nothing to stop on; set it to null")
    T.tracking_env(cfg)
    work, main_rank = R.work_dir(out_dir), is_main_rank()
    held = R.lock(work) if main_rank else None
    try:
        note = R.prepare(work, R.run_identity(cfg, inputs)) if main_rank else {}
        with T.deterministic(cfg.seed):
            trainer, tokenizer, data_stats = T.build_trainer(cfg, train_records, eval_records, work)
            trainer.accelerator.wait_for_everyone()  # every rank resumes from what the main rank kept
            resume = R.resume_point(work)
            serving_files = lambda folder: O.save_serving_files(cfg, trainer, tokenizer, folder)  # noqa: E731
            for callback in (R.complete_marker(before_mark=serving_files), *callbacks):
                trainer.add_callback(callback)
            output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            final_eval = trainer.evaluate() if trainer.eval_dataset is not None else {}
        metrics = O.train_metrics(cfg, trainer, output, final_eval) | {"data": data_stats, "world_size": trainer.args.world_size}
        metrics["resume"] = {"from_step": int(resume.name.split("-")[-1]) if resume else None, **note}
        O.save_outputs(cfg, trainer, tokenizer, work)
        metrics["tracking_dir"] = T.tracking_dir()
        if main_rank:
            _publish(cfg, work, out_dir, inputs, metrics, started)
            log_lineage(cfg, data_dir, inputs, out_dir)  # after publishing: the model files are in place
        T.finish_tracking()
        trainer.accelerator.wait_for_everyone()  # no rank returns before OUT_DIR is in place
    except BaseException:
        T.finish_tracking()
        if main_rank:
            R.abandon(work)  # kept when it holds a checkpoint to resume from
        raise
    finally:
        if held is not None:
            os.close(held)
    return TrainResult(out_dir=out_dir, metrics=metrics)


def is_main_rank() -> bool:
    """True on the process that prepares, locks and publishes (torchrun sets RANK, mpirun PMI_RANK/OMPI_...)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"))


def _publish(cfg: TrainConfig, work: Path, out_dir: Path, inputs: dict[str, Path], metrics: dict[str, Any], started: float) -> None:
    """Write the manifest into the finished work folder and swap it in as OUT_DIR."""
    (work / R.RUN_FILE).unlink()  # a kill from here on means a fresh run next time, never a wrong resume
    outputs = {p.name: p for p in sorted(work.iterdir()) if p.name != "checkpoints"}
    write_manifest(work, "train", cfg, inputs, outputs, metrics, started)
    publish_dir(work, out_dir)


def _report(result: TrainResult) -> int:
    m = result.metrics
    if is_main_rank():
        print(f"train: loss {m['train_loss']['first']} -> {m['train_loss']['last']}, eval_loss {m.get('eval_loss')}, "
              f"{m['trainable_params']}/{m['total_params']} params trained -> {result.out_dir}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    from steps._data import DataError
    from steps._template import TemplateError

    paths = {"data_dir": Path("data/augmented"), "out_dir": Path("models/train")}
    return step_main(argv, step="train", doc=__doc__, config=TrainConfig, paths=paths, run=run, report=_report,
                     errors=(ConfigError, ModelError, TemplateError, DataError))  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(main())
