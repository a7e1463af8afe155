"""Helpers of steps/merge.py: fold an adapter into its base and check the result.

What merging needs apart from the step's Config, run() and main(): loading the base in float32
with the head and pad the candidate trained with (a QLoRA base reloaded in full precision, never
merged into 4-bit weights), merging or keeping the adapter, the logit comparison on sample
inputs that proves the merged model equals the adapter model, publishing a full fine-tune as
trained, and counting the published parameters. Kept apart so the step module reads in one
sitting; steps/merge.py imports what it needs (``MergeError``, ``merge_adapter``, ``copy_full``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.core.io import atomic_write_json, read_json, read_jsonl
from steps.models.builders import SEQ_CLS_STAGES
from steps.models.folders import adapter_base, with_adapter
from steps.models.loading import tokenizer_from
from steps.models.template import to_chat

if TYPE_CHECKING:  # for annotations only: steps.merge imports this module
    from steps.models.merge_config import MergeConfig

SERVING_FILES = ("chat_template.jinja", "generation_config.json", "labels.json")
NOT_PUBLISHED = ("checkpoints", "manifest.json", "README.md", "training_args.bin")  # train-only files
FIXED_SAMPLES = (  # used when the training data's test split is not at hand
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [{"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": "Hello! How can I help?"}],
    "The quick brown fox jumps over the lazy dog. 1 2 3 4 5",
)


class MergeError(ValueError):
    """The candidate may not or cannot be merged; the message names the file, the field and the fix."""


def merge_adapter(cfg: MergeConfig, model_dir: Path, train: dict[str, Any], out: Path) -> dict[str, Any]:
    """Load base (float32) + adapter, then merge and check the logits, or keep the adapter."""
    import torch
    from peft import PeftConfig
    from transformers import AutoConfig

    peft_cfg = PeftConfig.from_pretrained(str(model_dir))
    if peft_cfg.is_prompt_learning and not cfg.keep_adapter:
        raise MergeError(f"{model_dir}/adapter_config.json: peft_type {peft_cfg.peft_type.value} adds virtual tokens, which cannot be "
                         f"merged into weights; set merge.keep_adapter: true to serve the adapter on its base")  # fmt: skip
    base = _base_folder(model_dir, peft_cfg)
    quant = getattr(AutoConfig.from_pretrained(base), "quantization_config", None)
    if quant:  # never merge into quantized weights: the update would be rounded away
        kind = quant.get("quant_method") if isinstance(quant, dict) else type(quant).__name__
        raise MergeError(f"base model {base}: config.json has quantization_config ({kind}), so its weights are stored quantized; "
                         f"merging there loses the adapter's update; point base.base_model at the full-precision weights")  # fmt: skip
    stage, tok = train["config"].get("stage", "sft"), tokenizer_from(model_dir)
    model = with_adapter(_load(base, stage, model_dir, tok), model_dir).eval()  # float32, even for qlora
    samples, source = _samples(cfg, tok, train)
    with torch.no_grad():
        want = _logits(model, samples)
        with model.disable_adapter():
            effect = _max_diff(want, _logits(model, samples))
    metrics = {"method": train["config"].get("method"), "adapter_type": peft_cfg.peft_type.value, "base_model_path": base,
               "base_dtype": "float32", "samples": len(samples), "samples_from": source, "tolerance": cfg.tolerance,
               "max_abs_adapter_effect": effect}  # fmt: skip
    if cfg.keep_adapter:
        for p in model_dir.glob("adapter_*"):  # byte for byte what was evaluated
            shutil.copy2(p, out / p.name)
        pointer = {"base_model": cfg.base_model, "base_model_path": base, "init_from": train["config"].get("init_from")}
        atomic_write_json(out / "base_model.json", pointer)
        metrics |= {"merged": False, "max_abs_logit_diff": None}
    else:
        model.merge_and_unload().save_pretrained(str(out))
        del model
        with torch.no_grad():  # the model as saved, reloaded: what serving will load
            diff = _max_diff(want, _logits(_load(str(out), stage, model_dir, tok), samples))
        if not diff <= cfg.tolerance:
            raise MergeError(f"{model_dir}: the merged model's logits differ from the adapter model's by {diff:.3g} (max abs, float32) "
                             f"> merge.tolerance {cfg.tolerance} on {len(samples)} samples; nothing was published. A likely cause is an "
                             f"adapter on a weight tied to another (lm_head tied to the embeddings): merging changes both. Retrain without "
                             f"that target, or set merge.keep_adapter: true to serve the adapter unmerged")  # fmt: skip
        metrics |= {"merged": True, "max_abs_logit_diff": diff}
    tok.save_pretrained(str(out))
    for name in SERVING_FILES:  # the chat template, generation config (eos = end of turn) and labels as trained
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out / name)
    return metrics


def copy_full(model_dir: Path, out: Path) -> dict[str, Any]:
    """A full fine-tune (or freeze) has nothing to merge: its files are published as trained."""
    if not (model_dir / "config.json").is_file():
        raise MergeError(f"{model_dir}: neither adapter_config.json nor config.json; it is not a train output — rerun the train step")
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and p.name not in NOT_PUBLISHED and not p.name.startswith("."):
            shutil.copy2(p, out / p.name)
    return {"method": "full", "merged": False, "max_abs_logit_diff": 0.0, "samples": 0}


def _base_folder(model_dir: Path, peft_cfg: Any) -> str:
    """The folder the adapter was trained on (steps.models.folders.adapter_base), as a MergeError when gone."""
    try:
        return adapter_base(model_dir)
    except (OSError, ValueError) as exc:
        raise MergeError(f"{model_dir}/adapter_config.json: base {peft_cfg.base_model_name_or_path!r} is gone and the train "
                         f"config's base cannot be loaded ({exc}); set base.base_model to the model it was trained on") from exc


def _load(where: str, stage: str, model_dir: Path, tok: Any) -> Any:
    """The model at ``where`` in float32, with the head and pad the candidate trained with."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if stage in SEQ_CLS_STAGES:
        names = read_json(model_dir / "labels.json", "rerun the train step", error=MergeError)
        kwargs |= {"num_labels": len(names), "id2label": {int(k): v for k, v in names.items()}}
    auto = AutoModelForSequenceClassification if stage in SEQ_CLS_STAGES else AutoModelForCausalLM
    model = auto.from_pretrained(where, trust_remote_code=False, **kwargs)
    model.config.pad_token_id = tok.pad_token_id  # as train's _set_pad left it; classifiers pool on it
    return model.eval()


