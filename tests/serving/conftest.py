"""Serving tests: the untrained tiny Llama (tests/tiny.py) behind the real app; it never says its end-of-turn
token, so a generation runs to its token budget unless something stops it."""

from __future__ import annotations

import time

import pytest

from steps.serving.engines import TransformersEngine
from tests.helpers import one_torch_thread

one_thread = pytest.fixture(scope="package", autouse=True)(one_torch_thread)


class Recording(TransformersEngine):
    """The real engine, keeping its runs to look at, and ``delay`` seconds slower per forward pass (one per token)."""

    def __init__(self, *args, delay: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.runs, self.delay = [], delay
        self.model.register_forward_hook(lambda *_: time.sleep(self.delay) if self.delay else None)

    def start(self, *args):
        self.runs.append(super().start(*args))
        return self.runs[-1]


@pytest.fixture
def engine(tiny_model_dir) -> Recording:
    """A fresh recording engine over the tiny model, 20 ms a token: leaving mid-generation is easy to time."""
    return Recording(tiny_model_dir, "float32", delay=0.02)
