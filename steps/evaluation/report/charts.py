"""The evaluation report's inline SVG charts, drawn here with no JS library.

``bar_chart`` draws one metric group across the models (grouped horizontal bars, each metric
scaled to itself); ``line_chart`` draws the training curves against step with round ticks.
Each returns a standalone ``<svg>`` styled by attributes only, so it reads right saved alone
too; every label is escaped. They sit apart from the page assembly in ``steps/evaluation/report/page.py``
to keep the drawing arithmetic in one place. All pure.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from steps.evaluation.gate import LOWER_IS_BETTER  # one list of directions for the gate and the report
from steps.evaluation.report.data import CURVES, as_number, format_value, model_names, series_points

COLOURS = {"candidate": "#2563eb", "base": "#9ca3af", "production": "#d97706",
           "train_loss": "#2563eb", "eval_loss": "#d97706"}
AXIS, GRID = "#6b7280", "#e5e7eb"


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
    models, bar, gap, left, span = model_names(metrics), 14, 12, 200, 400  # left: room for a 26-character name
    height = 30 + len(names) * (len(models) * bar + gap)
    body, y = _legend(left, 16, models), 30
    for k in names:
        values = {m: as_number(metrics[m].get(k)) for m in models}
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
                     f"<title>{escape(f'{m} {k} = {format_value(v)}')}</title></rect>",
                     _text(left + w + 4, by + bar - 3, format_value(v), extra=' fill="#374151"')]
        y += len(models) * bar + gap
    return _svg(left + span + 80, height, title, body)


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
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
    series = {k: p for k in CURVES if (p := series_points(curves.get(k)))}
    xs = ticks(min(s for p in series.values() for s, _ in p), max(s for p in series.values() for s, _ in p))
    ys = ticks(min(v for p in series.values() for _, v in p), max(v for p in series.values() for _, v in p))
    left, top, w, h = 60, 30, 560, 220

    def sx(s: float) -> float:
        return left + w * (s - xs[0]) / (xs[-1] - xs[0])

    def sy(v: float) -> float:
        return top + h - h * (v - ys[0]) / (ys[-1] - ys[0])

    body = _legend(left, 16, list(series))
    body += [_line(left, sy(t), left + w, sy(t), GRID) + _text(left - 6, sy(t) + 4, format_value(t), "end") for t in ys]
    body += [_line(sx(t), top + h, sx(t), top + h + 5, AXIS) + _text(sx(t), top + h + 18, format_value(t), "middle")
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
