"""The merge step's settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from steps.core.config import ConfigError
from steps.models.loading import DEFAULT_BASE_MODEL


@dataclass(frozen=True)
class MergeConfig:
    """The ``merge:`` section of params.yaml (``base_model`` comes from ``base:``).

    ``tolerance`` bounds the max absolute difference between the adapter model's and the merged
    model's logits, both computed in float32. Merging changes only the order of float32 sums, so an
    exact merge differs by rounding: measured 1.1e-4 on SmolLM2-135M (30 layers, logits up to 41)
    and ~5e-7 on a 2-layer model. A wrong merge (a module left out, a tied weight changed twice)
    differs like the adapter's own effect: 9.6 for the demo LoRA. 1e-2 sits ~100x above the
    rounding of deeper models and ~1000x below a real adapter's effect.
    """

    base_model: str = DEFAULT_BASE_MODEL  # from base:; must be the one the candidate was trained on
    keep_adapter: bool = False  # publish the adapter unmerged plus a pointer to its base (shared-base serving)
    tolerance: float = 1e-2
    sample_count: int = 4  # sample inputs for the logit check (test split records, else fixed texts)
    sample_max_tokens: int = 128  # per sample: enough positions to exercise every layer, cheap in float32

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(f"merge.tolerance: need a finite number >= 0; got {self.tolerance}")
        if min(self.sample_count, self.sample_max_tokens) < 1:
            raise ConfigError(f"merge: sample_count and sample_max_tokens must be >= 1; got {self.sample_count}, {self.sample_max_tokens}")
