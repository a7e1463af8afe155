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

The work lives in private modules, re-exported here: steps/_merging.py (loading, merging and
the logit check) and steps/_model_card.py (the model card).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps._cli import step_main
from steps._config import ConfigError
from steps._io import atomic_write_text, publish_dir, staging_dir
from steps._manifest import digests, write_manifest
from steps._merging import FIXED_SAMPLES, NOT_PUBLISHED, SERVING_FILES, MergeError, _adapter, _full, _param_count, _read_json
from steps._model import DEFAULT_BASE_MODEL, ModelError
from steps._model_card import HUB_IDS, _eval_metrics, model_card

__all__ = [
    "FIXED_SAMPLES", "HUB_IDS", "NOT_PUBLISHED", "SERVING_FILES", "MergeConfig", "MergeError", "MergeResult", "check_gate",
    "main", "model_card", "run",
]  # fmt: skip


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
