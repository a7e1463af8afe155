"""ingest: raw files in any known format -> canonical records, quarantine, and a leakage-safe split.

``python -m steps.ingest OUT_DIR [--params params.yaml]`` reads the datasets
listed under ``ingest.datasets`` (DVC-tracked files under data/raw) and writes
to OUT_DIR: ``train.jsonl``, ``validation.jsonl``, ``test.jsonl``,
``heldout.jsonl`` (the general held-out set, never split), ``quarantine.jsonl``
(every record that could not be read or mapped, with file, row, field, reason
and fix) and ``manifest.json``. The folder is swapped in whole, never half
written. Exit code 1 when a dataset's bad fraction is over the threshold.

The helpers ``run()`` calls live beside it: loading and quarantine in steps/_ingest_load.py,
the split in steps/_ingest_split.py; both are re-exported here.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps._cli import step_main
from steps._config import ConfigError
from steps._dedup import duplicate_groups  # noqa: F401  (re-exported: steps.ingest is ingest's public face)
from steps._formats import (  # noqa: F401  (RecordError, convert, detect_dataset_format, read_rows: re-exported)
    DEFAULT_TAGS,
    FORMATS,
    FileError,
    RecordError,
    convert,
    detect_dataset_format,
    read_rows,
)
from steps._ingest_load import _snippet, load_dataset  # noqa: F401  (_snippet re-exported)
from steps._ingest_split import _timestamp, _unit, assign_splits  # noqa: F401  (_timestamp, _unit re-exported)
from steps._io import atomic_write_jsonl, publish_dir, staging_dir
from steps._manifest import write_manifest
from steps._schema import make_record, record_text  # noqa: F401  (re-exported; bench/bench_data.py uses record_text)

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """One raw dataset, declared the way LLaMA-Factory's dataset_info.json declares them."""

    path: str
    format: str = "auto"  # auto-detect from the keys, or one of steps._formats.FORMATS
    name: str | None = None  # defaults to the file's stem
    columns: dict[str, str] = field(default_factory=dict)  # canonical field -> column name in the file
    tags: dict[str, str] = field(default_factory=dict)  # sharegpt role tags (role_tag, user_tag, ...)

    def __post_init__(self) -> None:
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

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("ingest.datasets: list at least one dataset (path, and format unless it can be detected)")
        if not 0 < self.leak_threshold <= 1:
            raise ConfigError(f"base.leak_threshold: must be in (0, 1]; got {self.leak_threshold}")
        if not 0 <= self.max_ngram_overlap <= 1 or self.ngram < 1:
            raise ConfigError(f"base.ngram/max_ngram_overlap: need ngram >= 1 and overlap in [0, 1]; got {self.ngram}, {self.max_ngram_overlap}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError(f"ingest.max_bad_fraction: must be in [0, 1]; got {self.max_bad_fraction}")
        if self.time_split not in ("auto", "on", "off"):
            raise ConfigError(f"ingest.time_split: use auto, on or off; got {self.time_split!r}")


@dataclass(frozen=True)
class IngestResult:
    passed: bool
    out_dir: Path
    counts: dict[str, int]  # records per split, plus heldout and quarantined
    datasets: dict[str, dict[str, Any]]  # per dataset: format, rows, good, bad, bad_fraction
    problems: tuple[str, ...] = ()


def run(cfg: IngestConfig, out_dir: Path, root: Path = Path(".")) -> IngestResult:
    """Read, map, quarantine and split every dataset; write OUT_DIR atomically."""
    started = time.time()
    records: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    stats: dict[str, dict[str, Any]] = {}
    problems = []
    for spec in cfg.datasets:
        good, bad, fmt = load_dataset(spec, root)
        total = len(good) + len(bad)
        frac = len(bad) / total if total else 1.0
        stats[spec.label] = {"path": spec.path, "format": fmt, "rows": total, "good": len(good), "quarantined": len(bad),
                             "bad_fraction": round(frac, 4), "kinds": dict(Counter(r["kind"] for r in good))}  # fmt: skip
        if frac > cfg.max_bad_fraction:
            problems.append(f"{spec.path}: {len(bad)} of {total} records quarantined ({frac:.1%}), over "
                            f"ingest.max_bad_fraction={cfg.max_bad_fraction:.1%}; see quarantine.jsonl")  # fmt: skip
        records += good
        quarantine += bad
    heldout = []
    for spec in cfg.heldout:
        good, bad, _ = load_dataset(spec, root)
        heldout += good
        quarantine += bad
    splits = assign_splits(records, cfg)
    key = lambda r: (r["meta"]["dataset"], r["meta"]["row"])  # noqa: E731
    tmp = staging_dir(out_dir)
    counts = {}
    for name in SPLITS:
        rows = sorted((rec for rec, s in zip(records, splits) if s == name), key=key)
        atomic_write_jsonl(tmp / f"{name}.jsonl", rows)
        counts[name] = len(rows)
    atomic_write_jsonl(tmp / "heldout.jsonl", heldout)
    atomic_write_jsonl(tmp / "quarantine.jsonl", quarantine)
    counts |= {"heldout": len(heldout), "quarantined": len(quarantine)}
    inputs = {s.label: root / s.path for s in (*cfg.datasets, *cfg.heldout)}
    outputs = {p.stem: p for p in sorted(tmp.glob("*.jsonl"))}
    metrics = {"passed": not problems, "counts": counts, "datasets": stats, "problems": problems}
    write_manifest(tmp, "ingest", cfg, inputs, outputs, metrics, started)
    publish_dir(tmp, out_dir)
    return IngestResult(passed=not problems, out_dir=Path(out_dir), counts=counts, datasets=stats, problems=tuple(problems))


def print_summary(result: IngestResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ingest")
    for col in ("dataset", "format", "rows", "good", "quarantined", "bad %"):
        table.add_column(col)
    for name, s in result.datasets.items():
        table.add_row(name, s["format"], str(s["rows"]), str(s["good"]), str(s["quarantined"]), f"{s['bad_fraction']:.1%}")
    console = Console(stderr=False)
    console.print(table)
    console.print(" ".join(f"{k}={v}" for k, v in result.counts.items()) + f"  -> {result.out_dir}")
    for p in result.problems:
        console.print(f"[red]FAIL[/red] {p}")


def _report(result: IngestResult) -> int:
    print_summary(result)
    return 0 if result.passed else 1


def main(argv: list[str] | None = None) -> int:
    return step_main(argv, step="ingest", doc=__doc__, config=IngestConfig, paths={"out_dir": Path("data/prepared")},
                     run=run, report=_report, errors=(ConfigError, FileError))  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(main())
