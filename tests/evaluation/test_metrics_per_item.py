"""text_metrics item by item against sacrebleu, rouge-score and bert-score: each item is tokenized as its own
references ask, so it scores what the library gives it alone, whatever else the set holds (Chinese,
mixed-script, Cyrillic); `_` splits words as in rouge-score; several references per item; the signatures."""

from __future__ import annotations

import bert_score
import pytest
import sacrebleu
from bert_score.utils import get_hash
from rouge_score import rouge_scorer
from rouge_score.tokenizers import DefaultTokenizer

from steps.evaluation import metrics
from steps.evaluation.tokenization import item_tokenization, unicode_tokens
from steps.models.encoders import encoder_path

TYPES = ["rouge1", "rouge2", "rougeL"]
ENGLISH_PREDS = [
    "get_user_id",
    "Tom &amp; Jerry sat on the mat by the door.",
    "Call get_user_id to fetch the user's id.",
    "Descale the kettle every month with citric acid.",
]
ENGLISH_REFS = [
    "get user id",
    "Tom & Jerry sat on the mat by the door.",
    "Call get user id to fetch the id of the user.",
    "Descale it monthly using citric acid.",
]
OTHER_PREDS = ["水壶大约三分钟烧开一升水。", "运行 get_user_id 可以拿到用户的 ID。", "Привет, мир"]  # Chinese, mixed script, Cyrillic
OTHER_REFS = ["水壶约三分钟可烧开一升水。", "调用 get_user_id 返回用户的 ID。", "Привет мир!"]
BLEU_TOK = ["13a"] * 4 + ["zh", "zh", "13a"]

# sacrebleu's README example: three hypotheses, two reference streams, BLEU 48.53.
SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
STREAMS = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
           ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]  # fmt: skip
MULTI_REFS = [list(r) for r in zip(*STREAMS)]


class _Reference:
    """ROUGE tokens written apart from unicode_tokens: CJK characters one each, other letter and digit runs
    as words, ASCII words over 3 letters Porter-stemmed (rouge-score's stemmer and rule)."""

    def __init__(self):
        from nltk.stem import porter

        self.stem = porter.PorterStemmer().stem

    def tokenize(self, text):
        spaced = "".join(f" {c} " if "\u4e00" <= c <= "\u9fff" else c if c.isalnum() else " " for c in text.lower())
        return [self.stem(w) if w.isascii() and len(w) > 3 else w for w in spaced.split()]


@pytest.fixture(scope="module")
def alone():
    return metrics.text_metrics(ENGLISH_PREDS, ENGLISH_REFS)


@pytest.fixture(scope="module")
def mixed():
    return metrics.text_metrics(ENGLISH_PREDS + OTHER_PREDS, ENGLISH_REFS + OTHER_REFS)


@pytest.mark.parametrize("text", ["get_user_id", "snake_case__names_ and __dunder__", "The cats were running_quickly",
                                  "don't e-mail C++ & C# 3.14 x_1 HTTP_404: NOT_FOUND!!", "", "  _  "])  # fmt: skip
def test_unicode_tokens_equal_rouge_scores_tokenizer_on_ascii(text):
    assert unicode_tokens(text) == DefaultTokenizer(use_stemmer=True).tokenize(text)


def test_unicode_tokens_on_chinese_and_mixed_script():
    for text in OTHER_PREDS + OTHER_REFS:
        assert unicode_tokens(text) == _Reference().tokenize(text), text
    assert unicode_tokens("调用 get_user_id 返回") == ["调", "用", "get", "user", "id", "返", "回"]


def test_the_issues_underscore_pair_is_rougeL_1_alone_and_in_a_mixed_set(alone, mixed):
    expected = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score("get user id", "get_user_id")["rougeL"].fmeasure
    assert expected == 1.0
    assert alone.per_example[0]["rougeL"] == mixed.per_example[0]["rougeL"] == 1.0


def test_an_english_item_scores_the_same_alone_and_beside_other_scripts(alone, mixed):
    for k in range(len(ENGLISH_PREDS)):
        for key in ("bleu", "rougeL", "exact_match"):
            assert mixed.per_example[k][key] == alone.per_example[k][key], (k, key)
        for key in ("bertscore_f1", "embedding_similarity"):  # other items change the encoder's batches, not the item
            assert mixed.per_example[k][key] == pytest.approx(alone.per_example[k][key], abs=1e-5), (k, key)
    # what a tokenizer chosen once for the whole set did to the HTML-entity item: sacrebleu's "zh" unescapes nothing
    expected = sacrebleu.sentence_bleu(ENGLISH_PREDS[1], [ENGLISH_REFS[1]]).score
    assert alone.per_example[1]["bleu"] == expected == 100.00000000000004
    assert sacrebleu.sentence_bleu(ENGLISH_PREDS[1], [ENGLISH_REFS[1]], tokenize="zh").score < 80


