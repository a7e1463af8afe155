"""The CPU image runs the data steps the way Prefect's docker worker runs a job; the work pools accept each step.

Builds containers/Dockerfile.cpu with podman from the debootstrap base (containers/podman-env.sh
makes it once), starts podman's Docker-compatible API, and runs ``ingest`` and ``validate`` in
the image through docker-py with the calls prefect-docker's worker makes: ``containers.create``
(image, command, env, volumes, network_mode host), ``start``, streamed logs, ``wait``.

Both images are cached in podman's storage (~/.cache/tunegate/podman): the base by name, the
build by a tag made of a digest of everything the build reads, so a rerun builds nothing (~20 s
for the file). Cold, the base takes ~35-75 s and the build ~5-13 min on 2 shared cores, nearly all
of it pip downloading the dependencies; after a code change only, the build takes ~1 min.
The work-pool tests need no podman: they check deploy/workpools/ with Prefect's and docker-py's own code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import ROOT as REPO

CONTAINERS = REPO / "containers"
BASE_IMAGE = "localhost/debian-min:bookworm"
IMAGE_REPO = "localhost/tunegate-cpu"
# What the build reads (the .dockerignore whitelist, the Dockerfile, the build script): the cache key.
CONTEXT = ("pyproject.toml", "constraints.txt", "README.md", "params.yaml", "steps", "flows", "expectations",
           ".dockerignore", "containers/Dockerfile.cpu", "containers/build.sh")
# In the container: the same offline settings the test suite uses (the image sets them too).
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "WANDB_MODE": "offline", "DO_NOT_TRACK": "1", "TUNEGATE_CACHE": "/cache"}
TIMINGS: dict[str, float] = {}
# A cold build (no cached layers) takes longer than the suite's default 900 s timeout.
COLD_BUILD_TIMEOUT = 3600


def context_digest(repo: Path = REPO) -> str:
    """sha256 over the build's inputs (names and bytes), so any change there means a new build."""
    h = hashlib.sha256()
    for name in CONTEXT:
        root = repo / name
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for p in files:
            if "__pycache__" in p.parts or p.suffix == ".pyc":
                continue
            h.update(str(p.relative_to(repo)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _timed(name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        TIMINGS[name] = round(time.perf_counter() - start, 1)


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """The podman settings from containers/podman-env.sh, which also makes the base image once."""
    if shutil.which("podman") is None:
        pytest.skip("needs podman: apt-get install -y podman runc debootstrap")
    out = _timed("podman_env_and_base_image_s", subprocess.run,
                 [str(CONTAINERS / "podman-env.sh"), "--no-service"], capture_output=True, text=True)
    if out.returncode != 0:
        if "debootstrap not found" in out.stderr or "needs root" in out.stderr:
            pytest.skip(out.stderr.strip().splitlines()[-1])
        pytest.fail(f"containers/podman-env.sh failed:\n{out.stderr}")
    env = dict(os.environ)
    for line in out.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0]
    return env


def podman(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def cpu_image(podman_env) -> str:
    """The CPU image, built by containers/build.sh from the debootstrap base unless this content is built."""
    tag = f"{IMAGE_REPO}:test-{context_digest()}"
    if podman(podman_env, "image", "exists", tag, check=False).returncode != 0:
        build = _timed("cpu_image_build_s", subprocess.run,
                       [str(CONTAINERS / "build.sh"), "cpu", "--base", BASE_IMAGE, "--tag", tag],
                       env=podman_env, capture_output=True, text=True)
        assert build.returncode == 0, f"containers/build.sh failed:\n{build.stderr[-6000:]}"
        # Older test builds go; their layers stay as build cache while a newer image uses them.
        names = podman(podman_env, "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO).stdout.split()
        stale = [n for n in names if n.startswith(f"{IMAGE_REPO}:test-") and n != tag]
        if stale:
            podman(podman_env, "rmi", *stale, check=False)
    size = int(podman(podman_env, "image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    TIMINGS["cpu_image_size_mb"] = size // 1_000_000
    return tag


@pytest.fixture(scope="module")
def docker_host(podman_env, tmp_path_factory):
    """DOCKER_HOST of a podman Docker-compatible API service (``podman system service``) this fixture starts and stops."""
    socket = tmp_path_factory.mktemp("podman") / "podman.sock"
    # The service inherits CONTAINERS_CONF: API clients send no ulimits and podman's defaults fail here.
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"], env=podman_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"unix://{socket}", service
    finally:
        service.terminate()  # our own child, by its PID
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


@pytest.fixture(scope="module")
def docker_client(docker_host):
    """docker-py on podman's Docker-compatible API."""
    docker = pytest.importorskip("docker", reason="pip install -c constraints.txt docker")
    url, service = docker_host
    deadline = time.monotonic() + 30
    while True:  # the client asks the service for its API version on creation
        try:
            client = docker.DockerClient(base_url=url, timeout=600)
            break
        except docker.errors.DockerException:
            if time.monotonic() > deadline or service.poll() is not None:
                raise
            time.sleep(0.2)
    assert client.ping()
    yield client
    client.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A repo-root stand-in: params.yaml and the demo's raw data, writable by the image's user (uid 1000)."""
    from steps import demo_data

    ws = tmp_path_factory.mktemp("workspace")
    shutil.copy(REPO / "params.yaml", ws / "params.yaml")
    demo_data.run(ws / "data" / "raw")
    for p in [ws, *ws.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)
    return ws


@pytest.fixture(scope="module")
def model_cache() -> Path:
    """The host's converted base model folder, mounted read-only: the image then converts nothing."""
    from steps.models.loading import DEFAULT_BASE_MODEL, cache_root, ensure_local_model

    ensure_local_model(DEFAULT_BASE_MODEL)
    return cache_root() / "models"


def run_like_prefect_worker(client, image: str, command: list[str], volumes: list[str]) -> tuple[int, str]:
    """Create, start, stream and wait on a container with the arguments prefect-docker's worker passes."""
    container = client.containers.create(
        image=image,
        command=command,
        environment=ENV,
        volumes=volumes,
        network_mode="host",
        name=f"tunegate-test-{command[2].rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:8]}",
        labels={"io.tunegate.test": "test_containers"},
        auto_remove=False,
        privileged=False,
        mem_limit=None,
    )
    try:
        container.start()
        logs = b"".join(container.logs(stream=True, follow=True)).decode(errors="replace")
        status = container.wait(timeout=600)["StatusCode"]
        return status, logs
    finally:
        container.remove(force=True)


@pytest.mark.container
@pytest.mark.timeout(COLD_BUILD_TIMEOUT)
def test_image_runs_as_non_root(podman_env, cpu_image):
    """The image's user is uid 1000, not root; its torch is the CPU build; the project is on PATH; labelled with the version."""
    out = podman(podman_env, "run", "--rm", "--network=host", cpu_image, "sh", "-c",
                 "id -u; python -c 'import steps, torch; print(torch.__version__)'; command -v tunegate")
    uid, torch_version, tunegate = out.stdout.split()
    assert uid == "1000"
    assert torch_version.endswith("+cpu")
    assert tunegate == "/opt/venv/bin/tunegate"
    labels = json.loads(podman(podman_env, "image", "inspect", "--format", "{{json .Labels}}", cpu_image).stdout)
    assert labels["org.opencontainers.image.version"] == _version()


@pytest.mark.container
@pytest.mark.timeout(COLD_BUILD_TIMEOUT)
def test_ingest_and_validate_in_the_cpu_image(docker_client, cpu_image, workspace, model_cache):
    """ingest then validate in the image through the Docker API: outputs land in the mounted data folder."""
    docker_client.images.get(cpu_image)  # pull policy Never: the image is local
    volumes = [f"{workspace / 'params.yaml'}:/app/params.yaml:ro",
               f"{workspace / 'data'}:/app/data:rw",
               f"{model_cache}:/cache/models:ro"]

    status, logs = _timed("ingest_in_container_s", run_like_prefect_worker, docker_client, cpu_image,
                          ["python", "-m", "steps.ingest", "data/prepared"], volumes)
    assert status == 0, logs
    prepared = workspace / "data" / "prepared"
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["step"] == "ingest" and (prepared / "train.jsonl").stat().st_size > 0

    status, logs = _timed("validate_in_container_s", run_like_prefect_worker, docker_client, cpu_image,
                          ["python", "-m", "steps.validate", "data/prepared", "data/validated"], volumes)
    assert status == 0, logs
    report = json.loads((workspace / "data" / "validated" / "report.json").read_text())
    assert report["passed"], report
    if os.geteuid() == 0:  # rootful podman: the container's uid is the host's
        assert (workspace / "data" / "validated" / "manifest.json").stat().st_uid == 1000
    print("container timings:", json.dumps(TIMINGS))


@pytest.mark.container
@pytest.mark.integration
@pytest.mark.timeout(COLD_BUILD_TIMEOUT)
def test_the_flow_sends_steps_to_a_real_docker_worker(docker_host, docker_client, cpu_image, prefect_harness,
                                                      tmp_path, monkeypatch, tiny_model_dir):  # fmt: skip
    """retrain(steps_in=docker): ingest and validate run as tunegate-step flow runs in the CPU image, started by
    prefect-docker's own worker (through podman's Docker API) from the step-docker deployment of deploy/prefect.yaml;
    the rest of the flow runs here on their outputs, and the model is promoted."""
    pytest.importorskip("prefect_docker", reason="pip install -c constraints.txt prefect-docker")
    import yaml

    from flows.retrain import retrain
    from tests.helpers import flow_runs, make_project, task_states
    from tests.prefect_worker import remove_step_deployment, step_worker

    # The project: the base model inside it (data/base-model), so the same relative path works here
    # and in the container (cwd /app, ./data mounted at /app/data); data/ writable by the image's uid 1000.
    project = make_project(tmp_path / "project", shutil.copytree(tiny_model_dir, tmp_path / "project" / "data" / "base-model"))
    values = yaml.safe_load((project / "params.yaml").read_text())
    values["base"]["base_model"] = "data/base-model"
    (project / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    for p in [project / "data", *(project / "data").rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)
    placement = tmp_path / "job_variables.yaml"  # the shipped docker section, on this build's tag, for two steps
    placement.write_text(yaml.safe_dump({"docker": {"ingest": {"image": cpu_image}, "validate": {"image": cpu_image}}}))
    monkeypatch.chdir(project)
    with step_worker("docker", cwd=project, log=tmp_path / "worker.log", env={"DOCKER_HOST": docker_host[0]}):
        state = _timed("retrain_with_two_steps_in_containers_s", retrain, params="params.yaml", steps_in="docker",
                       job_variables_file=str(placement), return_state=True)  # fmt: skip
        assert state.is_completed(), f"{state.message}\n{(tmp_path / 'worker.log').read_text()[-6000:]}"
    assert "v0.1.0 is production" in state.message
    steps = [r for r in flow_runs("tunegate-step") if r.work_pool_name == "tunegate-docker"]
    assert [r.parameters["step"] for r in steps] == ["ingest", "validate"]
    assert all(r.state.is_completed() and r.job_variables["image"] == cpu_image for r in steps)
    if os.geteuid() == 0:  # rootful podman: written by the image's user, uid 1000
        assert (project / "data" / "validated" / "manifest.json").stat().st_uid == 1000
    assert set(task_states(state).values()) == {"Completed"}
    print("container timings:", json.dumps(TIMINGS))
    remove_step_deployment("docker")


# ---------------------------------------------------------------- work pools (no podman needed)

WORKPOOLS = REPO / "deploy" / "workpools"
TEMPLATES = {"docker": "docker.json", "kubernetes": "kubernetes.json"}


def _template(pool: str) -> dict:
    return json.loads((WORKPOOLS / TEMPLATES[pool]).read_text())


def _version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def render(template: dict, job_variables: dict) -> dict:
    """A worker's job configuration: the pool's defaults, overridden by job_variables, through Prefect's templating."""
    from prefect.utilities.templating import apply_values

    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    return apply_values(template["job_configuration"], values | job_variables)


@pytest.mark.parametrize("pool", sorted(TEMPLATES))
def test_work_pool_template_is_accepted_by_prefect(pool):
    """The Prefect server's own check: every placeholder in the job configuration is a declared variable."""
    from prefect.server.schemas.actions import WorkPoolCreate

    WorkPoolCreate(name=f"tunegate-{pool}", type=pool, base_job_template=_template(pool))


@pytest.mark.parametrize("pool", sorted(TEMPLATES))
def test_every_step_has_job_variables_that_fit_the_pool(pool):
    """Each dvc.yaml stage but register and promote has job_variables; they fit the pool; only train asks for a GPU."""
    import jsonschema
    import yaml

    containers = pytest.importorskip("docker.models.containers", reason="pip install -c constraints.txt docker")
    pools = yaml.safe_load((WORKPOOLS / "job_variables.yaml").read_text())
    per_step, in_process = pools[pool], {"register", "promote"}  # they need the git checkout
    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert stages - in_process == set(per_step) == set(pools["process"]), "every other step, in every section"
    template = _template(pool)
    schema = jsonschema.Draft202012Validator(template["variables"])
    for step, job_variables in per_step.items():
        schema.validate(job_variables)
        gpu = step == "train"
        assert job_variables["image"].endswith(("-gpu:" if gpu else "-cpu:") + _version()), (step, job_variables)
        config = render(template, {"command": f"python -m steps.{step}", **job_variables})
        if pool == "kubernetes":
            pod = config["job_manifest"]["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
            assert ("nvidia.com/gpu" in pod["containers"][0]["resources"]["limits"]) == gpu
        else:
            assert config["image_pull_policy"] == "Never" and config["network_mode"] == "host"
            # The arguments prefect-docker's worker passes to containers.create, checked by docker-py itself.
            containers._create_container_args(
                {"image": config["image"], "command": config["command"], "volumes": config["volumes"],
                 "network_mode": config["network_mode"], "version": "1.41",
                 **config.get("container_create_kwargs", {})})
            assert ("container_create_kwargs" in config) == gpu


def test_kubernetes_job_manifests():
    """The plain Jobs: non-root, a GPU only for training, and only volumes that storage.yaml creates."""
    import yaml

    docs = {p.stem: list(yaml.safe_load_all(p.read_text())) for p in (WORKPOOLS / "k8s").glob("*.yaml")}
    claims = {d["metadata"]["name"] for d in docs["storage"] if d["kind"] == "PersistentVolumeClaim"}
    params_map = _template("kubernetes")["variables"]["properties"]["params_config_map"]["default"]
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, gpu in (("job-validate-cpu", False), ("job-train-gpu", True)):
        (job,) = docs[name]
        pod = job["spec"]["template"]["spec"]
        (box,) = pod["containers"]
        assert job["kind"] == "Job" and pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
        assert box["image"].endswith(("-gpu:" if gpu else "-cpu:") + _version())
        step = box["command"][2].removeprefix("steps.")
        assert " ".join(box["command"]) == stages[step]["cmd"], f"{name}: run the step as dvc.yaml does"
        assert box["resources"]["limits"].get("nvidia.com/gpu") == (1 if gpu else None)
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                assert volume["configMap"]["name"] == params_map
