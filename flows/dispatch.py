"""Per-step placement: a step of the retrain flow runs as its own flow run in another work pool.

The retrain flow can send any of ingest, validate, augment, train, evaluate and merge to a work
pool of its own (the CPU image for data, evaluation and merge; the GPU image for train) while the
flow itself, and register and promote, stay where the git checkout is. The mechanism is Prefect's:
``run_deployment`` starts the ``tunegate-step`` flow (flows/step.py) of the pool's step
deployment (``tunegate-step/step-<pool>`` in deploy/prefect.yaml) with that step's job variables
from deploy/workpools/job_variables.yaml (its image; for train, its GPU), and waits for it.

What crosses over: the step's config as plain JSON (rebuilt there by the same loader that reads
params.yaml), its input and output folders as paths (the worker must see the same data/ and
models/ at the same relative paths: the docker pool mounts them under /app, its working
directory) and, back, the step's result as ``<out_dir>/result.json``. A path under this
machine's model cache ($TUNEGATE_CACHE, e.g. the production model) travels as ``$TUNEGATE_CACHE/...``
and resolves against the cache where the step runs (/cache in the images).

The task stays the step's task: same name, same cache key (where a step runs does not change
what it makes, so switching placement keeps the cache), same retries and GPU tag.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from steps.core.step import Step

JOB_VARIABLES = Path("deploy/workpools/job_variables.yaml")
STEP_FLOW = "tunegate-step"
# They write git tags (GTO) and push to the DVC remote: they run where the checkout is, always.
NOT_PLACEABLE = frozenset({"register", "promote"})
RESULT_FILE = "result.json"
CACHE_PREFIX = "$TUNEGATE_CACHE"
POLL_SECONDS = 2.0


class PlacementError(ValueError):
    """A placement that cannot be used; the message names the file, the entry and the fix."""


class StepRunFailed(RuntimeError):
    """The step's own flow run failed (the step raised): not retried, its message says why."""


