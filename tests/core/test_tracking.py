"""W&B lineage: the run links to its data (sha256 and DVC md5), the git revision, and the model."""

from __future__ import annotations

from pathlib import Path

from steps.core.lineage import dvc_lock_md5
from steps.train import run
from tests.helpers import cfg_of


def test_dvc_lock_md5_reads_the_stage_output_from_dvc_lock(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  validate:\n    cmd: x\n    outs:\n    - path: data/validated\n"
                    "      hash: md5\n      md5: abc123.dir\n")  # fmt: skip
    assert dvc_lock_md5("data/validated", lock) == "abc123.dir"
    assert dvc_lock_md5("data/other", lock) is None
    assert dvc_lock_md5("data/validated", tmp_path / "missing.lock") is None


def test_offline_run_records_lineage_and_artifacts(tiny_model_dir, sft_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    out = tmp_path / "out"
    run(cfg_of(tiny_model_dir, method="lora", tracking="wandb"), sft_data, out)
    (record,) = list((tmp_path / "wb" / "wandb").glob("offline-run-*/*.wandb"))
    blob = record.read_bytes()
    for needle in (b"validated-data", b"model-sft-lora", b"lineage", b"data_sha256", b"git_revision",
                   (out / "adapter_model.safetensors").resolve().as_uri().encode()):  # fmt: skip
        assert needle in blob, needle
    assert Path(out / "adapter_model.safetensors").is_file()
