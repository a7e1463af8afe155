"""``tunegate deploy``: create the work pool(s) and the deployments of deploy/prefect.yaml for one pool.

deploy/prefect.yaml is the one description of what runs where; this command picks the part of it
for a pool (``retrain-<pool>`` plus ``raw-data-watch``; with ``--per-step``, ``retrain-steps-<pool>``
and ``step-<pool>`` instead of ``retrain-<pool>``), creates the pools those deployments name
when they are missing (docker and kubernetes from the templates in deploy/workpools/), runs
Prefect's own ``prefect deploy`` on them, and prints the worker command for each pool.

Which Prefect it talks to is Prefect's own setting, nothing tunegate adds:

* nothing set: the local database (``~/.prefect/prefect.db``) through an ephemeral server. The
  deployments are stored, but runs only start once a server and a worker are up:
  ``prefect server start``, then ``prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api``.
* a self-hosted server: ``prefect config set PREFECT_API_URL=http://HOST:4200/api``.
* Prefect Cloud: ``prefect cloud login`` (or ``PREFECT_API_URL=https://api.prefect.cloud/api/
  accounts/<account id>/workspaces/<workspace id>`` and ``PREFECT_API_KEY=<key>``).

The same settings go to the ``prefect deploy`` subprocess, so both halves reach the same API.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from flows.tasks import GPU_TAG
from steps.core.io import read_json

PREFECT_FILE = Path("deploy/prefect.yaml")
POOLS = {"process": "tunegate-process", "docker": "tunegate-docker", "kubernetes": "tunegate-kubernetes"}
TEMPLATES = {"docker": Path("deploy/workpools/docker.json"), "kubernetes": Path("deploy/workpools/kubernetes.json")}
WATCH = "raw-data-watch"
# What a worker of each type needs before `prefect worker start` (the process worker is built in).
WORKER_SETUP = {
    "process": "from the repository root, in its venv",
    "docker": "pip install -c constraints.txt prefect-docker; a Docker daemon or "
    'eval "$(containers/podman-env.sh)"; from the repository root (volumes are ./data, ./models)',
    "kubernetes": "pip install -c constraints.txt prefect-kubernetes; in the cluster, with a service account "
    "that may create Jobs; kubectl apply -f deploy/workpools/k8s/storage.yaml first",
}

PoolOption = Annotated[str, typer.Option("--pool", "-p", help="Where retrain runs: process, docker or kubernetes.")]
NameOption = Annotated[Optional[list[str]], typer.Option(
    "--name", "-n", help="Only this deployment (repeatable); default: retrain-<pool> and raw-data-watch.")]  # fmt: skip
PerStepOption = Annotated[bool, typer.Option(
    "--per-step", help="Each step in its own container of --pool; the flow itself in the process pool.")]  # fmt: skip
GpuSlotsOption = Annotated[int, typer.Option(
    "--gpu-slots", help="Train tasks that may run at once on this Prefect server (tag tunegate-gpu); kept if it exists.")]  # fmt: skip
ApplyOption = Annotated[bool, typer.Option("--apply/--dry-run", help="--dry-run prints the plan and changes nothing.")]
FileOption = Annotated[Path, typer.Option("--prefect-file", help="The deployments file (run from the repo root).")]


class DeployError(ValueError):
    """A deployment or pool that cannot be picked; the message names the file, the entry and the fix."""


@dataclass(frozen=True)
class DeployPlan:
    """What ``tunegate deploy`` does: the deployments to apply and the pools (name -> type) they need."""

    prefect_file: Path
    deployments: tuple[str, ...]
    pools: dict[str, str] = field(default_factory=dict)

    def deploy_args(self) -> list[str]:
        """The ``prefect deploy`` command line for these deployments (non-interactive)."""
        names = [arg for name in self.deployments for arg in ("--name", name)]
        return ["prefect", "--no-prompt", "deploy", "--prefect-file", str(self.prefect_file), *names]

    def worker_commands(self) -> list[str]:
        """One ``prefect worker start`` per pool, with what that worker needs."""
        return [f"prefect worker start --pool {name}    # {WORKER_SETUP[kind]}" for name, kind in self.pools.items()]


def read_deployments(prefect_file: Path) -> list[dict[str, Any]]:
    """The ``deployments:`` entries of a prefect.yaml (YAML anchors resolved)."""
    if not prefect_file.is_file():
        raise DeployError(f"{prefect_file}: not found; run `tunegate deploy` from the repository root")
    doc = yaml.safe_load(prefect_file.read_text(encoding="utf-8")) or {}
    deployments = doc.get("deployments") if isinstance(doc, dict) else None
    if not deployments:
        raise DeployError(f"{prefect_file}: no `deployments:` list")
    return deployments


def plan_deploy(deployments: list[dict[str, Any]], pool: str, names: list[str], prefect_file: Path,
                per_step: bool = False) -> DeployPlan:  # fmt: skip
    """Pick the deployments for ``pool`` or exactly ``names``.

    For a pool: ``retrain-<pool>`` (the whole flow there) plus the watch; with ``per_step``,
    ``retrain-steps-<pool>`` (the flow in the process pool, each step a container of ``pool``),
    ``step-<pool>`` and the watch. Pure: the selection and the pools it needs follow from the file
    alone, so a dry run and the tests see the same plan the real run applies.
    """
    if pool not in POOLS:
        raise DeployError(f"--pool {pool!r}: unknown pool; use one of {', '.join(POOLS)}")
    by_name = {d.get("name"): d for d in deployments}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DeployError(f"{prefect_file}: no deployment named {', '.join(unknown)}; it has {', '.join(map(str, by_name))}")
    wanted = [f"retrain-steps-{pool}", f"step-{pool}", WATCH] if per_step else [f"retrain-{pool}", WATCH]
    missing = [n for n in wanted if n not in by_name]
    if not names and missing:
        raise DeployError(f"{prefect_file}: no deployment {', '.join(missing)} for --pool {pool}"
                          f"{' --per-step' if per_step else ''}; it has {', '.join(map(str, by_name))}")  # fmt: skip
    chosen = names or wanted
    kinds = {v: k for k, v in POOLS.items()}
    pools: dict[str, str] = {}
    for n in chosen:
        pool_name = _pool_of(by_name[n])
        if pool_name not in kinds:
            raise DeployError(f"{prefect_file}: deployment {n}: work_pool.name {pool_name!r} is not one of {', '.join(kinds)}")
        pools[pool_name] = kinds[pool_name]
    return DeployPlan(prefect_file, tuple(chosen), dict(sorted(pools.items(), key=lambda kv: kv[1] != pool)))


def _pool_of(deployment: dict[str, Any]) -> str | None:
    return (deployment.get("work_pool") or {}).get("name")


def base_job_template(kind: str, prefect_file: Path = PREFECT_FILE) -> dict[str, Any]:
    """The pool's base job template: tunegate's for docker and kubernetes (deploy/workpools/, beside
    ``prefect_file``), Prefect's own for process."""
    if kind in TEMPLATES:
        return read_json(prefect_file.parent.parent / TEMPLATES[kind], "restore it from the repository")
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


