"""promote: move the registered candidate to production, only if the gate and the thresholds agree.

``python -m steps.promote EVALUATE_DIR REGISTER_DIR OUT_DIR [--params params.yaml]``.
Reads the candidate version from REGISTER_DIR/registration.json and the gate from
EVALUATE_DIR/gate.json, then, under the registry lock, checks that evaluate compared the
candidate with the production version still current, compares their metrics
(steps.registry.promotion.decide_promotion) and assigns ``production`` (recording who and why) or
refuses. A refusal is a failed gate: exit 1, and production stays as it was. Writes OUT_DIR/promotion.json and manifest.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.io import atomic_write_json, publish_dir, read_json, staging_dir
from steps.core.manifest import write_manifest
from steps.core.step import Step
from steps.registry.config import PromoteConfig
from steps.registry.settings import RegistryError, load_step_config
from steps.registry.versions import Outcome, Registry
from steps.registry.wandb_link import link_wandb


@dataclass(frozen=True)
class PromoteResult:
    promoted: bool  # the candidate is production now
    changed: bool  # tags were written (False when refused, or when it was production already)
    version: str | None
    previous: str | None
    production: str | None
    reasons: list[str]
    wandb: str
    out_dir: Path


def configure(params: dict[str, Any]) -> PromoteConfig:
    """``promote:`` plus ``registry:`` (what the flow and main() both use)."""
    return load_step_config(PromoteConfig, "promote", params)


def promote_version(cfg: PromoteConfig, version: str, evaluate_dir: Path | str) -> tuple[Outcome, str]:
    """Promote ``version`` through the gate in EVALUATE_DIR; link it in W&B when it moved. (outcome, wandb note)."""
    gate = read_json(Path(evaluate_dir) / "gate.json", error=RegistryError, missing_ok=True)
    why = cfg.message or ("gate: " + "; ".join((gate or {}).get("reasons") or ["passed"]) if gate else "no gate")
    registry = Registry(cfg.registry)
    outcome = registry.promote(version, gate, cfg.thresholds, who=cfg.who, why=why)
    wandb = link_wandb(cfg.registry, registry.state().versions[outcome.version], "production") if outcome.changed else "not linked"
    return outcome, wandb


def run(cfg: PromoteConfig, evaluate_dir: Path | str, register_dir: Path | str, out_dir: Path | str) -> PromoteResult:
    """Promote the version REGISTER_DIR registered, if the gate in EVALUATE_DIR allows; write OUT_DIR atomically."""
    started, out_dir = time.time(), Path(out_dir)
    reg_path = Path(register_dir) / "registration.json"
    registration = read_json(reg_path, error=RegistryError, missing_ok=True)
    if registration is None:
        raise RegistryError(f"{reg_path}: not found; run the register step first")
    if not registration.get("registered"):
        result = PromoteResult(False, False, None, None, None, [f"{reg_path}: nothing was registered; "
                               + "; ".join(registration.get("reasons") or [])], "not linked", out_dir)  # fmt: skip
    else:
        outcome, wandb = promote_version(cfg, registration["version"], evaluate_dir)
        result = PromoteResult(outcome.accepted, outcome.changed, outcome.version, outcome.previous, outcome.production,
                               outcome.reasons, wandb, out_dir)  # fmt: skip
    tmp = staging_dir(out_dir)
    promotion = {"promoted": result.promoted, "changed": result.changed, "version": result.version,
                 "previous": result.previous, "production": result.production, "reasons": result.reasons,
                 "wandb": result.wandb}  # fmt: skip
    atomic_write_json(tmp / "promotion.json", promotion)
    inputs = {"registration": reg_path, "gate": Path(evaluate_dir) / "gate.json"}
    write_manifest(tmp, "promote", cfg, inputs, {"promotion": tmp / "promotion.json"}, promotion, started)
    publish_dir(tmp, out_dir)
    return result


def _report(result: PromoteResult) -> int:
    reasons = "\n  ".join(result.reasons)
    if not result.promoted:
        print(f"promote: REFUSED {result.version}; production stays {result.production}\n  {reasons}")
        return 1
    moved = f"{result.version} is production (was {result.previous or 'none'})" if result.changed else f"{result.version} was production already"
    print(f"promote: {moved}; W&B: {result.wandb}\n  {reasons}")
    return 0


STEP = Step(name="promote", config=PromoteConfig, result=PromoteResult, run=run, report=_report, doc=__doc__,
            paths={"evaluate_dir": "models/evaluate", "register_dir": "models/register", "out_dir": "models/promote"},
            errors=(ConfigError, RegistryError),
            configure=configure)


def main(argv: list[str] | None = None) -> int:
    return STEP.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
