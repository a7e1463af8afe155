"""The evaluate step's human outputs: DVC plots rows and a self-contained HTML report.

``plots_data`` gives the rows of the JSON files under ``models/evaluate/plots/`` that
``dvc plots`` draws across revisions. ``render_report`` returns one HTML page that opens
from disk with no network: a gate banner, a metric table with deltas coloured by each
metric's direction, inline SVG charts drawn here (no JS library), training curves, the
run's provenance and the worst examples side by side. Every text from data or models
is escaped: a model output may hold ``<script>``. Both functions are pure.
"""

from __future__ import annotations

import json
import math
import numbers
from html import escape
from typing import Any

from steps._eval_gate import LOWER_IS_BETTER  # one list of directions for the gate and the report

MODELS = ("candidate", "base", "production")
CURVES = ("train_loss", "eval_loss")
COLOURS = {"candidate": "#2563eb", "base": "#9ca3af", "production": "#d97706",
           "train_loss": "#2563eb", "eval_loss": "#d97706"}
GROUPS = (  # chart order; a metric not listed lands in "Other"
    ("Perplexity", ("test_perplexity", "heldout_perplexity")),
    ("Overlap with the reference", ("bleu", "rouge1", "rouge2", "rougeL", "exact_match")),
    ("Semantic similarity", ("bertscore_f1", "heldout_bertscore_f1", "embedding_similarity")),
    ("LLM judge", ("judge_overall", "judge_accuracy", "judge_completeness", "judge_fluency",
                   "judge_helpfulness", "pairwise_win_rate", "judge_failures")),
    ("Classification and reward", ("accuracy", "precision", "recall", "f1", "reward_pairwise_accuracy")),
    ("Safety", ("safety_hits",)),
)
AXIS, GRID = "#6b7280", "#e5e7eb"
DASH = "—"
PREVIEW = 160  # characters of a long text shown before its <details> is opened


def _num(value: Any) -> float | None:
    """A finite number (numpy scalars too), else None (missing, NaN, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value: Any) -> str:
    """A number in 4 significant digits; other text escaped; missing as a dash."""
    v = _num(value)
    if v is None:
        return DASH if value is None or isinstance(value, numbers.Real) else escape(str(value))
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _models(metrics: dict[str, Any]) -> list[str]:
    return [m for m in MODELS if isinstance(metrics.get(m), dict)]


def metric_groups(metrics: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(title, metric names) for each group with at least one metric present in any model."""
    present = {k for m in _models(metrics) for k in metrics[m]}
    known = {k for _, names in GROUPS for k in names}
    groups = [(title, [k for k in names if k in present]) for title, names in GROUPS]
    groups.append(("Other", sorted(present - known)))
    return [(title, names) for title, names in groups if names]


def plots_data(metrics: dict[str, Any], curves: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows of the DVC plots files, by file name under ``plots/``.

    ``metrics_by_model.json``: one row {metric, model, value, label} per finite metric value;
    ``label`` ("rougeL · base") is the bar's category, so bars of one metric never stack.
    ``train_loss.json`` / ``eval_loss.json``: {step, <series>} rows. DVC drops a file whose rows
    do not share one set of keys, and the two series are logged at different steps, so each
    series has its own file. Every file is always there (maybe ``[]``): DVC draws an empty file
    as nothing but reports a missing one as an error.
    """
    rows = [{"metric": k, "model": m, "value": v, "label": f"{k} · {m}"}
            for _, names in metric_groups(metrics) for k in names for m in _models(metrics)
            if (v := _num(metrics[m].get(k))) is not None]
    curve_rows = {f"{k}.json": [{"step": s, k: v} for s, v in _points(curves.get(k))] for k in CURVES}
    return {"metrics_by_model.json": rows, **curve_rows}


def _points(series: Any) -> list[tuple[int | float, float]]:
    """Finite (step, value) pairs as plain Python numbers, sorted by step; anything else is skipped."""
    pairs = [(_num(p[0]), _num(p[1])) for p in series or () if isinstance(p, list | tuple) and len(p) == 2]
    return sorted((int(s) if s.is_integer() else s, v) for s, v in pairs if s is not None and v is not None)


# ---------------------------------------------------------------- charts


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    """An SVG styled by attributes only, so it also reads right saved alone or in any viewer."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{escape(title)}" font-family="system-ui, sans-serif" '
            f'font-size="12" fill="#111827"><title>{escape(title)}</title>{"".join(body)}</svg>')


