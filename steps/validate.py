"""validate: the data gates (format, dedup, leakage, PII), judged by Great Expectations.

Reads PREPARED_DIR/{train,validation,test}.jsonl (and heldout.jsonl when there),
computes per-record feature columns in pandas (steps/_gates.py), and lets the suites under
``expectations/`` judge them with this config's thresholds as suite parameters.
Writes OUT_DIR atomically: the splits (PII-masked when ``pii_action: mask``),
``report.json`` (``{"passed", "gates"}``: what the flow branches on), Data Docs
under ``data_docs/`` and ``manifest.json``.

    python -m steps.validate data/prepared data/validated [--params params.yaml]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from steps import _dedup
from steps._cli import step_main
from steps._config import ConfigError
# The per-record feature columns live in steps/_gates.py; tests call format_problems and count_tokens from here.
from steps._gates import (EXAMPLES, InputError, content_text, count_tokens, dedup_columns, format_columns,  # noqa: F401
                          format_problems, leakage_columns, load_splits, load_tokenizer, pii_columns, record_frame)
from steps._io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl, publish_dir, staging_dir
from steps._manifest import write_manifest
from steps._model import DEFAULT_BASE_MODEL, ModelError

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


@dataclass(frozen=True)
class ValidateResult:
    passed: bool
    gates: dict[str, dict[str, Any]]  # per gate: passed, reason, checks (observed, threshold), failures
    report_path: Path
    data_docs_path: Path


def run(cfg: ValidateConfig, prepared_dir: Path, out_dir: Path) -> ValidateResult:
    """Judge every gate on PREPARED_DIR's splits; write OUT_DIR atomically."""
    import expectations  # Great Expectations is slow to import: only when the gates run

    started, seconds = time.time(), {}
    splits = load_splits(Path(prepared_dir))
    df = record_frame(splits)
    tokenizer = load_tokenizer(cfg)

    tick = time.perf_counter()
    details: dict[tuple[str, int], str] = {}  # (column, row of df) -> what is wrong, for the report
    records = [r for recs in splits.values() for r in recs]
    format_columns(df, records, details)
    df["n_tokens"] = count_tokens(records, df["schema_ok"].to_numpy(), tokenizer, cfg)
    seconds["format"] = time.perf_counter() - tick
    tick = time.perf_counter()
    train, evals = df.index[df.split == "train"], df.index[df.split != "train"]
    texts = [content_text(r) for r in records]
    sigs = _dedup.minhash_signatures(texts)
    dedup_columns(df, train, sigs, details, cfg)
    seconds["dedup"] = time.perf_counter() - tick
    tick = time.perf_counter()
    leakage_columns(df, train, evals, texts, sigs, details, cfg)
    seconds["leakage"] = time.perf_counter() - tick
    tick = time.perf_counter()
    findings, masked = pii_columns(df, records, mask=cfg.pii_action == "mask")
    seconds["pii"] = time.perf_counter() - tick

    tmp = staging_dir(out_dir)
    tick = time.perf_counter()
    frames = {"format": df, "dedup": df.loc[train], "leakage": df.loc[train], "pii": df}
    parameters = {**asdict(cfg), "max_pii_findings": 0 if cfg.pii_action == "fail" else None}
    checks = expectations.run_suites(frames, parameters, tmp / "data_docs")
    seconds["great_expectations"] = time.perf_counter() - tick
    gates = {gate: gate_report(gate, cs, df, details) for gate, cs in checks.items()}
    gates["pii"]["findings"] = findings[:50]
    gates["pii"]["observed_by_type"] = pd.Series([f["type"] for f in findings], dtype=object).value_counts().to_dict()
    passed = all(g["passed"] for g in gates.values())

    for name, recs in splits.items():
        if name in masked:
            atomic_write_jsonl(tmp / f"{name}.jsonl", recs)
        else:  # unchanged: the input file as it is
            atomic_write_bytes(tmp / f"{name}.jsonl", (Path(prepared_dir) / f"{name}.jsonl").read_bytes())
    counts = {name: len(recs) for name, recs in splits.items()}
    report = {"passed": passed, "gates": gates, "counts": counts, "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    atomic_write_json(tmp / "report.json", report)
    inputs = {name: Path(prepared_dir) / f"{name}.jsonl" for name in splits}
    outputs = {p.stem: p for p in sorted(tmp.glob("*.jsonl"))} | {"report": tmp / "report.json", "data_docs": tmp / "data_docs"}
    metrics = {"passed": passed, "counts": counts, "gates": {k: g["passed"] for k, g in gates.items()}, "seconds": report["seconds"]}
    write_manifest(tmp, "validate", cfg, inputs, outputs, metrics, started)
    publish_dir(tmp, out_dir)
    out_dir = Path(out_dir)
    return ValidateResult(passed, gates, out_dir / "report.json", out_dir / "data_docs" / "index.html")


# ---------------------------------------------------------------- report


def gate_report(gate: str, checks: list[Any], df: pd.DataFrame, details: dict[tuple[str, int], str]) -> dict[str, Any]:
    """One gate's entry in report.json: verdict, reason, per-check numbers and failing examples."""
    failures, rows, reasons = [], [], []
    for c in checks:
        rows.append({"check": c.column, "description": c.description, "passed": c.passed,
                     "observed": c.observed, "threshold": c.threshold, **({"error": c.error} if c.error else {})})
        if c.passed:
            continue
        reasons.append(f"{c.description}: observed {_fmt(c.observed)}, threshold {_fmt(c.threshold)}")
        index = c.unexpected_index or df.index[df[c.column].to_numpy() != 0].tolist()
        for i in index[:EXAMPLES]:
            r = df.loc[i]
            failures.append({"check": c.column, "file": f"{r.split}.jsonl", "line": int(r.line), "dataset": r.dataset,
                             "source": r.source, "row": None if pd.isna(r.row) else int(r.row), "id": r.id,
                             "field": c.field, "detail": details.get((c.column, i), _value(r, c.column)), "fix": c.fix})
    return {"passed": all(c.passed for c in checks), "reason": "; ".join(reasons) or "ok", "checks": rows, "failures": failures}


def _value(r: pd.Series, column: str) -> str:
    return f"{column} = {r[column]}"


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in d.items()) or "-"


