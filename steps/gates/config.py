"""The validate step's settings: the thresholds of every data gate."""

from __future__ import annotations

from dataclasses import dataclass

from steps.core.config import ConfigError
from steps.models.loading import DEFAULT_BASE_MODEL

PII_ACTIONS = ("mask", "fail", "report")


@dataclass(frozen=True)
class ValidateConfig:
    """The ``validate:`` section of params.yaml (``base_model`` comes from ``base:``)."""

    base_model: str = DEFAULT_BASE_MODEL
    tokenizer: str | None = None  # a tokenizer folder or hub id to use instead of base_model's (tests)
    min_tokens: int = 2  # fewer tokens than this is an empty or broken record
    max_tokens: int = 2048  # SmolLM2's context: a longer record is truncated in training
    max_exact_dup_fraction: float = 0.0  # exact copies in train would be trained on twice
    max_near_dup_fraction: float = 0.05  # a few paraphrases are fine; more means templated data
    near_dup_threshold: float = 0.8  # MinHash Jaccard (word 3-grams) that makes two train records near-copies
    leak_threshold: float = 0.8  # MinHash Jaccard of a train record to any eval/held-out record
    ngram: int = 8  # word 8-grams: a shared 8-word span is rarely chance
    max_ngram_overlap: float = 0.5  # a train record sharing more than half its 8-grams with eval text leaks
    max_leaked: int = 0  # default zero: one leaked record fails the gate
    pii_action: str = "mask"  # mask: report and write masked text; fail: any finding fails; report: only report
    probes: str | None = None  # from base: the behaviour probe suite; the leakage gate keeps its questions out of train
    exact_tokens: bool = False  # True tokenises every record; False only those whose byte length leaves a bound in doubt

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> None:
            raise ConfigError(f"validate.{key}: {why}")

        if self.pii_action not in PII_ACTIONS:
            bad("pii_action", f"must be one of {', '.join(PII_ACTIONS)}; got {self.pii_action!r}")
        if not 1 <= self.min_tokens <= self.max_tokens:
            bad("min_tokens", f"need 1 <= min_tokens <= max_tokens; got {self.min_tokens} and {self.max_tokens}")
        for key in ("max_exact_dup_fraction", "max_near_dup_fraction", "max_ngram_overlap"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                bad(key, f"is a fraction: set it between 0 and 1; got {getattr(self, key)}")
        for key in ("near_dup_threshold", "leak_threshold"):
            if not 0.0 < getattr(self, key) <= 1.0:
                bad(key, f"is a Jaccard similarity: set it in (0, 1], e.g. 0.8; got {getattr(self, key)}")
        if self.ngram < 1:
            bad("ngram", f"is a word n-gram length: set it to 1 or more (8 is usual); got {self.ngram}")
        if self.max_leaked < 0:
            bad("max_leaked", f"is a count of records: set it to 0 or more; got {self.max_leaked}")
