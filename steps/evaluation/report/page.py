"""The evaluate step's human outputs: DVC plots rows and a self-contained HTML report.

``plots_data`` gives the rows of the JSON files under ``models/evaluate/plots/`` that
``dvc plots`` draws across revisions. ``render_report`` returns one HTML page that opens
from disk with no network: a gate banner, a metric table with deltas coloured by each
metric's direction, inline SVG charts (no JS library), training curves, the
run's provenance, the metric signatures and the worst examples side by side. Every text from data or models
is escaped: a model output may hold ``<script>``. Both functions are pure.

Where things live: the metric groups, number formatting and ``plots_data`` in
``steps/evaluation/report/data.py``; the SVG bar and line charts in ``steps/evaluation/report/charts.py``.
This module assembles the page from its sections.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from steps.evaluation.gate import LOWER_IS_BETTER  # one list of directions for the gate and the report
from steps.evaluation.report.charts import bar_chart, line_chart
from steps.evaluation.report.data import CURVES, DASH, as_number, format_value, metric_groups, model_names, series_points

PREVIEW = 160  # characters of a long text shown before its <details> is opened


# ---------------------------------------------------------------- sections


def _banner(gate: dict[str, Any]) -> str:
    passed = bool(gate.get("passed"))
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in gate.get("reasons") or [])
    verdict = "PASS: the candidate may be merged and registered" if passed else "FAIL: the candidate is held back"
    return (f'<section class="banner {"pass" if passed else "fail"}"><h2>Gate {escape(verdict)}</h2>'
            f'{f"<ul>{reasons}</ul>" if reasons else ""}</section>')


def _summary(lines: list[str]) -> str:
    """The first lines a reader sees: probes passed, significant differences, why the gate decided."""
    return f'<section class="summary"><ul>{"".join(f"<li>{escape(str(x))}</li>" for x in lines)}</ul></section>' if lines else ""


def _interval(c: dict[str, Any]) -> str:
    iv = c.get("interval")
    if not iv:
        return DASH
    need = f'<br><span class="more">~{iv["items_needed"]} items to detect the threshold</span>' if iv.get("items_needed") else ""
    return f'{iv["low"]:+.1%} to {iv["high"]:+.1%} <span class="more">({iv["confidence"]:.0%}, n={iv["n"]})</span>{need}'


def _checks(gate: dict[str, Any]) -> str:
    def result(c: dict[str, Any]) -> str:
        if c.get("skipped"):
            return '<td class="same">not gated</td>'
        return f'<td class="{"better" if c.get("passed") else "worse"}">{"pass" if c.get("passed") else "fail"}</td>'

    rows = "".join(
        f'<tr><td>{escape(str(c.get("name", "")))}</td>'
        f'<td>{escape(str(c.get("metric", "")))}</td><td class="n">{format_value(c.get("value"))}</td><td class="n">'
        f'{format_value(c.get("threshold"))}</td><td class="n">{_interval(c)}</td>{result(c)}'
        f'<td>{escape(str(c.get("reason") or ""))}</td></tr>' for c in gate.get("checks") or [])
    head = ('<tr><th>check</th><th>metric</th><th class="n">value</th><th class="n">threshold</th>'
            '<th class="n">gain interval</th><th>result</th><th>reason</th></tr>')
    return f"<h2>Gate checks</h2><table>{head}{rows}</table>" if rows else ""


def _probes(rows: list[dict[str, Any]]) -> str:
    """Each probe with every model's answer side by side, each marked pass, fail or undecided."""
    if not rows:
        return ""
    models = [m for m in ("candidate", "base", "production") if m in rows[0]]

    def cell(r: dict[str, Any]) -> str:
        mark = {True: ("better", "pass"), False: ("worse", "fail"), None: ("same", "undecided")}[r.get("passed")]
        why = f'<div class="more">{escape("; ".join(r.get("failed") or []))}</div>' if r.get("failed") else ""
        return f'<td><b class="{mark[0]}">{mark[1]}</b>{why}<div class="txt">{escape(str(r.get("answer", "")))}</div></td>'

    head = '<colgroup><col class="id">' + "<col>" * len(models) + "</colgroup><thead><tr><th>probe</th>"
    head += "".join(f"<th>{m}</th>" for m in models) + "</tr></thead>"
    body = "".join(f'<tr><td><code>{escape(str(r["id"]))}</code></td>' + "".join(cell(r[m]) for m in models) + "</tr>"
                   for r in rows)  # fmt: skip
    return f'<h2>Probes</h2><table class="ex">{head}<tbody>{body}</tbody></table>'


