"""The PII gate: findings per record, and masking them in place under ``pii_action: mask``.

``pii_columns`` scans every string a record carries (steps/core/pii.py), counts findings
per record into ``pii_findings``, and returns the findings for report.json with a
masked snippet, never the value itself. Apart from the other gates because it alone
may change the records (and so their meta.hash) that the validate step writes out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from steps.core import pii
from steps.core.schema import KINDS, content_hash
from steps.gates.records import record_turns


def _fields(rec: dict[str, Any]):
    """(field name, container, key) of every string a record carries."""
    for key in ("messages", "chosen", "rejected", "completion"):
        for i, m in enumerate(record_turns(rec, key)):
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                yield f"{key}[{i}].content", m, "content"
    if isinstance(rec.get("text"), str):
        yield "text", rec, "text"


def pii_columns(df: pd.DataFrame, records: list[Any], mask: bool) -> tuple[list[dict[str, Any]], set[str]]:
    """pii_findings per record; returns every finding (type, location, masked snippet, never the value).

    With ``mask``, findings are replaced by placeholders in the records themselves
    (and meta.hash recomputed), so the written splits carry masked text; the
    second value names the splits that changed.
    """
    where, texts = [], []
    for i, rec in enumerate(records):
        if isinstance(rec, dict):
            for fname, holder, key in _fields(rec):
                where.append((i, fname, holder, key))
                texts.append(holder[key])
    counts = np.zeros(len(df), dtype=np.int64)
    findings: list[dict[str, Any]] = []
    changed = set()
    for t, found in sorted(pii.scan_many(texts).items()):
        i, fname, holder, key = where[t]
        rec, r = records[i], df.loc[i]
        counts[i] += len(found)
        findings += [{"type": f.type, "file": f"{r.split}.jsonl", "line": int(r.line), "dataset": r.dataset,
                      "source": r.source, "row": r.row, "id": r.id, "field": fname, "start": f.start, "end": f.end,
                      "snippet": pii.snippet(holder[key], f, found)} for f in found]
        if mask:
            holder[key] = pii.mask(holder[key], found)
            changed.add(i)
    for i in changed:
        if isinstance(records[i].get("meta"), dict) and records[i].get("kind") in KINDS:
            records[i]["meta"]["hash"] = content_hash(records[i])
    df["pii_findings"] = counts
    return findings, set(df.split.iloc[sorted(changed)])