async def ensure_pools(pools: dict[str, str], prefect_file: Path = PREFECT_FILE) -> dict[str, bool]:
    """Create each missing pool with its template; an existing pool is left as it is. Returns name -> created.

    Raises:
        DeployError: a pool of that name exists with another type (its jobs could not run these deployments).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    created: dict[str, bool] = {}
    async with get_client() as client:
        for name, kind in pools.items():
            try:
                existing = await client.read_work_pool(name)
            except ObjectNotFound:
                existing = None
            if existing is not None and existing.type != kind:
                raise DeployError(f"work pool {name} exists with type {existing.type}, not {kind}; "
                                  f"delete it (`prefect work-pool delete {name}`) and deploy again")  # fmt: skip
            if existing is None:
                await client.create_work_pool(WorkPoolCreate(
                    name=name, type=kind, base_job_template=base_job_template(kind, prefect_file),
                    description=f"tunegate: runs the retrain flow ({kind}); see deploy/prefect.yaml"))  # fmt: skip
            created[name] = existing is None
    return created


async def ensure_gpu_limit(slots: int = 1) -> tuple[int, bool]:
    """The tag concurrency limit on GPU steps: created with ``slots`` when missing, else left as it is.

    One training run per GPU at a time, across every flow run on this Prefect server (a scheduled
    and a triggered retrain, two deployments on one GPU host); a later train task waits in Pending
    until a slot frees. An existing limit is kept, so `prefect concurrency-limit create
    tunegate-gpu 4` on a 4-GPU host survives a re-deploy. Returns (the limit, created now).
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    if slots < 1:
        raise ValueError(f"--gpu-slots {slots}: at least 1 (0 would abort every train task)")
    async with get_client() as client:
        try:
            return (await client.read_concurrency_limit_by_tag(GPU_TAG)).concurrency_limit, False
        except ObjectNotFound:
            await client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)
            return slots, True