def _observed(o: dict[str, Any]) -> str:
    if "value" in o:
        return f"{o['value']:.4g}" if isinstance(o["value"], float) else str(o["value"])
    return f"{o['unexpected_count']} of {o['element_count']} bad" + (f", {o['missing_count']} uncounted" if o["missing_count"] else "")


def _threshold(t: dict[str, Any]) -> str:
    if "value_set" in t or not t:
        return "all"
    return ", ".join(f"{k}={'unbounded' if v is None else v}" for k, v in t.items())


def print_summary(result: ValidateResult) -> None:
    """The gate table and the first failing examples, on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="validate")
    for col in ("gate", "check", "passed", "observed", "threshold"):
        table.add_column(col)
    for gate, g in result.gates.items():
        for n, c in enumerate(g["checks"]):
            mark = "[green]yes[/green]" if c["passed"] else "[red]NO[/red]"
            table.add_row(gate if n == 0 else "", c["check"], mark, _observed(c["observed"]), _threshold(c["threshold"]))
    console = Console()
    console.print(table)
    for gate, g in result.gates.items():
        for f in g["failures"][:3]:
            console.print(f"[red]{gate}[/red] {f['file']}:{f['line']} (dataset {f['dataset']}, row {f['row']}) "
                          f"field {f['field']}: {f['detail']} -> fix: {f['fix']}", highlight=False)
    by_type = result.gates.get("pii", {}).get("observed_by_type")
    if by_type:
        console.print("PII found: " + ", ".join(f"{k}={v}" for k, v in by_type.items()), highlight=False)
    console.print(f"{'PASSED' if result.passed else 'FAILED'}  report: {result.report_path}  data docs: {result.data_docs_path}")


def _report(result: ValidateResult) -> int:
    print_summary(result)
    return 0 if result.passed else 1


def main(argv: list[str] | None = None) -> int:
    paths = {"prepared_dir": Path("data/prepared"), "out_dir": Path("data/validated")}
    return step_main(argv, step="validate", doc=__doc__, config=ValidateConfig, paths=paths, run=run,
                     report=_report, errors=(ConfigError, ModelError))  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(main())
