"""The evaluate step's settings: what is measured and the gate's thresholds."""

from __future__ import annotations

import dataclasses

from steps.core.config import ConfigError
from steps.evaluation.gate import GateThresholds
from steps.evaluation.judge.client import JudgeConfig
from steps.models.loading import DEFAULT_BASE_MODEL


@dataclasses.dataclass(frozen=True)
class SafetySettings:
    defaults: bool = True  # the built-in rules (secrets, PII, a short blocklist) besides your own
    blocklist: list[str] = dataclasses.field(default_factory=list)  # words/phrases, case-insensitive, whole words
    patterns: dict[str, str] = dataclasses.field(default_factory=dict)  # rule name -> regular expression


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate:`` section of params.yaml (``base_model`` and ``seed`` come from ``base:``)."""

    base_model: str = DEFAULT_BASE_MODEL
    seed: int = 42
    probes: str | None = None  # from base: the behaviour probe suite (steps/evaluation/probes.py); None: no probes
    production: str = "auto"  # auto: the registry's production model if any; none; or a model folder
    max_examples: int = 32  # test items: generation dominates the step's time
    max_heldout: int = 16  # held-out questions (first turn), referenced ones first
    max_new_tokens: int = 96
    batch_size: int = 32  # prompts generated together: 4.9x one-at-a-time on 2 CPU cores
    max_length: int = 1024  # tokens per conversation for perplexity
    encoder: str = "packaged"  # BERTScore/embedding encoder: the packaged all-MiniLM-L6-v2, or a folder/HF id
    metric_source: str = "local"  # local: metric modules by path (offline); hub: evaluate's Hub metrics
    worst_examples: int = 8
    judge: JudgeConfig = dataclasses.field(default_factory=JudgeConfig)
    safety: SafetySettings = dataclasses.field(default_factory=SafetySettings)
    gate: GateThresholds = dataclasses.field(default_factory=GateThresholds)

    def __post_init__(self) -> None:
        if self.metric_source not in ("local", "hub"):
            raise ConfigError(f"evaluate.metric_source: must be local or hub; got {self.metric_source!r}")
        for key in ("max_examples", "max_heldout", "max_new_tokens", "batch_size", "max_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"evaluate.{key}: must be 1 or more; got {getattr(self, key)}")
