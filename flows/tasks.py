"""How each step becomes a Prefect task: cache keys from content digests, retries, GPU concurrency.

A step's cache key is a digest of its name, its config, the content of its inputs (for a step
output folder: the output digests its manifest.json records; for any other file or folder: its
bytes) and the source of the pipeline code; output folders (and ingest's root, whose files the
config names) count by path only. An unchanged rerun
therefore finds every key and skips every step, while a changed byte of data, a changed param or
changed code reruns that step and whatever its outputs change downstream. A step whose output
folder is gone, or was since replaced by a run with another config or other inputs, reruns
(``refresh_cache``, see ``made_by``), so a cached result never points at files it did not make.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import task

ROOT = Path(__file__).resolve().parent.parent
# Failures worth a retry: a flaky filesystem, network (judge endpoint, S3 remote), a killed worker.
TRANSIENT = (OSError, ConnectionError, TimeoutError)
GPU_STEPS = frozenset({"train"})  # tagged GPU_TAG: `tunegate deploy` limits how many run at once (deploy.ensure_gpu_limit)
GPU_TAG = "tunegate-gpu"
PLACEMENT = frozenset({"deployment", "job_variables"})  # flows/dispatch.placed_step's own arguments


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """Digest of the pipeline's own code (steps/, expectations/): a code change invalidates every step."""
    h = hashlib.sha256()
    for path in sorted([*ROOT.glob("steps/**/*.py"), *ROOT.glob("expectations/**/*.py")]):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def content_digest(path: Path) -> str:
    """What an input holds: the output digests its manifest records (a step's folder), else its bytes."""
    from steps.core.io import path_digest, read_json

    manifest = path / "manifest.json" if path.is_dir() else None
    if manifest is not None and manifest.is_file():
        recorded = read_json(manifest).get("output_digests")
        if recorded:
            return hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()
    return path_digest(path)


def _files_in(value: Any) -> list[str]:
    """Existing files a config names (ingest's datasets, a judge prompt...), so their bytes count too."""
    if isinstance(value, dict):
        return [f for v in value.values() for f in _files_in(v)]
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in _files_in(v)]
    if isinstance(value, str) and len(value) < 4096 and Path(value).is_file():
        return [value]
    return []


def step_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """The cache key of one step call (see the module docstring)."""
    h = hashlib.sha256(context.task.name.encode())
    h.update(code_digest().encode())
    for name, value in sorted(parameters.items()):
        if name in PLACEMENT:  # where a step runs does not change what it makes
            continue
        h.update(name.encode())
        if dataclasses.is_dataclass(value):
            config = dataclasses.asdict(value)
            h.update(json.dumps(config, sort_keys=True, default=str).encode())
            for f in sorted(set(_files_in(config))):
                h.update(content_digest(Path(f)).encode())
        elif name in ("out_dir", "root") or value is None:  # root: what counts under it is named in the config
            h.update(str(Path(value).resolve() if value is not None else None).encode())
        elif isinstance(value, (str, Path)) and Path(value).exists():
            h.update(content_digest(Path(value)).encode())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def _transient(task_: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except TRANSIENT:
        return True
    except BaseException:
        return False
    return False


def step_task(name: str, fn: Any) -> Any:
    """``fn`` (a step's ``run``, or its placed_step) as a cached, retried Prefect task named like its DVC stage."""
    return task(
        name=name,
        cache_key_fn=step_cache_key,
        persist_result=True,
        retries=2,
        retry_delay_seconds=[10, 60],
        retry_condition_fn=_transient,
        tags=["tunegate", GPU_TAG] if name in GPU_STEPS else ["tunegate"],
    )(fn)


def fresh(task_: Any, out_dir: Path, cfg: Any) -> Any:
    """The task, told to rerun (and re-cache) when its output folder is not what this call made.

    A cached result points at ``out_dir``; a later run with other settings (or other input data)
    may have replaced that folder since. The output still belongs to this call when its
    manifest records this config and its inputs still hold what the manifest says it read;
    otherwise, or when the folder is gone, the step runs again.
    """
    return task_ if made_by(out_dir, cfg) else task_.with_options(refresh_cache=True)


def made_by(out_dir: Path, cfg: Any) -> bool:
    """True when ``out_dir``'s manifest records ``cfg`` as its config and its inputs are unchanged since."""
    from steps.core.io import read_json
    from steps.core.manifest import digests

    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return False
    try:
        manifest = read_json(path, "rerun the step")
    except ValueError:
        return False
    as_json = lambda value: json.dumps(value, sort_keys=True, default=str)  # noqa: E731 - tuples and lists alike
    config = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    if as_json(manifest.get("config")) != as_json(config):
        return False
    return digests(manifest.get("inputs") or {}) == (manifest.get("input_digests") or {})