def _api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def prefect_env() -> dict[str, str]:
    """This process's environment plus the Prefect API it is using (a profile, the test harness, Cloud)."""
    from prefect.settings import get_current_settings

    env = dict(os.environ)
    api = get_current_settings().api
    if api.url:
        env["PREFECT_API_URL"] = str(api.url)
    if api.key:
        env["PREFECT_API_KEY"] = api.key.get_secret_value()
    return env


def deploy_command(
    pool: PoolOption = "process",
    name: NameOption = None,
    per_step: PerStepOption = False,
    gpu_slots: GpuSlotsOption = 1,
    apply: ApplyOption = True,
    prefect_file: FileOption = PREFECT_FILE,
) -> DeployPlan:
    """Create the work pool(s) and the scheduled, event-triggered retrain deployments of deploy/prefect.yaml;
    print the `prefect worker start` command for each pool. PREFECT_API_URL (and PREFECT_API_KEY for
    Cloud) choose the Prefect server, as for any Prefect command."""
    names = [name] if isinstance(name, str) else list(name or [])
    try:
        plan = plan_deploy(read_deployments(prefect_file), pool, names, prefect_file, per_step)
        if apply:
            created = asyncio.run(ensure_pools(plan.pools, prefect_file))
            gpu_limit = asyncio.run(ensure_gpu_limit(gpu_slots))
    except (DeployError, yaml.YAMLError, ValueError) as exc:
        typer.echo(f"deploy: {exc}", err=True)
        raise typer.Exit(2) from None
    if not apply:
        typer.echo("dry run: would create the missing work pools " + ", ".join(f"{n} ({k})" for n, k in plan.pools.items()))
        typer.echo("and run: " + " ".join(plan.deploy_args()))
    else:
        for pool_name, was_created in created.items():
            typer.echo(f"work pool {pool_name}: {'created' if was_created else 'exists'}")
        typer.echo(f"task concurrency limit {GPU_TAG}: {gpu_limit[0]} at a time ({'created' if gpu_limit[1] else 'exists'})")
        # Prefect's own CLI reads the file, so `prefect deploy` by hand gives the same deployments.
        done = subprocess.run([sys.executable, "-m", *plan.deploy_args()], env=prefect_env(), check=False)
        if done.returncode != 0:
            typer.echo(f"deploy: `prefect deploy` failed (exit {done.returncode}); see its output above", err=True)
            raise typer.Exit(done.returncode)
    typer.echo("Start a worker for each pool (a separate terminal each):")
    for line in plan.worker_commands():
        typer.echo(f"  {line}")
    if not _api_url():
        typer.echo("No PREFECT_API_URL set: workers need a server (`prefect server start`, then `prefect config set "
                   "PREFECT_API_URL=http://127.0.0.1:4200/api`) or Prefect Cloud (`prefect cloud login`).")  # fmt: skip
    return plan
