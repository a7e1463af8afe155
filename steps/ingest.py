"""ingest: raw files in any known format -> canonical records, quarantine, and a leakage-safe split.

``python -m steps.ingest OUT_DIR [--params params.yaml]`` reads the datasets
listed under ``ingest.datasets`` (DVC-tracked files under data/raw, or names in an
existing LLaMA-Factory ``ingest.dataset_info``) and writes to OUT_DIR: ``train.jsonl``,
``validation.jsonl``, ``test.jsonl``, ``heldout.jsonl`` (the general held-out set, never
split), ``quarantine.jsonl`` (every record that could not be read or mapped, with file, row,
field, reason and fix), ``dropped.jsonl`` (exact duplicates: the first copy is kept, each later
one is listed here and counted) and ``manifest.json``. Every row read is counted:
rows = good + quarantined + dropped, per dataset, in the manifest and the summary.

The folder is swapped in whole, never half written, and only when the gate passes. Exit code 1
when a dataset's bad fraction is over the threshold: OUT_DIR keeps its last good output, and
the quarantine and manifest of the failed run go to ``OUT_DIR.rejected`` beside it.

The helpers ``run()`` calls live beside it: loading, quarantine and the duplicate rule in
steps/data/load.py, dataset_info.json in steps/data/dataset_info.py, the split in steps/data/split.py.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.io import atomic_write_jsonl, publish_dir, staging_dir
from steps.core.manifest import write_manifest
from steps.core.step import Step
from steps.data.config import IngestConfig
from steps.data.dataset_info import resolve_datasets
from steps.data.errors import FileError
from steps.data.load import drop_exact_duplicates, load_dataset
from steps.data.split import assign_splits
from steps.data.splits import SPLITS


@dataclass(frozen=True)
class IngestResult:
    passed: bool
    out_dir: Path
    counts: dict[str, int]  # records per split, plus heldout, quarantined and dropped
    datasets: dict[str, dict[str, Any]]  # per dataset: format, rows, good, quarantined, dropped, bad_fraction
    problems: tuple[str, ...] = ()
    report_dir: Path | None = None  # where a failed run's quarantine and manifest went


def rejected_dir(out_dir: Path) -> Path:
    """Where a failed run writes its report, beside the last good output it leaves alone."""
    return Path(out_dir).with_name(Path(out_dir).name + ".rejected")


def run(cfg: IngestConfig, out_dir: Path, root: Path = Path(".")) -> IngestResult:
    """Read, map, quarantine and split every dataset; publish OUT_DIR atomically, only when the gate passes."""
    started = time.time()
    datasets, heldout = resolve_datasets(cfg, root)
    specs = {s.label: s for s in (*datasets, *heldout)}
    if len(specs) < len(datasets) + len(heldout):
        raise ConfigError("ingest: two datasets share a name (a file's stem by default); give each a distinct name:")
    loaded = {s.label: load_dataset(s, root, cfg.max_record_chars) for s in datasets}
    held = {s.label: load_dataset(s, root, cfg.max_record_chars) for s in heldout}
    dropped = drop_exact_duplicates(loaded, specs)
    stats = {name: ds.stats(specs[name]) for name, ds in (loaded | held).items()}
    problems = [p for name in loaded if (p := _gate(stats[name], cfg.max_bad_fraction))]
    passed = not problems
    target = Path(out_dir) if passed else rejected_dir(out_dir)
    tmp = staging_dir(target)
    counts = {}
    if passed:
        records = [r for ds in loaded.values() for r in ds.good]
        splits = assign_splits(records, cfg)
        key = lambda r: (r["meta"]["dataset"], r["meta"]["row"])
        for name in SPLITS:
            rows = sorted((rec for rec, s in zip(records, splits) if s == name), key=key)
            atomic_write_jsonl(tmp / f"{name}.jsonl", rows)
            counts[name] = len(rows)
        atomic_write_jsonl(tmp / "heldout.jsonl", [r for ds in held.values() for r in ds.good])
    else:
        problems.append(f"nothing published: {out_dir} keeps its last good output; this run's quarantine.jsonl, "
                        f"dropped.jsonl and manifest.json are in {target}")  # fmt: skip
    quarantine = [q for ds in (*loaded.values(), *held.values()) for q in ds.bad]
    atomic_write_jsonl(tmp / "quarantine.jsonl", quarantine)
    atomic_write_jsonl(tmp / "dropped.jsonl", dropped)
    counts |= {"heldout": sum(len(ds.good) for ds in held.values()), "quarantined": len(quarantine), "dropped": len(dropped)}
    inputs = {name: root / s.path for name, s in specs.items()}
    if cfg.dataset_info:
        inputs["dataset_info"] = root / cfg.dataset_info
    outputs = {p.stem: p for p in sorted(tmp.glob("*.jsonl"))}
    metrics = {"passed": passed, "counts": counts, "datasets": stats, "problems": problems}
    write_manifest(tmp, "ingest", cfg, inputs, outputs, metrics, started)
    publish_dir(tmp, target)
    if passed and (rejected_dir(out_dir) / "manifest.json").is_file():  # an older failed run's report, now stale
        shutil.rmtree(rejected_dir(out_dir))
    return IngestResult(passed=passed, out_dir=Path(out_dir), counts=counts, datasets=stats, problems=tuple(problems),
                        report_dir=None if passed else target)  # fmt: skip


def _gate(s: dict[str, Any], max_bad: float) -> str | None:
    """The dataset's failure, in words, or None: an empty file, or too many records quarantined."""
    if s["rows"] == 0:
        return f"{s['path']}: empty: no records read; fill the file or remove it from ingest.datasets"
    if s["dropped"].get("blank line", 0) == s["rows"]:
        return f"{s['path']}: no records, only {s['rows']} blank lines; fill the file or remove it from ingest.datasets"
    if s["bad_fraction"] > max_bad:
        return (f"{s['path']}: {s['quarantined']} of {s['rows']} records quarantined ({s['bad_fraction']:.1%}), over "
                f"ingest.max_bad_fraction={max_bad:.1%}; see quarantine.jsonl")  # fmt: skip
    return None


def print_summary(result: IngestResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ingest  (rows = good + quarantined + dropped)")
    for col in ("dataset", "format", "rows", "good", "quarantined", "dropped", "bad %"):
        table.add_column(col)
    for name, s in result.datasets.items():
        bad = "empty" if s["bad_fraction"] is None else f"{s['bad_fraction']:.1%}"
        table.add_row(name, s["format"], str(s["rows"]), str(s["good"]), str(s["quarantined"]), str(sum(s["dropped"].values())), bad)
    console = Console(stderr=False)
    console.print(table)
    for name, s in result.datasets.items():
        for reason, n in s["dropped"].items():
            console.print(f"{name}: dropped {n} ({reason})", soft_wrap=True)
    # the folder is a path a user copies: never wrapped across lines, whatever the terminal's width
    console.print(" ".join(f"{k}={v}" for k, v in result.counts.items()) + f"  -> {result.report_dir or result.out_dir}",
                  soft_wrap=True)
    for p in result.problems:
        console.print(f"[red]FAIL[/red] {p}", soft_wrap=True)


def _report(result: IngestResult) -> int:
    print_summary(result)
    return 0 if result.passed else 1


STEP = Step(name="ingest", config=IngestConfig, result=IngestResult, run=run, report=_report, doc=__doc__,
            paths={"out_dir": "data/prepared"},
            errors=(ConfigError, FileError))


def main(argv: list[str] | None = None) -> int:
    return STEP.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
