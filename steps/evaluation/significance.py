"""Paired bootstrap confidence intervals for the gate's comparisons, and the items a gain needs.

Every model answers the same items, so a comparison resamples items, not models: each resample
draws item indices with replacement and recomputes both models' metric on the same draw
(``scipy.stats.bootstrap`` with ``paired=True``, seeded). A metric is aggregated the way its
point value is: a mean of per-item values, or, for perplexity, exp(sum NLL / sum tokens) over the
items' (NLL, token count) pairs. The interval is of the relative gain (gate.relative_gain), so
a check "gain >= need" passes only when the interval's lower end clears ``need``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

POWER = 0.8  # the chance of seeing a real gain of the configured size: the usual 80%
RESAMPLES = 2000


@dataclasses.dataclass(frozen=True)
class Interval:
    """A two-sided interval of a relative gain at ``confidence``, from ``n`` paired items."""

    point: float
    low: float
    high: float
    confidence: float
    n: int
    standard_error: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in dataclasses.asdict(self).items()}


def aggregate(metric: str, items: np.ndarray) -> np.ndarray:
    """The metric over the last axis of ``items`` as its point value is computed.

    Perplexities take ``items`` of shape (2, ..., n): NLL sums and token counts, exp(sum NLL / sum
    tokens); every other metric is the mean of its per-item values.
    """
    if metric.endswith("perplexity"):
        return np.exp(items[0].sum(axis=-1) / np.maximum(items[1].sum(axis=-1), 1))
    return items.mean(axis=-1)


def paired_interval(metric: str, candidate: Sequence[Any], reference: Sequence[Any], gain: Callable[[str, float, float], float],
                    confidence: float = 0.95, seed: int = 0, resamples: int = RESAMPLES) -> Interval | None:  # fmt: skip
    """The ``confidence`` interval of ``gain(metric, candidate, reference)`` over paired items.

    Args:
        metric: the metric's name (perplexities take (NLL, tokens) per item, the rest one number).
        candidate, reference: per-item values in the same item order (None for an item not scored).
        gain: the relative-gain function of the gate (signed by the metric's direction).
    Returns:
        The interval, or None with fewer than 2 items both models were scored on.
    """
    from scipy.stats import bootstrap

    pairs = [(c, r) for c, r in zip(candidate, reference) if c is not None and r is not None]
    if len(pairs) < 2:
        return None
    # Items on the last axis: (n,), or (2, n) for perplexity's (NLL, tokens).
    cand = np.moveaxis(np.asarray([c for c, _ in pairs], dtype=float), 0, -1)
    ref = np.moveaxis(np.asarray([r for _, r in pairs], dtype=float), 0, -1)
    relative = np.vectorize(lambda a, b: gain(metric, float(a), float(b)), otypes=[float])

    def stat(c: np.ndarray, r: np.ndarray, axis: int = -1) -> np.ndarray:
        return relative(aggregate(metric, c), aggregate(metric, r))

    point = float(stat(cand, ref))
    res = None
    for method in ("BCa", "percentile"):  # BCa is undefined when resamples are degenerate (all items equal)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((cand, ref), stat, paired=True, vectorized=True, axis=-1, confidence_level=confidence,
                            n_resamples=resamples, method=method, random_state=np.random.default_rng(seed))  # fmt: skip
        if np.all(np.isfinite(res.confidence_interval)):
            break
    low, high = (float(x) if np.isfinite(x) else point for x in res.confidence_interval)
    se = float(res.standard_error) if np.isfinite(res.standard_error) else 0.0
    return Interval(point, min(low, point), max(high, point), confidence, len(pairs), se)


def items_needed(interval: Interval, effect: float) -> int | None:
    """Items for a paired test at the interval's confidence to detect a true gain of ``effect`` 80% of the time.

    From the bootstrap standard error at n items, which shrinks as 1/sqrt(n):
    n' = n * ((z_conf + z_power) * se / effect)^2. None when ``effect`` is 0 (nothing to detect).
    """
    from scipy.stats import norm

    if not effect:
        return None
    if interval.standard_error == 0:
        return interval.n
    z = norm.ppf(0.5 + interval.confidence / 2) + norm.ppf(POWER)
    return max(2, math.ceil(interval.n * (z * interval.standard_error / abs(effect)) ** 2))