class StepRunCrashed(OSError):
    """The step's flow run crashed or was cancelled (a killed container, a lost worker): retried as transient."""


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where each placed step runs: the step deployment and, per step, its job variables."""

    pool: str
    deployment: str
    job_variables: dict[str, dict[str, Any]]


def load_placement(section: str | None, steps: typing.Iterable[str], path: Path = JOB_VARIABLES) -> Placement | None:
    """The ``section:`` of job_variables.yaml as a Placement; None for no section (every step in the flow's process).

    Raises:
        PlacementError: the file or section is missing, or it names an unknown or unplaceable step.
    """
    if not section:
        return None
    if not Path(path).is_file():
        raise PlacementError(f"{path}: not found; run the flow from the repository root or pass job_variables_file")
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if section not in doc:
        raise PlacementError(f"{path}: no section {section!r} for steps_in; it has {', '.join(doc)}")
    entries = doc[section] or {}
    known = [s for s in steps if s not in NOT_PLACEABLE]
    for step, variables in entries.items():
        if step in NOT_PLACEABLE:
            raise PlacementError(f"{path}: {section}.{step}: {step} writes git tags and runs in the flow's own process; "
                                 "remove it from the section")  # fmt: skip
        if step not in known:
            close = difflib.get_close_matches(str(step), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PlacementError(f"{path}: {section}.{step}: not a step{hint}; steps: {', '.join(known)}")
        if not isinstance(variables, dict):
            raise PlacementError(f"{path}: {section}.{step}: expected a mapping of job variables, got {variables!r}")
    return Placement(section, f"{STEP_FLOW}/step-{section}", {s: dict(v or {}) for s, v in entries.items()})


def require_deployment(placement: Placement) -> None:
    """Fail before the first step when the step deployment is not on this Prefect server.

    Raises:
        PlacementError: it is missing; the message says how to create it and what else runs it.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(placement.deployment)
    except ObjectNotFound:
        api = get_current_settings().api.url or "the ephemeral local server (no PREFECT_API_URL)"
        raise PlacementError(
            f"steps_in={placement.pool}: no deployment {placement.deployment} on {api}; create it with "
            f"`tunegate deploy --pool {placement.pool} --name step-{placement.pool}` and start "
            f"`prefect worker start --pool tunegate-{placement.pool}` against a server both reach "
            "(`prefect server start`, then PREFECT_API_URL)") from None


# ---------------------------------------------------------------- what crosses over


def portable(path: Any) -> str | None:
    """A path as the step's machine should read it: under the model cache, relative to it."""
    from steps.models.loading import cache_root

    if path is None:
        return None
    p = Path(path)
    try:
        return f"{CACHE_PREFIX}/{p.resolve().relative_to(cache_root().resolve())}"
    except ValueError:
        return str(p)


def local(path: str | None) -> Path | None:
    """``portable``'s inverse, on the machine the step runs on."""
    from steps.models.loading import cache_root

    if path is None:
        return None
    if path == CACHE_PREFIX or path.startswith(CACHE_PREFIX + "/"):
        return cache_root() / path[len(CACHE_PREFIX) + 1 :]
    return Path(path)


def step_parameters(step: str, fn: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``tunegate-step`` flow's parameters for ``fn(*args, **kwargs)`` (a step's ``run``): all JSON."""
    signature = inspect.signature(fn)
    bound = signature.bind(*args, **kwargs)
    cfg, *_ = bound.arguments.values()
    # Prefect passes defaults along too; a default (train's callbacks=()) stays where the step runs.
    paths = {k: v for k, v in list(bound.arguments.items())[1:] if v is not signature.parameters[k].default}
    return {"step": step, "config": _plain(cfg), "paths": {k: portable(v) for k, v in paths.items()}}


def run_here(step: Step, config: dict[str, Any], paths: dict[str, str | None]) -> Any:
    """Run ``step`` in this process from ``step_parameters``' JSON; its result lands in ``<out_dir>/result.json``."""
    from steps.core.config import from_dict
    from steps.core.io import atomic_write_json

    cfg = from_dict(step.config, config, f"{step.name} config")
    result = step.run(cfg, **{k: local(v) for k, v in paths.items()})
    atomic_write_json(local(paths["out_dir"]) / RESULT_FILE, _plain(result))
    return result


def read_result(step: Step, out_dir: Path) -> Any:
    """The step's result that ``run_here`` left in ``out_dir``, rebuilt by the config loader (Paths and tuples again)."""
    from steps.core.config import from_dict
    from steps.core.io import read_json

    path = Path(out_dir) / RESULT_FILE
    if not path.is_file():
        raise StepRunFailed(f"{path}: the {step.name} step's flow run completed but left no result; the worker must see "
                            f"{Path(out_dir).parent} at the same path (see deploy/workpools/README.md)")  # fmt: skip
    data = read_json(path, f"rerun the {step.name} step")
    return from_dict(step.result, data, str(path))


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass as JSON values (Paths and tuples as strings and lists), for a flow parameter or result.json."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


# ---------------------------------------------------------------- the task that sends a step away


def placed_step(step: Step) -> Any:
    """A function with ``step.run``'s signature plus keyword-only ``deployment`` and ``job_variables``.

    Called as a task, it starts the step's flow run on ``deployment`` and waits; the flow run is a
    child of this task run in the UI. A failed run raises StepRunFailed; a crashed or cancelled
    one StepRunCrashed (transient: the task retries it).
    """
    run = step.run
    signature = inspect.signature(run)

    def dispatched(*args: Any, deployment: str, job_variables: dict[str, Any], **kwargs: Any) -> Any:
        from prefect.deployments import run_deployment

        parameters = step_parameters(step.name, run, args, kwargs)
        flow_run = run_deployment(name=deployment, parameters=parameters, job_variables=job_variables or None,
                                  timeout=None, poll_interval=POLL_SECONDS, tags=["tunegate", f"step:{step.name}"])  # fmt: skip
        state = flow_run.state
        where = f"{step.name} in {deployment} (flow run {flow_run.name})"
        if state is None or not state.is_completed():
            name = state.name if state else "no state"
            error = StepRunCrashed if state is None or state.is_crashed() or state.is_cancelled() else StepRunFailed
            raise error(f"{where} ended {name}: {state.message if state else ''}; its logs are in the Prefect UI")
        return read_result(step, local(parameters["paths"]["out_dir"]))

    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=t)
             for n, t in (("deployment", str), ("job_variables", dict))]  # fmt: skip
    dispatched.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
    dispatched.__name__ = dispatched.__qualname__ = run.__name__
    dispatched.__doc__ = run.__doc__
    dispatched.__module__ = run.__module__
    return dispatched
