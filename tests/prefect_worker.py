"""A real Prefect worker for the per-step tests and bench: the pool's step deployment, deployed as users do.

``step_worker(pool, ...)`` runs ``tunegate deploy --name step-<pool>`` (Prefect's own ``prefect
deploy``) against the current Prefect API (the test harness) and starts ``prefect worker start``
for ``tunegate-<pool>`` in ``cwd``, the repo-root stand-in, polling every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import ROOT

FAST_POLLING = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}


@contextlib.contextmanager
def step_worker(pool: str, cwd: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """step-<pool> deployed and a worker of that pool running in ``cwd`` (its output in ``log``) until the block ends."""
    from flows import deploy

    deploy.deploy_command(name=[f"step-{pool}"], apply=True, prefect_file=ROOT / "deploy" / "prefect.yaml")
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", f"tunegate-{pool}", "--type", pool,
               "--name", f"test-{pool}-worker"]  # fmt: skip
    with open(log, "wb") as out:
        worker = subprocess.Popen(command, cwd=cwd, env=deploy.prefect_env() | FAST_POLLING | (env or {}),
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            yield worker
        finally:
            stop(worker)


def stop(worker: subprocess.Popen) -> None:
    """Stop a worker as Ctrl-C would, then harder: a worker whose server is busy can sit out SIGTERM
    (seen: it outlived its test, waiting on the harness's locked SQLite), and a teardown must not hang."""
    import signal

    for send, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        worker.send_signal(send)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=grace)
            return


def remove_step_deployment(pool: str) -> None:
    """Delete what ``step_worker`` and ``tunegate deploy`` made: the deployment, the pool, the GPU limit."""
    from prefect.client.orchestration import get_client

    async def remove() -> None:
        async with get_client() as client:
            found = await client.read_deployment_by_name(f"tunegate-step/step-{pool}")
            await client.delete_deployment(found.id)
            await client.delete_work_pool(f"tunegate-{pool}")
            await client.delete_concurrency_limit_by_tag("tunegate-gpu")

    asyncio.run(remove())
