"""Lineage: what a model comes from (code revision, training data, DVC hashes), built in one place.

Train records ``training_lineage`` on its W&B run (steps/core/tracking.py); register records
``model_lineage`` in the version's tag, which ``tunegate lineage`` reads back after the workspace
has moved on; the model card cites the same hashes. Three DVC hashes, each named for where it
comes from: ``dvc_lock_md5`` is what dvc.lock recorded for a stage output at the last
``dvc repro``, ``dvc_add_md5`` is what ``dvc add`` would give a folder as it is now, and
``dvc_file_md5`` is what a ``.dvc`` file records for the raw file beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from steps.core.manifest import digests, git_revision


def dvc_lock_md5(path: Path | str, lock: Path | str = "dvc.lock") -> str | None:
    """The md5 DVC recorded for ``path`` as a stage output in dvc.lock (as of the last ``dvc repro``), or None."""
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


def dvc_add_md5(path: Path | str) -> str | None:
    """The md5 ``dvc add`` would give ``path`` now (a .dir hash for folders), computed without writing."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    if not Path(path).exists():
        return None
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as tmp:
        _, _, obj = build(LocalHashFileDB(fs, tmp), str(Path(path).resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value


def dvc_file_md5(path: Path) -> str | None:
    """The md5 a ``.dvc`` file records for the file it tracks."""
    outs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("outs") or [{}]
    return outs[0].get("md5")


def training_lineage(data_dir: Path, inputs: dict[str, Path]) -> dict[str, Any]:
    """A training run's lineage: code revision, the data folder, sha256 of its files and its md5 in dvc.lock."""
    return {"git_revision": git_revision(), "data_dir": str(data_dir), "data_sha256": digests(inputs),
            "data_dvc_md5": dvc_lock_md5(data_dir)}  # fmt: skip


def model_lineage(train: dict[str, Any], train_manifest: Path, merged: dict[str, Any], data_dir: Path, raw_dir: Path) -> dict[str, Any]:
    """A registered model's lineage: code revision, train params, data digests and DVC hashes.

    Args:
        train: the train step's manifest (empty when there is none).
        train_manifest: where it was read from.
        merged: the merge step's manifest (empty when there is none).
        data_dir: the data the model was trained on; its files are compared with the train manifest's digests.
        raw_dir: the DVC-tracked raw files (``*.dvc``).
    """
    trained_on = train.get("input_digests") or {}
    now = digests({name: data_dir / Path(p).name for name, p in (train.get("inputs") or {}).items()})
    return {
        "git_revision": git_revision(),
        "train": {"manifest": str(train_manifest), "git_revision": train.get("git_revision"),
                  "params": train.get("config"), "data_sha256": trained_on,
                  "metrics": {k: (train.get("metrics") or {}).get(k) for k in ("train_loss", "eval_loss", "steps")}} if train else None,
        "merge": {"git_revision": merged.get("git_revision"), "config": merged.get("config")} if merged else None,
        "data": {"data_dir": str(data_dir), "data_dvc_md5": dvc_add_md5(data_dir),
                 "data_matches_train": bool(trained_on) and now == trained_on,
                 "raw_dvc_md5": {p.name[: -len(".dvc")]: dvc_file_md5(p) for p in sorted(raw_dir.glob("*.dvc"))}},
    }  # fmt: skip