def _delta(metric: str, cand: Any, other: Any) -> str:
    c, o = as_number(cand), as_number(other)
    if c is None or o is None:
        return f'<td class="n">{DASH}</td>'
    d = c - o
    good = -d if metric in LOWER_IS_BETTER else d
    cls = "better" if good > 0 else "worse" if good < 0 else "same"
    rel = f" ({d / abs(o):+.1%})" if o else ""
    return f'<td class="n {cls}">{"+" if d > 0 else ""}{format_value(d)}{rel}</td>'


def _metric_table(metrics: dict[str, Any]) -> str:
    models, cand = model_names(metrics), metrics.get("candidate") or {}
    head = "<tr><th>metric</th>" + "".join(
        f'<th class="n">{m}</th>' + (f'<th class="n">Δ vs {m}</th>' if m != "candidate" else "") for m in models)
    head += "</tr>"
    rows = []
    for title, names in metric_groups(metrics):
        rows.append(f'<tr class="group"><td colspan="{2 * len(models)}">{escape(title)}</td></tr>')
        for k in names:
            arrow = "↓" if k in LOWER_IS_BETTER else "↑"
            cells = "".join(f'<td class="n">{format_value(metrics[m].get(k))}</td>'
                            + (_delta(k, cand.get(k), metrics[m].get(k)) if m != "candidate" else "")
                            for m in models)
            rows.append(f'<tr><td class="k">{escape(k)} <span class="dir">{arrow}</span></td>{cells}</tr>')
    return f"<h2>Metrics</h2><table>{head}{''.join(rows)}</table>"


def _signatures(signatures: dict[str, Any]) -> str:
    """The settings behind each text metric (metrics.json's ``signatures``); metrics that share one are listed together."""
    shared: dict[str, list[str]] = {}
    for metric, signature in (signatures or {}).items():
        shared.setdefault(str(signature), []).append(str(metric))
    if not shared:
        return ""
    rows = "".join(f'<tr><td class="k">{escape(", ".join(names))}</td><td><code>'
                   f'{"<br>".join(escape(part) for part in signature.split("; "))}</code></td></tr>'
                   for signature, names in shared.items())  # fmt: skip
    return ('<h2>Metric signatures</h2><p class="note">How each number was computed: sacrebleu\'s signature, the ROUGE '
            "settings, bert-score's hash. Set a number beside a published one only when they match.</p>"
            f'<table class="sig"><tr><th>metric</th><th>signature</th></tr>{rows}</table>')


def _meta(meta: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "<dl>" + "".join(f"<dt>{escape(str(k))}</dt><dd>{value(x)}</dd>" for k, x in v.items()) + "</dl>"
        return f"<code>{escape(DASH if v is None else str(v))}</code>"

    return "<h2>Run</h2>" + value(meta)


def _cell(value: Any) -> str:
    """A text cell: short text as is, long text behind <details>; chat turns as 'role: content' lines."""
    if isinstance(value, list) and all(isinstance(t, dict) for t in value):
        value = "\n".join(f"{t.get('role', '?')}: {t.get('content', '')}" for t in value)
    text = DASH if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) <= PREVIEW * 2 and text.count("\n") < 8:
        return f'<td><div class="txt">{escape(text)}</div></td>'
    return (f'<td><details><summary><span class="pv">{escape(text[:PREVIEW])}…</span> '
            f'<span class="more">({len(text):,} characters)</span></summary>'
            f'<div class="txt">{escape(text)}</div></details></td>')