def _text(x: float, y: float, s: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(s)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, colour: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}"/>'


def _legend(x: float, y: float, names: list[str]) -> list[str]:
    out = []
    for name in names:
        out += [f'<rect x="{x:.0f}" y="{y - 9}" width="10" height="10" fill="{COLOURS[name]}"/>',
                _text(x + 14, y, name)]
        x += 30 + 7 * len(name)
    return out


def bar_chart(title: str, names: list[str], metrics: dict[str, Any]) -> str:
    """Grouped horizontal bars: per metric one bar per model, scaled to that metric, value labelled."""
    models, bar, gap, left, span = _models(metrics), 14, 12, 200, 400  # left: room for a 26-character name
    height = 30 + len(names) * (len(models) * bar + gap)
    body, y = _legend(left, 16, models), 30
    for k in names:
        values = {m: _num(metrics[m].get(k)) for m in models}
        top = max((abs(v) for v in values.values() if v is not None), default=0.0) or 1.0
        mid = y + len(models) * bar / 2 + 4
        if k in LOWER_IS_BETTER:
            body.append(_text(left - 8, mid + 7, "↓ lower is better", "end", ' fill="#6b7280" font-size="11"'))
            mid -= 7
        body.append(_text(left - 8, mid, k, "end"))
        for i, m in enumerate(models):
            v, by = values[m], y + i * bar
            w = span * max(v or 0.0, 0.0) / top
            body += [f'<rect x="{left}" y="{by + 1}" width="{w:.1f}" height="{bar - 2}" fill="{COLOURS[m]}">'
                     f"<title>{escape(f'{m} {k} = {_fmt(v)}')}</title></rect>",
                     _text(left + w + 4, by + bar - 3, _fmt(v), extra=' fill="#374151"')]
        y += len(models) * bar + gap
    return _svg(left + span + 80, height, title, body)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 x 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = mag * next(f for f, cut in ((10, 50**0.5), (5, 10**0.5), (2, 2**0.5), (1, 0)) if raw / mag >= cut)  # d3's
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 12) for i in range(first, last + 1)]


def line_chart(title: str, curves: dict[str, Any]) -> str:
    """Loss against step, one line per series present, with ticked axes and a legend."""
    series = {k: p for k in CURVES if (p := _points(curves.get(k)))}
    xs = _ticks(min(s for p in series.values() for s, _ in p), max(s for p in series.values() for s, _ in p))
    ys = _ticks(min(v for p in series.values() for _, v in p), max(v for p in series.values() for _, v in p))
    left, top, w, h = 60, 30, 560, 220

    def sx(s: float) -> float:
        return left + w * (s - xs[0]) / (xs[-1] - xs[0])

    def sy(v: float) -> float:
        return top + h - h * (v - ys[0]) / (ys[-1] - ys[0])

    body = _legend(left, 16, list(series))
    body += [_line(left, sy(t), left + w, sy(t), GRID) + _text(left - 6, sy(t) + 4, _fmt(t), "end") for t in ys]
    body += [_line(sx(t), top + h, sx(t), top + h + 5, AXIS) + _text(sx(t), top + h + 18, _fmt(t), "middle")
             for t in xs]
    body += [_line(left, top + h, left + w, top + h, AXIS), _line(left, top, left, top + h, AXIS),
             _text(left + w / 2, top + h + 36, "step", "middle"),
             f'<text transform="translate(14 {top + h / 2}) rotate(-90)" text-anchor="middle">loss</text>']
    for name, points in series.items():
        xy = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in points)
        body.append(f'<polyline points="{xy}" fill="none" stroke="{COLOURS[name]}" stroke-width="2"/>')
        if len(points) <= 50:
            body += [f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="2.5" fill="{COLOURS[name]}"/>' for s, v in points]
    return _svg(left + w + 20, top + h + 46, title, body)


# ---------------------------------------------------------------- sections


def _banner(gate: dict[str, Any]) -> str:
    passed = bool(gate.get("passed"))
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in gate.get("reasons") or [])
    verdict = "PASS: the candidate may be merged and registered" if passed else "FAIL: the candidate is held back"
    return (f'<section class="banner {"pass" if passed else "fail"}"><h2>Gate {escape(verdict)}</h2>'
            f'{f"<ul>{reasons}</ul>" if reasons else ""}</section>')


