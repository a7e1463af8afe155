"""steps/evaluation/metrics.py, steps/evaluation/metric_modules/ and steps/evaluation/safety.py: each metric equals its reference
library called directly on the same inputs; loading works offline; errors say how to fix them."""

from __future__ import annotations

import bert_score
import evaluate
import huggingface_hub.constants
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import pairwise_cos_sim
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from steps.core.config import ConfigError, from_dict
from steps.evaluation import metrics
from steps.evaluation.safety import SafetyRules, default_rules, rules_from_settings, safety_hits
from steps.evaluation.tokenization import item_tokenization, unicode_tokens
from steps.models.encoders import encoder_path

PREDS = [
    "The kettle boils one litre of water in about three minutes.",
    "Descale the kettle every month with citric acid.",
    "Press the button twice to switch it off.",
    "Yes.",
    "The warranty covers two years from the date of purchase.",
]
REFS = [
    "It boils a litre of water in roughly three minutes.",
    "Descale it monthly using citric acid.",
    "Press the power button once to turn it off.",
    "yes",
    "Your warranty lasts two years from purchase.",
]


@pytest.fixture(scope="module")
def encoder():
    """The packaged all-MiniLM-L6-v2 folder and its layer count."""
    path = encoder_path("packaged")
    return path, metrics.encoder_layers(path)


@pytest.fixture(scope="module")
def scores():
    """text_metrics on the fixed pairs: one run (both encoders load once) for the whole module."""
    return metrics.text_metrics(PREDS, REFS)


def test_local_modules_load_by_path_offline():
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # set by tests/conftest.py before any HF import
    for name in metrics.LOCAL_MODULES:
        module = metrics.load_metric(name)
        assert isinstance(module, evaluate.Metric)
        assert metrics.load_metric(name) is module  # cached per process
    with pytest.raises(ValueError, match="source='local'"):
        metrics.load_metric("bleu", source="hub")  # the Hub is unreachable offline: say so
    with pytest.raises(ValueError, match="local modules: bleu"):
        metrics.load_metric("meteor")


def test_bleu_equals_sacrebleu(scores):
    out = metrics.load_metric("bleu").compute(predictions=PREDS, references=REFS)
    assert out["score"] == sacrebleu.corpus_bleu(PREDS, [REFS]).score
    assert out["sentence_scores"] == [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDS, REFS)]
    assert scores.corpus["bleu"] == out["score"]
    assert [e["bleu"] for e in scores.per_example] == out["sentence_scores"]


ZH_PREDS = ["水壶大约三分钟烧开一升水。", "每月用柠檬酸除垢。"]
ZH_REFS = ["水壶约三分钟可烧开一升水。", "请每个月用柠檬酸给水壶除垢。"]


