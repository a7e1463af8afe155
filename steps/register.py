"""register: store the gated, merged model in DVC and register it in GTO as the next version.

``python -m steps.register MERGED_DIR EVALUATE_DIR OUT_DIR [--params params.yaml]``.
Reads EVALUATE_DIR/metrics.json and gate.json; a candidate whose gate did not pass is not
registered (exit 1). Otherwise pushes MERGED_DIR to the DVC remote (``registry.remote``), tags
the next semantic version (``tunegate-model@v0.1.0``, then the ``register.bump`` part) with
its metrics, gate, lineage (train manifest: params, git revision, data digests; DVC md5 of
the training data ``register.data_dir`` and of each raw file) and the model's DVC md5, assigns ``staging`` and,
when W&B is online, links it in the W&B Registry under the same alias. Writes
OUT_DIR/registration.json (what the promote step reads) and manifest.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.io import atomic_write_json, publish_dir, read_json, staging_dir
from steps.core.lineage import model_lineage
from steps.core.manifest import write_manifest
from steps.core.step import Step
from steps.registry.config import RegisterConfig
from steps.registry.settings import RegistryError, load_step_config
from steps.registry.versions import Registry
from steps.registry.wandb_link import link_wandb


@dataclass(frozen=True)
class RegisterResult:
    registered: bool
    version: str | None
    tag: str | None
    model_md5: str | None
    stage: str | None
    reasons: list[str]
    wandb: str
    out_dir: Path


def configure(params: dict[str, Any]) -> RegisterConfig:
    """``register:`` plus ``registry:`` (what the flow and main() both use)."""
    return load_step_config(RegisterConfig, "register", params)


def run(cfg: RegisterConfig, merged_dir: Path | str, evaluate_dir: Path | str, out_dir: Path | str) -> RegisterResult:
    """Register MERGED_DIR as a new version if EVALUATE_DIR's gate passed; write OUT_DIR atomically."""
    started, merged_dir, evaluate_dir, out_dir = time.time(), Path(merged_dir), Path(evaluate_dir), Path(out_dir)
    metrics_path, gate_path = evaluate_dir / "metrics.json", evaluate_dir / "gate.json"
    evaluation = read_json(metrics_path, error=RegistryError, missing_ok=True)
    if evaluation is None or not isinstance(evaluation.get("candidate"), dict):
        raise RegistryError(f"{metrics_path}: missing or without a 'candidate' entry; run the evaluate step first")
    gate = read_json(gate_path, error=RegistryError, missing_ok=True) or evaluation.get("gate") or {}
    if gate.get("passed") is not True:
        reasons = [f"gate did not pass ({gate_path}): " + ("; ".join(gate.get("reasons") or []) or "no gate result")]
        result = RegisterResult(False, None, None, None, None, reasons, "not linked", out_dir)
    elif (same := _registered_with(cfg, weights_digests(merged_dir))) is not None:
        # The same weights as a version already registered (a rerun after a params change that did not
        # touch training): that version stands, no second tag for one model.
        result = RegisterResult(True, same.version, same.tag, same.record["model"]["md5"], None,
                                [f"same weights as {same.version}: not registered again"], "not linked", out_dir)  # fmt: skip
    else:
        record = {"metrics": evaluation["candidate"], "gate": {"passed": True, "reasons": gate.get("reasons") or []},
                  "evaluated_against": evaluation.get("production_version"), "production_metrics": evaluation.get("production"),
                  "weights": weights_digests(merged_dir), "lineage": collect_lineage(cfg, merged_dir)}  # fmt: skip
        info = Registry(cfg.registry).register(merged_dir, record, bump=cfg.bump, stage=cfg.stage, who=cfg.who, why=cfg.message)
        wandb = link_wandb(cfg.registry, info, cfg.stage)
        result = RegisterResult(True, info.version, info.tag, info.record["model"]["md5"], cfg.stage,
                                [f"{info.version} registered at {info.commit[:12]}, stage {cfg.stage}"], wandb, out_dir)  # fmt: skip
    registration = {"registered": result.registered, "artifact": cfg.registry.artifact, "version": result.version,
                    "tag": result.tag, "stage": result.stage, "model_md5": result.model_md5, "remote": cfg.registry.remote,
                    "reasons": result.reasons, "wandb": result.wandb}  # fmt: skip
    tmp = staging_dir(out_dir)
    atomic_write_json(tmp / "registration.json", registration)
    inputs = {"merged": merged_dir, "metrics": metrics_path, "gate": gate_path}
    write_manifest(tmp, "register", cfg, inputs, {"registration": tmp / "registration.json"}, registration, started)
    publish_dir(tmp, out_dir)
    return result


def weights_digests(merged_dir: Path) -> dict[str, str]:
    """sha256 of each weights file the merge step published (its manifest's output digests)."""
    outputs = (read_json(Path(merged_dir) / "manifest.json", error=RegistryError, missing_ok=True) or {}).get("output_digests") or {}
    return {name: digest for name, digest in sorted(outputs.items()) if name.endswith(".safetensors") and digest}


def _registered_with(cfg: RegisterConfig, weights: dict[str, str]) -> Any:
    """The registered version whose record carries exactly these weights, if any."""
    if not weights:
        return None
    versions = Registry(cfg.registry).state().versions.values()
    return next((v for v in versions if v.record.get("weights") == weights), None)


def collect_lineage(cfg: RegisterConfig, merged_dir: Path) -> dict[str, Any]:
    """What the model came from (steps.core.lineage.model_lineage), from the train and merge manifests.

    Recorded in the version's tag, so ``tunegate lineage`` works after the workspace has moved on.
    """
    train_manifest = Path(cfg.train_dir) / "manifest.json"
    train = read_json(train_manifest, error=RegistryError, missing_ok=True) or {}
    merged = read_json(merged_dir / "manifest.json", error=RegistryError, missing_ok=True) or {}
    return model_lineage(train, train_manifest, merged, Path(cfg.data_dir), Path(cfg.raw_dir))


def _report(result: RegisterResult) -> int:
    if not result.registered:
        print("register: NOT registered: " + "; ".join(result.reasons))
        return 1
    print(f"register: {result.version} ({result.tag}), model md5 {result.model_md5}, stage {result.stage}; W&B: {result.wandb}")
    return 0


STEP = Step(name="register", config=RegisterConfig, result=RegisterResult, run=run, report=_report, doc=__doc__,
            paths={"merged_dir": "models/merged", "evaluate_dir": "models/evaluate", "out_dir": "models/register"},
            errors=(ConfigError, RegistryError),
            configure=configure)


def main(argv: list[str] | None = None) -> int:
    return STEP.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
