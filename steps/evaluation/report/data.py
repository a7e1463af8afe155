"""The metric values the evaluation report and the DVC plots share: which, grouped how, shown how.

``plots_data`` gives the rows of the JSON files under ``models/evaluate/plots/`` that
``dvc plots`` draws across revisions; ``metric_groups`` orders the metrics for the report's
table and charts; ``as_number`` / ``format_value`` / ``series_points`` turn whatever a metrics file or a training
log holds into finite numbers and short text. They sit apart from the page (``steps/evaluation/report/page.py``)
and the SVG charts (``steps/evaluation/report/charts.py``) because both of those read them. All pure.
"""

from __future__ import annotations

import math
import numbers
from html import escape
from typing import Any

MODELS = ("candidate", "base", "production")
CURVES = ("train_loss", "eval_loss")
GROUPS = (  # chart order; a metric not listed lands in "Other"
    ("Perplexity", ("test_perplexity", "heldout_perplexity")),
    ("Overlap with the reference", ("bleu", "rouge1", "rouge2", "rougeL", "exact_match")),
    ("Semantic similarity", ("bertscore_f1", "heldout_bertscore_f1", "embedding_similarity")),
    ("LLM judge", ("judge_overall", "judge_accuracy", "judge_completeness", "judge_fluency",
                   "judge_helpfulness", "pairwise_win_rate", "judge_failures")),
    ("Classification and reward", ("accuracy", "precision", "recall", "f1", "reward_pairwise_accuracy")),
    ("Safety", ("safety_hits",)),
)
DASH = "—"


def as_number(value: Any) -> float | None:
    """A finite number (numpy scalars too), else None (missing, NaN, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def format_value(value: Any) -> str:
    """A number in 4 significant digits; other text escaped; missing as a dash."""
    v = as_number(value)
    if v is None:
        return DASH if value is None or isinstance(value, numbers.Real) else escape(str(value))
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def model_names(metrics: dict[str, Any]) -> list[str]:
    return [m for m in MODELS if isinstance(metrics.get(m), dict)]


def metric_groups(metrics: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(title, metric names) for each group with at least one metric present in any model."""
    present = {k for m in model_names(metrics) for k in metrics[m]}
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
            for _, names in metric_groups(metrics) for k in names for m in model_names(metrics)
            if (v := as_number(metrics[m].get(k))) is not None]
    curve_rows = {f"{k}.json": [{"step": s, k: v} for s, v in series_points(curves.get(k))] for k in CURVES}
    return {"metrics_by_model.json": rows, **curve_rows}


def series_points(series: Any) -> list[tuple[int | float, float]]:
    """Finite (step, value) pairs as plain Python numbers, sorted by step; anything else is skipped."""
    pairs = [(as_number(p[0]), as_number(p[1])) for p in series or () if isinstance(p, list | tuple) and len(p) == 2]
    return sorted((int(s) if s.is_integer() else s, v) for s, v in pairs if s is not None and v is not None)
