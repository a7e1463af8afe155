"""Rerun benchmark: a cached no-op rerun of the Prefect flow and of `dvc repro`, against the first run.

``python bench/bench_flow.py [--model tiny|default]``

In a fresh temporary git clone of this repository with the demo data laid out: the retrain flow
runs twice on Prefect's ephemeral server (the second run finds every step's cache key: content
digests of inputs, config and code), then ``dvc repro`` runs twice (the second finds every stage
up to date). Same data, params and machine, one script. ``--model tiny`` (default) uses a 2-layer
model built locally and a 2-step training run, so the first run takes a few minutes; ``default``
keeps params.yaml as shipped (SmolLM2, ~15 minutes a first run on 2 cores).
Figures also go to bench/results/bench_flow.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    tick = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - tick
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("tiny", "default"), default="tiny")
    args = ap.parse_args()
    from tests.helpers import tiny_params
    from tests.tiny import save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clone = work / "clone"
        # --no-tags: the checkout's registry (after `make demo`, a production model) stays out of the clone.
        subprocess.run(["git", "clone", "-q", "--no-tags", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "PREFECT_HOME": str(work / "prefect"), "WANDB_MODE": "offline"}  # fmt: skip
        if args.model == "tiny":
            tiny_params(clone / "params.yaml", Path(save_tiny_model(work / "tiny")))
        subprocess.run([sys.executable, "-m", "flows.cli", "demo-data"], cwd=clone, env=env, check=True,
                       capture_output=True)  # fmt: skip
        flow = [sys.executable, "-m", "flows.cli", "run"]
        first, rerun = _timed(flow, clone, env), _timed(flow, clone, env)
        for out in ("data/prepared", "data/validated", "data/augmented", "models"):
            subprocess.run(["rm", "-rf", str(clone / out)], check=True)
        subprocess.run(["git", "tag", "-d", *subprocess.run(["git", "tag"], cwd=clone, capture_output=True,
                        text=True).stdout.split()], cwd=clone, capture_output=True)  # fmt: skip
        repro_first, repro_again = _timed(["dvc", "repro"], clone, env), _timed(["dvc", "repro"], clone, env)
    result = {
        "model": args.model,
        "flow_first_s": round(first, 1),
        "flow_cached_rerun_s": round(rerun, 1),
        "flow_ratio": round(rerun / first, 3),
        "dvc_repro_first_s": round(repro_first, 1),
        "dvc_repro_noop_s": round(repro_again, 1),
        "dvc_ratio": round(repro_again / repro_first, 3),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_flow.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
