"""Lineage in W&B: link a training run to its data, its DVC hash and its code revision.

The run's config gets a ``lineage`` entry (steps.core.lineage.training_lineage: git revision,
sha256 of the training files, the DVC md5 of the training data from dvc.lock), and two artifacts
are logged by reference, so nothing is copied: the dataset (the training files) and the model
(the published output folder, with the digest of its files). Offline runs keep all of it for ``wandb sync``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from steps.core.io import path_digest
from steps.core.lineage import training_lineage


def log_lineage(data_dir: Path, inputs: dict[str, Path], out_dir: Path, model: str, about: dict[str, Any]) -> None:
    """Record lineage and the dataset and model artifacts on the active W&B run, if there is one.

    Called once OUT_DIR is published; the model artifact references its files (not checkpoints).

    Args:
        data_dir: the training data folder; ``inputs`` are its files the run read.
        out_dir: the published model folder.
        model: the model artifact's name (``model-<stage>-<method>``).
        about: what the model artifact's metadata says of the run (stage, method, base model).
    """
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return
    info = training_lineage(data_dir, inputs)
    model_files = [p for p in sorted(Path(out_dir).iterdir()) if p.is_file()]
    run.config.update({"lineage": info}, allow_val_change=True)
    data = wandb.Artifact("validated-data", type="dataset", metadata=info)
    for name, path in inputs.items():
        data.add_reference(Path(path).resolve().as_uri(), name=Path(path).name)
    run.log_artifact(data)
    artifact = wandb.Artifact(
        model,
        type="model",
        metadata={**info, **about, "out_dir": str(out_dir), "files_sha256": {p.name: path_digest(p) for p in model_files}},
    )
    for p in model_files:
        artifact.add_reference(p.resolve().as_uri(), name=p.name)
    run.log_artifact(artifact)
