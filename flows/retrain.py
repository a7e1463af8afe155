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

from steps import ingest, validate
from steps._config import load_section, read_params

# One task per step, named as in dvc.yaml; tests keep this list equal to dvc.yaml's stages.
TASKS = {
    "ingest": task(name="ingest", cache_policy=NO_CACHE, persist_result=False)(ingest.run),
    "validate": task(name="validate", cache_policy=NO_CACHE, persist_result=False)(validate.run),
}


@flow(name="retrain", log_prints=True)
def retrain(params: str = "params.yaml", data_dir: str = "data"):
    """Run the pipeline on params.yaml's settings; data lands under ``data_dir``."""
    values = read_params(params)
    data = Path(data_dir)
    prepared, validated = data / "prepared", data / "validated"

    ingested = TASKS["ingest"](load_section(ingest.IngestConfig, "ingest", values), prepared)
    if not ingested.passed:
        return Failed(message="ingest gate failed: " + "; ".join(ingested.problems))

    checked = TASKS["validate"](load_section(validate.ValidateConfig, "validate", values), prepared, validated)
    if not checked.passed:
        reasons = [f"{name}: {g.get('reason', 'failed')}" for name, g in checked.gates.items() if not g["passed"]]
        return Failed(message="data gates failed: " + "; ".join(reasons) + f" (report: {checked.report_path})")

    return Completed(message=f"validated data in {validated}", data={"prepared": str(prepared), "validated": str(validated)})
