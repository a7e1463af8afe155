"""Checkpoints and resume: a run killed at any point ends, started again, with the same weights.

Tiny real things: the 2-layer Llama of tests/tiny.py, 20 records, 8 steps with a checkpoint every
2. A run of ``python -m steps.train`` is SIGKILLed once a complete checkpoint of step >= 4 exists,
then run again; its published weights must equal those of an uninterrupted run. A half-written
checkpoint (no marker, garbage inside) is never loaded, and a changed config never resumes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from steps.core.config import ConfigError, load_section
from steps.core.io import atomic_write_jsonl
from steps.core.schema import make_record
from steps.train import run
from steps.training import resume
from steps.training.config import TrainConfig
from tests.helpers import ROOT

# 16 conversations of 40-60 tokens pack (BFD) into 8 rows of 128; 3 rows a step is 3 steps an epoch, so 8 steps
# cross two epoch boundaries and a resume at step 4 or 6 lands mid-epoch (the Trainer skips the batches already seen).
TRAIN = dict(max_steps=8, save_steps=2, save_total_limit=2, batch_size=3, logging_steps=1, eval_steps=4, warmup_ratio=0.0,
             learning_rate=1e-2, tracking="none", max_length=128, lora={"r": 4, "alpha": 8, "dropout": 0.0})  # fmt: skip
WEIGHTS = {"lora": "adapter_model.safetensors", "full": "model.safetensors"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread here and in the killed subprocess: the same reduction order, so bit-identical sums."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir) -> dict:
    root = tmp_path_factory.mktemp("resume")
    records = [make_record("sft", dataset="t", source="t.jsonl", row=i, fmt="test", messages=[
        {"role": "user", "content": f"What is {i} + {i * 3}?" + " Please answer in one short sentence." * (i % 3)},
        {"role": "assistant", "content": f"The answer is {4 * i}."}]) for i in range(20)]  # fmt: skip
    atomic_write_jsonl(root / "data" / "train.jsonl", records[:16])
    atomic_write_jsonl(root / "data" / "validation.jsonl", records[16:])
    return {"root": root, "base": tiny_model_dir, "data": root / "data", "uninterrupted": {}}


def params(setup: dict, method: str, **kw) -> dict:
    return {"base": {"base_model": setup["base"], "seed": 7}, "train": {**TRAIN, "method": method, **kw}}


def weights(out: Path, method: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / WEIGHTS[method]))


def uninterrupted(setup: dict, method: str) -> dict[str, torch.Tensor]:
    """Weights of the same run without a kill (trained once per method)."""
    if method not in setup["uninterrupted"]:
        out = setup["root"] / f"w0-{method}"
        result = run(load_section(TrainConfig, "train", params(setup, method)), setup["data"], out)
        assert result.metrics["resume"]["from_step"] is None and result.metrics["steps"] == 8
        setup["uninterrupted"][method] = weights(out, method)
        setup["uninterrupted"][f"{method}-digests"] = digests(out)
    return setup["uninterrupted"][method]


def digests(out: Path) -> dict[str, str]:
    """The published files' digests as the manifest holds them (equal runs, equal digests)."""
    return json.loads((out / "manifest.json").read_text())["output_digests"]


def assert_same(w0: dict, w1: dict) -> None:
    """Bit for bit: same data order, same RNG and optimizer state, one thread on both sides."""
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), (name, (w0[name] - w1[name]).abs().max())


def kill_at_step(setup: dict, method: str, out: Path, step: int = 4) -> int:
    """Start the CLI in a subprocess, SIGKILL it once a checkpoint of ``step`` or later is complete."""
    p = setup["root"] / f"params-{method}.yaml"
    p.write_text(json.dumps(params(setup, method)))  # JSON is YAML
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = open(setup["root"] / f"killed-{method}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "steps.train", str(setup["data"]), str(out), "--params", str(p)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    work, deadline = resume.work_dir(out), time.monotonic() + 120
    while (last := resume.last_complete(work)) is None or int(last.name.split("-")[1]) < step:
        assert proc.poll() is None and time.monotonic() < deadline, (setup["root"] / f"killed-{method}.log").read_text()[-2000:]
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    log.close()
    assert not out.exists()  # nothing published; the checkpoints wait beside it
    return int(resume.last_complete(work).name.split("-")[1])  # the kill may have come a save or two later


@pytest.mark.parametrize("method", ["lora", "full"])
def test_killed_run_resumes_to_the_same_weights(method, setup, caplog):
    w0 = uninterrupted(setup, method)
    out = setup["root"] / f"w1-{method}"
    done = kill_at_step(setup, method, out)
    work = resume.work_dir(out)
    half = work / "checkpoints" / f"checkpoint-{done + 2}"  # a save cut short: files, garbage, no marker
    if method == "lora":
        shutil.rmtree(half, ignore_errors=True)
        shutil.copytree(work / "checkpoints" / f"checkpoint-{done}", half)
        (half / resume.MARKER).unlink()
        (half / WEIGHTS[method]).write_bytes(b"garbage")
        (half / "trainer_state.json").write_text('{"global_step": ')
    caplog.set_level(logging.WARNING, logger="tunegate.train")
    metrics = run(load_section(TrainConfig, "train", params(setup, method)), setup["data"], out).metrics
    assert metrics["resume"]["from_step"] == done and metrics["steps"] == 8
    assert f"resuming from {work / 'checkpoints' / f'checkpoint-{done}'}" in caplog.text
    if method == "lora":
        assert metrics["resume"]["discarded"] == [half.name] and f"{half} was being written" in caplog.text
    assert_same(w0, weights(out, method))
    assert digests(out) == setup["uninterrupted"][f"{method}-digests"]  # equal weights show as equal outputs
    state = json.loads((out / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, 9))  # one loss per step, none twice
    kept = resume.checkpoints(out)  # published with the model; the last two, each complete
    assert [p.name for p in kept] == ["checkpoint-6", "checkpoint-8"] and all(map(resume.is_complete, kept))
    assert not work.exists() and not (out / resume.RUN_FILE).exists()


def test_published_outputs_are_reproducible_and_readable(setup):
    uninterrupted(setup, "lora")
    out = setup["root"] / "w0-lora"
    assert not (out / "training_args.bin").exists()  # a pickle with paths and a timestamp: never equal between runs
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])  # PEFT writes a set, in any order
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # safetensors wrote 0600; a serving container reads them all


