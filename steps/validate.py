"""validate: the data gates (format, dedup, leakage, PII), judged by Great Expectations.

Reads PREPARED_DIR/{train,validation,test}.jsonl (and heldout.jsonl when there),
computes per-record feature columns in pandas (steps/gates/), and lets the suites under
``expectations/`` judge them with this config's thresholds as suite parameters.
Writes OUT_DIR atomically: the splits (PII-masked when ``pii_action: mask``),
``report.json`` (``{"passed", "gates"}``: what the flow branches on), ``report.html``
(per gate the failing records: file:row, field, reason, fix; opens offline), Great
Expectations' Data Docs under ``data_docs/`` (they need network for their scripts) and
``manifest.json``. When a gate fails, all of it lands in ``OUT_DIR.failed/`` instead and
OUT_DIR keeps the last output that passed.

    python -m steps.validate data/prepared data/validated [--params params.yaml]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from steps.core.config import ConfigError
from steps.core.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    clear_failed,
    publish_dir,
    publish_failed,
    staging_dir,
)
from steps.core.manifest import write_manifest
from steps.core.step import Step
from steps.data.minhash import minhash_signatures
from steps.data.splits import load_splits
from steps.evaluation.probes import ProbeError, load_probes
from steps.gates.config import ValidateConfig
from steps.gates.dedup import content_text, dedup_columns, leakage_columns, probe_leak_columns
from steps.gates.format import format_columns
from steps.gates.pii import pii_columns

# The per-record feature columns live in steps/gates/, one module per gate family.
from steps.gates.records import EXAMPLES, record_frame
from steps.gates.report import LISTED, render_gate_report
from steps.gates.tokens import count_tokens, gate_tokenizer
from steps.models.loading import ModelError


@dataclass(frozen=True)
class ValidateResult:
    passed: bool
    gates: dict[str, dict[str, Any]]  # per gate: passed, reason, checks (observed, threshold), failures
    report_path: Path  # report.json, in OUT_DIR (passed) or OUT_DIR.failed (a gate failed)
    data_docs_path: Path
    html_path: Path  # report.html beside it: the failing records, offline


def run(cfg: ValidateConfig, prepared_dir: Path, out_dir: Path) -> ValidateResult:
    """Judge every gate on PREPARED_DIR's splits; publish OUT_DIR atomically if they pass, else OUT_DIR.failed."""
    import expectations  # Great Expectations is slow to import: only when the gates run

    started, seconds = time.time(), {}
    splits = load_splits(Path(prepared_dir), f"python -m steps.ingest {prepared_dir}")
    df = record_frame(splits)
    tokenizer = gate_tokenizer(cfg)

    tick = time.perf_counter()
    details: dict[tuple[str, int], str] = {}  # (column, row of df) -> what is wrong, for the report
    records = [r for recs in splits.values() for r in recs]
    format_columns(df, records, details)
    df["n_tokens"] = count_tokens(records, df["schema_ok"].to_numpy(), tokenizer, cfg)
    seconds["format"] = time.perf_counter() - tick
    tick = time.perf_counter()
    train, evals = df.index[df.split == "train"], df.index[df.split != "train"]
    texts = [content_text(r) for r in records]
    sigs = minhash_signatures(texts)
    dedup_columns(df, train, sigs, details, cfg)
    seconds["dedup"] = time.perf_counter() - tick
    tick = time.perf_counter()
    leakage_columns(df, train, evals, texts, sigs, details, cfg)
    probes = [(p.id, " ".join(m["content"] for m in p.messages)) for p in load_probes(cfg.probes)] if cfg.probes else []
    leaked_probes = probe_leak_columns(df, train, texts, probes, details, cfg, str(cfg.probes))
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
    gates["leakage"]["probes"] = {"file": cfg.probes, "checked": len(probes), "leaked": leaked_probes}
    report = {"passed": passed, "gates": gates, "counts": counts, "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    atomic_write_text(tmp / "report.html", render_gate_report(report))
    for g in gates.values():  # report.json keeps the first EXAMPLES per check; the page lists up to LISTED
        g["failures"] = [f for check in g["failing"] for f in [f for f in g["failures"] if f["check"] == check][:EXAMPLES]]
    atomic_write_json(tmp / "report.json", report)
    inputs = {name: Path(prepared_dir) / f"{name}.jsonl" for name in splits}
    outputs = {p.stem: p for p in sorted(tmp.glob("*.jsonl"))} | {"report": tmp / "report.json", "report_html": tmp / "report.html",
                                                                  "data_docs": tmp / "data_docs"}
    metrics = {"passed": passed, "counts": counts, "gates": {k: g["passed"] for k, g in gates.items()}, "seconds": report["seconds"]}
    write_manifest(tmp, "validate", cfg, inputs, outputs, metrics, started)
    if passed:
        where = publish_dir(tmp, out_dir)
        clear_failed(out_dir, "validate")
    else:
        where = publish_failed(tmp, out_dir)  # OUT_DIR keeps the last output that passed
    return ValidateResult(passed, gates, where / "report.json", where / "data_docs" / "index.html", where / "report.html")


# ---------------------------------------------------------------- report


def gate_report(gate: str, checks: list[Any], df: pd.DataFrame, details: dict[tuple[str, int], str]) -> dict[str, Any]:
    """One gate's entry in report.json: verdict, reason, per-check numbers, failing records (up to
    ``LISTED`` per check; run() keeps ``EXAMPLES`` of them in report.json) and ``failing``: the count per failed check."""
    failures, rows, reasons, failing = [], [], [], {}
    for c in checks:
        rows.append({"check": c.column, "description": c.description, "passed": c.passed,
                     "observed": c.observed, "threshold": c.threshold, **({"error": c.error} if c.error else {})})
        if c.passed:
            continue
        reasons.append(f"{c.description}: observed {_fmt(c.observed)}, threshold {_fmt(c.threshold)}")
        index = c.unexpected_index or df.index[df[c.column].to_numpy() != 0].tolist()
        failing[c.column] = len(index)
        for i in index[:LISTED]:
            r = df.loc[i]
            failures.append({"check": c.column, "file": f"{r.split}.jsonl", "line": int(r.line), "dataset": r.dataset,
                             "source": r.source, "row": None if pd.isna(r.row) else int(r.row), "id": r.id,
                             "field": c.field, "detail": details.get((c.column, i), _value(r, c.column)), "fix": c.fix})
    return {"passed": all(c.passed for c in checks), "reason": "; ".join(reasons) or "ok", "checks": rows, "failures": failures,
            "failing": failing}


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
    if result.passed:
        console.print(f"PASSED  report: {result.html_path} (offline; report.json beside it)", highlight=False)
    else:
        console.print(f"FAILED  report: {result.html_path} (every failing record, offline; report.json beside it); "
                      f"{result.html_path.parent.with_suffix('')} keeps the last output that passed", highlight=False)


def _report(result: ValidateResult) -> int:
    print_summary(result)
    return 0 if result.passed else 1


STEP = Step(name="validate", config=ValidateConfig, result=ValidateResult, run=run, report=_report, doc=__doc__,
            paths={"prepared_dir": "data/prepared", "out_dir": "data/validated"},
            errors=(ConfigError, ModelError, ProbeError))


def main(argv: list[str] | None = None) -> int:
    return STEP.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
