"""A cached step result counts only while its output folder still holds what that call made."""

from __future__ import annotations

import time

from flows.tasks import made_by
from steps.core.manifest import write_manifest
from steps.training.config import TrainConfig


def test_an_output_replaced_by_other_settings_is_not_reused(tmp_path):
    data, out = tmp_path / "train.jsonl", tmp_path / "out"
    data.write_text('{"a": 1}\n')
    out.mkdir()
    cfg = TrainConfig(learning_rate=1e-3)
    assert not made_by(out, cfg)  # no manifest: nothing made here yet
    write_manifest(out, "train", cfg, {"train": data}, {}, {}, time.time())
    assert made_by(out, cfg)
    # A run with another learning rate replaced the folder; going back to 1e-3 must not reuse its cache entry.
    assert not made_by(out, TrainConfig(learning_rate=5e-4))
    data.write_text('{"a": 2}\n')  # the same settings, but the data it read has changed since
    assert not made_by(out, cfg)
    (out / "manifest.json").write_text('{"config": ')  # torn
    assert not made_by(out, cfg)