class KilledAtTheEnd(TrainerCallback):
    """Dies after the last checkpoint is marked complete, as a kill during the final save or evaluation would."""

    def on_train_end(self, args, state, control, **kw):
        raise RuntimeError("killed after the last checkpoint")


def test_a_run_killed_after_its_last_checkpoint_trains_nothing_more(setup, caplog):
    w0 = uninterrupted(setup, "lora")
    out = setup["root"] / "killed-at-the-end"
    with pytest.raises(RuntimeError, match="killed after the last checkpoint"):
        run(load_section(TrainConfig, "train", params(setup, "lora")), setup["data"], out, callbacks=(KilledAtTheEnd(),))
    assert resume.last_complete(resume.work_dir(out)).name == "checkpoint-8" and not out.exists()
    caplog.set_level(logging.WARNING, logger="tunegate.train")
    metrics = run(load_section(TrainConfig, "train", params(setup, "lora")), setup["data"], out).metrics
    assert metrics["resume"]["from_step"] == 8 and metrics["steps"] == 8  # was 9: train() ran one update past max_steps
    assert "nothing left to train" in caplog.text
    assert_same(w0, weights(out, "lora"))
    assert digests(out) == setup["uninterrupted"]["lora-digests"]


class Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 5:
            raise RuntimeError("crash after step 5")


def test_changed_config_starts_fresh(setup, caplog):
    out = setup["root"] / "changed"
    with pytest.raises(RuntimeError, match="crash after step 5"):
        run(load_section(TrainConfig, "train", params(setup, "lora")), setup["data"], out, callbacks=(Crash(),))
    assert resume.last_complete(resume.work_dir(out)).name == "checkpoint-4"  # kept to resume from
    caplog.set_level(logging.WARNING, logger="tunegate.train")
    metrics = run(load_section(TrainConfig, "train", params(setup, "lora", learning_rate=5e-3)), setup["data"], out).metrics
    assert metrics["resume"]["from_step"] is None and metrics["resume"]["fresh_because"] == ["config.learning_rate"]
    assert "starting fresh" in caplog.text and "resuming" not in caplog.text


def test_marker_must_match_the_files(tmp_path):
    ckpt = tmp_path / "checkpoint-2"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"x" * 100)
    (ckpt / "sub" / "rng.pth").write_bytes(b"y" * 10)
    assert not resume.is_complete(ckpt)
    resume.mark_complete(ckpt)
    assert resume.is_complete(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"x" * 50)  # truncated after marking: not complete, and said so
    assert resume.incomplete(ckpt) == "has model.safetensors of 50 bytes where its marker says 100 (changed or truncated after it was complete)"
    (ckpt / "model.safetensors").write_bytes(b"x" * 100)
    (ckpt / "sub" / "rng.pth").unlink()
    assert resume.incomplete(ckpt) == "lost sub/rng.pth after it was complete (the marker lists it)"
    (ckpt / resume.MARKER).write_text('{"files": ')
    assert "torn" in resume.incomplete(ckpt)


def test_save_total_limit_keeps_a_complete_checkpoint():
    with pytest.raises(ConfigError, match=r"train\.save_total_limit: .* keep >= 2"):
        TrainConfig(save_total_limit=1)
    with pytest.raises(ConfigError, match=r"got 2"):
        TrainConfig(save_total_limit=2, early_stopping_patience=2, save_steps=50, eval_steps=50)


def test_a_second_run_into_the_same_out_dir_is_refused(tmp_path):
    work = resume.work_dir(tmp_path / "out")
    held = resume.lock(work)
    try:
        with pytest.raises(ConfigError, match="another train run with this out_dir is running"):
            resume.lock(work)
    finally:
        os.close(held)
    os.close(resume.lock(work))  # free again once the first run has ended (or was killed)
