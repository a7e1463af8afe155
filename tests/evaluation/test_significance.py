"""The paired bootstrap gate: a difference inside the noise does not pass, a clear one does (steps/evaluation/significance.py)."""

from __future__ import annotations

import math

import numpy as np

from steps.evaluation.gate import GateThresholds, decide, relative_gain
from steps.evaluation.significance import items_needed, paired_interval
from steps.evaluation.summary import summary


def _scores(seed: int, shift: float, noise: float, n: int = 24):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.1, 0.5, n)
    return list(base + shift + rng.normal(0, noise, n)), list(base)


def test_the_interval_is_seeded_and_brackets_the_point():
    cand, base = _scores(0, 0.01, 0.05)
    a, b = (paired_interval("rougeL", cand, base, relative_gain, seed=7) for _ in range(2))
    assert a == b and a.low <= a.point <= a.high and a.n == 24


def test_perplexity_aggregates_nll_and_tokens_like_its_point_value():
    base = [(30.0 + k, 10) for k in range(12)]
    cand = [(nll * 0.8, n) for nll, n in base]
    iv = paired_interval("test_perplexity", cand, base, relative_gain)
    point = relative_gain("test_perplexity", math.exp(sum(c for c, _ in cand) / 120), math.exp(sum(b for b, _ in base) / 120))
    assert iv.point == point and iv.low > 0.3


def _table(cand: list[float], base: list[float]) -> tuple[dict, dict]:
    table = {"candidate": {"rougeL": float(np.mean(cand)), "safety_hits": 0}, "base": {"rougeL": float(np.mean(base))}}
    return table, {"candidate": {"rougeL": cand}, "base": {"rougeL": base}}


def test_a_gain_inside_the_noise_fails_and_a_clear_one_passes():
    gate = GateThresholds(min_gain_vs_base={"rougeL": 0.0})
    noisy = _table(*_scores(2, 0.01, 0.06))  # a point gain of +4.3%, an interval that spans 0
    decision = decide(noisy[0], gate, noisy[1])
    check = decision.checks[0]
    assert check.value > noisy[0]["base"]["rougeL"] and not decision.passed
    assert check.interval["low"] < 0 < check.interval["high"] and "with the whole interval" in check.reason
    clear = _table(*_scores(1, 0.1, 0.02))
    decision = decide(clear[0], gate, clear[1])
    assert decision.passed and decision.checks[0].interval["low"] > 0


def test_without_items_the_gate_falls_back_to_the_point_and_says_so():
    table, _ = _table(*_scores(2, 0.01, 0.06))
    check = decide(table, GateThresholds(min_gain_vs_base={"rougeL": 0.0})).checks[0]
    assert check.passed and check.interval is None and "point value" in check.reason


def test_items_needed_grows_as_the_gain_to_detect_shrinks():
    iv = paired_interval("rougeL", *_scores(2, 0.01, 0.05), relative_gain)
    assert items_needed(iv, 0.0) is None
    assert items_needed(iv, 0.01) > items_needed(iv, 0.05) > 1


def test_probe_regressions_and_an_untrusted_judge():
    table = {"candidate": {"safety_hits": 0, "judge_score": 1.0, "judge_trusted": False, "judge_calibration": 0.4},
             "base": {"judge_score": 4.0}, "production": {}}  # fmt: skip
    gate = GateThresholds(min_gain_vs_base={"judge_score": 0.0})
    decision = decide(table, gate, regressed=["e3"])
    judge = next(c for c in decision.checks if c.metric == "judge_score")
    assert judge.skipped and judge.passed and "untrusted" in judge.reason
    assert decision.reasons == ["probes: 1 probes pass in production and fail in the candidate: e3; allowed 0"]


def test_the_summary_says_what_changed_and_why():
    clear = _table(*_scores(1, 0.1, 0.02))
    decision = decide(clear[0], GateThresholds(min_gain_vs_base={"rougeL": 0.0}), clear[1])
    lines = summary(clear[0], decision, {})
    assert lines[0].startswith("Significant differences: rougeL better than base")
    assert lines[-1] == "The gate passed: all 2 checks held."
