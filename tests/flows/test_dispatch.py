"""Per-step placement: each step of the retrain flow as its own flow run in a work pool (flows/dispatch.py).

The pure parts (the placement file, what crosses over, the cache key) are checked directly; the
end-to-end test deploys ``step-process`` with ``tunegate deploy`` (Prefect's own ``prefect deploy``),
starts a real process worker, and runs the retrain flow with every placeable step sent to it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from flows import dispatch
from flows.dispatch import PlacementError, load_placement
from steps import PIPELINE, demo_data, describe, ingest
from steps.core.config import from_dict, load_section, read_params
from steps.data.config import IngestConfig
from tests.helpers import ROOT, flow_runs, make_project, task_states

JOB_VARIABLES = ROOT / dispatch.JOB_VARIABLES
PLACEABLE = PIPELINE[:6]


def test_every_section_of_the_shipped_file_places_every_step_but_register_and_promote():
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "deploy/prefect.yaml").read_text())["deployments"]}
    for section in ("process", "docker", "kubernetes"):
        placement = load_placement(section, PIPELINE, JOB_VARIABLES)
        assert tuple(placement.job_variables) == PLACEABLE
        flow_name, name = placement.deployment.split("/")
        assert flow_name == "tunegate-step" and deployments[name]["entrypoint"] == "flows.step:run_step"
        assert deployments[name]["work_pool"]["name"] == f"tunegate-{section}"
    assert load_placement(None, PIPELINE, JOB_VARIABLES) is None
    assert deployments["retrain-steps-docker"]["parameters"]["steps_in"] == "docker"


@pytest.mark.parametrize(
    ("text", "section", "match"),
    [
        ("docker:\n  register: {}\n", "docker", r"docker\.register: register writes git tags.*remove it"),
        ("docker:\n  trian: {}\n", "docker", r"docker\.trian: not a step \(did you mean 'train'\?\)"),
        ("docker:\n  train: gpu\n", "docker", r"docker\.train: expected a mapping"),
        ("docker: {}\n", "kubernetes", r"no section 'kubernetes' for steps_in; it has docker"),
    ],
)
def test_a_bad_placement_names_the_file_the_entry_and_the_fix(tmp_path, text, section, match):
    path = tmp_path / "job_variables.yaml"
    path.write_text(text)
    with pytest.raises(PlacementError, match=match):
        load_placement(section, PIPELINE, path)
    with pytest.raises(PlacementError, match="not found"):
        load_placement("docker", PIPELINE, tmp_path / "missing.yaml")


def test_every_config_crosses_over_as_json_and_comes_back_equal():
    values = read_params(ROOT / "params.yaml")
    for name in PLACEABLE:
        step = describe(name)
        cfg = step.load_config(values)
        sent = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
        assert from_dict(step.config, sent, name) == cfg, name


def test_a_path_in_the_model_cache_travels_relative_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGATE_CACHE", str(tmp_path / "here"))
    sent = dispatch.portable(tmp_path / "here" / "registry" / "v1")
    assert sent == "$TUNEGATE_CACHE/registry/v1"
    assert dispatch.portable("data/validated") == "data/validated" and dispatch.portable(None) is None
    monkeypatch.setenv("TUNEGATE_CACHE", "/cache")  # the container's
    assert dispatch.local(sent) == Path("/cache/registry/v1")
    assert dispatch.local("data/validated") == Path("data/validated")


def test_a_step_run_here_leaves_the_result_the_flow_reads_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo_data.run(tmp_path / "data" / "raw")
    cfg = load_section(IngestConfig, "ingest", read_params(ROOT / "params.yaml"))
    params = dispatch.step_parameters("ingest", ingest.run, (cfg,), {"out_dir": Path("data/prepared")})
    assert params["paths"] == {"out_dir": "data/prepared"}
    json.dumps(params)  # all JSON: Prefect stores it as the flow run's parameters
    result = dispatch.run_here(ingest.STEP, params["config"], params["paths"])
    back = dispatch.read_result(ingest.STEP, Path("data/prepared"))
    assert back == result and isinstance(back.out_dir, Path) and back.passed
    with pytest.raises(dispatch.StepRunFailed, match="left no result; the worker must see"):
        dispatch.read_result(ingest.STEP, tmp_path / "nowhere")


def test_a_placed_step_is_the_same_task_with_the_same_cache_key():
    import inspect

    from flows.retrain import PLACED, STEPS, TASKS
    from flows.tasks import step_cache_key

    assert list(PLACED) == list(PLACEABLE)
    for step, task_ in PLACED.items():
        run_params = list(inspect.signature(STEPS[step].run).parameters)
        assert list(inspect.signature(task_.fn).parameters) == [*run_params, "deployment", "job_variables"]
        assert task_.name == TASKS[step].name and task_.tags == TASKS[step].tags
    context = SimpleNamespace(task=SimpleNamespace(name="train"))
    here = step_cache_key(context, {"cfg": 1, "out_dir": "models/train"})
    there = step_cache_key(context, {"cfg": 1, "out_dir": "models/train", "deployment": "tunegate-step/step-docker",
                                     "job_variables": {"image": "localhost/tunegate-gpu:0.1.0"}})  # fmt: skip
    assert here == there


# ---------------------------------------------------------------- end to end, a real process worker


def test_a_missing_step_deployment_fails_the_flow_before_the_first_step(tmp_path, prefect_harness, monkeypatch):
    from flows.retrain import retrain

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    state = retrain(params="params.yaml", steps_in="docker", job_variables_file=str(JOB_VARIABLES), return_state=True)
    assert state.is_failed()
    with pytest.raises(PlacementError, match=r"no deployment tunegate-step/step-docker on .*tunegate deploy --pool docker "
                                             r"--name step-docker"):  # fmt: skip
        state.result()
    assert not (tmp_path / "data").exists()  # nothing ran


@pytest.mark.integration
def test_each_step_runs_as_its_own_flow_run_in_a_process_worker(tmp_path, prefect_harness, monkeypatch, tiny_model_dir):
    from flows.retrain import retrain
    from tests.prefect_worker import remove_step_deployment, step_worker

    project = make_project(tmp_path, tiny_model_dir)
    monkeypatch.chdir(project)  # the deployment's working directory: where the worker runs each step
    with step_worker("process", cwd=project, log=tmp_path / "worker.log"):
        started = time.perf_counter()
        state = retrain(params="params.yaml", steps_in="process", job_variables_file=str(JOB_VARIABLES), return_state=True)
        seconds = time.perf_counter() - started
        assert state.is_completed(), f"{state.message}\n{(tmp_path / 'worker.log').read_text()[-4000:]}"
        assert "v0.1.0 is production" in state.message

    steps = [r for r in flow_runs("tunegate-step") if r.work_pool_name == "tunegate-process"]
    seen = [(r.parameters["step"], r.state.name, r.infrastructure_pid, r.parent_task_run_id) for r in steps]
    assert [r.parameters["step"] for r in steps] == list(PLACEABLE), seen
    assert all(r.state.is_completed() for r in steps), seen
    assert all(r.parent_task_run_id is not None for r in steps), seen  # each a child of its task in the UI
    assert len({r.infrastructure_pid for r in steps} - {None}) == len(PLACEABLE), seen  # a process each
    assert set(task_states(state).values()) == {"Completed"}, task_states(state)
    for out in ("data/prepared", "data/validated", "models/train", "models/evaluate", "models/merged"):
        assert (project / out / dispatch.RESULT_FILE).is_file(), out
    print(f"retrain with 6 steps in a process worker: {seconds:.1f} s")

    # Where a step ran does not change what it made: the same flow without placement is all cached.
    again = retrain(params="params.yaml", return_state=True)
    assert again.is_completed(), again.message
    assert set(task_states(again).values()) == {"Cached"}
    remove_step_deployment("process")