def _examples(examples: list[dict[str, Any]], score_name: str) -> str:
    if not examples:
        return "<h2>Worst examples</h2><p>No per-example outputs were recorded.</p>"
    cols = ["prompt", "reference", "candidate", "base"]
    cols += ["production"] if any(e.get("production") is not None for e in examples) else []
    head = '<colgroup><col class="id">' + "<col>" * len(cols) + "</colgroup><thead><tr><th>example</th>"
    head += "".join(f"<th>{c}</th>" for c in cols) + "</tr></thead>"
    rows = "".join(
        f'<tr><td><code>{escape(str(e.get("id", "")))}</code><div class="more">{escape(score_name)}<br>'
        f'candidate {format_value(e.get("score"))}<br>base {format_value(e.get("base_score"))}</div></td>'
        + "".join(_cell(e.get(c)) for c in cols) + "</tr>" for e in examples)
    n = len(examples)
    return (f"<h2>Worst {n} example{'s' * (n != 1)} by candidate {escape(score_name)}</h2>"
            f'<table class="ex">{head}<tbody>{rows}</tbody></table>')


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;
     max-width:1280px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px}
.banner{border-radius:6px;padding:10px 16px;color:#fff;-webkit-print-color-adjust:exact;print-color-adjust:exact}
.banner h2{margin:4px 0}.banner.pass{background:#15803d}.banner.fail{background:#b91c1c}
table{border-collapse:collapse;width:100%;margin:4px 0}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.group td{font-weight:600;background:#f9fafb}.dir{color:#6b7280}
.better{color:#15803d}.worse{color:#b91c1c}.same{color:#6b7280}
th.n{text-align:right}td.k{white-space:nowrap}
.ex{table-layout:fixed}.ex col.id{width:9em}.ex th{overflow-wrap:anywhere}
.txt{white-space:pre-wrap;overflow-wrap:anywhere}summary{cursor:pointer;overflow-wrap:anywhere;color:#374151}
details[open] .pv{display:none}.more{color:#6b7280;font-size:12px}
svg{max-width:100%;height:auto;display:block;margin:8px 0}
dl{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:2px 16px}dt{font-weight:600}dd{margin:0}
.sig code{overflow-wrap:anywhere}
.summary ul{margin:8px 0;padding-left:20px;font-size:15px}.note{color:#6b7280}figure{margin:12px 0}figcaption{font-weight:600}
@media print{body{max-width:none;margin:0;font-size:12px}section,figure{break-inside:avoid}}
"""
NO_PRODUCTION = '<p class="note">No production model: deltas are against base only.</p>'
OPEN_ON_PRINT = ('<script>addEventListener("beforeprint",'  # print every collapsed text in full
                 '()=>document.querySelectorAll("details").forEach(d=>d.open=true))</script>')


def _charts(metrics: dict[str, Any]) -> str:
    figures = "".join(f"<figure><figcaption>{escape(title)}</figcaption>{bar_chart(title, names, metrics)}</figure>"
                      for title, names in metric_groups(metrics))
    return (f"<h2>{' vs '.join(model_names(metrics)).capitalize()}</h2><p class=\"note\">Bars are scaled per metric; "
            f"↓ marks lower-is-better metrics.</p>{figures}")


def _curves(curves: dict[str, Any]) -> str:
    if not any(series_points(curves.get(k)) for k in CURVES):
        return '<h2>Training curves</h2><p class="note">No training curve recorded.</p>'
    return f"<h2>Training curves</h2>{line_chart('Training curves', curves)}"


def render_report(metrics: dict[str, Any], curves: dict[str, Any], examples: list[dict[str, Any]],
                  meta: dict[str, Any]) -> str:
    """The whole HTML page; the step writes it atomically as ``report.html``.

    ``meta["example_metric"]`` (optional) names the per-example score, e.g. "rougeL".
    """
    gate, title = metrics.get("gate") or {}, escape(f"tunegate evaluation: {meta.get('model_dir', 'candidate')}")
    no_prod = "" if "production" in metrics else NO_PRODUCTION
    body = (_banner(gate) + _summary(metrics.get("summary") or []) + no_prod + _probes(metrics.get("probes") or [])
            + _metric_table(metrics) + _signatures(metrics.get("signatures") or {}) + _checks(gate) + _charts(metrics)
            + _curves(curves)
            + _examples(examples, str(meta.get("example_metric") or "score")) + _meta(meta))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>{title}</title><style>{CSS}</style></head>'
            f"<body><h1>{title}</h1>{body}{OPEN_ON_PRINT}</body></html>\n")
