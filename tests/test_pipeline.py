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
    from steps import augment, evaluate, ingest, merge, promote, register, serve, train, validate

    params = read_params(ROOT / "params.yaml")
    for name, module in (("ingest", ingest), ("validate", validate), ("augment", augment), ("train", train),
                         ("evaluate", evaluate), ("merge", merge), ("serve", serve)):  # fmt: skip
        load_section(getattr(module, f"{name.capitalize()}Config"), name, params)
    register.load_config(params)
    promote.load_config(params)
    for path in [*ROOT.glob("deploy/**/*.yaml"), *ROOT.glob("deploy/**/*.json")]:  # every shipped deploy file
        docs = list(yaml.safe_load_all(path.read_text()))  # JSON is YAML too
        assert docs and all(d is not None for d in docs), path
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        assert stage["cmd"].startswith(f"python -m steps.{name} ")
        assert stage["params"][:2] == ["base", name]


def _local_imports(module: str) -> set[str]:
    """Repo files ``module`` imports, directly or through other repo modules, at import or call time."""
    import ast

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        path = path if path.is_file() else ROOT / name.replace(".", "/") / "__init__.py"
        if not path.is_file() or path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] in ("steps", "expectations")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("steps", "expectations"):
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return {str(p.relative_to(ROOT)) for p in seen}


def test_every_dvc_stage_depends_on_all_the_code_it_runs():
    """A stage's deps list every repo module its step imports (a split module's new files too), so a
    code change reruns the stages it affects and `dvc repro` never keeps a stale output."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        deps = stage["deps"]
        missing = [f for f in sorted(_local_imports(f"steps.{name}"))
                   if f not in deps and not any(f.startswith(d.rstrip("/") + "/") for d in deps)]  # fmt: skip
        assert not missing, f"dvc.yaml: stage {name}: add to deps: {', '.join(missing)}"


def _tiny_params(params: Path, model_dir: Path) -> None:
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


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny import save_tiny_model

    return Path(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def _project(tmp_path: Path, model_dir: Path) -> Path:
    """A git repository (the registry's tags need one) with the shipped params (tiny model) and the demo data."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    _tiny_params(tmp_path / "params.yaml", model_dir)
    demo_data.run(tmp_path / "data" / "raw")
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("config", "user.name", "t")  # the registry's tags record who made them
    git("config", "user.email", "t@t")
    git("commit", "-q", "--allow-empty", "-m", "project")
    return tmp_path


@pytest.mark.integration
def test_flow_runs_under_prefect_test_harness(tmp_path, prefect_harness, monkeypatch, tiny_model_dir):
    from flows.retrain import retrain

    monkeypatch.chdir(_project(tmp_path, tiny_model_dir))
    state = retrain(params="params.yaml", data_dir="data", return_state=True)
    assert state.is_completed(), state.message
    assert "v0.1.0 is production" in state.message
    assert (tmp_path / "data" / "validated" / "report.json").is_file()
    assert (tmp_path / "data" / "prepared" / "manifest.json").is_file()
    for step in ("train", "evaluate", "merged", "register", "promote"):
        assert (tmp_path / "models" / step / "manifest.json").is_file(), step
    assert (tmp_path / "models" / "evaluate" / "report.html").is_file()
    from steps._registry import production_version

    assert production_version(str(tmp_path)) == "v0.1.0"
    assert set(_task_states(state).values()) == {"Completed"}

    # Nothing changed: every step is served from the cache (keys are content digests), production stays.
    again = retrain(params="params.yaml", data_dir="data", return_state=True)
    assert again.is_completed(), again.message
    states = _task_states(again)
    assert list(states) == ["ingest", "validate", "augment", "train", "evaluate", "merge", "register", "promote"]
    assert states == dict.fromkeys(states, "Cached"), states
    assert production_version(str(tmp_path)) == "v0.1.0"

    # An evaluation setting changes: evaluate and merge run again, the same weights are not registered
    # twice, and production stays the version it is.
    values = yaml.safe_load((tmp_path / "params.yaml").read_text())
    values["evaluate"]["worst_examples"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    third = retrain(params="params.yaml", data_dir="data", return_state=True)
    assert third.is_completed(), third.message
    assert _task_states(third)["evaluate"] == "Completed" and _task_states(third)["train"] == "Cached"
    assert "v0.1.0 is production (was v0.1.0)" in third.message
    assert subprocess.run(["git", "tag"], cwd=tmp_path, capture_output=True, text=True).stdout.count("@v") == 1


def _task_states(flow_state) -> dict[str, str]:
    """Step name -> final state name of each task run of a flow run, in start order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


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
    assert (clone / "models/evaluate/metrics.json").is_file()
    again = run("dvc", "repro")
    assert again.returncode == 0 and "up to date" in again.stdout.lower(), again.stdout
    metrics = run("dvc", "metrics", "show", "--json")
    assert metrics.returncode == 0 and "test_perplexity" in metrics.stdout, metrics.stderr
    plots = run("dvc", "plots", "show", "--json")
    assert plots.returncode == 0 and "train_loss" in plots.stdout, plots.stderr
    # An experiment with one param changed: the same pipeline, in DVC's experiment workspace.
    assert run("git", "add", "params.yaml", "dvc.lock").returncode == 0
    assert run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny params").returncode == 0
    exp = run("dvc", "exp", "run", "-S", "train.learning_rate=0.001", "evaluate")
    assert exp.returncode == 0, exp.stdout[-2000:] + exp.stderr[-2000:]
    shown = run("dvc", "exp", "show", "--json")
    assert shown.returncode == 0 and "0.001" in shown.stdout
    shutil.rmtree(clone)


@pytest.mark.integration
def test_failed_evaluation_gate_ends_the_flow_failed_and_nothing_is_promoted(tmp_path, prefect_harness, monkeypatch,
                                                                              tiny_model_dir):  # fmt: skip
    from flows.retrain import retrain

    project = _project(tmp_path, tiny_model_dir)
    values = yaml.safe_load((project / "params.yaml").read_text())
    values["evaluate"]["gate"]["min_gain_vs_base"] = {"test_perplexity": 0.5}  # two tiny steps never halve it
    values["augment"]["enabled"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    monkeypatch.chdir(project)
    state = retrain(params="params.yaml", data_dir="data", return_state=True)
    assert state.is_failed()
    assert state.message.startswith("evaluation gate failed: vs_base: test_perplexity")
    assert (project / "models" / "evaluate" / "report.html").is_file()
    assert not (project / "models" / "merged").exists() and not (project / "models" / "register").exists()
    from steps._registry import production_version

    assert production_version(str(project)) is None
