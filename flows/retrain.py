"""The retrain flow: Prefect tasks wrap the step functions; the flow wires them and stops at a failed gate.

Orchestration adds no logic: each task is the step's own ``run``; the flow only
loads each step's config, passes paths along, and ends in a Failed state (with
every reason) when a gate says no, so nothing downstream runs.
"""

from __future__ import annotations

from pathlib import Path

import flows  # noqa: F401  (telemetry defaults before prefect is imported)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

from steps import ingest, train, validate
from steps._config import load_section, read_params

# One task per step, named as in dvc.yaml; tests keep this list equal to dvc.yaml's stages.
TASKS = {
    "ingest": task(name="ingest", cache_policy=NO_CACHE, persist_result=False)(ingest.run),
    "validate": task(name="validate", cache_policy=NO_CACHE, persist_result=False)(validate.run),
    "train": task(name="train", cache_policy=NO_CACHE, persist_result=False)(train.run),
}


@flow(name="retrain")  # library prints stay prints, not flow logs
def retrain(params: str = "params.yaml", data_dir: str = "data", models_dir: str = "models"):
    """Run the pipeline on params.yaml's settings; data lands under ``data_dir``, models under ``models_dir``."""
    values = read_params(params)
    data = Path(data_dir)
    prepared, validated, trained = data / "prepared", data / "validated", Path(models_dir) / "train"

    ingested = TASKS["ingest"](load_section(ingest.IngestConfig, "ingest", values), prepared)
    if not ingested.passed:
        return Failed(message="ingest gate failed: " + "; ".join(ingested.problems))

    checked = TASKS["validate"](load_section(validate.ValidateConfig, "validate", values), prepared, validated)
    if not checked.passed:
        reasons = [f"{name}: {g.get('reason', 'failed')}" for name, g in checked.gates.items() if not g["passed"]]
        return Failed(message="data gates failed: " + "; ".join(reasons) + f" (report: {checked.report_path})")

    TASKS["train"](load_section(train.TrainConfig, "train", values), validated, trained)
    return Completed(message=f"trained model in {trained}")
