"""Text, classification and reward metrics for the evaluate step, through Hugging Face `evaluate`.

Every metric is an `evaluate` module. By default it is the local one under
``steps/evaluation/metric_modules/`` (loaded by path: works offline, with ``HF_HUB_OFFLINE=1``);
``source="hub"`` loads the Hub's module instead, which needs network (and a first
download into ``~/.cache/huggingface``). Hub names of the local modules:
bleu -> "sacrebleu", rouge -> "rouge", bertscore -> "bertscore", exact_match ->
"exact_match"; classification has "accuracy", "precision", "recall" and "f1" (pass
``average="macro"``); embedding_similarity has none. The local modules take the Hub
modules' arguments and return their keys, plus per-example scores.

The encoder of BERTScore and embedding similarity is the packaged
sentence-transformers/all-MiniLM-L6-v2 unless told otherwise; BERTScore takes bert-score's
tuned layer of an encoder it knows, else the last. Modules and encoders are loaded once per
process; a failed call leaves its module ready for the next.

Every text score comes with a signature (``TextScores.signatures``): sacrebleu's signature string,
bert-score's hash, and the ROUGE settings in the same style, so a number can be set beside a
published one.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import evaluate  # the library: steps/ is never on sys.path, so steps/evaluate.py does not shadow it

from steps.core.io import read_json
from steps.evaluation.tokenization import item_tokenization, rouge_tokenizer
from steps.models.encoders import PACKAGED, encoder_path

MODULE_DIR = Path(__file__).resolve().parent / "metric_modules"
LOCAL_MODULES = ("bleu", "rouge", "bertscore", "exact_match", "embedding_similarity", "classification")
HUB_NAMES = {"bleu": "sacrebleu", "rouge": "rouge", "bertscore": "bertscore", "exact_match": "exact_match"}
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
TEXT_KEYS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1", "exact_match", "embedding_similarity")
EXAMPLE_KEYS = ("bleu", "rougeL", "bertscore_f1", "embedding_similarity", "exact_match")
CLASSIFICATION_KEYS = ("accuracy", "precision", "recall", "f1")
PACKAGED_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the Hub id of the packaged encoder


@dataclass(frozen=True)
class TextScores:
    """Corpus scores (keys TEXT_KEYS) and one dict of scores per example (keys EXAMPLE_KEYS).

    bleu is 0-100 (sacrebleu); the others are 0-1 (embedding similarity -1 to 1).
    """

    corpus: dict[str, float]
    per_example: list[dict[str, float]]
    signatures: dict[str, str]  # bleu, rouge1/2/L, bertscore_f1 -> the settings that produced the number (see text_metrics)


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
        return _recovering(evaluate.load(str(MODULE_DIR / f"{name}.py"), keep_in_memory=True))
    if source != "hub":
        raise ValueError(f"metric source must be 'local' or 'hub', got {source!r}")
    if name in ("embedding_similarity", "classification"):
        raise ValueError(f"the Hub has no '{name}' module; use source='local'"
                         + (" or the Hub's accuracy/precision/recall/f1" if name == "classification" else ""))
    hub = HUB_NAMES.get(name, name)
    try:
        module = evaluate.load(hub, keep_in_memory=True)
    except Exception as exc:  # offline, no network, unknown name: all end here
        raise ValueError(f"could not load the Hub metric '{hub}' ({type(exc).__name__}: {exc}); the Hub needs "
                         "network and HF_HUB_OFFLINE unset, or use source='local' (offline)") from exc
    return _recovering(module)


# What an `evaluate` module keeps of the call in progress (keep_in_memory=True): its open writer, the
# input format it guessed from the first batch, and the data read back for `_compute`.
_CALL_STATE = ("writer", "buf_writer", "data", "selected_feature_format", "cache_file_name", "filelock")


def _recovering(module: evaluate.EvaluationModule) -> evaluate.EvaluationModule:
    """``module``, whose ``compute`` leaves it ready for the next call when it fails.

    A failed call (a bad input, an error in ``_compute``) leaves `evaluate` half-way: the writer of
    that call stays open with the input format it guessed, so every later call on the cached module
    is checked against that format and fails too. On failure the call's state is dropped, as a
    successful call drops it, and the error is raised unchanged.
    """
    compute = module.compute

    @functools.wraps(compute)
    def recovering_compute(*args: Any, **kwargs: Any) -> Any:
        try:
            return compute(*args, **kwargs)
        except BaseException:
            for attr in _CALL_STATE:
                setattr(module, attr, None)
            raise

    module.compute = recovering_compute
    return module


def encoder_layers(path: str) -> int:
    """The encoder's layer count (its config's num_hidden_layers)."""
    config = Path(path) / "config.json"
    if config.is_file():
        layers = read_json(config, "point the encoder at a sentence-transformers model folder").get("num_hidden_layers")
    else:
        from transformers import AutoConfig

        layers = getattr(AutoConfig.from_pretrained(path), "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise ValueError(f"{config}: no integer num_hidden_layers; BERTScore needs the encoder's layer count")
    return layers


def encoder_name(path: str) -> str:
    """The name BERTScore knows an encoder by: the packaged folder is its Hub id, any other folder or id itself."""
    return PACKAGED_ENCODER_ID if path == encoder_path(PACKAGED) else path


def bertscore_layer(path: str) -> tuple[int, str]:
    """The layer BERTScore takes from the encoder at ``path`` (a folder or id), and why that one.

    bert-score's own tuned layer (``bert_score.utils.model2layers``) for an encoder it knows by
    name, as bert-score itself picks it; else the encoder's last layer, the one sentence-transformers pools.
    """
    from bert_score.utils import model2layers

    name = encoder_name(path)
    if name in model2layers:
        return model2layers[name], f"bert-score's tuned layer for {name}"
    return encoder_layers(path), f"the encoder's last; bert-score has no tuned layer for {name}"


def text_metrics(predictions: Sequence[str], references: Sequence[str | Sequence[str]], *, encoder: str = "packaged",
                 source: str = "local", batch_size: int = 32) -> TextScores:
    """BLEU, ROUGE, BERTScore, exact match and embedding similarity of predictions against references.

    Each item is tokenized as its own references ask (steps.evaluation.tokenization), whatever the
    other items hold; corpus BLEU sums every item's n-gram counts, as sacrebleu does, so it equals
    sacrebleu's corpus BLEU when all items share a tokenizer. With several references, BLEU counts
    n-grams against all of them (sacrebleu), ROUGE and exact match take the best reference
    (rouge-score's ``score_multi``), BERTScore and embedding similarity the highest similarity.

    With source="hub", BLEU, ROUGE and BERTScore come from the Hub's modules; exact match
    (the Hub's does not fold whitespace), embedding similarity and per-sentence BLEU
    (the Hub has none) always come from the local modules.

    Args:
        predictions: generated texts ('' for an empty output).
        references: per prediction, in the same order, its reference text or a list of reference texts.
        encoder: "packaged", an encoder folder or a Hugging Face id (see steps.models.encoders.encoder_path).
        source: "local" or "hub" (see load_metric).
        batch_size: texts per encoder forward pass.
    """
    preds, refs = _text_pairs(predictions, references)
    path = encoder_path(encoder)
    tokenization = [item_tokenization(r) for r in refs]
    pairs = dict(predictions=preds, references=_module_refs(refs))
    bleu, sentence_bleu = _bleu(preds, refs, [t[0] for t in tokenization], source)
    rouge = _rouge(preds, refs, [t[1] for t in tokenization], source)
    layer, why = bertscore_layer(path)
    bert = load_metric("bertscore", source).compute(**pairs, model_type=path, num_layers=layer, batch_size=batch_size)
    exact = load_metric("exact_match").compute(**pairs)
    embed = load_metric("embedding_similarity").compute(**pairs, model_path=path, batch_size=batch_size)
    per = {"bleu": sentence_bleu, "rougeL": rouge["rougeL"], "bertscore_f1": bert["f1"],
           "embedding_similarity": embed["scores"], "exact_match": exact["scores"]}
    corpus = {"bleu": bleu, **{t: _mean(rouge[t]) for t in ROUGE_TYPES}, "bertscore_f1": _mean(bert["f1"]),
              "exact_match": exact["exact_match"], "embedding_similarity": embed["embedding_similarity"]}
    rouge_sig = rouge_signature(refs, [t[1] for t in tokenization])
    signatures = {"bleu": bleu_signature(refs, [t[0] for t in tokenization]), **{t: rouge_sig for t in ROUGE_TYPES},
                  "bertscore_f1": f"{bertscore_hash(path, layer)} (layer {layer}: {why})"}
    return TextScores(
        corpus={k: float(corpus[k]) for k in TEXT_KEYS},
        per_example=[{k: float(per[k][i]) for k in EXAMPLE_KEYS} for i in range(len(preds))],
        signatures=signatures,
    )


def _bleu(preds: list[str], refs: list[list[str]], tokenizers: list[str], source: str) -> tuple[float, list[float]]:
    """Corpus BLEU and each item's sentence BLEU, every item under its own tokenizer.

    The module scores each group of items that share a tokenizer and a reference count (the Hub's
    module takes one of each per call); corpus BLEU is then computed from the summed n-gram
    counts and lengths, as sacrebleu sums them over a corpus.
    """
    import sacrebleu

    sentence = [0.0] * len(preds)
    parts = []
    for (tokenize, _), idx in _groups(list(zip(tokenizers, map(len, refs)))).items():
        pairs = dict(predictions=[preds[i] for i in idx], references=[refs[i] for i in idx])
        out = load_metric("bleu", source).compute(**pairs, tokenize=tokenize)
        scores = out.get("sentence_scores") or load_metric("bleu").compute(**pairs, tokenize=tokenize)["sentence_scores"]
        for i, score in zip(idx, scores):
            sentence[i] = score
        parts.append(out)
    if len(parts) == 1:
        return parts[0]["score"], sentence
    correct = [sum(c) for c in zip(*(p["counts"] for p in parts))]
    total = [sum(t) for t in zip(*(p["totals"] for p in parts))]
    score = sacrebleu.BLEU.compute_bleu(correct, total, sum(p["sys_len"] for p in parts), sum(p["ref_len"] for p in parts),
                                        smooth_method="exp")  # the modules' default smoothing
    return score.score, sentence


def _rouge(preds: list[str], refs: list[list[str]], tokenizers: list[str], source: str) -> dict[str, list[float]]:
    """ROUGE F-measures per item, every item under its own tokenizer (one module call per tokenizer)."""
    per = {t: [0.0] * len(preds) for t in ROUGE_TYPES}
    for name, idx in _groups(tokenizers).items():
        out = load_metric("rouge", source).compute(
            predictions=[preds[i] for i in idx], references=_module_refs([refs[i] for i in idx]),
            rouge_types=list(ROUGE_TYPES), use_stemmer=True, use_aggregator=False, tokenizer=rouge_tokenizer(name))
        for t in ROUGE_TYPES:
            for i, value in zip(idx, out[t]):
                per[t][i] = value
    return per


def bleu_signature(refs: Sequence[Sequence[str]], tokenizers: Sequence[str]) -> str:
    """sacrebleu's signature of the BLEU settings text_metrics uses, for each tokenizer its items used.

    One tokenizer: sacrebleu's own string ("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0").
    Several: each tokenizer's string with its item count, joined by "; ".
    """
    import sacrebleu

    groups = _groups(list(tokenizers))
    parts = []
    for tokenize, idx in groups.items():
        group = [refs[i] for i in idx]
        streams = [[r[k] if k < len(r) else None for r in group] for k in range(max(map(len, group)))]
        signature = sacrebleu.BLEU(tokenize=tokenize, references=streams).get_signature().format()
        parts.append(signature if len(groups) == 1 else f"{signature} ({_items(len(idx))})")
    return "; ".join(parts)


def rouge_signature(refs: Sequence[Sequence[str]], tokenizers: Sequence[str]) -> str:
    """The ROUGE settings text_metrics uses, in sacrebleu's signature style, for each tokenizer its items used.

    nrefs: references per item ("var" when they differ); tok: "default" (rouge-score's) or
    "tunegate-unicode" (steps.evaluation.tokenization.unicode_tokens); stem: Porter (rouge-score's
    use_stemmer); split: rouge-score's split_summaries (the sentence split of rougeLsum, not computed);
    multi: max over references (rouge-score's score_multi); agg: the plain mean of per-item F-measures.
    """
    from importlib.metadata import version

    groups = _groups(list(tokenizers))
    parts = []
    for name, idx in groups.items():
        counts = {len(refs[i]) for i in idx}
        nrefs = counts.pop() if len(counts) == 1 else "var"
        signature = (f"nrefs:{nrefs}|tok:{name}|stem:porter|split:no|multi:max|agg:mean|"
                     f"version:{version('rouge-score')}")
        parts.append(signature if len(groups) == 1 else f"{signature} ({_items(len(idx))})")
    return "; ".join(parts)


def _items(n: int) -> str:
    return f"{n} item{'s' * (n != 1)}"


def bertscore_hash(path: str, layer: int) -> str:
    """bert-score's hash of the settings text_metrics uses (no idf, no rescaling), naming the encoder by encoder_name."""
    from bert_score.utils import get_hash

    return get_hash(encoder_name(path), layer, idf=False, rescale_with_baseline=False, use_custom_baseline=False,
                    use_fast_tokenizer=False)


def _groups(keys: list[Any]) -> dict[Any, list[int]]:
    """The indices of each distinct key, keys in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def _module_refs(refs: list[list[str]]) -> list[str] | list[list[str]]:
    """References as the modules take them: one text per item when every item has one, else a list per item."""
    return [r[0] for r in refs] if all(len(r) == 1 for r in refs) else refs


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


def _text_pairs(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """The predictions, and each item's references as a list."""
    preds, refs = list(predictions), list(references)
    _check_lengths("text_metrics", "predictions", len(preds), "references", len(refs))
    bad = next((i for i, x in enumerate(preds) if not isinstance(x, str)), None)
    if bad is not None:
        raise ValueError(f"text_metrics: predictions[{bad}] is {type(preds[bad]).__name__}, not str; "
                         "pass text ('' for an empty output)")
    lists = []
    for i, ref in enumerate(refs):
        if isinstance(ref, str):
            lists.append([ref])
            continue
        if not isinstance(ref, Sequence) or not ref:
            raise ValueError(f"text_metrics: references[{i}] is {ref!r}; pass a reference text or a non-empty "
                             "list of reference texts per prediction")
        bad = next((k for k, x in enumerate(ref) if not isinstance(x, str)), None)
        if bad is not None:
            raise ValueError(f"text_metrics: references[{i}][{bad}] is {type(ref[bad]).__name__}, not str; "
                             "pass text ('' for an empty reference)")
        lists.append(list(ref))
    return preds, lists


def _label_key(label: Any, where: str) -> str:
    if isinstance(label, bool):
        return "true" if label else "false"
    if isinstance(label, int):
        return str(label)
    if isinstance(label, str) and label.strip():
        return " ".join(unicodedata.normalize("NFKC", label).casefold().split())
    raise ValueError(f"classification_metrics: {where} is {label!r}; a label is a non-empty str, an int or a bool")
