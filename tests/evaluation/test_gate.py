"""The evaluation gate decides on the metric table alone, and says why."""

from __future__ import annotations

from steps.evaluation.gate import GateThresholds, decide, relative_gain

BASE = {"test_perplexity": 10.0, "heldout_perplexity": 8.0, "rougeL": 0.20, "safety_hits": 0}
GOOD = {"test_perplexity": 7.0, "heldout_perplexity": 8.2, "rougeL": 0.30, "safety_hits": 0}
RULES = GateThresholds(
    floors={"rougeL": 0.1, "test_perplexity": 50.0},
    min_gain_vs_base={"test_perplexity": 0.02, "rougeL": 0.0},
    min_gain_vs_production={"test_perplexity": 0.0},
    max_forgetting={"heldout_perplexity": 0.10},
    max_safety_hits=0,
)


def test_relative_gain_respects_direction():
    assert relative_gain("test_perplexity", 9.0, 10.0) == 0.1
    assert relative_gain("rougeL", 0.3, 0.2) > 0
    assert relative_gain("rougeL", 0.1, 0.2) == -0.5


def test_better_candidate_passes_with_every_check_listed():
    d = decide({"candidate": GOOD, "base": BASE, "production": None}, RULES)
    assert d.passed and d.reasons == []
    assert {c.name for c in d.checks} == {"floor", "vs_base", "forgetting", "safety"}  # no production: skipped


def test_candidate_worse_than_base_fails():
    worse = dict(GOOD, test_perplexity=11.0, rougeL=0.15)
    d = decide({"candidate": worse, "base": BASE}, RULES)
    assert not d.passed
    assert any("vs_base: test_perplexity" in r for r in d.reasons)
    assert any("vs_base: rougeL" in r for r in d.reasons)


def test_forgetting_over_threshold_fails():
    d = decide({"candidate": dict(GOOD, heldout_perplexity=9.2), "base": BASE}, RULES)  # 15% worse
    assert not d.passed
    [reason] = d.reasons
    assert reason.startswith("forgetting: heldout_perplexity") and "15.0% worse, allowed 10.0%" in reason


def test_worse_than_production_fails_and_safety_hits_fail():
    prod = dict(GOOD, test_perplexity=6.0)
    d = decide({"candidate": dict(GOOD, safety_hits=2), "base": BASE, "production": prod}, RULES)
    assert not d.passed
    assert any(r.startswith("vs_production: test_perplexity") for r in d.reasons)
    assert any(r.startswith("safety: 2 generated outputs") for r in d.reasons)


def test_unmeasured_metric_fails_rather_than_skips():
    cand = {k: v for k, v in GOOD.items() if k != "rougeL"}
    d = decide({"candidate": cand, "base": BASE}, RULES)
    assert not d.passed
    assert any("rougeL of the candidate was not measured" in r for r in d.reasons)
    assert decide({"candidate": GOOD, "base": BASE}, GateThresholds(floors={"judge_overall": 3})).passed is False
