"""The retrain flow: Prefect tasks wrap the step functions; the flow wires them and stops at a failed gate.

Orchestration adds no logic: each task is the step's own ``run`` (flows/tasks.py adds the cache
key from content digests, retries on transient errors and the GPU concurrency tag); the flow only
loads each step's config, passes paths along, and ends in a Failed state (with every reason) when
a gate says no, so nothing downstream runs. An unchanged rerun is served from the cache.
With ``steps_in`` a step runs as its own flow run in another work pool (flows/dispatch.py): the
same task, the same cache key, another container.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import Completed, Failed

from flows.dispatch import JOB_VARIABLES, NOT_PLACEABLE, Placement, load_placement, placed_step, require_deployment
from flows.tasks import fresh, step_task
from steps import PIPELINE, describe
from steps.core.config import read_params
from steps.evaluate import resolve_production

# One task per step, named as in dvc.yaml; tests keep this list equal to dvc.yaml's stages.
STEPS = {name: describe(name) for name in PIPELINE}
TASKS = {name: step_task(name, step.run) for name, step in STEPS.items()}
# The same tasks, sent to another work pool as their own flow runs (flows/dispatch.py).
PLACED = {name: step_task(name, placed_step(step)) for name, step in STEPS.items() if name not in NOT_PLACEABLE}


def folder_of(data_dir: Path, models_dir: Path):
    """Each step's default folder (``data/...``, ``models/...``) under this run's ``data_dir`` and ``models_dir``."""
    roots = {"data": data_dir, "models": models_dir}
    return lambda default: roots[Path(default).parts[0]].joinpath(*Path(default).parts[1:])


def _call(name: str, where, placement: Placement | None, cfg, **kwargs):
    """Run step ``name`` on its default folders (moved by ``where``), here or in its placed pool."""
    step = STEPS[name]
    args, out_dir = [where(p) for p in step.inputs.values()], where(step.output)
    if placement is not None and name in placement.job_variables:
        return fresh(PLACED[name], out_dir, cfg)(cfg, *args, out_dir=out_dir, deployment=placement.deployment,
                                            job_variables=placement.job_variables[name], **kwargs)  # fmt: skip
    return fresh(TASKS[name], out_dir, cfg)(cfg, *args, out_dir=out_dir, **kwargs)


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
    where = folder_of(Path(data_dir), Path(models_dir))
    # Every config first: a misspelled key fails the run before an hour of training, not after.
    cfg = {name: step.load_config(values) for name, step in STEPS.items()}

    ingested = _call("ingest", where, placement, cfg["ingest"])
    if not ingested.passed:
        return Failed(message="ingest gate failed: " + "; ".join(ingested.problems))

    validated = _call("validate", where, placement, cfg["validate"])
    if not validated.passed:
        reasons = [f"{name}: {g.get('reason', 'failed')}" for name, g in validated.gates.items() if not g["passed"]]
        return Failed(message="data gates failed: " + "; ".join(reasons) + f" (report: {validated.report_path})")

    _call("augment", where, placement, cfg["augment"])
    _call("train", where, placement, cfg["train"])

    production = resolve_production(cfg["evaluate"], where(STEPS["train"].output))
    evaluated = _call("evaluate", where, placement, cfg["evaluate"], production_dir=production)
    if not evaluated.passed:
        return Failed(message="evaluation gate failed: " + "; ".join(evaluated.reasons) + f" (report: {evaluated.report_path})")

    _call("merge", where, placement, cfg["merge"])
    registered = _call("register", where, placement, cfg["register"])
    if not registered.registered:
        return Failed(message="register: " + "; ".join(registered.reasons))
    promoted = _call("promote", where, placement, cfg["promote"])
    if not promoted.promoted:
        return Failed(message=f"promotion refused, production stays {promoted.production}: " + "; ".join(promoted.reasons))
    return Completed(message=f"{promoted.version} is production (was {promoted.previous or 'none'}); report: {evaluated.report_path}")
