"""The manifest every step leaves in its output folder.

``manifest.json`` holds the config as run, the git revision, digests of inputs
and outputs, metrics and wall time. Promotion, caching and reports read
manifests, never logs.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from steps.core.io import atomic_write_json, path_digest

SCHEMA_VERSION = 1


def git_revision(cwd: Path | str = ".") -> str | None:
    """The current commit (with ``-dirty`` when the tree has changes); in an image without .git, the
    commit the image was built from ($TUNEGATE_IMAGE_REVISION); else None."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("TUNEGATE_IMAGE_REVISION") or None


def digests(paths: dict[str, Path | str]) -> dict[str, str | None]:
    return {name: (path_digest(p) if Path(p).exists() else None) for name, p in paths.items()}


def _relative(path: Path | str, root: Path | str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def write_manifest(
    out_dir: Path | str,
    step: str,
    config: Any,
    inputs: dict[str, Path | str],
    outputs: dict[str, Path | str],
    metrics: dict[str, Any],
    started: float,
) -> Path:
    """Write ``out_dir/manifest.json`` atomically and return its path."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    manifest = {
        "schema": SCHEMA_VERSION,
        "step": step,
        "config": cfg,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "inputs": {k: str(v) for k, v in inputs.items()},
        "input_digests": digests(inputs),
        # Outputs inside out_dir are named relative to it: a step writes into a staging folder
        # that is renamed into place afterwards, and the names stay true after the rename.
        "outputs": {k: _relative(v, out_dir) for k, v in outputs.items()},
        "output_digests": digests(outputs),
        "metrics": metrics,
        "wall_time_s": round(time.time() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return atomic_write_json(Path(out_dir) / "manifest.json", manifest)
