"""The data gates' page: ``report.html``, one self-contained file that opens from disk with no network.

Great Expectations' Data Docs load jQuery and bootstrap-table from CDNs (blank offline) and show
totals only. This page has no script and no external link: per gate a verdict, its checks (observed
against threshold) and a table of the failing records, each with the raw file and row it came from,
its place in the split file, the field, the reason and the fix. Every text from data is escaped:
a record may hold ``<script>``. ``render_gate_report`` is pure.
"""

from __future__ import annotations

from html import escape
from typing import Any

LISTED = 500  # failing records listed per check on the page (report.json keeps records.EXAMPLES)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;
     max-width:1280px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0}.pass{background:#dcfce7}.fail{background:#fee2e2}
table{border-collapse:collapse;width:100%;margin:6px 0 14px}th,td{border:1px solid #e5e7eb;padding:4px 8px;
     text-align:left;vertical-align:top}th{background:#f3f4f6}td.no{color:#b91c1c;font-weight:600}
td.yes{color:#15803d}code{font-size:12px;word-break:break-all}.muted{color:#6b7280}
"""


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pairs(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'unbounded' if v is None else _num(v)}" for k, v in (d or {}).items()) or "-"


def _checks(checks: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(str(c['check']))}</code></td><td>{escape(str(c.get('description', '')))}</td>"
        f'<td class="{"yes" if c["passed"] else "no"}">{"yes" if c["passed"] else "NO"}</td>'
        f"<td>{escape(_pairs(c.get('observed')))}</td><td>{escape(_pairs(c.get('threshold')))}</td></tr>"
        for c in checks)  # fmt: skip
    return ("<table><tr><th>check</th><th>what</th><th>passed</th><th>observed</th><th>threshold</th></tr>"
            f"{rows}</table>")


def _where(f: dict[str, Any]) -> str:
    row = f"{f.get('source')}:{f['row']}" if f.get("row") is not None else str(f.get("source"))
    return f"{row} ({f.get('file')}:{f.get('line')})"


def _failures(failures: list[dict[str, Any]], failing: dict[str, int]) -> str:
    if not failures:
        return '<p class="muted">No failing record.</p>'
    rows = "".join(
        f"<tr><td><code>{escape(_where(f))}</code></td><td>{escape(str(f.get('dataset')))}</td>"
        f"<td><code>{escape(str(f.get('check')))}</code></td><td><code>{escape(str(f.get('field')))}</code></td>"
        f"<td>{escape(str(f.get('detail')))}</td><td>{escape(str(f.get('fix')))}</td></tr>"
        for f in failures)  # fmt: skip
    cut = [f"{check}: first {LISTED} of {n}" for check, n in failing.items() if n > LISTED]
    note = f'<p class="muted">Listed: {escape("; ".join(cut))} (report.json counts all).</p>' if cut else ""
    return ("<table><tr><th>file:row (split file:line)</th><th>dataset</th><th>check</th><th>field</th>"
            f"<th>reason</th><th>fix</th></tr>{rows}</table>{note}")


def render_gate_report(report: dict[str, Any], title: str = "tunegate data gates") -> str:
    """One HTML page from validate's report (``passed``, ``counts``, per gate ``checks`` and ``failures``
    with up to ``LISTED`` records per check, and ``failing``: the count per failed check)."""
    passed = bool(report.get("passed"))
    counts = ", ".join(f"{k} {v}" for k, v in (report.get("counts") or {}).items())
    failed = [g for g, v in report["gates"].items() if not v["passed"]]
    verdict = "PASSED: every gate" if passed else "FAILED: " + ", ".join(failed)
    banner = (f'<section class="banner {"pass" if passed else "fail"}"><strong>{escape(verdict)}</strong>'
              f'<div class="muted">records per split: {escape(counts)}</div></section>')
    body = [banner]
    for gate, g in report["gates"].items():
        mark = "passed" if g["passed"] else "FAILED"
        body.append(f'<h2 id="{escape(gate)}">{escape(gate)}: {mark}</h2><p>{escape(str(g.get("reason", "")))}</p>')
        body.append(_checks(g.get("checks") or []))
        body.append(_failures(g.get("failures") or [], g.get("failing") or {}))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>{escape(title)}</title><style>{CSS}</style></head>'
            f"<body><h1>{escape(title)}</h1>{''.join(body)}</body></html>\n")
