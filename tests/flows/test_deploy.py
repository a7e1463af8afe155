"""deploy/prefect.yaml, the raw-data watch and `tunegate deploy`, against Prefect's real test server.

The file is parsed into Prefect's own schedule and trigger models; the watch's digest is a pure
function; the end-to-end test deploys every deployment with `deploy_command` (Prefect's own
`prefect deploy` in a subprocess), runs the watch and waits for the trigger to start retrains.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import typer
import yaml
from typer.testing import CliRunner

from flows import deploy, watch
from tests.helpers import ROOT

PREFECT_FILE = ROOT / "deploy" / "prefect.yaml"
RETRAINS = ("retrain-process", "retrain-docker", "retrain-kubernetes", "retrain-steps-docker")
STEP_DEPLOYMENTS = ("step-process", "step-docker", "step-kubernetes")  # started by retrain, never on their own
FLOW_OF = {**{n: "retrain" for n in RETRAINS}, **{n: "tunegate-step" for n in STEP_DEPLOYMENTS},
           "raw-data-watch": "raw-data-watch"}  # fmt: skip


def _deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(PREFECT_FILE.read_text())["deployments"]}


def _dvc(folder: Path, name: str, md5: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.dvc").write_text(f"outs:\n- md5: {md5}\n  size: 10\n  hash: md5\n  path: {name}\n")


# --- deploy/prefect.yaml ------------------------------------------------------------------


def test_every_deployment_names_a_flow_that_imports_with_its_parameters():
    from prefect.flows import load_flow_from_entrypoint

    deployments = _deployments()
    assert set(deployments) == set(FLOW_OF)
    for name, d in deployments.items():
        flow = load_flow_from_entrypoint(d["entrypoint"], use_placeholder_flow=False)
        assert flow.name == FLOW_OF[name], name
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(d.get("parameters") or {}) <= accepted, f"{name}: parameters the flow does not take"
        assert d.get("description"), name


def test_pools_are_tunegates_and_job_variables_fit_their_templates():
    from prefect.utilities.schema_tools import validate

    for name, d in _deployments().items():
        pool = d["work_pool"]["name"]
        assert pool in deploy.POOLS.values(), f"{name}: unknown pool {pool}"
        kind = {v: k for k, v in deploy.POOLS.items()}[pool]
        if kind in deploy.TEMPLATES:
            schema = json.loads((ROOT / deploy.TEMPLATES[kind]).read_text())["variables"]
            errors = validate(d["work_pool"]["job_variables"], schema, raise_on_error=False, ignore_required=True)
            assert not errors, f"{name}: {[e.message for e in errors]}"
            # Containers hold the code in their venv, not under /app: module entrypoints, /app as cwd.
            assert ":" in d["entrypoint"] and ".py" not in d["entrypoint"]
            assert d["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}]
            env = d["work_pool"]["job_variables"]["env"]
            assert env["DO_NOT_TRACK"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    docker = _deployments()["retrain-docker"]["work_pool"]["job_variables"]
    assert docker["image"] == "localhost/tunegate-cpu:0.1.0" and docker["image_pull_policy"] == "Never"
    assert _deployments()["retrain-kubernetes"]["work_pool"]["job_variables"]["gpu_limit"] == 1


def test_schedules_parse_and_retrain_weekly_on_monday_at_three_utc():
    from cronsim import CronSim
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    for name, d in _deployments().items():
        if name in STEP_DEPLOYMENTS:
            assert "schedules" not in d and "triggers" not in d, name
            continue
        (spec,) = d["schedules"]
        if name in RETRAINS:
            schedule = CronSchedule(cron=spec["cron"], timezone=spec["timezone"])
            fires = CronSim(schedule.cron, datetime(2026, 1, 1))
            assert [next(fires) for _ in range(2)] == [datetime(2026, 1, 5, 3), datetime(2026, 1, 12, 3)]  # Mondays
        else:
            assert IntervalSchedule(interval=timedelta(seconds=spec["interval"])).interval == timedelta(minutes=15)
    with pytest.raises(ValueError):
        CronSchedule(cron="0 3 * * 8")  # the class really checks a cron string


def test_every_retrain_is_triggered_by_the_event_the_watch_emits():
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    adapter = TypeAdapter(DeploymentTriggerTypes)
    for name in RETRAINS:
        (spec,) = _deployments()[name]["triggers"]
        trigger = adapter.validate_python(dict(spec, name=f"{name}-trigger"))
        assert trigger.expect == {watch.EVENT}
        pattern = trigger.match.root["prefect.resource.id"]
        assert pattern.endswith("*") and (watch.RESOURCE_PREFIX + "0" * 12).startswith(pattern[:-1])
        trigger.set_deployment_id(uuid4())
        assert trigger.as_automation().actions[0].type == "run-deployment"
    assert "triggers" not in _deployments()["raw-data-watch"]


def test_plan_picks_the_pools_deployments_plus_the_watch():
    ds = list(_deployments().values())
    plan = deploy.plan_deploy(ds, "docker", [], PREFECT_FILE)
    assert plan.deployments == ("retrain-docker", "raw-data-watch")
    assert plan.pools == {"tunegate-docker": "docker", "tunegate-process": "process"}
    assert [c.split()[:5] for c in plan.worker_commands()] == [
        ["prefect", "worker", "start", "--pool", "tunegate-docker"], ["prefect", "worker", "start", "--pool", "tunegate-process"]]  # fmt: skip
    assert deploy.plan_deploy(ds, "process", [], PREFECT_FILE).pools == {"tunegate-process": "process"}
    per_step = deploy.plan_deploy(ds, "docker", [], PREFECT_FILE, per_step=True)
    assert per_step.deployments == ("retrain-steps-docker", "step-docker", "raw-data-watch")
    assert per_step.pools == {"tunegate-docker": "docker", "tunegate-process": "process"}
    with pytest.raises(deploy.DeployError, match="no deployment retrain-steps-kubernetes for --pool kubernetes --per-step"):
        deploy.plan_deploy(ds, "kubernetes", [], PREFECT_FILE, per_step=True)
    with pytest.raises(deploy.DeployError, match="retrain-gpu.*it has"):
        deploy.plan_deploy(ds, "process", ["retrain-gpu"], PREFECT_FILE)
    with pytest.raises(deploy.DeployError, match="unknown pool"):
        deploy.plan_deploy(ds, "gpu", [], PREFECT_FILE)


def test_cli_dry_run_prints_the_plan_and_bad_input_exits_2(monkeypatch):
    monkeypatch.chdir(ROOT)
    app = typer.Typer()
    app.command("deploy")(deploy.deploy_command)
    app.command("noop")(lambda: None)  # two commands, so `deploy` is a subcommand as in `tunegate deploy`
    out = CliRunner().invoke(app, ["deploy", "--pool", "kubernetes", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "--name retrain-kubernetes --name raw-data-watch" in out.output
    assert "prefect worker start --pool tunegate-kubernetes" in out.output
    assert CliRunner().invoke(app, ["deploy", "--pool", "gpu", "--dry-run"]).exit_code == 2


# --- the raw-data digest ---------------------------------------------------------------------


def test_raw_data_hash_changes_with_an_md5_and_only_then(tmp_path):
    raw = tmp_path / "raw"
    _dvc(raw, "a.jsonl", "0a" * 16)
    _dvc(raw, "b.csv", "1b" * 16)
    first = watch.raw_data_hash(raw)
    (raw / "a.jsonl").write_text("the data itself is not read")
    (raw / "b.csv.dvc").write_text(f"outs:\n- path: b.csv\n  hash: md5\n  md5: {'1b' * 16}\n  size: 999\n")  # reordered
    assert watch.raw_data_hash(raw) == first
    before = watch.raw_data_md5s(raw)
    _dvc(raw, "b.csv", "2c" * 16)
    assert watch.raw_data_hash(raw) != first
    assert watch.changed_files(before, watch.raw_data_md5s(raw)) == ["b.csv"]
    _dvc(raw / "sub", "c.json", "3d" * 16)
    assert watch.changed_files(before, watch.raw_data_md5s(raw)) == ["b.csv", "sub/c.json"]
    assert watch.changed_files(None, before) is None


def test_a_dvc_file_without_md5_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "x.csv.dvc").write_text("outs:\n- path: x.csv\n  etag: abc\n")
    with pytest.raises(watch.RawDataError, match=r"x\.csv\.dvc: outs\[0\] has no md5.*dvc add"):
        watch.raw_data_hash(tmp_path)


def test_the_variable_value_drops_the_file_map_when_it_would_not_fit():
    small = watch.seen_value("h", {"a": "0a" * 16})
    assert small == {"hash": "h", "files": {"a": "0a" * 16}}
    big = watch.seen_value("h", {f"file-{i}.jsonl": "0a" * 16 for i in range(200)})
    assert big == {"hash": "h"}


# --- against the harness: deploy, watch, trigger -------------------------------------------------


async def _read_back(names: tuple[str, ...]) -> dict:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {n: await client.read_deployment_by_name(f"{FLOW_OF[n]}/{n}") for n in names}


async def _cleanup(deployments: dict, variable: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        ids = [d.id for d in deployments.values()]
        for run in await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids))):
            await client.delete_flow_run(run.id)
        for d in deployments.values():
            await client.delete_resource_owned_automations(f"prefect.deployment.{d.id}")
            await client.delete_deployment(d.id)
        for pool in deploy.POOLS.values():
            await client.delete_work_pool(pool)
        with contextlib.suppress(ObjectNotFound):  # only the watch test sets it
            await client.delete_variable_by_name(variable)
        with contextlib.suppress(ObjectNotFound):
            await client.delete_concurrency_limit_by_tag("tunegate-gpu")


async def _wait_for(read, ok, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while True:
        value = await read()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def deployed(prefect_harness):
    """Every deployment of deploy/prefect.yaml applied through `deploy_command` (pools created on the way)."""
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)
    plan = deploy.deploy_command(name=list(FLOW_OF), apply=True)
    found = asyncio.run(_read_back(plan.deployments))
    variable = f"tunegate-test-{uuid4().hex[:8]}"
    yield found, variable
    asyncio.run(_cleanup(found, variable))
    mp.undo()


@pytest.mark.integration
def test_deploy_command_creates_pools_schedules_and_triggers(deployed):
    from prefect.client.orchestration import get_client

    found, _ = deployed
    for name, d in found.items():
        spec = _deployments()[name]
        assert d.work_pool_name == spec["work_pool"]["name"] and d.entrypoint == spec["entrypoint"]
        assert [s.slug for s in d.schedules] == [s["slug"] for s in spec.get("schedules", [])]
    assert found["retrain-process"].schedules[0].schedule.cron == "0 3 * * 1"
    assert found["retrain-process"].pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]  # fmt: skip
    assert found["retrain-docker"].job_variables["image"] == "localhost/tunegate-cpu:0.1.0"

    async def check():
        async with get_client() as client:
            types = {p.name: p.type for p in await client.read_work_pools()}
            automations = await client.read_automations()
        return types, automations

    types, automations = asyncio.run(check())
    assert {p: types.get(p) for p in deploy.POOLS.values()} == {v: k for k, v in deploy.POOLS.items()}
    targets = {a.actions[0].deployment_id for a in automations if watch.EVENT in getattr(a.trigger, "expect", ())}
    assert targets == {found[n].id for n in RETRAINS}
    async def gpu_limit():
        async with get_client() as client:
            return (await client.read_concurrency_limit_by_tag("tunegate-gpu")).concurrency_limit

    assert asyncio.run(gpu_limit()) == 1  # one train task at a time on this server
    assert asyncio.run(deploy.ensure_gpu_limit(4)) == (1, False)  # an existing limit is kept
    with pytest.raises(deploy.DeployError, match="tunegate-process exists with type process, not docker.*delete"):
        asyncio.run(deploy.ensure_pools({"tunegate-process": "docker"}))


@pytest.mark.integration
def test_watch_fires_on_change_only_and_the_trigger_starts_every_retrain(deployed, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.variables import Variable

    found, variable = deployed
    raw = tmp_path / "raw"
    _dvc(raw, "faq.csv", "0a" * 16)
    _dvc(raw, "extra.jsonl", "a" * 32)

    async def events():
        async with get_client() as client:
            page = await client.read_events(filter=EventFilter(event=EventNameFilter(name=[watch.EVENT])), limit=50)
        return [e for e in page.events if e.payload.get("raw_dir") == str(raw)]

    async def triggered_runs():
        ids = [found[n].id for n in RETRAINS]
        async with get_client() as client:
            runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids)))
        return [r for r in runs if r.created_by and r.created_by.type == "AUTOMATION"]

    assert watch.raw_data_watch(raw_dir=str(raw), variable=variable) is True  # first run: fires
    first = Variable.get(variable)
    assert first == {"hash": watch.raw_data_hash(raw), "files": watch.raw_data_md5s(raw)}
    runs = asyncio.run(_wait_for(triggered_runs, lambda rs: len(rs) >= len(RETRAINS)))
    assert sorted(str(r.deployment_id) for r in runs) == sorted(str(found[n].id) for n in RETRAINS)

    assert watch.raw_data_watch(raw_dir=str(raw), variable=variable) is False  # unchanged: silent
    assert Variable.get(variable) == first

    _dvc(raw, "extra.jsonl", "b" * 32)
    assert watch.raw_data_watch(raw_dir=str(raw), variable=variable) is True
    emitted = asyncio.run(_wait_for(events, lambda es: len(es) >= 2))
    assert len(emitted) == 2  # the unchanged rerun emitted nothing
    latest = max(emitted, key=lambda e: e.occurred)
    assert latest.payload["old_hash"] == first["hash"]
    assert latest.payload["new_hash"] == Variable.get(variable)["hash"] != first["hash"]
    assert latest.payload["changed_files"] == ["extra.jsonl"]
    assert latest.resource.id == watch.RESOURCE_PREFIX + latest.payload["new_hash"][:12]
    runs = asyncio.run(_wait_for(triggered_runs, lambda rs: len(rs) >= 2 * len(RETRAINS)))
    assert len(runs) == 2 * len(RETRAINS)
