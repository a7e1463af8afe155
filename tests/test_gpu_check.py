"""bench/gpu_check.sh --dry-run: the GPU check's every part runs on CPU with the tiny model, so the script cannot rot.

The GPU run (issue 16) happens on a machine this project borrows for minutes; what it runs is this same script,
so a broken flag, a renamed option or a missing import shows here first. The dry run trains each side for two
steps on tests/tiny.py's model and generates a few tokens: figures are checked for shape, not for speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHON": sys.executable}  # the interpreter running the tests runs the parts
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    return done, out


def test_dry_run_passes_every_part(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout + done.stderr + "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in out.glob("*.log"))
    report = json.loads((out / "gpu_check.json").read_text())
    parts = report["parts"]
    assert {"env", "model", "train_lora", "eval", "vllm"} <= set(parts)
    assert all(p["rc"] == 0 for p in parts.values())
    assert report["env"]["device"] == "cpu" and report["env"]["versions"]["torch"]
    assert "vllm" in (out / "summary.txt").read_text()
    with tarfile.open(out / "parts.tar.gz") as archive:
        assert {"train_lora.json", "eval.json", "train_lora.log", "gpu_check.json"} <= set(archive.getnames())


def test_dry_run_train_figures_name_both_baselines(dry_run):
    _, out = dry_run
    train = json.loads((out / "train_lora.json").read_text())
    assert set(train["throughput_ratio"]) == {"baseline", "trl"}
    assert set(train["eval_loss"]) >= {"tunegate", "baseline", "trl"}
    # tunegate and TRL's SFTTrainer train the same packed rows on the same tokens: the same loss, step for step
    assert train["runs"]["tunegate"][0]["trained_tokens"] == train["runs"]["trl"][0]["trained_tokens"]
    assert train["eval_loss_rel_diff"]["trl"] == pytest.approx(0, abs=1e-3)


def test_dry_run_eval_outputs_identical(dry_run):
    _, out = dry_run
    evals = json.loads((out / "eval.json").read_text())
    assert set(evals["ratio"]) == {"hf_batched", "per_sample"}
    n = evals["prompts"]
    assert evals["identical_outputs"] == {"hf_batched": f"{n}/{n}", "per_sample": f"{n}/{n}"}