def test_every_item_equals_its_reference_library_alone(mixed):
    preds, refs = ENGLISH_PREDS + OTHER_PREDS, ENGLISH_REFS + OTHER_REFS
    assert [item_tokenization(r)[0] for r in refs] == BLEU_TOK
    default = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    unicode = rouge_scorer.RougeScorer(TYPES, tokenizer=_Reference())
    rouge = {t: [] for t in TYPES}
    for k, (p, r, tok) in enumerate(zip(preds, refs, BLEU_TOK)):
        assert mixed.per_example[k]["bleu"] == sacrebleu.sentence_bleu(p, [r], tokenize=tok).score, k
        expected = (default if r.isascii() else unicode).score(r, p)
        assert mixed.per_example[k]["rougeL"] == expected["rougeL"].fmeasure, k
        for t in TYPES:
            rouge[t].append(expected[t].fmeasure)
    for t in TYPES:
        assert mixed.corpus[t] == sum(rouge[t]) / len(rouge[t])
    assert all(e["rougeL"] > 0.5 for e in mixed.per_example[4:])  # Chinese, mixed-script and Cyrillic are not dropped


def test_corpus_bleu_sums_every_items_counts_under_its_own_tokenizer(alone, mixed):
    assert alone.corpus["bleu"] == sacrebleu.corpus_bleu(ENGLISH_PREDS, [ENGLISH_REFS]).score
    only_zh = metrics.text_metrics(OTHER_PREDS[:2], OTHER_REFS[:2])
    assert only_zh.corpus["bleu"] == sacrebleu.corpus_bleu(OTHER_PREDS[:2], [OTHER_REFS[:2]], tokenize="zh").score
    preds, refs = ENGLISH_PREDS + OTHER_PREDS, ENGLISH_REFS + OTHER_REFS
    parts = [sacrebleu.corpus_bleu([preds[k] for k in idx], [[refs[k] for k in idx]], tokenize=tok)
             for tok, idx in (("13a", [0, 1, 2, 3, 6]), ("zh", [4, 5]))]  # fmt: skip
    expected = sacrebleu.BLEU.compute_bleu(
        [sum(c) for c in zip(*(p.counts for p in parts))], [sum(t) for t in zip(*(p.totals for p in parts))],
        sum(p.sys_len for p in parts), sum(p.ref_len for p in parts), smooth_method="exp")  # fmt: skip
    assert mixed.corpus["bleu"] == expected.score
    assert min(p.score for p in parts) < mixed.corpus["bleu"] < max(p.score for p in parts)


def test_multiple_references_equal_sacrebleu_rouge_score_and_bert_score():
    scores = metrics.text_metrics(SYS, MULTI_REFS)
    assert scores.corpus["bleu"] == sacrebleu.corpus_bleu(SYS, STREAMS).score
    assert round(scores.corpus["bleu"], 2) == 48.53  # sacrebleu's README
    assert [e["bleu"] for e in scores.per_example] == [sacrebleu.sentence_bleu(p, r).score for p, r in zip(SYS, MULTI_REFS)]
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    best = [scorer.score_multi(r, p) for p, r in zip(SYS, MULTI_REFS)]
    for t in TYPES:
        assert scores.corpus[t] == sum(b[t].fmeasure for b in best) / len(best)
    assert [e["rougeL"] for e in scores.per_example] == [b["rougeL"].fmeasure for b in best]
    path = encoder_path("packaged")
    _, _, f = bert_score.score(SYS, MULTI_REFS, model_type=path, num_layers=6, batch_size=32)
    assert [e["bertscore_f1"] for e in scores.per_example] == pytest.approx(f.tolist(), abs=1e-6)
    assert [e["exact_match"] for e in scores.per_example] == [1.0, 0.0, 0.0]  # any reference may match
    second_only = metrics.text_metrics(["No one was surprised."], [["It was not unexpected.", "No one was surprised."]])
    assert second_only.per_example[0]["exact_match"] == 1.0
    assert second_only.per_example[0]["embedding_similarity"] == pytest.approx(1.0, abs=1e-5)  # the closest reference
    assert second_only.per_example[0]["rougeL"] == 1.0
    assert scores.signatures["bleu"] == sacrebleu.BLEU(references=STREAMS).get_signature().format()
    assert scores.signatures["bleu"].startswith("nrefs:2|") and scores.signatures["rougeL"].startswith("nrefs:2|")