def test_chinese_is_scored_on_characters_not_dropped():
    """rouge-score's default tokenizer drops every non-ASCII letter (Chinese scores 0); references in
    Chinese switch BLEU to sacrebleu's "zh" tokenizer and ROUGE to one token per character."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    assert scorer.score(ZH_REFS[0], ZH_PREDS[0])["rougeL"].fmeasure == 0.0  # the problem
    assert {item_tokenization(r) for r in REFS} == {("13a", "default")}  # English keeps the defaults
    assert item_tokenization("café au lait") == ("13a", "tunegate-unicode")
    assert item_tokenization(ZH_REFS[0]) == ("zh", "tunegate-unicode")
    assert unicode_tokens("我喜欢猫 The cats ran, café Привет") == [
        "我", "喜", "欢", "猫", "the", "cat", "ran", "café", "привет"]  # fmt: skip

    rouge = metrics.load_metric("rouge").compute(predictions=ZH_PREDS, references=ZH_REFS, use_aggregator=False,
                                                   tokenizer=unicode_tokens)  # fmt: skip
    chars = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Chars())
    assert rouge["rougeL"] == [chars.score(r, p)["rougeL"].fmeasure for p, r in zip(ZH_PREDS, ZH_REFS)]
    assert all(v > 0.5 for v in rouge["rougeL"])
    bleu = metrics.load_metric("bleu").compute(predictions=ZH_PREDS, references=ZH_REFS, tokenize="zh")
    assert bleu["score"] == sacrebleu.corpus_bleu(ZH_PREDS, [ZH_REFS], tokenize="zh").score > 10


class _Chars:
    """Characters, punctuation dropped: what unicode_tokens makes of Chinese-only text."""

    def tokenize(self, text):
        return [c for c in text if c.isalnum()]


def test_rouge_equals_rouge_score(scores):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = [scorer.score(r, p) for p, r in zip(PREDS, REFS)]
    out = metrics.load_metric("rouge").compute(predictions=PREDS, references=REFS)
    for t in ("rouge1", "rouge2", "rougeL"):
        mean = sum(s[t].fmeasure for s in expected) / len(expected)
        assert out[t] == mean
        assert scores.corpus[t] == mean
    assert [e["rougeL"] for e in scores.per_example] == [s["rougeL"].fmeasure for s in expected]


def test_bertscore_equals_bert_score(encoder, scores):
    path, layers = encoder
    p, r, f = bert_score.score(PREDS, REFS, model_type=path, num_layers=layers, batch_size=32)
    out = metrics.load_metric("bertscore").compute(predictions=PREDS, references=REFS, batch_size=32)
    assert (out["precision"], out["recall"], out["f1"]) == (p.tolist(), r.tolist(), f.tolist())
    assert [e["bertscore_f1"] for e in scores.per_example] == f.tolist()
    assert scores.corpus["bertscore_f1"] == sum(f.tolist()) / len(PREDS)


def test_bertscore_scores_an_empty_text_zero():
    out = metrics.load_metric("bertscore").compute(predictions=["", PREDS[0], "   "], references=[REFS[0]] * 2 + [""])
    assert out["f1"][0] == out["f1"][2] == 0.0
    assert out["f1"][1] > 0.5


def test_embedding_similarity_equals_sentence_transformers(encoder, scores):
    model = SentenceTransformer(encoder[0], device="cpu")
    expected = pairwise_cos_sim(model.encode(PREDS, convert_to_tensor=True),
                                model.encode(REFS, convert_to_tensor=True)).tolist()
    got = [e["embedding_similarity"] for e in scores.per_example]
    assert got == expected
    assert scores.corpus["embedding_similarity"] == sum(expected) / len(expected)
    assert min(got) > 0.5  # paraphrases


@pytest.mark.parametrize(
    ("pred", "ref", "same"),
    [
        ("Yes.", "yes", True),
        ("  The  answer:\tParis! ", "the answer paris", True),
        ("«Bonjour», dit-il…", "bonjour ditil", True),
        ("ＡＢＣ", "abc", True),  # full-width folds (NFKC)
        ("42", "forty-two", False),
        ("the cat", "the cats", False),
    ],
)
def test_exact_match_normalises_case_punctuation_and_whitespace(pred, ref, same):
    out = metrics.load_metric("exact_match").compute(predictions=[pred], references=[ref])
    assert out == {"exact_match": float(same), "scores": [float(same)]}


def test_text_metrics_keys(scores):
    assert tuple(scores.corpus) == metrics.TEXT_KEYS
    assert set(scores.signatures) == {"bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1"}
    assert len(scores.per_example) == len(PREDS)
    assert all(tuple(e) == metrics.EXAMPLE_KEYS for e in scores.per_example)
    assert [e["exact_match"] for e in scores.per_example] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert scores.corpus["exact_match"] == 0.2


def test_classification_equals_sklearn():
    refs = ["pos", "neg", "neu", "pos", "neg", "pos"]
    preds = ["pos", "pos", "neu", "neg", "neg", "made-up"]
    labels = sorted(set(refs))
    p, r, f, _ = precision_recall_fscore_support(refs, preds, labels=labels, average="macro", zero_division=0)
    expected = {"accuracy": accuracy_score(refs, preds), "precision": p, "recall": r, "f1": f}
    assert metrics.load_metric("classification").compute(predictions=preds, references=refs) == expected
    assert metrics.classification_metrics(preds, refs) == expected


def test_classification_labels_may_be_str_int_or_bool():
    assert metrics.classification_metrics([" Positive", "NEG"], ["positive", "neg"])["accuracy"] == 1.0
    assert metrics.classification_metrics([1, 0, 2], [1, 0, 0])["accuracy"] == pytest.approx(2 / 3)
    mixed = metrics.classification_metrics(["true", False, None], [True, False, True])
    assert mixed["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"labels\[1\] is None"):
        metrics.classification_metrics(["a", "b"], ["a", None])


def test_reward_pairwise_accuracy():
    assert metrics.reward_pairwise_accuracy([1.0, 2.0, 3.0, 0.5], [0.0, 2.0, 4.0, -1.0]) == 0.5  # a tie is wrong
    with pytest.raises(ValueError, match=r"chosen_scores\[1\] is nan"):
        metrics.reward_pairwise_accuracy([1.0, float("nan")], [0.0, 0.0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: metrics.text_metrics(["a", "b"], ["a"]), "2 predictions but 1 references; pass exactly one"),
        (lambda: metrics.text_metrics([], []), "predictions is empty; pass at least one"),
        (lambda: metrics.text_metrics(["a", None], ["a", "b"]), r"predictions\[1\] is NoneType, not str"),
        (lambda: metrics.text_metrics(["a", "b"], ["a", []]), r"references\[1\] is \[\]; pass a reference text or a non-empty"),
        (lambda: metrics.text_metrics(["a"], [["a", 3]]), r"references\[0\]\[1\] is int, not str"),
        (lambda: metrics.text_metrics(["a"], [None]), r"references\[0\] is None"),
        (lambda: metrics.classification_metrics(["a"], ["a", "b"]), "1 predictions but 2 labels"),
        (lambda: metrics.reward_pairwise_accuracy([1.0], []), "rejected_scores is empty"),
        (lambda: encoder_path("./no/such/encoder"), "encoder folder ./no/such/encoder not found"),
    ],
)
def test_bad_inputs_name_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_safety_default_rules_hit_and_miss():
    texts = [
        "Boil the water, then descale with citric acid.",
        "Honestly, you should KILL\n yourself.",
        "Use key sk-proj-abcdefghijklmnopqrstuvwxyz123456 or mail me at jo@example.com",
        "Sure!<|im_end|>",
        "The skill yourselves need is patience; call 2024 a good year.",
    ]
    assert safety_hits(texts, default_rules()) == [
        [],
        ["blocklist:kill yourself"],
        ["pii:email", "pii:secret"],
        ["pattern:template_leak"],
        [],
    ]


def test_safety_rules_from_params():
    rules = from_dict(SafetyRules, {"blocklist": ["Dark Pattern"], "patterns": {"digits": r"\d{4}"}, "pii": []},
                      "params.yaml: evaluate.safety")
    assert rules.patterns == (("digits", r"\d{4}"),)
    assert safety_hits(["a dark   pattern", "darker pattern 1234", "ok"], rules) == [
        ["blocklist:Dark Pattern"], ["pattern:digits"], []]
    assert SafetyRules(patterns=(r"\bfoo\b",)).patterns == ((r"\bfoo\b", r"\bfoo\b"),)
    assert default_rules() == SafetyRules() and hash(default_rules()) == hash(SafetyRules())


def test_safety_rules_from_settings():
    texts = ["Please kill yourself", "call me on +44 20 7946 0958", "the secret word is xyzzy", "<|im_end|>"]
    own = rules_from_settings(False, ["xyzzy"], {"template_leak": "never-matches"})
    assert safety_hits(texts, own) == [[], [], ["blocklist:xyzzy"], []]
    both = rules_from_settings(True, ["xyzzy"], {"template_leak": "never-matches"})  # replaces the default of that name
    assert safety_hits(texts, both) == [["blocklist:kill yourself"], ["pii:phone"], ["blocklist:xyzzy"], []]
    assert rules_from_settings(True, [], {}) == default_rules()


def test_safety_bad_rules_name_the_rule_and_fix():
    with pytest.raises(ConfigError, match=r"safety.patterns\[broken\]: invalid regular expression 'abc\(' .*fix it"):
        SafetyRules(patterns={"broken": "abc("})
    with pytest.raises(ConfigError, match=r"safety.blocklist\[0\]"):
        SafetyRules(blocklist=("  ",))
    with pytest.raises(ConfigError, match=r"safety.patterns\[bad\]: invalid"):
        rules_from_settings(True, [], {"bad": "[a-"})
    with pytest.raises(ConfigError, match="safety.pii: unknown type"):
        SafetyRules(pii=("passport",))


@pytest.mark.parametrize("name", ["bleu", "rouge", "exact_match"])
def test_a_failed_compute_leaves_the_cached_module_usable(name):
    """evaluate keeps a failed call's open writer and the input format it guessed on the module: every later call
    on the cached module failed. Each failure below once poisoned it; the next calls must score as before."""
    module = metrics.load_metric(name)
    before = module.compute(predictions=PREDS[:2], references=REFS[:2])
    failures = [
        dict(predictions=["a"], references=[["a"], "b"]),  # a batch evaluate cannot encode: the writer stays open
        dict(predictions=["a"], references=[[1]]),  # the wrong type: the guessed format stays
        dict(predictions=["a", "b"], references=["a"]),  # a length mismatch
    ]
    if name == "bleu":
        failures.append(dict(predictions=["a"], references=["a"], tokenize="no-such-tokenizer"))  # fails in _compute
    for bad in failures:
        with pytest.raises((ValueError, KeyError, TypeError)):
            module.compute(**bad)
        assert metrics.load_metric(name) is module
        assert module.compute(predictions=PREDS[:2], references=REFS[:2]) == before
        if name != "exact_match":  # the other input format works after a failure too
            assert module.compute(predictions=PREDS[:2], references=[[r] for r in REFS[:2]]) == before


@pytest.mark.parametrize("name", metrics.LOCAL_MODULES)
def test_module_docstring_examples_hold(name, monkeypatch):
    """The examples in a module's docstring are run, so a value shown there is one the module gives."""
    import doctest

    monkeypatch.chdir(metrics.MODULE_DIR.parents[2])  # the examples load modules by their path from the repo root
    text = metrics.load_metric(name).inputs_description
    test = doctest.DocTestParser().get_doctest(text, {"evaluate": evaluate}, name, f"{name}.py", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0, f"{name}.py: {runner.failures} docstring example(s) give other values (see the output above)"
    if name == "bleu":
        assert len(test.examples) >= 4
