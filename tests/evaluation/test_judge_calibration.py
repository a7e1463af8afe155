"""A judge trusted only when it has earned it: schema-constrained replies, calibration pairs, the trust rule.

Local judges decode under the reply's JSON schema (a random tiny model still answers with what the
strict parser accepts); endpoint judges are asked for structured outputs. Before its scores count, a
judge must prefer the reference over a corrupted answer on ``min_agreement`` of seeded pairs; an
untrusted judge's scores never reach the metric table.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from steps.core.config import ConfigError, load_section
from steps.evaluation.config import EvaluateConfig
from steps.evaluation.judge.calibration import (
    CORRUPTIONS,
    CalibrationConfig,
    agreement,
    build_pairs,
    corrupt,
    is_trusted,
    out_of_reach,
)
from steps.evaluation.judge.client import JudgeConfig, local_chat, openai_chat, response_format
from steps.evaluation.judge.grammar import REASON_CHARS, bounded_schema
from steps.evaluation.judge.parse import CRITERIA, JUDGEMENT, VERDICT, pairwise_prompt, pointwise_prompt
from steps.evaluation.judge.verdicts import judge_calibration
from steps.evaluation.measure import EvalSet, Item
from steps.evaluation.scoring import judge_models
from tests.openai_server import MODEL, OpenAIServer

FACTS = [
    ("How long is the warranty?", "The warranty lasts 2 years from the date of purchase."),
    ("Who are you?", "I am Tessa, the support assistant of Brightline."),
    ("My kettle shows E3. What should I do?", "E3 means the kettle is empty: fill it above the 0.5 litre mark."),
    ("Where do you ship from?", "We ship every order from our warehouse in Leeds within 3 days."),
    ("Can I return an opened item?", "Yes, opened items can be returned within 30 days with the receipt."),
    ("What is the support email?", "Write to help@brightline.example and we answer within one day."),
    ("Does the toaster have a timer?", "The toaster has a dial timer from 1 to 6 minutes."),
    ("Which colours does the kettle come in?", "The kettle comes in white, black and sage green."),
]
ITEMS = [{"id": f"q{k}", "question": q, "reference": r} for k, (q, r) in enumerate(FACTS)]


# ---------------------------------------------------------------- schema-constrained replies


def _conversations(n: int) -> list[list[dict[str, str]]]:
    rng = random.Random(0)
    items = [dict(it, answer=rng.choice(FACTS)[1]) for it in ITEMS]
    point = [pointwise_prompt(items[k % len(items)]) for k in range(n)]
    pair = [pairwise_prompt(items[k % len(items)], items[k % len(items)]["reference"], items[-1 - k % len(items)]["answer"])
            for k in range(n)]  # fmt: skip
    return point + pair


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_random_tiny_local_judge_always_replies_what_the_parser_accepts(seed):
    from tests.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    chat = local_chat(tiny_causal_lm(tok, seed=seed), tok, max_new_tokens=8, batch_size=3)  # 8: raised to the schema's need
    conversations = _conversations(3)
    judgements = chat(conversations[:3], JUDGEMENT.schema)
    verdicts = chat(conversations[3:], VERDICT.schema)
    for reply in judgements:
        parsed = JUDGEMENT.parse(reply)
        assert all(parsed[c] in range(1, 6) for c in CRITERIA) and 1 <= len(parsed["reason"]) <= REASON_CHARS
    for reply in verdicts:
        assert VERDICT.parse(reply)["winner"] in ("A", "B", "tie")
    free = chat(conversations[:1], None)  # without a schema it still writes free text
    assert isinstance(free[0], str)


def test_bounded_schema_bounds_free_text_and_knows_the_longest_reply():
    local, longest = bounded_schema(JUDGEMENT.schema, reason_chars=10)
    assert local["properties"]["reason"]["pattern"].endswith("{1,10}$")
    assert local["properties"]["accuracy"] == JUDGEMENT.schema["properties"]["accuracy"]
    widest = {c: 5 for c in CRITERIA} | {"reason": "x" * 10}
    assert longest == len(json.dumps(widest))  # json.dumps' default spacing is the grammar's only spacing
    _, verdict_longest = bounded_schema(VERDICT.schema, reason_chars=10)
    assert verdict_longest == len(json.dumps({"winner": "tie", "reason": "x" * 10}))
    with pytest.raises(ValueError, match="only enums and strings"):
        bounded_schema({"title": "x", "properties": {"score": {"type": "number"}}})


def test_the_schemas_follow_the_strict_parser():
    for fmt, sample in ((JUDGEMENT, {c: 3 for c in CRITERIA} | {"reason": "ok"}), (VERDICT, {"winner": "B", "reason": "ok"})):
        schema = fmt.schema
        assert schema["required"] == list(schema["properties"]) == list(sample) and schema["additionalProperties"] is False
        assert fmt.parse(json.dumps(sample)) == sample


def test_an_endpoint_judge_is_asked_for_structured_outputs():
    with OpenAIServer() as server:
        server.script(then='{"winner": "A", "reason": "x"}')
        chat = openai_chat(server.base_url, MODEL, "k", timeout_s=10, client_retries=0)
        assert chat([[{"role": "user", "content": "which?"}]], VERDICT.schema) == ['{"winner": "A", "reason": "x"}']
        chat([[{"role": "user", "content": "free"}]], None)
        asked, free = (r.body for r in server.requests)
    assert asked["response_format"] == response_format(VERDICT.schema)
    assert asked["response_format"]["json_schema"] == {"name": "verdict", "strict": True, "schema": VERDICT.schema}
    assert "response_format" not in free


# ---------------------------------------------------------------- calibration pairs


def test_pair_building_is_seeded_and_deterministic():
    first, again = build_pairs(ITEMS, 6, seed=7), build_pairs(ITEMS, 6, seed=7)
    assert first == again and len(first) == 6
    assert [p.id for p in first] == sorted((p.id for p in first), key=lambda i: int(i[1:]))  # kept in item order
    assert any(build_pairs(ITEMS, 6, seed=s) != first for s in range(8, 12))  # another seed, other pairs
    for pair in first:
        assert pair.good == pair.reference and pair.bad.split() != pair.good.split() and pair.corruption in CORRUPTIONS
    assert {p.corruption for s in range(6) for p in build_pairs(ITEMS, 8, seed=s)} == set(CORRUPTIONS)


def test_pairs_skip_items_without_a_reference_and_cap_at_n():
    items = [*ITEMS[:3], {"id": "none", "question": "q", "reference": None}, {"id": "blank", "question": "q", "reference": " "}]
    assert {p.id for p in build_pairs(items, 10, seed=1)} == {"q0", "q1", "q2"}
    assert len(build_pairs(ITEMS, 2, seed=1)) == 2
    assert build_pairs([], 5, seed=1) == []


def test_each_corruption_makes_a_wrong_answer_or_none():
    rng = random.Random(3)
    others = [r for _, r in FACTS[1:]]
    warranty = FACTS[0][1]
    numbers = corrupt(warranty, "numbers", others, rng)
    assert numbers != warranty and re.sub(r"\d+", "N", numbers) == re.sub(r"\d+", "N", warranty)
    shuffled = corrupt(warranty, "shuffle", others, rng)
    assert sorted(shuffled.split()) == sorted(warranty.split()) and shuffled != warranty
    assert corrupt(warranty, "other_reference", others, rng) in others
    named = corrupt(FACTS[1][1], "names", others, rng)  # "Tessa", "Brightline" swapped for other names
    assert named != FACTS[1][1] and "Tessa" not in named and named.startswith("I am ")
    assert corrupt("no digits here", "numbers", others, rng) is None
    assert corrupt("too short", "shuffle", others, rng) is None
    assert corrupt("same", "other_reference", ["Same", "  same "], rng) is None  # only copies of itself to offer
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt("x", "typos", others, rng)


# ---------------------------------------------------------------- the trust rule


def test_agreement_counts_unjudged_pairs_against_the_judge():
    assert agreement([True, True, False, None]) == 0.5
    assert agreement([True] * 4) == 1.0
    assert agreement([]) is None


def test_trusted_only_when_every_mode_reaches_the_bar():
    assert is_trusted([0.8], 0.8) and is_trusted([0.9, 1.0], 0.8)
    assert not is_trusted([0.79], 0.8)
    assert not is_trusted([0.9, 0.7], 0.8)  # pairwise fine, pointwise not: untrusted
    assert not is_trusted([None], 0.8) and not is_trusted([], 0.8)  # never trusted without a measurement


def test_asking_stops_once_the_bar_is_out_of_reach():
    assert not out_of_reach([False] * 4, 20, 0.8)  # 16 of 20 still possible
    assert out_of_reach([False] * 5, 20, 0.8)
    assert out_of_reach([True, None, None, False], 10, 0.8) and not out_of_reach([True, True, None], 10, 0.8)  # None: unjudged
    assert not out_of_reach([True] * 10, 10, 0.8) and not out_of_reach([], 10, 1.0)


def test_calibration_config_rejects_bad_values_with_a_sentence():
    cfg = load_section(JudgeConfig, "judge", {"judge": {"calibration": {"pairs": 6, "min_agreement": 0.9}}})
    assert cfg.calibration == CalibrationConfig(pairs=6, min_agreement=0.9)
    with pytest.raises(ConfigError, match=r"calibration.pairs: give a whole number of pairs, 1 or more"):
        CalibrationConfig(pairs=0)
    with pytest.raises(ConfigError, match=r"min_agreement: give a share above 0.5 and at most 1 .* got 0.5"):
        CalibrationConfig(min_agreement=0.5)
    with pytest.raises(ConfigError, match=r"min_agreement: .* got 1.2"):
        CalibrationConfig(min_agreement=1.2)
    with pytest.raises(ConfigError, match="unknown key 'rate'"):
        load_section(JudgeConfig, "judge", {"judge": {"calibration": {"rate": 0.8}}})


def _graded(body) -> str:
    """What a judge that knows the facts replies: the reference is right, anything else wrong."""
    text = body["messages"][1]["content"]
    reference = text.split("Reference answer:\n", 1)[1].split("\n\n", 1)[0]
    if "Answer to grade:" in text:
        score = 5 if text.split("Answer to grade:\n", 1)[1].startswith(reference + "\n") else 1
        return json.dumps({c: score for c in CRITERIA} | {"reason": "checked against the reference"})
    first = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
    return json.dumps({"winner": "A" if first == reference else "B", "reason": "the reference's facts"})


def _fooled(body) -> str:
    """A judge that prefers whatever is not the reference: the opposite of _graded."""
    reply = json.loads(_graded(body))
    if "winner" in reply:
        return json.dumps({"winner": "B" if reply["winner"] == "A" else "A", "reason": "x"})
    return json.dumps({c: 6 - reply[c] for c in CRITERIA} | {"reason": "x"})


@pytest.mark.parametrize("modes", [["pointwise"], ["pairwise"], ["pointwise", "pairwise"]])
def test_a_judge_that_prefers_good_answers_is_trusted_and_one_that_does_not_is_not(modes):
    pairs = build_pairs(ITEMS, 8, seed=0)
    cfg = JudgeConfig(max_examples=1, calibration=CalibrationConfig(pairs=8, min_agreement=0.8))
    with OpenAIServer() as server:
        chat = openai_chat(server.base_url, MODEL, "k", timeout_s=10, client_retries=0)
        server.respond(_graded)
        good = judge_calibration(chat, pairs, cfg, modes, "test")
        server.respond(_fooled)
        bad = judge_calibration(chat, pairs, cfg, modes, "test")
        asked_of_bad = len(server.requests)
        server.script(then="{}")  # never a valid reply: every pair unjudged
        broken = judge_calibration(chat, pairs, JudgeConfig(max_retries=0), modes, "test")
    assert good.trusted and good.agreement == 1.0 and good.by_mode == dict.fromkeys(modes, 1.0) and good.pairs == 8
    assert good.asked == dict.fromkeys(modes, 8)
    assert good.metrics() == {"judge_trusted": True, "judge_calibration": 1.0, "judge_calibration_pairs": 8}
    assert not bad.trusted and bad.agreement == 0.0 and not broken.trusted and broken.agreement == 0.0
    # 4 pairs (one batch of 8 replies) wrong: 0.8 of 8 is out of reach; the next mode is not asked at all
    assert bad.asked == {modes[0]: 4} and asked_of_bad == 8 and bad.metrics()["judge_calibration_pairs"] == 4
    assert "untrusted, models not judged" in bad.summary() and "needs 0.80; stopped once out of reach" in bad.summary()


def test_a_measurement_asks_every_pair_in_every_mode():
    pairs = build_pairs(ITEMS, 8, seed=0)
    calls = []

    def always_a(conversations, schema):
        calls.append(len(conversations))
        return ['{"winner": "A", "reason": "x"}' if "winner" in schema["properties"] else "no"] * len(conversations)

    result = judge_calibration(always_a, pairs, JudgeConfig(max_retries=0), ["pointwise", "pairwise"], stop_early=False)
    assert result.asked == {"pointwise": 8, "pairwise": 8} and result.by_mode == {"pointwise": 0.0, "pairwise": 0.0}
    assert sum(calls) == 8 * 2 * 2 and not result.trusted and "stopped" not in result.summary()


def test_a_judge_that_always_says_a_or_always_gives_the_same_score_is_not_trusted():
    pairs = build_pairs(ITEMS, 8, seed=0)
    always_a = judge_calibration(lambda convs, schema: ['{"winner": "A", "reason": "x"}'] * len(convs), pairs,
                                 JudgeConfig(), ["pairwise"])  # fmt: skip
    same = judge_calibration(lambda convs, schema: [json.dumps(dict.fromkeys(CRITERIA, 4) | {"reason": "x"})] * len(convs),
                             pairs, JudgeConfig(), ["pointwise"])  # fmt: skip
    assert (always_a.agreement, always_a.trusted) == (0.0, False)  # the swap check turns position bias into ties
    assert (same.agreement, same.trusted) == (0.0, False)  # a tie is no preference
    nothing = judge_calibration(lambda convs, schema: [], [], JudgeConfig(), ["pointwise"])
    assert (nothing.agreement, nothing.trusted, nothing.pairs) == (None, False, 0) and "no calibration pairs" in nothing.summary()


# ---------------------------------------------------------------- what reaches the metric table


def _evalset() -> EvalSet:
    test = [Item(it["id"], [{"role": "user", "content": it["question"]}], it["reference"], None) for it in ITEMS]
    return EvalSet(test=test, heldout=[], preference=[], labelled=[])


def _score(respond, mode="both", pairs=6):
    judge = {"base_url": None, "model": MODEL, "mode": mode, "max_examples": 3, "calibration": {"pairs": pairs}}
    outputs = {name: {"test": [r for _, r in FACTS], "heldout": []} for name in ("candidate", "base", "production")}
    table = {name: {"rougeL": 0.5} for name in outputs}
    with OpenAIServer() as server:
        judge["base_url"] = server.base_url
        cfg = load_section(EvaluateConfig, "evaluate", {"evaluate": {"judge": judge}})
        server.respond(respond)
        description = judge_models(cfg, _evalset(), outputs, table, base=(None, None))
        asked = len(server.requests)
    return table, description, asked


def test_an_untrusted_judge_never_judges_and_its_scores_never_reach_the_table_as_trusted():
    table, description, asked = _score(_fooled)
    assert asked == 4 * 2  # calibration only, and only until 0.8 of 6 pairs was out of reach: 4 pairs, good and bad
    for row in table.values():
        assert row["judge_trusted"] is False and row["judge_calibration"] == 0.0 and row["judge_calibration_pairs"] == 4
        assert not any(k.startswith("judge_") and k not in ("judge_trusted", "judge_calibration", "judge_calibration_pairs")
                       for k in row)  # fmt: skip
        assert "pairwise_win_rate" not in row and row["rougeL"] == 0.5
    assert "untrusted, models not judged" in description and description.startswith("endpoint http://127.0.0.1")


def test_a_trusted_judge_scores_every_model_and_says_it_is_trusted():
    table, description, asked = _score(_graded)
    assert asked == 24 + 3 * 3 + 3 * 2  # calibration, then 3 answers of 3 models, then 3 pairs in two orders
    for row in table.values():
        assert row["judge_trusted"] is True and row["judge_calibration"] == 1.0 and row["judge_overall"] == 5.0
    assert table["candidate"]["pairwise_win_rate"] == 0.5  # the same answers: ties
    assert "trusted: prefers the good answer at pointwise 1.00 on 6, pairwise 1.00 on 6 of 6 calibration pairs" in description


def test_mode_off_asks_nothing():
    table, description, asked = _score(_graded, mode="off")
    assert (description, asked) == ("off", 0) and "judge_trusted" not in table["candidate"]
