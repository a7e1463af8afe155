"""merge: fold a gated adapter into its base and publish a model ready to serve.

``python -m steps.merge MODEL_DIR EVALUATE_DIR OUT_DIR [--params params.yaml]``
(defaults ``models/train models/evaluate models/merged``). Runs only when EVALUATE_DIR/gate.json
passed for MODEL_DIR as it is now. A LoRA, DoRA or IA3 adapter is merged into its base loaded in
float32 (a QLoRA adapter too: its base is reloaded in full precision, never merged into 4-bit
weights); the merged model's logits must match the adapter model's on sample inputs within
``tolerance``, or nothing is published. A full fine-tune is published as trained. With
``keep_adapter`` the adapter is published unmerged with ``base_model.json`` naming its base, for
serving many adapters on one shared base. OUT_DIR gets the weights (safetensors), tokenizer,
chat_template.jinja, generation_config.json, a model card (README.md) with data and metric
lineage, and manifest.json, swapped in atomically.

The work lives in steps/models/: steps/models/merging.py (loading, merging and
the logit check) and steps/models/card.py (the model card).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.io import atomic_write_text, publish_dir, read_json, staging_dir
from steps.core.manifest import digests, write_manifest
from steps.core.step import Step
from steps.models.card import eval_metrics, model_card
from steps.models.loading import ModelError
from steps.models.merge_config import MergeConfig
from steps.models.merging import MergeError, copy_full, merge_adapter, param_count


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    metrics: dict[str, Any]


def run(cfg: MergeConfig, model_dir: Path | str, evaluate_dir: Path | str, out_dir: Path | str) -> MergeResult:
    """Merge (or keep) the gated candidate in MODEL_DIR and publish OUT_DIR atomically.

    Args:
        cfg: the ``merge:`` section.
        model_dir: the train step's output (an adapter folder or a full model, with manifest.json).
        evaluate_dir: the evaluate step's output; its gate.json must have passed for MODEL_DIR.
        out_dir: where the servable model lands; left untouched when anything fails.

    Raises:
        MergeError: no passing gate for this candidate, an unmergeable adapter, a quantized base,
            or logits beyond ``cfg.tolerance``.
    """
    started = time.time()
    model_dir, evaluate_dir, out_dir = Path(model_dir), Path(evaluate_dir), Path(out_dir)
    gate = check_gate(model_dir, evaluate_dir)
    train = read_json(model_dir / "manifest.json", "rerun the train step", error=MergeError)
    if train["config"].get("base_model") != cfg.base_model:
        raise MergeError(f"{model_dir}/manifest.json: config.base_model is {train['config'].get('base_model')!r} but base.base_model "
                         f"in params is {cfg.base_model!r}; rerun train (and evaluate) or set base.base_model back")  # fmt: skip
    tmp = staging_dir(out_dir)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published model is an ordinary folder
        metrics = merge_adapter(cfg, model_dir, train, tmp) if (model_dir / "adapter_config.json").is_file() else copy_full(model_dir, tmp)
        metrics["params"] = param_count(tmp)
        atomic_write_text(tmp / "README.md", model_card(cfg, model_dir, train, eval_metrics(evaluate_dir, gate), metrics))
        inputs = {"train_manifest": model_dir / "manifest.json", "gate": evaluate_dir / "gate.json", "eval_metrics": evaluate_dir / "metrics.json"}
        write_manifest(tmp, "merge", cfg, inputs, {p.name: p for p in sorted(tmp.iterdir())}, metrics, started)
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergeResult(out_dir=out_dir, metrics=metrics)


def check_gate(model_dir: Path, evaluate_dir: Path) -> dict[str, Any]:
    """gate.json of EVALUATE_DIR, if it passed for MODEL_DIR as it is now; a MergeError otherwise.

    The candidate is matched twice: gate.json's ``candidate_dir`` must be MODEL_DIR (same folder),
    and every input of EVALUATE_DIR/manifest.json inside MODEL_DIR must still have the digest evaluate
    recorded, so a model retrained after evaluation is never merged on an old verdict.
    """
    path = evaluate_dir / "gate.json"
    fix = f"run `python -m steps.evaluate {model_dir} {evaluate_dir}` and merge only when its gate passes"
    gate = read_json(path, fix, error=MergeError)
    if gate.get("passed") is not True:
        reasons = "; ".join(gate.get("reasons") or []) or "none given"
        raise MergeError(f"{path}: passed is {gate.get('passed')!r} (reasons: {reasons}); a candidate that failed "
                         f"evaluation is never merged — improve it, retrain and {fix}")
    if not gate.get("candidate_dir") or Path(gate["candidate_dir"]).resolve() != model_dir.resolve():
        raise MergeError(f"{path}: candidate_dir is {gate.get('candidate_dir')!r}, not {model_dir}; "
                         f"that verdict is about another model — {fix}")
    manifest = read_json(evaluate_dir / "manifest.json", fix, error=MergeError)
    inside = {k: v for k, v in manifest.get("inputs", {}).items() if Path(v).resolve().is_relative_to(model_dir.resolve())}
    if not inside:
        raise MergeError(f"{evaluate_dir}/manifest.json: no input lies in {model_dir}, so which model passed cannot be proven; {fix}")
    now, then = digests(inside), manifest.get("input_digests", {})
    changed = [k for k in inside if now[k] != then.get(k)]
    if changed:
        raise MergeError(f"{evaluate_dir}/manifest.json: input {', '.join(changed)} ({inside[changed[0]]}) changed after evaluation; {fix}")
    return gate


def _report(result: MergeResult) -> int:
    m = result.metrics
    what = "merged" if m["merged"] else ("kept the adapter" if m.get("adapter_type") else "published the full model")
    diff = "" if m["max_abs_logit_diff"] is None else f", max |logit diff| {m['max_abs_logit_diff']:.3g}"
    print(f"merge: {what} ({m['params']} params{diff}) -> {result.out_dir}")
    return 0


STEP = Step(name="merge", config=MergeConfig, result=MergeResult, run=run, report=_report, doc=__doc__,
            paths={"model_dir": "models/train", "evaluate_dir": "models/evaluate", "out_dir": "models/merged"},
            errors=(ConfigError, MergeError, ModelError))


def main(argv: list[str] | None = None) -> int:
    return STEP.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
