"""The distributed path: the same train step under ``accelerate launch`` with two CPU processes (gloo).

The GPU configs (DDP, FSDP, DeepSpeed ZeRO-2/3) live in deploy/accelerate and are only parsed
here; ``cpu_ddp.yaml`` runs for real: two ranks train a LoRA adapter on a tiny model, and
exactly one folder is published, by rank 0, holding the adapter and the manifest.

A spy ``sitecustomize`` (put on PYTHONPATH for the launched processes only) records every call
to ``steps.core.io.publish_dir`` with the caller's rank, so a second rank publishing its own copy
is caught even when the race leaves no trace on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from steps.core.io import atomic_write_jsonl
from steps.core.schema import make_record
from tests.helpers import ROOT as REPO

CONFIGS = REPO / "deploy" / "accelerate"
# accelerate's DistributedType values a launch config may name (accelerate 1.x).
KNOWN_TYPES = {"NO", "MULTI_CPU", "MULTI_GPU", "MULTI_NPU", "MULTI_MLU", "MULTI_SDAA", "MULTI_MUSA", "MULTI_XPU",
               "MULTI_HPU", "DEEPSPEED", "FSDP", "XLA", "MEGATRON_LM"}  # fmt: skip
N_TRAIN, N_VALID, BATCH, ACCUM, WORLD, STEPS = 12, 4, 2, 1, 2, 3

SPY = textwrap.dedent('''
    """Test spy: log every steps.core.io.publish_dir call (rank, pid, what was published) to $TUNEGATE_PUBLISH_LOG."""
    import json, os

    if os.environ.get("TUNEGATE_PUBLISH_LOG"):
        import steps.core.io as _io

        _real = _io.publish_dir

        def publish_dir(tmp_dir, final_dir):
            import torch.distributed as dist

            group = dist.is_available() and dist.is_initialized()
            entry = {"rank": os.environ.get("RANK"), "pid": os.getpid(), "tmp": str(tmp_dir),
                     "files": sorted(os.listdir(tmp_dir)), "backend": dist.get_backend() if group else None,
                     "world_size": dist.get_world_size() if group else 1}
            with open(os.environ["TUNEGATE_PUBLISH_LOG"], "a") as fh:
                fh.write(json.dumps(entry) + "\\n")
            return _real(tmp_dir, final_dir)

        _io.publish_dir = publish_dir
''')


def test_every_accelerate_config_parses_and_names_a_known_type():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {p.name for p in files} >= {"cpu_ddp.yaml", "ddp.yaml", "fsdp.yaml", "zero2.yaml", "zero3.yaml"}
    for path in files:
        cfg = yaml.safe_load(path.read_text())
        assert isinstance(cfg, dict), path.name
        assert cfg.get("distributed_type") in KNOWN_TYPES, (path.name, cfg.get("distributed_type"))
        assert isinstance(cfg.get("num_processes"), int) and cfg["num_processes"] >= 1, path.name
        if cfg["distributed_type"] == "DEEPSPEED":
            assert cfg["deepspeed_config"]["zero_stage"] in (2, 3), path.name
        if cfg["distributed_type"] == "FSDP":
            assert cfg["fsdp_config"]["fsdp_version"] == 2, path.name
    # accelerate starts MULTI_CPU configs through mpirun only (without mpirun_hostfile: ONE process), so the
    # CPU config names MULTI_GPU (the torchrun launcher) with use_cpu, and each worker joins a gloo group.
    cpu = yaml.safe_load((CONFIGS / "cpu_ddp.yaml").read_text())
    assert cpu["distributed_type"] == "MULTI_GPU" and cpu["use_cpu"] is True and cpu["num_processes"] == 2


def test_every_accelerate_config_loads_in_accelerate():
    """accelerate's own loader accepts each file (unknown keys or bad enum values raise here)."""
    from accelerate.commands.config.config_args import load_config_from_file

    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config_from_file(str(path))
        assert cfg.distributed_type.value == yaml.safe_load(path.read_text())["distributed_type"], path.name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rec(i: int) -> dict:
    return make_record("sft", dataset="t", source="t.jsonl", row=i, fmt="test",
                       messages=[{"role": "user", "content": f"What is {i} + {i}?"},
                                 {"role": "assistant", "content": f"The answer is {2 * i}."}])  # fmt: skip


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_two_cpu_processes_gloo_train_and_publish_once(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    records = [_rec(i) for i in range(N_TRAIN + N_VALID)]
    atomic_write_jsonl(data / "train.jsonl", records[:N_TRAIN])
    atomic_write_jsonl(data / "validation.jsonl", records[N_TRAIN:])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "base": {"base_model": tiny_model_dir, "seed": 7},
        # packing off: one row per record, so the epoch reached after STEPS steps measures the world size
        "train": {"stage": "sft", "method": "lora", "max_steps": STEPS, "batch_size": BATCH, "grad_accum": ACCUM,
                  "max_length": 64, "packing": False, "tracking": "none", "save_steps": 3, "eval_steps": 3,
                  "logging_steps": 1, "warmup_ratio": 0.0, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
    }))  # fmt: skip
    runs = tmp_path / "runs"  # the output's parent holds nothing else: leftovers would show
    out = runs / "out"
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(SPY)
    log = tmp_path / "publish.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "info", "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(spy), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TUNEGATE_PUBLISH_LOG": str(log)}  # fmt: skip
    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = [str(accelerate)] if accelerate.exists() else [shutil.which("accelerate") or "accelerate"]
    cmd = [*launcher, "launch", "--config_file", str(CONFIGS / "cpu_ddp.yaml"), "--num_processes", str(WORLD),
           "--main_process_port", str(_free_port()), "-m", "steps.train", str(data), str(out), "--params", str(params)]  # fmt: skip
    started = time.monotonic()
    # own process group: on a timeout the launcher AND its two workers are stopped, none left behind
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"accelerate launch did not finish in 240 s:\n{output[-4000:]}")
    wall = time.monotonic() - started
    print(f"accelerate launch: rc {proc.returncode} in {wall:.1f}s")
    assert proc.returncode == 0, output[-6000:]

    # Two ranks, one optimiser step over 2 x batch_size x grad_accum rows.
    assert f"Total train batch size (w. parallel, distributed & accumulation) = {WORLD * BATCH * ACCUM}" in output, output[-4000:]

    # Exactly one folder published, by rank 0 only; no staging or .old folders left behind.
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert [c["rank"] for c in calls] == ["0"], f"publish_dir called by ranks {[c['rank'] for c in calls]}: {calls}"
    assert calls[0]["backend"] == "gloo" and calls[0]["world_size"] == WORLD, calls
    assert sorted(p.name for p in runs.iterdir()) == ["out"]

    # The published folder: adapter, tokenizer, checkpoints and manifest.
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json", "manifest.json"):  # fmt: skip
        assert (out / name).is_file(), (name, sorted(p.name for p in out.iterdir()))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["step"] == "train" and manifest["metrics"]["steps"] == STEPS
    assert "adapter_model.safetensors" in manifest["outputs"]
    assert manifest["metrics"]["world_size"] == WORLD
    state = json.loads((out / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    epoch = max(h["epoch"] for h in state["log_history"] if "loss" in h)
    assert epoch == pytest.approx(STEPS * WORLD * BATCH * ACCUM / N_TRAIN), state["log_history"]  # 1.0; 0.5 on one rank
