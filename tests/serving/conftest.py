"""Serving tests: the untrained tiny Llama (tests/tiny.py) behind the real app; it never says its end-of-turn
token, so a generation runs to its token budget unless something stops it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch

from steps.serving.engines import TransformersEngine


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices gain nothing from more threads, and on a busy shared CPU extra threads spin (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
