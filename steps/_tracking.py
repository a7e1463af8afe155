"""Lineage in W&B: link a training run to its data, its DVC hash and its code revision.

The run's config gets a ``lineage`` entry (git revision, sha256 of the training files, the DVC
md5 of the validated data from dvc.lock), and two artifacts are logged by reference, so nothing
is copied: the dataset (the training files) and the model (the published output folder, with the
digest of its files). Offline runs keep all of it for ``wandb sync``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from steps._io import path_digest
from steps._manifest import digests, git_revision


def dvc_md5(path: Path | str, lock: Path | str = "dvc.lock") -> str | None:
    """The md5 DVC recorded for ``path`` as a stage output in dvc.lock, or None."""
    lock = Path(lock)
    if not lock.is_file():
        return None
    want = Path(path).as_posix().rstrip("/")
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path", "").rstrip("/") == want:
                return out.get("md5")
    return None


def lineage(data_dir: Path, inputs: dict[str, Path]) -> dict[str, Any]:
    return {"git_revision": git_revision(), "data_dir": str(data_dir), "data_sha256": digests(inputs),
            "data_dvc_md5": dvc_md5(data_dir)}  # fmt: skip


def log_lineage(cfg: Any, data_dir: Path, inputs: dict[str, Path], out_dir: Path) -> None:
    """Record lineage and the dataset and model artifacts on the active W&B run, if there is one.

    Called once OUT_DIR is published; the model artifact references its files (not checkpoints).
    """
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return
    info = lineage(data_dir, inputs)
    model_files = [p for p in sorted(Path(out_dir).iterdir()) if p.is_file()]
    run.config.update({"lineage": info}, allow_val_change=True)
    data = wandb.Artifact("validated-data", type="dataset", metadata=info)
    for name, path in inputs.items():
        data.add_reference(Path(path).resolve().as_uri(), name=Path(path).name)
    run.log_artifact(data)
    model = wandb.Artifact(
        f"model-{cfg.stage}-{cfg.method}",
        type="model",
        metadata={**info, "stage": cfg.stage, "method": cfg.method, "base_model": cfg.base_model, "out_dir": str(out_dir),
                  "files_sha256": {p.name: path_digest(p) for p in model_files}},  # fmt: skip
    )
    for p in model_files:
        model.add_reference(p.resolve().as_uri(), name=p.name)
    run.log_artifact(model)
