"""Helper of steps/merge.py: the model card (README.md) published beside the weights.

The card says what the model is, which base, data (sha256 and DVC md5), code revision and
scores it comes from, how to serve it and its limits, so a published folder explains itself
without the pipeline at hand. Kept apart from the step module, which calls ``model_card``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.core.io import file_digest, read_json
from steps.core.lineage import dvc_lock_md5
from steps.core.manifest import git_revision
from steps.models.builders import SEQ_CLS_STAGES
from steps.models.loading import DEFAULT_BASE_MODEL
from steps.models.merging import MergeError

if TYPE_CHECKING:  # for annotations only: steps.merge imports this module
    from steps.models.merge_config import MergeConfig

HUB_IDS = {DEFAULT_BASE_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}  # model-card metadata for aliases


def eval_metrics(evaluate_dir: Path, gate: dict[str, Any]) -> dict[str, Any]:
    path = evaluate_dir / "metrics.json"
    found = read_json(path, "rerun evaluate", error=MergeError) if path.is_file() else {"candidate": gate.get("metrics", {})}
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
        f"- DVC md5 of `{data_dir}`: `{dvc_lock_md5(data_dir) if data_dir else None}`",
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
