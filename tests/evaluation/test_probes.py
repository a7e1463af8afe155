"""steps/evaluation/probes.py: every check kind on real answers, the suite loader's errors, pass rates and regressions."""

from __future__ import annotations

import re

import pytest

from steps.evaluation.probes import Probe, ProbeError, load_probes, outcome, pass_rate, probe_rows, regressions
from tests.helpers import ROOT


def probe(**expect) -> Probe:
    return Probe("p", ({"role": "user", "content": "q"},), expect)


@pytest.mark.parametrize(("expect", "good", "bad"), [
    ({"contains_any": ["Tessa", "tunegate"]}, "I'm TESSA.", "I'm SmolLM."),
    ({"contains_all": ["Preset", "Warm"]}, "Hold preset and warm for 5 s.", "Hold Preset for 5 s."),
    ({"not_contains": ["ChatGPT"]}, "I'm Tessa.", "I am chatgpt."),
    ({"regex": r"\b(2|two)[- ]years?\b"}, "It has a two-year warranty.", "It has 20 years."),
    ({"equals": "Yes"}, "  yes ", "Yes, of course."),
    ({"max_length": 10}, "Short.", "Far longer than ten characters."),
    ({"json_valid": True}, '{"a": 1}', "{'a': 1}"),
])  # fmt: skip
def test_each_text_check_passes_a_good_answer_and_fails_a_bad_one(expect, good, bad):
    assert outcome(probe(**expect), good).passed is True
    failed = outcome(probe(**expect), bad)
    assert failed.passed is False and len(failed.failed) == 1


def test_every_check_must_hold():
    p = probe(contains_any=["Tessa"], max_length=12)
    assert outcome(p, "I'm Tessa.").passed is True
    assert outcome(p, "I'm Tessa, an assistant.").failed == ("is 24 characters, over 12",)


def test_similarity_and_judge_checks_use_the_scores_given():
    p = probe(similar_to={"reference": "It holds 1.7 litres.", "min": 0.7})
    assert outcome(p, "1.7 L", similarity=0.81).passed is True
    assert outcome(p, "1.7 L", similarity=0.5).passed is False
    assert outcome(p, "1.7 L").passed is False  # no similarity computed: not passed
    j = probe(judge={"rubric": "says 1.7 litres", "min_score": 4})
    assert outcome(j, "x", judge_score=5, judge_trusted=True).passed is True
    assert outcome(j, "x", judge_score=2, judge_trusted=True).passed is False
    assert outcome(j, "x", judge_score=5, judge_trusted=False).passed is None  # untrusted judge: undecided


def test_pass_rate_counts_decided_probes_and_regressions_compare_with_production():
    c = [outcome(probe(equals="a"), "a"), outcome(probe(equals="a"), "b")]
    c = [c[0], c[1].__class__("q", "b", False, ("x",))]
    prod = [c[0].__class__("p", "a", True, ()), c[0].__class__("q", "a", True, ())]
    assert pass_rate(c) == 0.5 and pass_rate([]) is None
    assert regressions(c, prod) == ["q"]
    rows = probe_rows({"candidate": c, "production": prod})
    assert rows[1] == {"id": "q", "candidate": {"answer": "b", "passed": False, "failed": ["x"]},
                       "production": {"answer": "a", "passed": True, "failed": []}}  # fmt: skip


def test_the_demo_suite_loads_and_its_ids_are_unique():
    probes = load_probes(ROOT / "demo" / "probes.yaml")
    assert len(probes) >= 20 and len({p.id for p in probes}) == len(probes)
    assert all(p.messages[-1]["role"] == "user" for p in probes)


@pytest.mark.parametrize(("text", "message"), [
    ("probes: []", "non-empty list under 'probes:'"),
    ("probes: [{prompt: hi, expect: {equals: a}}]", "probe 0: field id"),
    ("probes: [{id: a, prompt: hi, expect: {contains: [x]}}]", "probe 0 (a): expect.contains: unknown check"),
    ("probes: [{id: a, prompt: hi, expect: {regex: '('}}]", "expect.regex: a valid regular expression"),
    ("probes: [{id: a, prompt: hi}]", "probe 0 (a): field expect"),
    ("probes: [{id: a, prompt: hi, messages: [], expect: {equals: a}}]", "exactly one of prompt"),
    ("probes: [{id: a, prompt: hi, expect: {equals: a}}, {id: a, prompt: ho, expect: {equals: b}}]", "id repeats"),
    ("probes: [{id: a, prompt: hi, expect: {similar_to: {reference: x}}}]", "expect.similar_to"),
])  # fmt: skip
def test_a_bad_suite_names_the_file_the_probe_the_field_and_the_fix(tmp_path, text, message):
    path = tmp_path / "probes.yaml"
    path.write_text(text)
    with pytest.raises(ProbeError, match=re.escape(message)) as err:
        load_probes(path)
    assert str(path) in str(err.value)


def test_a_missing_suite_says_what_to_do(tmp_path):
    with pytest.raises(ProbeError, match="set probes: null"):
        load_probes(tmp_path / "none.yaml")
