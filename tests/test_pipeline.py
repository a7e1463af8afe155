"""One pipeline, two drivers: the Prefect flow and dvc.yaml run the same steps on the shipped configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steps import demo_data
from steps._config import load_section, read_params

ROOT = Path(__file__).resolve().parent.parent


def test_dvc_stages_and_flow_tasks_are_the_same_list():
    from flows.retrain import TASKS

    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert stages == list(TASKS)
    assert all(t.name == name for name, t in TASKS.items())


def test_every_shipped_config_parses():
    from steps.ingest import IngestConfig
    from steps.train import TrainConfig
    from steps.validate import ValidateConfig

    params = read_params(ROOT / "params.yaml")
    load_section(IngestConfig, "ingest", params)
    load_section(ValidateConfig, "validate", params)
    load_section(TrainConfig, "train", params)
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        assert stage["cmd"].startswith(f"python -m steps.{name} ")
        assert stage["params"] == ["base", name]


def _tiny_params(params: Path, model_dir: Path) -> None:
    """The shipped params with a tiny base model and a two-step training run, for fast pipeline tests."""
    values = yaml.safe_load(params.read_text())
    values["base"]["base_model"] = str(model_dir)
    values["train"].update(max_steps=2, max_length=128, eval_steps=2, save_steps=2, tracking="none")
    values["validate"]["max_tokens"] = 1_000_000  # the tiny byte-level tokenizer spends many tokens a word
    params.write_text(yaml.safe_dump(values, sort_keys=False))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny import save_tiny_model

    return Path(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def _project(tmp_path: Path, model_dir: Path) -> Path:
    """A working copy of the shipped params (tiny model) with the demo data laid out in data/raw."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    _tiny_params(tmp_path / "params.yaml", model_dir)
    demo_data.run(tmp_path / "data" / "raw")
    return tmp_path


@pytest.mark.integration
def test_flow_runs_under_prefect_test_harness(tmp_path, prefect_harness, monkeypatch, tiny_model_dir):
    from flows.retrain import retrain

    monkeypatch.chdir(_project(tmp_path, tiny_model_dir))
    state = retrain(params="params.yaml", data_dir="data", return_state=True)
    assert state.is_completed(), state.message
    assert (tmp_path / "data" / "validated" / "report.json").is_file()
    assert (tmp_path / "data" / "prepared" / "manifest.json").is_file()
    assert (tmp_path / "models" / "train" / "manifest.json").is_file()


@pytest.mark.integration
def test_failing_gate_ends_the_flow_failed_with_reasons(tmp_path, prefect_harness, monkeypatch, tiny_model_dir):
    from flows.retrain import retrain

    project = _project(tmp_path, tiny_model_dir)
    # Plant a leak: a held-out answer copied into the training data.
    heldout = (project / "data/raw/general_heldout.jsonl").read_text().splitlines()[0]
    with open(project / "data/raw/support.jsonl", "a") as fh:
        import json

        msgs = json.loads(heldout)["messages"][:2]
        fh.write(json.dumps({"conversations": [{"from": "human" if m["role"] == "user" else "gpt",
                                                "value": m["content"]} for m in msgs]}) + "\n")
    monkeypatch.chdir(project)
    state = retrain(params="params.yaml", data_dir="data", return_state=True)
    assert state.is_failed()
    assert "leak" in state.message
    assert not (project / "models").exists()  # nothing downstream of a failed gate ran


@pytest.mark.integration
def test_dvc_repro_runs_in_a_fresh_clone(tmp_path, tiny_model_dir):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    if not (clone / "dvc.yaml").is_file():
        pytest.skip("the checkout has no committed dvc.yaml yet")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = lambda *cmd: subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)  # noqa: E731
    demo = run(sys.executable, "-m", "flows.cli", "demo-data")
    assert demo.returncode == 0, demo.stderr
    assert run("git", "status", "--porcelain").stdout.strip() == "", "demo-data must reproduce the committed .dvc files"
    _tiny_params(clone / "params.yaml", tiny_model_dir)
    first = run("dvc", "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (clone / "data/validated/report.json").is_file()
    assert (clone / "models/train/manifest.json").is_file()
    again = run("dvc", "repro")
    assert again.returncode == 0 and "up to date" in again.stdout.lower(), again.stdout
    shutil.rmtree(clone)
