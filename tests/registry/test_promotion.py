"""The promotion decision (pure): a failed or missing gate never promotes; production is never replaced by worse."""

from __future__ import annotations

import math

import pytest

from steps.registry.promotion import Thresholds, decide_promotion, relative_improvement, stale_evaluation
from steps.registry.state import next_version, parse_annotation, production_stack

GATE = {"passed": True, "reasons": ["all checks passed"], "metrics": {"test_perplexity": 10.0}}
T = Thresholds()


@pytest.mark.parametrize("gate", [None, {}, {"reasons": []}, "passed"])
def test_missing_gate_never_promotes(gate):
    d = decide_promotion(gate, {"test_perplexity": 1.0}, None, T)
    assert not d.promote and "no gate result" in d.reasons[0]


@pytest.mark.parametrize("passed", [False, None, "true", 1])
def test_failed_gate_never_promotes_even_when_better(passed):
    gate = {"passed": passed, "reasons": ["bleu below threshold"]}
    d = decide_promotion(gate, {"test_perplexity": 1.0}, {"test_perplexity": 50.0}, T)
    assert not d.promote
    assert d.reasons == ["gate failed: bleu below threshold"]


def test_gate_for_another_candidate_is_refused():
    d = decide_promotion(GATE, {"test_perplexity": 9.0}, None, T)
    assert not d.promote and "belongs to another candidate" in d.reasons[0] and "test_perplexity" in d.reasons[0]


def test_nan_in_both_records_is_the_same_candidate():
    gate = {"passed": True, "metrics": {"test_perplexity": 10.0, "bleu": math.nan}}
    assert decide_promotion(gate, {"test_perplexity": 10.0, "bleu": math.nan}, None, T).promote


def test_no_metrics_recorded_is_refused():
    assert not decide_promotion({"passed": True}, {}, None, T).promote


def test_first_production_needs_only_the_gate():
    d = decide_promotion(GATE, {"test_perplexity": 10.0}, None, T)
    assert d.promote and d.reasons == ["gate passed", "no production model yet: the gate decides"]


def test_lower_is_better_metric_compares_the_right_way():
    better = decide_promotion(GATE, {"test_perplexity": 10.0}, {"test_perplexity": 12.0}, T)
    worse = decide_promotion(GATE, {"test_perplexity": 10.0}, {"test_perplexity": 9.0}, T)
    assert better.promote and "+16.67%" in better.reasons[1]
    assert not worse.promote and "test_perplexity (lower is better): candidate 10 vs production 9" in worse.reasons[1]


def test_higher_is_better_metric_and_min_improvement():
    gate = {"passed": True}
    cand, prod = {"f1": 0.81}, {"f1": 0.80}
    assert decide_promotion(gate, cand, prod, Thresholds(compare=("f1",))).promote
    assert not decide_promotion(gate, cand, prod, Thresholds(compare=("f1",), min_improvement=0.05)).promote
    # a tolerated regression: -2% allowed, candidate is 1.25% worse
    assert decide_promotion(gate, {"f1": 0.79}, prod, Thresholds(compare=("f1",), min_improvement=-0.02)).promote


def test_metric_missing_from_candidate_but_present_in_production_refuses():
    d = decide_promotion({"passed": True}, {"bleu": 0.3}, {"test_perplexity": 9.0}, T)
    assert not d.promote and any("candidate has no value" in r for r in d.reasons)


def test_non_finite_candidate_value_refuses_and_unknown_production_value_is_skipped():
    assert not decide_promotion({"passed": True}, {"test_perplexity": math.nan}, {"test_perplexity": 9.0}, T).promote
    d = decide_promotion({"passed": True}, {"test_perplexity": 9.0}, {"test_perplexity": None, "x": 1}, T)
    assert d.promote and any("no metric of" in r for r in d.reasons)


def test_relative_improvement_with_zero_production_uses_the_difference():
    assert relative_improvement("safety_hits", 0, 0) == 0
    assert relative_improvement("f1", 0.5, 0.0) == 0.5
    assert relative_improvement("safety_hits", 2, 0) == -2


def test_next_version_bumps_the_highest():
    assert next_version([], "minor") == "v0.1.0"
    assert next_version(["v0.1.0", "v0.3.0", "v0.2.0", "abc123"], "minor") == "v0.4.0"
    assert next_version(["v0.1.0"], "patch") == "v0.1.1"
    assert next_version(["v0.9.2"], "major") == "v1.0.0"
    with pytest.raises(ValueError, match="register.bump"):
        next_version([], "micro")


def test_production_stack_replays_promotions_and_rollbacks():
    assert production_stack([]) == []
    moves = [("v1", "promote"), ("v2", "promote"), ("v3", "promote"), ("v2", "rollback")]
    assert production_stack(moves) == ["v1", "v2"]
    assert production_stack([*moves, ("v1", "rollback"), ("v4", "promote")]) == ["v1", "v4"]
    assert production_stack([("v1", "promote"), ("v1", "promote")]) == ["v1"]


def test_annotation_round_trip_and_hand_written_tags():
    from steps.registry.state import annotate

    assert parse_annotation(annotate("register x v0.1.0", {"a": [1, 2]})) == {"a": [1, 2]}
    assert parse_annotation("Registering artifact x version v0.1.0") == {}
    assert parse_annotation("summary\n\nnot json") == {}


def test_an_evaluation_against_another_production_is_stale():
    assert stale_evaluation(None, None) is None and stale_evaluation("v0.1.0", "v0.1.0") is None
    assert "re-run evaluate" in stale_evaluation(None, "v0.1.0")
    assert "production v0.1.0, but production is now v0.2.0" in stale_evaluation("v0.1.0", "v0.2.0")
