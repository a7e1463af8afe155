"""merge: fold a gated adapter into its base and publish a model ready to serve.

``python -m steps.merge MODEL_DIR EVAL_DIR OUT_DIR [--params params.yaml]``
(defaults ``models/train models/evaluate models/merged``). Runs only when EVAL_DIR/gate.json
passed for MODEL_DIR as it is now. A LoRA, DoRA or IA3 adapter is merged into its base loaded in
float32 (a QLoRA adapter too: its base is reloaded in full precision, never merged into 4-bit
weights); the merged model's logits must match the adapter model's on sample inputs within
``tolerance``, or nothing is published. A full fine-tune is published as trained. With
``keep_adapter`` the adapter is published unmerged with ``base_model.json`` naming its base, for
serving many adapters on one shared base. OUT_DIR gets the weights (safetensors), tokenizer,
chat_template.jinja, generation_config.json, a model card (README.md) with data and metric
lineage, and manifest.json, swapped in atomically.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps._builders import SEQ_CLS_STAGES, adapter_base_folder
from steps._cli import step_main
from steps._config import ConfigError
from steps._io import atomic_write_json, atomic_write_text, file_digest, publish_dir, read_jsonl, staging_dir
from steps._manifest import digests, git_revision, write_manifest
from steps._model import DEFAULT_BASE_MODEL, ModelError
from steps._template import to_chat
from steps._tracking import dvc_md5

SERVING_FILES = ("chat_template.jinja", "generation_config.json", "labels.json")
NOT_PUBLISHED = ("checkpoints", "manifest.json", "README.md", "training_args.bin")  # train-only files
FIXED_SAMPLES = (  # used when the training data's test split is not at hand
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [{"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": "Hello! How can I help?"}],
    "The quick brown fox jumps over the lazy dog. 1 2 3 4 5",
)
HUB_IDS = {DEFAULT_BASE_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}  # model-card metadata for aliases


class MergeError(ValueError):
    """The candidate may not or cannot be merged; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class MergeConfig:
    """The ``merge:`` section of params.yaml (``base_model`` comes from ``base:``).

    ``tolerance`` bounds the max absolute difference between the adapter model's and the merged
    model's logits, both computed in float32. Merging changes only the order of float32 sums, so an
    exact merge differs by rounding: measured 1.1e-4 on SmolLM2-135M (30 layers, logits up to 41)
    and ~5e-7 on a 2-layer model. A wrong merge (a module left out, a tied weight changed twice)
    differs like the adapter's own effect: 9.6 for the demo LoRA. 1e-2 sits ~100x above the
    rounding of deeper models and ~1000x below a real adapter's effect.
    """

    base_model: str = DEFAULT_BASE_MODEL  # from base:; must be the one the candidate was trained on
    keep_adapter: bool = False  # publish the adapter unmerged plus a pointer to its base (shared-base serving)
    tolerance: float = 1e-2
    sample_count: int = 4  # sample inputs for the logit check (test split records, else fixed texts)
    sample_max_tokens: int = 128  # per sample: enough positions to exercise every layer, cheap in float32

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(f"merge.tolerance: need a finite number >= 0; got {self.tolerance}")
        if min(self.sample_count, self.sample_max_tokens) < 1:
            raise ConfigError(f"merge: sample_count and sample_max_tokens must be >= 1; got {self.sample_count}, {self.sample_max_tokens}")


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    metrics: dict[str, Any]