def _checks(gate: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td>{escape(str(c.get("name", "")))}</td>'
        f'<td>{escape(str(c.get("metric", "")))}</td><td class="n">{_fmt(c.get("value"))}</td><td class="n">'
        f'{_fmt(c.get("threshold"))}</td><td class="{"better" if c.get("passed") else "worse"}">'
        f'{"pass" if c.get("passed") else "fail"}</td>'
        f'<td>{escape(str(c.get("reason") or ""))}</td></tr>' for c in gate.get("checks") or [])
    head = ('<tr><th>check</th><th>metric</th><th class="n">value</th><th class="n">threshold</th>'
            "<th>result</th><th>reason</th></tr>")
    return f"<h2>Gate checks</h2><table>{head}{rows}</table>" if rows else ""


def _delta(metric: str, cand: Any, other: Any) -> str:
    c, o = _num(cand), _num(other)
    if c is None or o is None:
        return f'<td class="n">{DASH}</td>'
    d = c - o
    good = -d if metric in LOWER_IS_BETTER else d
    cls = "better" if good > 0 else "worse" if good < 0 else "same"
    rel = f" ({d / abs(o):+.1%})" if o else ""
    return f'<td class="n {cls}">{"+" if d > 0 else ""}{_fmt(d)}{rel}</td>'


def _metric_table(metrics: dict[str, Any]) -> str:
    models, cand = _models(metrics), metrics.get("candidate") or {}
    head = "<tr><th>metric</th>" + "".join(
        f'<th class="n">{m}</th>' + (f'<th class="n">Δ vs {m}</th>' if m != "candidate" else "") for m in models)
    head += "</tr>"
    rows = []
    for title, names in metric_groups(metrics):
        rows.append(f'<tr class="group"><td colspan="{2 * len(models)}">{escape(title)}</td></tr>')
        for k in names:
            arrow = "↓" if k in LOWER_IS_BETTER else "↑"
            cells = "".join(f'<td class="n">{_fmt(metrics[m].get(k))}</td>'
                            + (_delta(k, cand.get(k), metrics[m].get(k)) if m != "candidate" else "")
                            for m in models)
            rows.append(f'<tr><td class="k">{escape(k)} <span class="dir">{arrow}</span></td>{cells}</tr>')
    return f"<h2>Metrics</h2><table>{head}{''.join(rows)}</table>"


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
        f'candidate {_fmt(e.get("score"))}<br>base {_fmt(e.get("base_score"))}</div></td>'
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
.note{color:#6b7280}figure{margin:12px 0}figcaption{font-weight:600}
@media print{body{max-width:none;margin:0;font-size:12px}section,figure{break-inside:avoid}}
"""
NO_PRODUCTION = '<p class="note">No production model: deltas are against base only.</p>'
OPEN_ON_PRINT = ('<script>addEventListener("beforeprint",'  # print every collapsed text in full
                 '()=>document.querySelectorAll("details").forEach(d=>d.open=true))</script>')


def _charts(metrics: dict[str, Any]) -> str:
    figures = "".join(f"<figure><figcaption>{escape(title)}</figcaption>{bar_chart(title, names, metrics)}</figure>"
                      for title, names in metric_groups(metrics))
    return (f"<h2>{' vs '.join(_models(metrics)).capitalize()}</h2><p class=\"note\">Bars are scaled per metric; "
            f"↓ marks lower-is-better metrics.</p>{figures}")


def _curves(curves: dict[str, Any]) -> str:
    if not any(_points(curves.get(k)) for k in CURVES):
        return '<h2>Training curves</h2><p class="note">No training curve recorded.</p>'
    return f"<h2>Training curves</h2>{line_chart('Training curves', curves)}"


def render_report(metrics: dict[str, Any], curves: dict[str, Any], examples: list[dict[str, Any]],
                  meta: dict[str, Any]) -> str:
    """The whole HTML page; the step writes it atomically as ``report.html``.

    ``meta["example_metric"]`` (optional) names the per-example score, e.g. "rougeL".
    """
    gate, title = metrics.get("gate") or {}, escape(f"tunegate evaluation: {meta.get('model_dir', 'candidate')}")
    no_prod = "" if "production" in metrics else NO_PRODUCTION
    body = (_banner(gate) + no_prod + _metric_table(metrics) + _checks(gate) + _charts(metrics) + _curves(curves)
            + _examples(examples, str(meta.get("example_metric") or "score")) + _meta(meta))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>{title}</title><style>{CSS}</style></head>'
            f"<body><h1>{title}</h1>{body}{OPEN_ON_PRINT}</body></html>\n")
