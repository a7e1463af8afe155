"""The evaluation gate: a pure decision over the metric table, with every reason.

Thresholds come from params.yaml (``evaluate.gate``). Every check names its metric, value and
threshold; a metric a threshold asks for that was not measured fails the check (a gate cannot be
skipped by not measuring). Gains are relative and signed by the metric's direction: for
perplexity lower is better, so a gain of 0.02 means 2% lower perplexity.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Metrics where a smaller value is better; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset(
    {"test_perplexity", "heldout_perplexity", "safety_hits", "judge_failures", "eval_loss", "train_loss"}
)


@dataclasses.dataclass(frozen=True)
class GateThresholds:
    """What a candidate must reach. Keys are metric names of the table (see metrics.json).

    Attributes:
        floors: absolute bounds: a minimum for higher-is-better metrics, a maximum for lower-is-better ones.
        min_gain_vs_base: minimum relative gain over the base model (0.0: no worse; negative: a tolerated loss).
        min_gain_vs_production: the same against the current production model (skipped when there is none).
        max_forgetting: maximum relative loss against the base on general held-out metrics.
        max_safety_hits: generated outputs allowed to hit a safety rule.
    """

    floors: dict[str, float] = dataclasses.field(default_factory=dict)
    min_gain_vs_base: dict[str, float] = dataclasses.field(default_factory=dict)
    min_gain_vs_production: dict[str, float] = dataclasses.field(default_factory=dict)
    max_forgetting: dict[str, float] = dataclasses.field(default_factory=dict)
    max_safety_hits: int = 0


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    metric: str
    value: float | None
    threshold: float
    passed: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]
    checks: list[Check]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [dataclasses.asdict(c) for c in self.checks]}


def relative_gain(metric: str, value: float, reference: float) -> float:
    """How much better ``value`` is than ``reference``, as a fraction of ``|reference|`` (signed by direction)."""
    diff = reference - value if metric in LOWER_IS_BETTER else value - reference
    return diff / abs(reference) if reference else (0.0 if diff == 0 else float("inf") if diff > 0 else float("-inf"))


def _missing(name: str, metric: str, threshold: float, who: str) -> Check:
    return Check(name, metric, None, threshold, False, f"{metric} of the {who} was not measured; the gate needs it")


def _floor(metric: str, bound: float, cand: dict[str, Any]) -> Check:
    value = cand.get(metric)
    if value is None:
        return _missing("floor", metric, bound, "candidate")
    low = metric in LOWER_IS_BETTER
    ok = value <= bound if low else value >= bound
    word = "at most" if low else "at least"
    return Check("floor", metric, value, bound, ok, f"{metric} = {value:.4g}, must be {word} {bound:g}")


def _gain(name: str, metric: str, need: float, cand: dict[str, Any], ref: dict[str, Any], who: str) -> Check:
    value, against = cand.get(metric), ref.get(metric)
    if value is None:
        return _missing(name, metric, need, "candidate")
    if against is None:
        return _missing(name, metric, need, who)
    gain = relative_gain(metric, value, against)
    ok = gain >= need
    return Check(
        name, metric, value, need, ok,
        f"{metric} = {value:.4g} vs {who} {against:.4g}: {gain:+.1%} gain, needs {need:+.1%}",
    )  # fmt: skip


def _forgetting(metric: str, limit: float, cand: dict[str, Any], base: dict[str, Any]) -> Check:
    check = _gain("forgetting", metric, -limit, cand, base, "base")
    if check.value is None or base.get(metric) is None:
        return dataclasses.replace(check, threshold=limit)
    lost = -relative_gain(metric, check.value, base[metric])
    reason = f"{metric} = {check.value:.4g} vs base {base[metric]:.4g}: {max(lost, 0):.1%} worse, allowed {limit:.1%}"
    return dataclasses.replace(check, threshold=limit, reason=reason)


def decide(table: dict[str, dict[str, Any] | None], thresholds: GateThresholds) -> GateDecision:
    """Pass or fail the candidate on ``table`` (``candidate``, ``base``, optional ``production``).

    Returns:
        A GateDecision whose ``reasons`` list every failed check in words (empty when passed).
    """
    cand, base, prod = table.get("candidate") or {}, table.get("base") or {}, table.get("production")
    checks = [_floor(m, b, cand) for m, b in thresholds.floors.items()]
    checks += [_gain("vs_base", m, g, cand, base, "base") for m, g in thresholds.min_gain_vs_base.items()]
    if prod:
        checks += [_gain("vs_production", m, g, cand, prod, "production") for m, g in thresholds.min_gain_vs_production.items()]  # fmt: skip
    checks += [_forgetting(m, lim, cand, base) for m, lim in thresholds.max_forgetting.items()]
    hits = cand.get("safety_hits")
    checks.append(
        _missing("safety", "safety_hits", thresholds.max_safety_hits, "candidate")
        if hits is None
        else Check("safety", "safety_hits", hits, thresholds.max_safety_hits, hits <= thresholds.max_safety_hits,
                   f"{int(hits)} generated outputs hit a safety rule, allowed {thresholds.max_safety_hits}")  # fmt: skip
    )
    reasons = [f"{c.name}: {c.reason}" for c in checks if not c.passed]
    return GateDecision(not reasons, reasons, checks)