def run(cfg: MergeConfig, model_dir: Path | str, eval_dir: Path | str, out_dir: Path | str) -> MergeResult:
    """Merge (or keep) the gated candidate in MODEL_DIR and publish OUT_DIR atomically.

    Args:
        cfg: the ``merge:`` section.
        model_dir: the train step's output (an adapter folder or a full model, with manifest.json).
        eval_dir: the evaluate step's output; its gate.json must have passed for MODEL_DIR.
        out_dir: where the servable model lands; left untouched when anything fails.

    Raises:
        MergeError: no passing gate for this candidate, an unmergeable adapter, a quantized base,
            or logits beyond ``cfg.tolerance``.
    """
    started = time.time()
    model_dir, eval_dir, out_dir = Path(model_dir), Path(eval_dir), Path(out_dir)
    gate = check_gate(model_dir, eval_dir)
    train = _read_json(model_dir / "manifest.json", "rerun the train step")
    if train["config"].get("base_model") != cfg.base_model:
        raise MergeError(f"{model_dir}/manifest.json: config.base_model is {train['config'].get('base_model')!r} but base.base_model "
                         f"in params is {cfg.base_model!r}; rerun train (and evaluate) or set base.base_model back")  # fmt: skip
    tmp = staging_dir(out_dir)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published model is an ordinary folder
        metrics = _adapter(cfg, model_dir, train, tmp) if (model_dir / "adapter_config.json").is_file() else _full(model_dir, tmp)
        metrics["params"] = _param_count(tmp)
        atomic_write_text(tmp / "README.md", model_card(cfg, model_dir, train, _eval_metrics(eval_dir, gate), metrics))
        inputs = {"train_manifest": model_dir / "manifest.json", "gate": eval_dir / "gate.json", "eval_metrics": eval_dir / "metrics.json"}
        write_manifest(tmp, "merge", cfg, inputs, {p.name: p for p in sorted(tmp.iterdir())}, metrics, started)
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergeResult(out_dir=out_dir, metrics=metrics)


def check_gate(model_dir: Path, eval_dir: Path) -> dict[str, Any]:
    """gate.json of EVAL_DIR, if it passed for MODEL_DIR as it is now; a MergeError otherwise.

    The candidate is matched twice: gate.json's ``candidate_dir`` must be MODEL_DIR (same folder),
    and every input of EVAL_DIR/manifest.json inside MODEL_DIR must still have the digest evaluate
    recorded, so a model retrained after evaluation is never merged on an old verdict.
    """
    path = eval_dir / "gate.json"
    fix = f"run `python -m steps.evaluate {model_dir} {eval_dir}` and merge only when its gate passes"
    gate = _read_json(path, fix)
    if gate.get("passed") is not True:
        reasons = "; ".join(gate.get("reasons") or []) or "none given"
        raise MergeError(f"{path}: passed is {gate.get('passed')!r} (reasons: {reasons}); a candidate that failed "
                         f"evaluation is never merged — improve it, retrain and {fix}")
    if not gate.get("candidate_dir") or Path(gate["candidate_dir"]).resolve() != model_dir.resolve():
        raise MergeError(f"{path}: candidate_dir is {gate.get('candidate_dir')!r}, not {model_dir}; "
                         f"that verdict is about another model — {fix}")
    manifest = _read_json(eval_dir / "manifest.json", fix)
    inside = {k: v for k, v in manifest.get("inputs", {}).items() if Path(v).resolve().is_relative_to(model_dir.resolve())}
    if not inside:
        raise MergeError(f"{eval_dir}/manifest.json: no input lies in {model_dir}, so which model passed cannot be proven; {fix}")
    now, then = digests(inside), manifest.get("input_digests", {})
    changed = [k for k in inside if now[k] != then.get(k)]
    if changed:
        raise MergeError(f"{eval_dir}/manifest.json: input {', '.join(changed)} ({inside[changed[0]]}) changed after evaluation; {fix}")
    return gate


