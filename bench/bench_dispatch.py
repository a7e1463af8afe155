"""Per-step placement overhead: the retrain flow with every step in the flow's process, against the
same flow with each placeable step sent to a process worker as its own flow run (steps_in=process).

``python bench/bench_dispatch.py``

Both runs are first runs (nothing cached: each works in its own fresh project), on a 2-layer model
built locally and a 2-step training run, under Prefect's test harness (a temporary server); the
placed run goes through ``tunegate deploy --name step-process`` and a real ``prefect worker start``.
What the ratio measures is the price of a container per step without the container: a flow run
per step (scheduling, worker polling every second here, a fresh Python process that imports the
step's libraries). Figures also go to bench/results/bench_dispatch.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PLACED = 6  # ingest, validate, augment, train, evaluate, merge


def _run(project: Path, **kwargs) -> float:
    from flows.retrain import retrain

    os.chdir(project)
    tick = time.perf_counter()
    state = retrain(params="params.yaml", return_state=True, **kwargs)
    seconds = time.perf_counter() - tick
    if not state.is_completed():
        raise SystemExit(f"retrain {kwargs or ''} ended {state.name}: {state.message}")
    return seconds


def main() -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.dispatch import JOB_VARIABLES
    from tests.helpers import make_project
    from tests.prefect_worker import step_worker
    from tests.tiny import save_tiny_model

    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline", DO_NOT_TRACK="1")
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        work = Path(tmp)
        model = Path(save_tiny_model(work / "tiny"))
        for name in ("inline", "placed"):
            (work / name).mkdir()
        inline_project, placed_project = (make_project(work / name, model) for name in ("inline", "placed"))
        inline = _run(inline_project)

        os.chdir(placed_project)
        with step_worker("process", cwd=placed_project, log=work / "worker.log"):
            time.sleep(5)  # the worker is up before the clock starts
            placed = _run(placed_project, steps_in="process", job_variables_file=str(ROOT / JOB_VARIABLES))
        os.chdir(ROOT)
    result = {"inline_s": round(inline, 1), "steps_in_process_s": round(placed, 1),
              "ratio_placed_over_inline": round(placed / inline, 2),
              "overhead_per_placed_step_s": round((placed - inline) / PLACED, 1),
              "placed_steps": PLACED, "cpus": os.cpu_count()}  # fmt: skip
    out = ROOT / "bench" / "results" / "bench_dispatch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
