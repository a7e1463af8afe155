"""The work of the pipeline, pure Python: one module per step, its helpers in packages by concern.

Each step module (``steps/<name>.py``) holds a thin ``run`` and ``main`` and describes itself once
as ``STEP`` (steps/core/step.py). ``PIPELINE`` is their order: dvc.yaml's stages, the flow's tasks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steps.core.step import Step

PIPELINE = ("ingest", "validate", "augment", "train", "evaluate", "merge", "register", "promote")


def describe(name: str) -> Step:
    """The descriptor of step ``name`` (importing its module)."""
    if name not in PIPELINE:
        raise KeyError(f"no step {name!r}; the steps are {', '.join(PIPELINE)}")
    return importlib.import_module(f"steps.{name}").STEP