def test_a_varying_number_of_references_is_scored_as_sacrebleu_scores_it():
    refs = [MULTI_REFS[0], MULTI_REFS[1][:1], MULTI_REFS[2] + ["The man bit the dog back."]]
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(3)]  # sacrebleu's way: None pads
    scores = metrics.text_metrics(SYS, refs)
    assert scores.corpus["bleu"] == sacrebleu.corpus_bleu(SYS, streams).score
    assert [e["bleu"] for e in scores.per_example] == [sacrebleu.sentence_bleu(p, r).score for p, r in zip(SYS, refs)]
    assert scores.signatures["bleu"] == sacrebleu.BLEU(references=streams).get_signature().format()
    assert "nrefs:var" in scores.signatures["bleu"] and scores.signatures["rouge1"].startswith("nrefs:var|")


def test_signatures_name_the_library_settings(alone, mixed):
    assert alone.signatures["bleu"] == sacrebleu.BLEU(references=[ENGLISH_REFS]).get_signature().format()
    assert alone.signatures["bleu"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    from importlib.metadata import version

    rouge = f"nrefs:1|tok:default|stem:porter|split:no|multi:max|agg:mean|version:{version('rouge-score')}"
    assert alone.signatures["rouge1"] == alone.signatures["rouge2"] == alone.signatures["rougeL"] == rouge
    bert = get_hash(metrics.PACKAGED_ENCODER_ID, 6, False, False, False, False)
    assert alone.signatures["bertscore_f1"] == (f"{bert} (layer 6: the encoder's last; bert-score has no tuned layer "
                                                f"for {metrics.PACKAGED_ENCODER_ID})")  # fmt: skip
    assert mixed.signatures["bleu"] == "; ".join([
        sacrebleu.BLEU(references=[ENGLISH_REFS + OTHER_REFS[2:]]).get_signature().format() + " (5 items)",
        sacrebleu.BLEU(tokenize="zh", references=[OTHER_REFS[:2]]).get_signature().format() + " (2 items)"])  # fmt: skip
    assert mixed.signatures["rougeL"] == f"{rouge} (4 items); {rouge.replace('tok:default', 'tok:tunegate-unicode')} (3 items)"


def test_bertscore_takes_bert_scores_tuned_layer_for_an_encoder_it_knows(monkeypatch):
    assert metrics.bertscore_layer("roberta-large") == (17, "bert-score's tuned layer for roberta-large")
    assert metrics.bertscore_layer("bert-base-chinese")[0] == bert_score.utils.model2layers["bert-base-chinese"]
    path = encoder_path("packaged")
    assert metrics.bertscore_layer(path)[0] == metrics.encoder_layers(path) == 6  # unknown to bert-score: the last
    # An encoder bert-score knows, end to end: its table gives the packaged encoder layer 3 (not the last, 6).
    monkeypatch.setitem(bert_score.utils.model2layers, metrics.PACKAGED_ENCODER_ID, 3)
    assert metrics.bertscore_layer(path) == (3, f"bert-score's tuned layer for {metrics.PACKAGED_ENCODER_ID}")
    scores = metrics.text_metrics(ENGLISH_PREDS, ENGLISH_REFS)
    _, _, f3 = bert_score.score(ENGLISH_PREDS, ENGLISH_REFS, model_type=path, num_layers=3, batch_size=32)
    _, _, f6 = bert_score.score(ENGLISH_PREDS, ENGLISH_REFS, model_type=path, num_layers=6, batch_size=32)
    assert [e["bertscore_f1"] for e in scores.per_example] == f3.tolist() != f6.tolist()
    assert scores.signatures["bertscore_f1"].startswith(f"{metrics.PACKAGED_ENCODER_ID}_L3_no-idf_")
    assert "(layer 3: bert-score's tuned layer for" in scores.signatures["bertscore_f1"]


def test_a_local_encoder_folder_bert_score_does_not_know_takes_its_last_layer(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "num_hidden_layers": 4}')
    layer, why = metrics.bertscore_layer(str(tmp_path))
    assert layer == 4 and why == f"the encoder's last; bert-score has no tuned layer for {tmp_path}"
