"""One pipeline, two drivers: the Prefect flow and dvc.yaml run the same steps on the shipped configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steps.core.config import load_section, read_params
from tests.helpers import ROOT, make_project, task_states, tiny_params


def test_dvc_stages_and_flow_tasks_are_the_same_list():
    from flows.retrain import TASKS

    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert stages == list(TASKS)
    assert all(t.name == name for name, t in TASKS.items())


def test_dvc_stages_follow_the_step_descriptors():
    """Each stage runs its step on the descriptor's default folders: its inputs are deps, its output an out."""
    from steps import PIPELINE, describe

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(PIPELINE)
    for name in PIPELINE:
        step, stage = describe(name), stages[name]
        assert stage["cmd"] == " ".join([f"python -m steps.{name}", *step.paths.values()]), name
        outs = [o if isinstance(o, str) else next(iter(o)) for o in [*stage.get("outs", []), *stage.get("metrics", [])]]
        assert any(o == step.output or o.startswith(step.output + "/") for o in outs), (name, outs)
        for folder in step.inputs.values():  # the folder, or the files of it the step reads
            assert any(d == folder or d.startswith(folder + "/") for d in stage["deps"]), (name, folder)


def test_every_shipped_config_parses():
    from steps import PIPELINE, describe
    from steps.serving.config import ServeConfig

    params = read_params(ROOT / "params.yaml")
    for name in PIPELINE:
        describe(name).load_config(params)
    load_section(ServeConfig, "serve", params)
    for path in [*ROOT.glob("deploy/**/*.yaml"), *ROOT.glob("deploy/**/*.json")]:  # every shipped deploy file
        docs = list(yaml.safe_load_all(path.read_text()))  # JSON is YAML too
        assert docs and all(d is not None for d in docs), path
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        assert stage["cmd"].startswith(f"python -m steps.{name} ")
        assert stage["params"][:2] == ["base", name]


def _local_imports(module: str) -> set[str]:
    """Repo files ``module`` imports, directly or through other repo modules, at import or call time
    (not those under ``if TYPE_CHECKING:``, which are read by type checkers only)."""
    import ast

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        path = path if path.is_file() else ROOT / name.replace(".", "/") / "__init__.py"
        if not path.is_file() or path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                       for stmt in node.body for n in ast.walk(stmt)}  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] in ("steps", "expectations")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("steps", "expectations"):
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return {str(p.relative_to(ROOT)) for p in seen}


def test_every_dvc_stage_deps_cover_all_the_code_it_runs():
    """A stage's deps cover every repo module its step runs, so a code change reruns the stages it affects
    and `dvc repro` never keeps a stale output. A dep may be a file or a folder (``steps/core``), which
    covers every file under it, new modules included; a module no dep covers fails the test. Every code
    dep exists and covers a module the stage runs, so a moved or renamed module leaves no stale path."""

    def under(path: str, dep: str) -> bool:  # a folder dep covers every file under it
        return path == dep or path.startswith(dep + "/")

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        code = [d.rstrip("/") for d in stage["deps"] if d.split("/")[0] in ("steps", "expectations")]
        runs = _local_imports(f"steps.{name}")
        # Importing steps.core.io runs steps/__init__.py and steps/core/__init__.py first.
        runs |= {str(p.relative_to(ROOT) / "__init__.py") for f in runs for p in (ROOT / f).parents
                 if ROOT in p.parents and (p / "__init__.py").is_file()}  # fmt: skip
        missing = sorted(f for f in runs if not any(under(f, d) for d in code))
        assert not missing, f"dvc.yaml: stage {name}: add to deps (a file, or its package folder): {', '.join(missing)}"
        stale = [d for d in code if not (ROOT / d).exists() or not any(under(f, d) for f in runs)]
        assert not stale, f"dvc.yaml: stage {name}: deps that cover no module the stage runs (moved?): {', '.join(stale)}"


@pytest.mark.integration
def test_flow_runs_under_prefect_test_harness(tmp_path, prefect_harness, monkeypatch, tiny_model_dir):
    from flows.retrain import retrain

    monkeypatch.chdir(make_project(tmp_path, tiny_model_dir))
    state = retrain(params="params.yaml", data_dir="data", return_state=True)
    assert state.is_completed(), state.message
    assert "v0.1.0 is production" in state.message
    assert (tmp_path / "data" / "validated" / "report.json").is_file()
    assert (tmp_path / "data" / "prepared" / "manifest.json").is_file()
    for step in ("train", "evaluate", "merged", "register", "promote"):
        assert (tmp_path / "models" / step / "manifest.json").is_file(), step
    assert (tmp_path / "models" / "evaluate" / "report.html").is_file()
    from steps.registry.versions import production_version

    assert production_version(str(tmp_path)) == "v0.1.0"
    assert set(task_states(state).values()) == {"Completed"}

    # Nothing changed: every step is served from the cache (keys are content digests), production stays.
    again = retrain(params="params.yaml", data_dir="data", return_state=True)
    assert again.is_completed(), again.message
    states = task_states(again)
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
    assert task_states(third)["evaluate"] == "Completed" and task_states(third)["train"] == "Cached"
    assert "v0.1.0 is production (was v0.1.0)" in third.message
    assert subprocess.run(["git", "tag"], cwd=tmp_path, capture_output=True, text=True).stdout.count("@v") == 1


@pytest.mark.integration
def test_failing_gate_ends_the_flow_failed_with_reasons(tmp_path, prefect_harness, monkeypatch, tiny_model_dir):
    from flows.retrain import retrain

    project = make_project(tmp_path, tiny_model_dir)
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
    # Without the checkout's tags: after `make demo` they hold the demo's registry (tunegate-model@v0.1.0 in
    # production), which promote would hold the tiny model against. The clone starts with no registry, as CI does.
    subprocess.run(["git", "clone", "-q", "--no-tags", str(ROOT), str(clone)], check=True)
    if not (clone / "dvc.yaml").is_file():
        pytest.skip("the checkout has no committed dvc.yaml yet")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = lambda *cmd: subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)  # noqa: E731
    assert run("git", "tag").stdout == "", "the clone must not carry the checkout's registry tags"
    demo = run(sys.executable, "-m", "flows.cli", "demo-data")
    assert demo.returncode == 0, demo.stderr
    assert run("git", "status", "--porcelain").stdout.strip() == "", "demo-data must reproduce the committed .dvc files"
    tiny_params(clone / "params.yaml", tiny_model_dir)
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

    project = make_project(tmp_path, tiny_model_dir)
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
    from steps.registry.versions import production_version

    assert production_version(str(project)) is None
