"""Shared test settings: offline, telemetry off, W&B offline; helpers for the real components."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("WANDB_MODE", "offline")


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests without CUDA and `container` tests without podman."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    has_podman = shutil.which("podman") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
        if "container" in item.keywords and not has_podman:
            item.add_marker(pytest.mark.skip(reason="needs podman"))


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's own test harness: a temporary database behind an ephemeral server."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny tokenizer + 2-layer causal LM saved once for the session (tests/tiny.py): a folder usable as
    ``base_model:``. Shared by every module: read it, never write into it (copy it to change it)."""
    from tests.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def sft_data(tmp_path_factory):
    """Ten short sft conversations (8 train, 2 validation) in a validated-data folder."""
    from tests.helpers import record, write_split

    return write_split(tmp_path_factory.mktemp("sft"), [
        record("sft", i, messages=[{"role": "user", "content": f"What is {i} + {i}?"},
                                   {"role": "assistant", "content": f"The answer is {2 * i}."}])
        for i in range(10)
    ])  # fmt: skip