def _samples(cfg: MergeConfig, tok: Any, train: dict[str, Any]) -> tuple[list[list[int]], str]:
    """Token ids of up to ``sample_count`` inputs: the test split beside the training data, else fixed texts."""
    test = Path(train.get("inputs", {}).get("train", "")).parent / "test.jsonl"
    records = read_jsonl(test)[: cfg.sample_count] if test.is_file() else []
    items = [(r.get("messages") or []) + (r.get("chosen") or r.get("completion") or []) or r.get("text") or "" for r in records]
    source = str(test) if any(items) else "fixed"
    ids = [_ids(tok, item, cfg.sample_max_tokens) for item in (items if any(items) else FIXED_SAMPLES[: cfg.sample_count])]
    return [i for i in ids if i], source


def _ids(tok: Any, item: list[dict[str, Any]] | str, limit: int) -> list[int]:
    if isinstance(item, list):
        item = tok.apply_chat_template(to_chat(item), tokenize=False) if tok.chat_template else "\n".join(m["content"] for m in item)
    return tok(item, add_special_tokens=False)["input_ids"][:limit]


def _logits(model: Any, samples: list[list[int]]) -> list[Any]:
    import torch

    return [model(input_ids=torch.tensor([ids])).logits.float() for ids in samples]


def _max_diff(a: list[Any], b: list[Any]) -> float:
    return max((float((x - y).abs().max()) for x, y in zip(a, b)), default=0.0)


def param_count(folder: Path) -> int:
    """Parameters stored in the folder's safetensors files (read from the headers, nothing loaded)."""
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as fh:
            total += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    return total
