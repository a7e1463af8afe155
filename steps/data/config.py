"""The ingest step's settings: the raw datasets it reads and how it splits them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steps.core.config import ConfigError
from steps.data.formats import DEFAULT_TAGS, FORMATS


@dataclass(frozen=True)
class DatasetSpec:
    """One raw dataset, declared the way LLaMA-Factory's dataset_info.json declares them.

    Give ``path`` (a file, or a ``datasets.save_to_disk`` folder), or only ``name`` to take the
    entry of that name from ``ingest.dataset_info``.
    """

    path: str = ""
    format: str = "auto"  # auto-detect from the keys, or one of steps.data.formats.FORMATS
    name: str | None = None  # defaults to the file's stem
    columns: dict[str, str] = field(default_factory=dict)  # canonical field -> column name in the file
    tags: dict[str, str] = field(default_factory=dict)  # sharegpt role tags (role_tag, user_tag, ...)
    # General data mixed in to keep what the base model already does (replay against forgetting): every
    # record trains (never validation or test, which measure the task) and augment leaves it as it is.
    replay: bool = False

    def __post_init__(self) -> None:
        if not self.path and not self.name:
            raise ConfigError("ingest.datasets: each dataset needs a path, or a name from ingest.dataset_info")
        if not self.path and (self.format != "auto" or self.columns or self.tags):
            raise ConfigError(f"dataset {self.name}: without a path, format, columns and tags come from ingest.dataset_info; "
                              "give a path to declare them here")  # fmt: skip
        if self.format != "auto" and self.format not in FORMATS:
            raise ConfigError(f"dataset {self.path}: format '{self.format}' unknown; use auto or one of {', '.join(FORMATS)}")
        unknown = set(self.tags) - set(DEFAULT_TAGS)
        if unknown:
            raise ConfigError(f"dataset {self.path}: unknown tags {sorted(unknown)}; known: {', '.join(DEFAULT_TAGS)}")

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


@dataclass(frozen=True)
class SplitRatios:
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        if min(self.train, self.validation, self.test) < 0 or abs(self.train + self.validation + self.test - 1) > 1e-6:
            raise ConfigError(f"ingest.split: ratios must be >= 0 and sum to 1; got {self.train}/{self.validation}/{self.test}")


@dataclass(frozen=True)
class IngestConfig:
    datasets: tuple[DatasetSpec, ...]
    heldout: tuple[DatasetSpec, ...] = ()  # general text for leakage and forgetting checks; never split
    seed: int = 42
    split: SplitRatios = SplitRatios()
    # Records the leakage gate would call a leak of each other form one group, and a group
    # never spans two splits: word-3-gram Jaccard >= leak_threshold, or more than
    # max_ngram_overlap of either record's word n-grams found in the other. These three keys
    # live under base: so ingest and validate apply one rule.
    leak_threshold: float = 0.8
    ngram: int = 8
    max_ngram_overlap: float = 0.5
    # Fail the step when more than this fraction of a dataset's records is quarantined.
    max_bad_fraction: float = 0.1
    time_split: str = "auto"  # auto: by timestamp when every record has one; on; off
    # A record longer than this (its line, or its JSON text) is quarantined at ingest; lines are
    # read in bounded chunks, so a giant line costs at most ~4x this in memory. 0: no bound.
    max_record_chars: int = 200_000
    # An existing LLaMA-Factory dataset_info.json: datasets given by name only are read from it.
    dataset_info: str | None = None

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("ingest.datasets: list at least one dataset (path, and format unless it can be detected)")
        if not 0 < self.leak_threshold <= 1:
            raise ConfigError(f"base.leak_threshold: must be in (0, 1]; got {self.leak_threshold}")
        if not 0 <= self.max_ngram_overlap <= 1 or self.ngram < 1:
            raise ConfigError(f"base.ngram/max_ngram_overlap: need ngram >= 1 and overlap in [0, 1]; got {self.ngram}, {self.max_ngram_overlap}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError(f"ingest.max_bad_fraction: must be in [0, 1]; got {self.max_bad_fraction}")
        if self.max_record_chars < 0:
            raise ConfigError(f"ingest.max_record_chars: must be >= 0 (0: no bound); got {self.max_record_chars}")
        named = [s.name for s in (*self.datasets, *self.heldout) if not s.path]
        if named and not self.dataset_info:
            raise ConfigError(f"ingest.datasets: {named} have no path; set ingest.dataset_info to the dataset_info.json "
                              "that names them, or give each a path")  # fmt: skip
        if self.time_split not in ("auto", "on", "off"):
            raise ConfigError(f"ingest.time_split: use auto, on or off; got {self.time_split!r}")
