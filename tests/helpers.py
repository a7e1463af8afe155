"""What several test modules (and bench/) share: the repository root, a tiny project, train configs, Prefect reads.

Plain functions only; the fixtures built on them (``tiny_model_dir``, ``sft_data``) live in tests/conftest.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from steps.core.config import load_section
from steps.core.io import atomic_write_jsonl
from steps.core.schema import make_record
from steps.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent  # the repository: params.yaml, dvc.yaml, deploy/, demo/

# ---------------------------------------------------------------- a tiny project for the pipeline


def tiny_params(params: Path, model_dir: str | Path) -> None:
    """The shipped params with a tiny base model and a two-step training run, for fast pipeline tests."""
    values = yaml.safe_load(params.read_text())
    values["base"]["base_model"] = str(model_dir)
    values["train"].update(max_steps=2, max_length=128, eval_steps=2, save_steps=2, tracking="none")
    values["validate"]["max_tokens"] = 1_000_000  # the tiny byte-level tokenizer spends many tokens a word
    values["evaluate"].update(max_examples=4, max_new_tokens=8, worst_examples=2)
    values["evaluate"]["judge"].update(max_examples=2, max_tokens=16)
    # Two steps of a random 2-layer model barely move it: a gate that only asks for "no worse than 5%".
    values["evaluate"]["gate"] = {"floors": {"test_perplexity": 1.0e6}, "min_gain_vs_base": {"test_perplexity": -0.05},
                                  "max_forgetting": {"heldout_perplexity": 0.05}, "max_safety_hits": 0}
    work = params.parent.resolve()
    values["registry"].update(remote=str(work / "dvc-remote"), cache_dir=str(work / "registry-cache"))
    params.write_text(yaml.safe_dump(values, sort_keys=False))


def make_project(tmp_path: Path, model_dir: str | Path) -> Path:
    """A git repository (the registry's tags need one) with the shipped params (tiny model) and the demo data."""
    from steps import demo_data

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    tiny_params(tmp_path / "params.yaml", model_dir)
    demo_data.run(tmp_path / "data" / "raw")
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("config", "user.name", "t")  # the registry's tags record who made them
    git("config", "user.email", "t@t")
    git("commit", "-q", "--allow-empty", "-m", "project")
    return tmp_path


# ---------------------------------------------------------------- train on tiny data

# Small and fast: no warmup (the first step would have lr 0), log and evaluate every step.
FAST_TRAIN = dict(max_steps=3, batch_size=4, logging_steps=1, eval_steps=2, save_steps=2, warmup_ratio=0.0,
                  learning_rate=1e-2, tracking="none", max_length=128, freeze_trainable_layers=1, num_virtual_tokens=4,
                  lora={"r": 4, "alpha": 8, "dropout": 0.0})  # fmt: skip


def cfg_of(base: str, **kw) -> TrainConfig:
    """A fast TrainConfig on ``base`` built the way params.yaml builds it (nested mappings become dataclasses)."""
    return load_section(TrainConfig, "train", {"base": {"base_model": base, "seed": 7}, "train": {**FAST_TRAIN, **kw}})


def record(kind: str, i: int, **fields) -> dict:
    """Row ``i`` of a test dataset, as ingest writes records."""
    return make_record(kind, dataset="t", source="t.jsonl", row=i, fmt="test", **fields)


def write_split(root: Path, records: list[dict]) -> Path:
    """Ten records as a validated folder: the first eight train.jsonl, the rest validation.jsonl."""
    atomic_write_jsonl(root / "train.jsonl", records[:8])
    atomic_write_jsonl(root / "validation.jsonl", records[8:])
    return root


# ---------------------------------------------------------------- what Prefect recorded


def task_states(flow_state, timeout: float = 120.0) -> dict[str, str]:
    """Step name -> final state name of each task run of a flow run, in start order.

    The server records task run states from events, after the flow has returned; under a busy SQLite
    (a worker polling beside it) a run can be read before its state is written. Wait for every run to
    have a final state, up to ``timeout`` seconds, rather than read a half-recorded flow.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            )
            if all(run.state is not None and run.state.is_final() for run in runs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return {run.name.rsplit("-", 1)[0]: run.state.name if run.state else "not recorded" for run in runs}


def flow_runs(flow_name: str) -> list:
    """Every run of the flow ``flow_name``, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.START_TIME_ASC)  # fmt: skip


def one_torch_thread() -> Iterator[None]:
    """Run under one torch thread, then restore the count: tiny matrices gain nothing from more threads,
    and on a busy shared CPU extra threads spin (10x slower). Wrap it in a fixture of the scope you need."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
