"""evaluate: score the candidate against the base and production models, and gate it.

Reads DATA_DIR/{test,heldout}.jsonl and the trained MODEL_DIR; scores the candidate, the base
model and (when the registry has one) the production model on the same items: perplexity on the
test split's assistant tokens and on held-out text, generated answers under each model's own chat
template (BLEU, ROUGE, BERTScore, exact match, embedding similarity), an LLM judge, safety rules,
and forgetting on the held-out set. ``steps.evaluation.gate.decide`` turns the table into pass or fail.
Writes OUT_DIR atomically: metrics.json (DVC metrics), gate.json, plots/*.json (DVC plots),
examples.jsonl, report.html and manifest.json.

    python -m steps.evaluate data/validated models/train models/evaluate [--params params.yaml]
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, publish_dir, read_json, staging_dir
from steps.core.manifest import write_manifest
from steps.core.step import Step
from steps.evaluation import measure as E
from steps.evaluation.config import EvaluateConfig
from steps.evaluation.gate import decide
from steps.evaluation.probes import ProbeError, probe_rows, regressions
from steps.evaluation.summary import summary
from steps.models.loading import ModelError
from steps.models.template import TemplateError


@dataclasses.dataclass(frozen=True)
class EvaluateResult:
    passed: bool
    reasons: list[str]
    table: dict[str, dict[str, Any] | None]
    metrics_path: Path
    report_path: Path


def resolve_production(cfg: EvaluateConfig, candidate_dir: Path | None = None) -> Path | None:
    """The production model folder ``cfg.production`` names: the registry's (auto), none, or a path.

    None also when production *is* the candidate (its merge manifest records this very train
    manifest): a model compared with itself proves nothing, and a rerun stays a no-op.
    """
    if cfg.production == "none":
        return None
    if cfg.production != "auto":
        path = Path(cfg.production)
        if not path.is_dir():
            raise ConfigError(f"evaluate.production: {path} is not a model folder; use auto, none or a folder")
        return path
    try:
        from steps.registry.versions import production_model_dir
    except ImportError:
        return None
    found = production_model_dir()
    if found is not None and candidate_dir is not None and _same_candidate(found, Path(candidate_dir)):
        return None
    return found


def _same_candidate(production_dir: Path, candidate_dir: Path) -> bool:
    from steps.core.io import file_digest

    merged, trained = production_dir / "manifest.json", candidate_dir / "manifest.json"
    if not (merged.is_file() and trained.is_file()):
        return False
    recorded = read_json(merged).get("input_digests", {}).get("train_manifest")
    return recorded == file_digest(trained)


def run(cfg: EvaluateConfig, data_dir: Path, model_dir: Path, out_dir: Path, production_dir: Path | None = None) -> EvaluateResult:
    """Score candidate, base and production on DATA_DIR, gate the candidate, publish OUT_DIR."""
    from steps.evaluation import scoring as S

    started = time.time()
    data_dir, model_dir, out_dir = Path(data_dir), Path(model_dir), Path(out_dir)
    if not (model_dir / "manifest.json").is_file():
        raise ModelError(f"{model_dir}: no manifest.json; run `tunegate train` first (it writes {model_dir})")
    train_manifest = read_json(model_dir / "manifest.json", "rerun `tunegate train`")
    evalset = E.build_eval_set(data_dir, cfg.max_examples, cfg.max_heldout)
    if not evalset.test:
        raise ModelError(f"{data_dir}/test.jsonl has no conversation with an assistant turn to evaluate on")
    scored = S.score_all(cfg, evalset, model_dir, production_dir)
    regressed = regressions(scored.probes["candidate"], scored.probes["production"]) if "production" in scored.probes else None
    decision = decide(scored.table, cfg.gate, scored.items, regressed, seed=cfg.seed)

    tmp = staging_dir(out_dir)
    curves = train_manifest.get("metrics", {}).get("curve", {})
    metrics = {**scored.table, "gate": decision.as_dict(), "production_version": scored.production_version,
               "probes": probe_rows(scored.probes), "summary": summary(scored.table, decision, scored.probes),
               "signatures": scored.signatures}  # fmt: skip
    examples = E.worst_examples(evalset, scored.outputs, scored.per_example["candidate"],
                                scored.per_example["base"], "rougeL", cfg.worst_examples)  # fmt: skip
    atomic_write_json(tmp / "metrics.json", metrics)
    atomic_write_json(tmp / "gate.json", {"passed": decision.passed, "reasons": decision.reasons,
                                          "candidate_dir": str(model_dir), "metrics": scored.table["candidate"],
                                          "candidate_digests": train_manifest.get("output_digests", {})})  # fmt: skip
    atomic_write_jsonl(tmp / "examples.jsonl", examples)
    _write_report(tmp, metrics, curves, examples, cfg, model_dir, scored, train_manifest)
    outputs = {name: tmp / name for name in ("metrics.json", "gate.json", "examples.jsonl", "report.html", "plots")}
    manifest_metrics = {"passed": decision.passed, "reasons": decision.reasons, "candidate": scored.table["candidate"],
                        "judge": scored.judge_backend, "seconds": scored.seconds}  # fmt: skip
    write_manifest(tmp, "evaluate", cfg, {"data": data_dir, "model": model_dir / "manifest.json"}, outputs,
                   manifest_metrics, started)  # fmt: skip
    publish_dir(tmp, out_dir)
    gc.collect()
    return EvaluateResult(decision.passed, decision.reasons, scored.table, out_dir / "metrics.json", out_dir / "report.html")


def _write_report(tmp: Path, metrics: dict, curves: dict, examples: list, cfg: EvaluateConfig, model_dir: Path,
                  scored: Any, train_manifest: dict) -> None:  # fmt: skip
    from steps.core.manifest import git_revision
    from steps.evaluation.report.data import plots_data
    from steps.evaluation.report.page import render_report

    for name, rows in plots_data(metrics, curves).items():
        atomic_write_json(tmp / "plots" / name, rows)
    meta = {"model_dir": str(model_dir), "base_model": cfg.base_model, "production_version": scored.production_version,
            "git_revision": git_revision(), "judge": scored.judge_backend,
            "generated_at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "data_digests": train_manifest.get("input_digests", {}), "example_metric": "rougeL"}  # fmt: skip
    atomic_write_text(tmp / "report.html", render_report(metrics, curves, examples, meta))


def _report(result: EvaluateResult) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluate")
    names = [m for m in ("candidate", "base", "production") if result.table.get(m)]
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
    for metric in result.table["candidate"]:
        cells = [result.table[n].get(metric) for n in names]
        table.add_row(metric, *("-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in cells))
    console = Console()
    console.print(table)
    for reason in result.reasons:
        console.print(f"[red]gate[/red] {reason}", highlight=False)
    console.print(f"{'PASSED' if result.passed else 'FAILED'}  report: {result.report_path}")
    return 0 if result.passed else 1


def _run(cfg: EvaluateConfig, data_dir: Path, model_dir: Path, out_dir: Path) -> EvaluateResult:
    return run(cfg, data_dir, model_dir, out_dir, resolve_production(cfg, model_dir))


STEP = Step(name="evaluate", config=EvaluateConfig, result=EvaluateResult, run=run, report=_report, doc=__doc__,
            paths={"data_dir": "data/validated", "model_dir": "models/train", "out_dir": "models/evaluate"},
            errors=(ConfigError, ModelError, TemplateError, ProbeError),
            cli_run=_run)


def main(argv: list[str] | None = None) -> int:
    return STEP.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