def _adapter(cfg: MergeConfig, model_dir: Path, train: dict[str, Any], out: Path) -> dict[str, Any]:
    """Load base (float32) + adapter, then merge and check the logits, or keep the adapter."""
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, AutoTokenizer

    peft_cfg = PeftConfig.from_pretrained(str(model_dir))
    if peft_cfg.is_prompt_learning and not cfg.keep_adapter:
        raise MergeError(f"{model_dir}/adapter_config.json: peft_type {peft_cfg.peft_type.value} adds virtual tokens, which cannot be "
                         f"merged into weights; set merge.keep_adapter: true to serve the adapter on its base")  # fmt: skip
    base = _base_folder(model_dir, peft_cfg, train)
    quant = getattr(AutoConfig.from_pretrained(base), "quantization_config", None)
    if quant:  # never merge into quantized weights: the update would be rounded away
        kind = quant.get("quant_method") if isinstance(quant, dict) else type(quant).__name__
        raise MergeError(f"base model {base}: config.json has quantization_config ({kind}), so its weights are stored quantized; "
                         f"merging there loses the adapter's update; point base.base_model at the full-precision weights")  # fmt: skip
    stage, tok = train["config"].get("stage", "sft"), AutoTokenizer.from_pretrained(str(model_dir))
    model = PeftModel.from_pretrained(_load(base, stage, model_dir, tok), str(model_dir)).eval()  # float32, even for qlora
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


def _full(model_dir: Path, out: Path) -> dict[str, Any]:
    """A full fine-tune (or freeze) has nothing to merge: its files are published as trained."""
    if not (model_dir / "config.json").is_file():
        raise MergeError(f"{model_dir}: neither adapter_config.json nor config.json; it is not a train output — rerun the train step")
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and p.name not in NOT_PUBLISHED and not p.name.startswith("."):
            shutil.copy2(p, out / p.name)
    return {"method": "full", "merged": False, "max_abs_logit_diff": 0.0, "samples": 0}


def _base_folder(model_dir: Path, peft_cfg: Any, train: dict[str, Any]) -> str:
    """The folder the adapter was trained on (steps._builders.adapter_base_folder), as a MergeError when gone."""
    try:
        return adapter_base_folder(model_dir, train["config"])
    except (OSError, ValueError) as exc:
        raise MergeError(f"{model_dir}/adapter_config.json: base {peft_cfg.base_model_name_or_path!r} is gone and the train "
                         f"config's base cannot be loaded ({exc}); set base.base_model to the model it was trained on") from exc


