"""The retrain flow: Prefect tasks wrap the step functions; the flow wires them and stops at a failed gate.

Orchestration adds no logic: each task is the step's own ``run`` (flows/_tasks.py adds the cache
key from content digests, retries on transient errors and the GPU concurrency tag); the flow only
loads each step's config, passes paths along, and ends in a Failed state (with every reason) when
a gate says no, so nothing downstream runs. An unchanged rerun is served from the cache.
With ``steps_in`` a step runs as its own flow run in another work pool (flows/_dispatch.py): the
same task, the same cache key, another container.
"""

from __future__ import annotations

from pathlib import Path

import flows  # noqa: F401  (telemetry defaults before prefect is imported)
from prefect import flow
from prefect.states import Completed, Failed

from flows._dispatch import JOB_VARIABLES, NOT_PLACEABLE, Placement, load_placement, placed_step, require_deployment
from flows._tasks import fresh, step_task
from steps import augment, evaluate, ingest, merge, promote, register, train, validate
from steps._config import load_section, read_params

# One task per step, named as in dvc.yaml; tests keep this list equal to dvc.yaml's stages.
STEPS = {"ingest": ingest, "validate": validate, "augment": augment, "train": train, "evaluate": evaluate,
         "merge": merge, "register": register, "promote": promote}  # fmt: skip
TASKS = {name: step_task(name, module.run) for name, module in STEPS.items()}
# The same tasks, sent to another work pool as their own flow runs (flows/_dispatch.py).
PLACED = {name: step_task(name, placed_step(name, module)) for name, module in STEPS.items() if name not in NOT_PLACEABLE}


def _call(name: str, out_dir: Path, placement: Placement | None, *args, **kwargs):
    if placement is not None and name in placement.job_variables:
        return fresh(PLACED[name], out_dir)(*args, out_dir=out_dir, deployment=placement.deployment,
                                            job_variables=placement.job_variables[name], **kwargs)  # fmt: skip
    return fresh(TASKS[name], out_dir)(*args, out_dir=out_dir, **kwargs)


@flow(name="retrain")  # library prints stay prints, not flow logs
def retrain(params: str = "params.yaml", data_dir: str = "data", models_dir: str = "models",
            steps_in: str | None = None, job_variables_file: str = str(JOB_VARIABLES)):  # fmt: skip
    """Run the pipeline on params.yaml's settings; data lands under ``data_dir``, models under ``models_dir``.

    ``steps_in`` (process, docker, kubernetes) sends each step listed in that section of
    ``job_variables_file`` to the pool's step deployment, as its own flow run in its own
    container; the rest, and register and promote always, run in this flow's process.
    """
    values = read_params(params)
    placement = load_placement(steps_in, STEPS, Path(job_variables_file))
    if placement is not None:
        require_deployment(placement)
    data, models = Path(data_dir), Path(models_dir)
    prepared, validated, augmented = data / "prepared", data / "validated", data / "augmented"
    trained, evaluated, merged = models / "train", models / "evaluate", models / "merged"
    # Every config first: a misspelled key fails the run before an hour of training, not after.
    cfg = {name: load_section(getattr(STEPS[name], f"{name.capitalize()}Config"), name, values)
           for name in ("ingest", "validate", "augment", "train", "evaluate", "merge")}  # fmt: skip
    cfg |= {"register": register.load_config(values), "promote": promote.load_config(values)}

    ingested = _call("ingest", prepared, placement, cfg["ingest"])
    if not ingested.passed:
        return Failed(message="ingest gate failed: " + "; ".join(ingested.problems))

    checked = _call("validate", validated, placement, cfg["validate"], prepared)
    if not checked.passed:
        reasons = [f"{name}: {g.get('reason', 'failed')}" for name, g in checked.gates.items() if not g["passed"]]
        return Failed(message="data gates failed: " + "; ".join(reasons) + f" (report: {checked.report_path})")

    _call("augment", augmented, placement, cfg["augment"], validated)
    _call("train", trained, placement, cfg["train"], augmented)

    production = evaluate.resolve_production(cfg["evaluate"], trained)
    gated = _call("evaluate", evaluated, placement, cfg["evaluate"], validated, trained, production_dir=production)
    if not gated.passed:
        return Failed(message="evaluation gate failed: " + "; ".join(gated.reasons) + f" (report: {gated.report_path})")

    _call("merge", merged, placement, cfg["merge"], trained, evaluated)
    registered = _call("register", models / "register", placement, cfg["register"], merged, evaluated)
    if not registered.registered:
        return Failed(message="register: " + "; ".join(registered.reasons))
    promoted = _call("promote", models / "promote", placement, cfg["promote"], evaluated, models / "register")
    if not promoted.promoted:
        return Failed(message=f"promotion refused, production stays {promoted.production}: " + "; ".join(promoted.reasons))
    return Completed(message=f"{promoted.version} is production (was {promoted.previous or 'none'}); report: {gated.report_path}")
