"""The promotion decision: may a registered candidate replace the production model?

Pure: no registry, no files. The promote step (and ``tunegate registry promote``) reads the
gate and the metrics, calls ``decide_promotion`` under the registry lock, and only then writes
tags. A missing or failed gate never promotes; a candidate that is worse than the current
production model on a compared metric (by more than the allowed margin) never promotes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steps.evaluation.gate import LOWER_IS_BETTER  # one list of metric directions for every gate


@dataclass(frozen=True)
class Thresholds:
    """What the candidate must show against the current production model.

    ``compare`` lists the metrics judged (those neither model has are skipped, so one list
    serves sft, cls and rm stages); ``min_improvement`` is the relative change the candidate
    needs on each of them: 0.0 means "at least as good", 0.01 "1% better", -0.01 tolerates a
    1% regression (noise).
    """

    compare: tuple[str, ...] = ("test_perplexity", "f1", "reward_pairwise_accuracy")
    min_improvement: float = 0.0


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)  # every check, passed or not, in words


def stale_evaluation(evaluated_against: str | None, production: str | None) -> str | None:
    """Why the evaluation cannot judge a promotion now, or None: it must have compared the
    candidate with the production version that is current at promotion time (a concurrent
    promotion or a rollback in between makes it stale)."""
    if evaluated_against == production:
        return None
    return (f"evaluate compared this candidate with production {evaluated_against or 'none'}, but production is now "
            f"{production or 'none'}: re-run evaluate against the current production")


def relative_improvement(metric: str, candidate: float, production: float) -> float:
    """How much better the candidate is, as a fraction of production's value (sign: + is better).

    A production value of 0 makes the fraction meaningless: the plain difference is used.
    """
    gain = production - candidate if metric in LOWER_IS_BETTER else candidate - production
    return gain / abs(production) if production else gain


def decide_promotion(
    gate: Mapping[str, Any] | None,
    candidate_metrics: Mapping[str, Any] | None,
    production_metrics: Mapping[str, Any] | None,
    thresholds: Thresholds,
) -> Decision:
    """Decide whether the candidate may become production.

    Args:
        gate: evaluate's gate.json (``passed``, ``reasons``, ``metrics``) for this candidate;
            None when there is none.
        candidate_metrics: the metrics recorded with the registered candidate version.
        production_metrics: the current production model's metrics, measured by the same evaluate
            run on the same data (see ``stale_evaluation``); None when nothing is in production yet.
        thresholds: which metrics to compare and the relative improvement each needs.
    """
    if not isinstance(gate, Mapping) or "passed" not in gate:
        return Decision(False, ["no gate result: run evaluate (models/evaluate/gate.json) on this candidate first"])
    if gate["passed"] is not True:
        why = "; ".join(map(str, gate.get("reasons") or [])) or "no reason given"
        return Decision(False, [f"gate failed: {why}"])
    if not candidate_metrics:
        return Decision(False, ["the candidate version has no recorded metrics: register it from evaluate's output"])
    stale = [k for k, v in (gate.get("metrics") or {}).items() if not _same(candidate_metrics.get(k), v)]
    if stale:
        return Decision(False, [f"gate.json judged other metrics than this version recorded ({', '.join(sorted(stale))}): "
                                "it belongs to another candidate; re-run evaluate and register"])  # fmt: skip
    reasons = ["gate passed"]
    if production_metrics is None:
        return Decision(True, [*reasons, "no production model yet: the gate decides"])
    failed, compared = False, 0
    for metric in thresholds.compare:
        cand, prod = candidate_metrics.get(metric), production_metrics.get(metric)
        if cand is None and prod is None:
            continue
        if prod is None or not _finite(prod):
            reasons.append(f"{metric}: production has no usable value ({prod}), not compared")
            continue
        if cand is None or not _finite(cand):
            failed = True
            reasons.append(f"{metric}: candidate has {'no' if cand is None else 'a non-finite'} value, production has {prod}")
            continue
        compared += 1
        change = relative_improvement(metric, float(cand), float(prod))
        ok = change >= thresholds.min_improvement
        failed |= not ok
        direction = "lower" if metric in LOWER_IS_BETTER else "higher"
        reasons.append(f"{metric} ({direction} is better): candidate {cand:.4g} vs production {prod:.4g}, "
                       f"change {change:+.2%} {'>=' if ok else '<'} required {thresholds.min_improvement:+.2%}")  # fmt: skip
    if not compared and not failed:
        reasons.append(f"no metric of {list(thresholds.compare)} in common with production: the gate decides")
    return Decision(not failed, reasons)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _same(a: Any, b: Any) -> bool:
    """Equal, counting NaN as equal to NaN (a metric that failed to compute is NaN in both records)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