def _load(where: str, stage: str, model_dir: Path, tok: Any) -> Any:
    """The model at ``where`` in float32, with the head and pad the candidate trained with."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if stage in SEQ_CLS_STAGES:
        names = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
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


def _param_count(folder: Path) -> int:
    """Parameters stored in the folder's safetensors files (read from the headers, nothing loaded)."""
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as fh:
            total += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    return total


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise MergeError(f"{path}: not found; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MergeError(f"{path}: not valid JSON ({exc.msg}); {fix}") from exc


def _eval_metrics(eval_dir: Path, gate: dict[str, Any]) -> dict[str, Any]:
    path = eval_dir / "metrics.json"
    found = _read_json(path, "rerun evaluate") if path.is_file() else {"candidate": gate.get("metrics", {})}
    return found | {"gate": {"passed": gate["passed"], "reasons": gate.get("reasons", [])}}


def model_card(cfg: MergeConfig, model_dir: Path, train: dict[str, Any], evaluation: dict[str, Any], metrics: dict[str, Any]) -> str:
    """README.md: what the model is, which data, code and scores it comes from, how to serve it, its limits."""
    c, gate = train["config"], evaluation["gate"]
    stage, method = c.get("stage", "?"), c.get("method", "?")
    hub = HUB_IDS.get(cfg.base_model) or (cfg.base_model if cfg.base_model.count("/") == 1 and not Path(cfg.base_model).exists() else None)
    adapter_out = metrics.get("adapter_type") and not metrics["merged"]
    data, where = train.get("inputs", {}), metrics.get("base_model_path")
    data_dir = Path(data["train"]).parent if "train" in data else None
    rows = [f"| {k} | {_fmt(v)} | {_fmt((evaluation.get('base') or {}).get(k))} | {_fmt((evaluation.get('production') or {}).get(k))} |"
            for k, v in sorted(evaluation.get("candidate", {}).items())]  # fmt: skip
    if metrics.get("merged"):
        how = (f"Adapter ({metrics['adapter_type']}) merged into the float32 base. Merged and adapter logits agree to "
               f"{metrics['max_abs_logit_diff']:.3g} (max abs, tolerance {cfg.tolerance}) on {metrics['samples']} samples from "
               f"{metrics['samples_from']}; the adapter itself moves them by up to {metrics['max_abs_adapter_effect']:.3g}.")  # fmt: skip
    elif adapter_out:
        how = (f"Adapter ({metrics['adapter_type']}) kept unmerged: load the base named in base_model.json and attach this folder "
               f"(`PeftModel.from_pretrained`, or a server's LoRA support) to serve many adapters on one shared base.")  # fmt: skip
    else:
        how = "Full fine-tune: the weights are published as trained (nothing to merge)."
    lines = [
        "---", f"library_name: {'peft' if adapter_out else 'transformers'}", *([f"base_model: {hub}"] if hub else []),
        f"pipeline_tag: {'text-classification' if stage in SEQ_CLS_STAGES else 'text-generation'}",
        f"tags: [tunegate, {stage}, {method}]", "---", "",
        f"# {cfg.base_model}: {stage} fine-tune ({method})", "", how, "",
        "## Lineage", "",
        f"- Base model: `{cfg.base_model}`" + (f" (`{where}`)" if where not in (None, cfg.base_model) else ""),
        *([f"- Started from: `{c['init_from']}`"] if c.get("init_from") else []),
        *(f"- Training data `{name}`: `{path}` sha256 `{train.get('input_digests', {}).get(name)}`" for name, path in data.items()),
        f"- DVC md5 of `{data_dir}`: `{dvc_md5(data_dir) if data_dir else None}`",
        f"- Train manifest: `{model_dir}/manifest.json` sha256 `{file_digest(model_dir / 'manifest.json')}`",
        f"- Code: trained at git `{train.get('git_revision')}`, merged at git `{git_revision()}`",
        f"- Training: {train.get('metrics', {}).get('steps')} steps, final train loss "
        f"{(train.get('metrics', {}).get('train_loss') or {}).get('last')}, eval loss {train.get('metrics', {}).get('eval_loss')}",
        "", "## Evaluation", "", f"Gate {'passed' if gate['passed'] else 'failed'}:",
        *(f"- {r}" for r in gate["reasons"] or ["(no reasons recorded)"]), "",
        "| metric | candidate | base | production |", "|---|---|---|---|", *rows, "",
        "## Intended use", "",
        f"The task its training data represents ({stage} on `{data_dir}`). Serve it with the bundled chat template "
        "(chat_template.jinja) and generation_config.json, which stops at the template's end-of-turn token: "
        "another template gives the model text it never saw.", "",
        "## Limitations", "",
        "- The scores above hold for the evaluation data above; other domains and languages are untested.",
        "- It inherits the base model's limitations and biases; no safety tuning beyond the base model's.",
        *(["- Trained as QLoRA against 4-bit NF4 base weights and merged into the full-precision base, so its outputs "
           "differ slightly from the 4-bit model trained (a merge never goes into 4-bit weights)."] if method == "qlora" else []),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _report(result: MergeResult) -> int:
    m = result.metrics
    what = "merged" if m["merged"] else ("kept the adapter" if m.get("adapter_type") else "published the full model")
    diff = "" if m["max_abs_logit_diff"] is None else f", max |logit diff| {m['max_abs_logit_diff']:.3g}"
    print(f"merge: {what} ({m['params']} params{diff}) -> {result.out_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    paths = {"model_dir": Path("models/train"), "eval_dir": Path("models/evaluate"), "out_dir": Path("models/merged")}
    return step_main(argv, step="merge", doc=__doc__, config=MergeConfig, paths=paths, run=run, report=_report,
                     errors=(ConfigError, MergeError, ModelError))  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(main())
