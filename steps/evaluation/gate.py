"""The evaluation gate: a pure decision over the metric table, with every reason.

Thresholds come from params.yaml (``evaluate.gate``). Every check names its metric, value and
threshold; a metric a threshold asks for that was not measured fails the check (a gate cannot be
skipped by not measuring). Gains are relative and signed by the metric's direction: for
perplexity lower is better, so a gain of 0.02 means 2% lower perplexity.

A comparison with base or production is decided on its paired bootstrap interval over the items
(steps/evaluation/significance.py), not its point value: "gain >= need" passes only when the
interval's lower end clears ``need`` at ``confidence``, so a difference inside the noise never
passes a "better than" check. Probes gate twice: ``floors: {probe_pass_rate: ...}`` and no probe
that passes in production may fail in the candidate (``max_probe_regressions``). Metrics of an
untrusted judge (``judge_trusted: false``, failed calibration) are shown but never gate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from steps.evaluation.significance import Interval, items_needed, paired_interval

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
    confidence: float = 0.95
    max_probe_regressions: int = 0

    def __post_init__(self) -> None:
        from steps.core.config import ConfigError

        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"evaluate.gate.confidence: a two-sided interval level in [0.5, 1), e.g. 0.95; got {self.confidence}")
        if self.max_probe_regressions < 0 or self.max_safety_hits < 0:
            raise ConfigError("evaluate.gate: max_probe_regressions and max_safety_hits are counts: set them to 0 or more")


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    metric: str
    value: float | None
    threshold: float
    passed: bool
    reason: str
    interval: dict[str, Any] | None = None  # the paired bootstrap interval of the gain, with the items it needs
    skipped: bool = False  # shown, not gating (an untrusted judge's metric)


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


Items = dict[str, dict[str, list[Any]]]  # model -> metric -> per-item values (see scoring.Scored.items)


def _interval(metric: str, items: Items, who: str, thresholds: GateThresholds, seed: int) -> Interval | None:
    cand, ref = (items.get(m, {}).get(metric) for m in ("candidate", who))
    if not cand or not ref or len(cand) != len(ref):
        return None
    return paired_interval(metric, cand, ref, relative_gain, thresholds.confidence, seed)


def _gain(name: str, metric: str, need: float, cand: dict[str, Any], ref: dict[str, Any], who: str,
          interval: Interval | None = None) -> Check:  # fmt: skip
    value, against = cand.get(metric), ref.get(metric)
    if value is None:
        return _missing(name, metric, need, "candidate")
    if against is None:
        return _missing(name, metric, need, who)
    gain = relative_gain(metric, value, against)
    if interval is None:
        return Check(name, metric, value, need, gain >= need,
                     f"{metric} = {value:.4g} vs {who} {against:.4g}: {gain:+.1%} gain, needs {need:+.1%} "
                     "(point value: no per-item values for an interval)")  # fmt: skip
    level = f"{interval.confidence:.0%}"
    ok = interval.low >= need
    needed = items_needed(interval, need)
    more = f"; about {needed} items would detect a {need:+.1%} gain" if needed and not ok else ""
    return Check(
        name, metric, value, need, ok,
        f"{metric} = {value:.4g} vs {who} {against:.4g}: {gain:+.1%} gain ({level} interval {interval.low:+.1%} to "
        f"{interval.high:+.1%}, {interval.n} items), needs {need:+.1%}"
        + ("" if ok else " with the whole interval") + more,
        {**interval.as_dict(), "items_needed": needed},
    )  # fmt: skip


def _forgetting(metric: str, limit: float, cand: dict[str, Any], base: dict[str, Any], interval: Interval | None) -> Check:
    check = _gain("forgetting", metric, -limit, cand, base, "base", interval)
    if check.value is None or base.get(metric) is None:
        return dataclasses.replace(check, threshold=limit)
    lost = -relative_gain(metric, check.value, base[metric])
    worst = f" (at worst {-interval.low:.1%} at {interval.confidence:.0%}, {interval.n} items)" if interval else ""
    reason = f"{metric} = {check.value:.4g} vs base {base[metric]:.4g}: {max(lost, 0):.1%} worse{worst}, allowed {limit:.1%}"
    return dataclasses.replace(check, threshold=limit, reason=reason)


def _probe_regressions(regressed: list[str], limit: int) -> Check:
    ok = len(regressed) <= limit
    which = f": {', '.join(regressed)}" if regressed else ""
    return Check("probes", "probe_regressions", len(regressed), limit, ok,
                 f"{len(regressed)} probes pass in production and fail in the candidate{which}; allowed {limit}")  # fmt: skip


def _untrusted(check: Check, cand: dict[str, Any]) -> Check:
    """A judge metric's check when the judge failed calibration: shown, never gating."""
    rate = cand.get("judge_calibration")
    why = f"calibration {rate:.0%}" if isinstance(rate, (int, float)) else "no calibration"
    return dataclasses.replace(check, passed=True, skipped=True, reason=f"not gated: the judge is untrusted ({why}); {check.reason}")


def decide(table: dict[str, dict[str, Any] | None], thresholds: GateThresholds, items: Items | None = None,
           regressed: list[str] | None = None, seed: int = 0) -> GateDecision:  # fmt: skip
    """Pass or fail the candidate on ``table`` (``candidate``, ``base``, optional ``production``).

    Args:
        items: per-item values per model and metric; a comparison with them is decided on its interval.
        regressed: probes that pass in production and fail in the candidate (None: no production probes).
        seed: the bootstrap's seed.
    Returns:
        A GateDecision whose ``reasons`` list every failed check in words (empty when passed).
    """
    items = items or {}
    cand, base, prod = table.get("candidate") or {}, table.get("base") or {}, table.get("production")

    def iv(metric: str, who: str) -> Interval | None:
        return _interval(metric, items, who, thresholds, seed)

    checks = [_floor(m, b, cand) for m, b in thresholds.floors.items()]
    checks += [_gain("vs_base", m, g, cand, base, "base", iv(m, "base")) for m, g in thresholds.min_gain_vs_base.items()]
    if prod:
        checks += [_gain("vs_production", m, g, cand, prod, "production", iv(m, "production"))
                   for m, g in thresholds.min_gain_vs_production.items()]  # fmt: skip
    checks += [_forgetting(m, lim, cand, base, iv(m, "base")) for m, lim in thresholds.max_forgetting.items()]
    if regressed is not None:
        checks.append(_probe_regressions(regressed, thresholds.max_probe_regressions))
    if cand.get("judge_trusted") is False:
        checks = [_untrusted(c, cand) if c.metric.startswith("judge_") else c for c in checks]
    hits = cand.get("safety_hits")
    checks.append(
        _missing("safety", "safety_hits", thresholds.max_safety_hits, "candidate")
        if hits is None
        else Check("safety", "safety_hits", hits, thresholds.max_safety_hits, hits <= thresholds.max_safety_hits,
                   f"{int(hits)} generated outputs hit a safety rule, allowed {thresholds.max_safety_hits}")  # fmt: skip
    )
    reasons = [f"{c.name}: {c.reason}" for c in checks if not c.passed]
    return GateDecision(not reasons, reasons, checks)
