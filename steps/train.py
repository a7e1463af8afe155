"""Train: fine-tune the base model on the validated data with one stage and one method.

``python -m steps.train DATA_DIR OUT_DIR [--params params.yaml]``. DATA_DIR holds
``train.jsonl`` and ``validation.jsonl`` (canonical records that passed validate);
OUT_DIR receives the model (an adapter for PEFT methods, full weights otherwise),
tokenizer, chat template, generation_config.json, checkpoints/ and manifest.json,
swapped in atomically. A killed run, started again, resumes from its last complete
checkpoint (steps.training.resume). Stages sft, pt and cls are built in steps.training.trainer;
preference and RL stages come from steps.training.rlhf.build.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.io import publish_dir, usual_modes
from steps.core.manifest import write_manifest
from steps.core.step import Step
from steps.core.tracking import log_lineage
from steps.models.loading import ModelError
from steps.models.template import TemplateError
from steps.training import outputs as O
from steps.training import resume as R
from steps.training import trainer as T
from steps.training.config import TrainConfig
from steps.training.datasets import DataError


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    metrics: dict[str, Any]


def run(cfg: TrainConfig, data_dir: Path | str, out_dir: Path | str, callbacks: tuple[Any, ...] = ()) -> TrainResult:
    """Train ``cfg.stage`` with ``cfg.method`` on DATA_DIR and publish OUT_DIR atomically.

    Checkpoints are written to ``.{OUT_DIR name}.resume/`` beside OUT_DIR, which outlives a killed
    run; started again with the same config and data, the run resumes from its last complete
    checkpoint and ends with the same weights (steps.training.resume). That folder becomes OUT_DIR at the end.

    Args:
        cfg: the ``train:`` section.
        data_dir: validated data folder with train.jsonl and validation.jsonl.
        out_dir: where the model, tokenizer, checkpoints and manifest land.
        callbacks: extra ``transformers.TrainerCallback`` objects (progress reporting, tests).
    """
    from steps.training.datasets import read_split

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
            if resume is not None and R.finished(resume):  # killed after its last checkpoint: train() would add a step
                output = R.finish_from(trainer, resume)
            else:
                output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            final_eval = trainer.evaluate() if trainer.eval_dataset is not None else {}
        metrics = O.train_metrics(cfg, trainer, output, final_eval) | {"data": data_stats, "world_size": trainer.args.world_size}
        metrics["resume"] = {"from_step": int(resume.name.split("-")[-1]) if resume else None, **note}
        O.save_outputs(cfg, trainer, tokenizer, work)
        metrics["tracking_dir"] = T.tracking_dir()
        if main_rank:
            _publish(cfg, work, out_dir, inputs, metrics, started)
            log_lineage(data_dir, inputs, out_dir, f"model-{cfg.stage}-{cfg.method}",  # after publishing: the files are in place
                        {"stage": cfg.stage, "method": cfg.method, "base_model": cfg.base_model})
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
    usual_modes(work)  # every published file 0644, whatever mode its library wrote it with
    write_manifest(work, "train", cfg, inputs, outputs, metrics, started)
    publish_dir(work, out_dir)


def _report(result: TrainResult) -> int:
    m = result.metrics
    if is_main_rank():
        print(f"train: loss {m['train_loss']['first']} -> {m['train_loss']['last']}, eval_loss {m.get('eval_loss')}, "
              f"{m['trainable_params']}/{m['total_params']} params trained -> {result.out_dir}")  # fmt: skip
    return 0


STEP = Step(name="train", config=TrainConfig, result=TrainResult, run=run, report=_report, doc=__doc__,
            paths={"data_dir": "data/augmented", "out_dir": "models/train"},
            errors=(ConfigError, ModelError, TemplateError, DataError))


def main(argv: list[str] | None = None) -> int:
    return STEP.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
