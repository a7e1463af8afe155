"""What a finished run leaves: the metrics for its manifest and the files to serve the model with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steps.core.io import atomic_write_text
from steps.models.adapters import count_params
from steps.models.builders import SEQ_CLS_STAGES, on_gpu, resolve_precision
from steps.training.config import TrainConfig
from steps.training.trainer import packs


def train_metrics(cfg: TrainConfig, trainer: Any, output: Any, final_eval: dict[str, Any]) -> dict[str, Any]:
    """Loss curve summary, eval loss, parameter counts, throughput and peak memory of a finished run."""
    import resource

    import torch

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    runtime = output.metrics.get("train_runtime") or 0.0
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    trainable, total = count_params(trainer.model)
    if on_gpu():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    metrics = {
        "train_loss": {"first": _r(losses[0]) if losses else None, "last": _r(losses[-1]) if losses else None,
                       "min": _r(min(losses)) if losses else None, "logged": len(losses)},  # fmt: skip
        "eval_loss": _r(final_eval.get("eval_loss")),
        "steps": trainer.state.global_step,
        "trainable_params": int(trainable),
        "total_params": int(total),
        "train_runtime_s": round(runtime, 3),
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if runtime else None,
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_kind": "cuda_max_allocated" if on_gpu() else "process_max_rss",
        "device": "cuda" if on_gpu() else "cpu",
        "precision": resolve_precision(cfg),
        "packing": packs(cfg),
        # The whole curve, for the evaluation report and DVC plots: [[step, loss], ...].
        "curve": {
            "train_loss": [[h["step"], _r(h["loss"])] for h in trainer.state.log_history if "loss" in h],
            "eval_loss": [[h["step"], _r(h["eval_loss"])] for h in trainer.state.log_history if "eval_loss" in h],
        },
    }
    ds = trainer.train_dataset
    if packs(cfg) and ds is not None and len(ds):
        used = sum(len(ids) for ids in ds["input_ids"])
        metrics["padding_efficiency"] = round(used / (len(ds) * cfg.max_length), 4)  # filled share of packed rows
    return metrics


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 5)


def save_outputs(cfg: TrainConfig, trainer: Any, tokenizer: Any, out_dir: Path) -> None:
    """Final model (adapter for PEFT, full weights otherwise), tokenizer, chat template, generation config."""
    out_dir = Path(out_dir)
    trainer.save_model(str(out_dir))  # every rank: FSDP/DeepSpeed gather the weights; only the main one writes
    if not trainer.args.should_save:
        return
    # A pickle of TrainingArguments (paths, a timestamped logging_dir) differs between equal runs; the
    # manifest holds the config as run, and the checkpoints keep their own copy for the Trainer.
    (out_dir / "training_args.bin").unlink(missing_ok=True)
    sort_adapter_config(out_dir)
    tokenizer.save_pretrained(str(out_dir))
    save_serving_files(cfg, trainer, tokenizer, out_dir)


SET_VALUED = ("target_modules", "modules_to_save", "exclude_modules")  # PEFT matches these as sets


def sort_adapter_config(out_dir: Path) -> None:
    """Rewrite ``adapter_config.json`` with its set-valued lists sorted: PEFT writes ``target_modules``
    from a Python set, in an order that changes between processes, so equal adapters got unequal digests."""
    path = Path(out_dir) / "adapter_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in SET_VALUED:
        if isinstance(config.get(key), list) and all(isinstance(x, str) for x in config[key]):
            config[key] = sorted(config[key])
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_serving_files(cfg: TrainConfig, trainer: Any, tokenizer: Any, out_dir: Path) -> None:
    """What serving needs beside the weights and tokenizer: the chat template and the generation
    config (eos = the template's end-of-turn token), or labels.json for classifiers. Written into
    the final folder and into every checkpoint, so any checkpoint serves the way it was trained."""
    out_dir = Path(out_dir)
    if tokenizer.chat_template and not (out_dir / "chat_template.jinja").is_file():
        (out_dir / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    if cfg.stage in SEQ_CLS_STAGES:
        (out_dir / "labels.json").write_text(json.dumps(model.config.id2label, indent=2) + "\n", encoding="utf-8")
        return
    gen = model.generation_config
    eot = _end_of_turn_id(tokenizer)
    gen.eos_token_id = eot if eot == tokenizer.eos_token_id else [eot, tokenizer.eos_token_id]
    gen.pad_token_id = tokenizer.pad_token_id
    gen.save_pretrained(str(out_dir))


def _end_of_turn_id(tokenizer: Any) -> int:
    from steps.models.template import end_of_turn_id

    return end_of_turn_id(tokenizer) if tokenizer.chat_template else tokenizer.eos_token_id
