"""Exact match after normalisation: a local `evaluate` module.

Loaded by path, offline: ``evaluate.load("<repo>/steps/evaluation/metric_modules/exact_match.py")``.
The arguments and the ``exact_match`` key (a rate in [0, 1]) are those of the Hub's
``exact_match`` module, but normalisation is on by default, because a generated answer
that differs only in case, punctuation or spacing is the same answer: text is NFKC-folded,
case-folded, stripped of punctuation (ASCII and Unicode) and its whitespace collapsed.
"""

from __future__ import annotations

import re
import string
import unicodedata

import datasets
import evaluate

_DESCRIPTION = (
    "The share of predictions equal to their reference after normalisation (case, punctuation, "
    "whitespace), and a 0/1 score per example."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str.
    references: list of str, or list of lists of str (a match with any reference counts).
    regexes_to_ignore: regular expressions whose matches are removed first (as the Hub module).
    ignore_case: compare case-folded text (default True).
    ignore_punctuation: drop ASCII and Unicode punctuation (default True).
    ignore_numbers: drop digits (default False).
    normalize_whitespace: collapse runs of whitespace and strip the ends (default True).
Returns:
    exact_match: the mean of scores, in [0, 1].
    scores: 1.0 or 0.0 per example.
"""

_WS = re.compile(r"\s+")
_ASCII_PUNCT = set(string.punctuation)


def normalize(text, regexes_to_ignore=(), ignore_case=True, ignore_punctuation=True, ignore_numbers=False,
              normalize_whitespace=True):
    """``text`` as exact match compares it."""
    for pattern in regexes_to_ignore or ():
        text = re.sub(pattern, "", text)
    text = unicodedata.normalize("NFKC", text)
    if ignore_case:
        text = text.casefold()
    if ignore_punctuation:
        text = "".join(ch for ch in text if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P"))
    if ignore_numbers:
        text = "".join(ch for ch in text if not ch.isdigit())
    if normalize_whitespace:
        text = _WS.sub(" ", text).strip()
    return text


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    """Normalised exact match, per example and as a rate."""

    def _info(self):
        string_ = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": string_, "references": datasets.Sequence(string_)}),
                datasets.Features({"predictions": string_, "references": string_}),
            ],
        )

    def _compute(self, predictions, references, regexes_to_ignore=None, ignore_case=True, ignore_punctuation=True,
                 ignore_numbers=False, normalize_whitespace=True):
        if not predictions:
            raise ValueError("exact_match: no predictions; pass at least one (prediction, reference) pair")
        options = dict(regexes_to_ignore=regexes_to_ignore, ignore_case=ignore_case,
                       ignore_punctuation=ignore_punctuation, ignore_numbers=ignore_numbers,
                       normalize_whitespace=normalize_whitespace)
        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        scores = [float(any(normalize(p, **options) == normalize(x, **options) for x in r)) for p, r in zip(predictions, refs)]
        return {"exact_match": sum(scores) / len(scores), "scores": scores}
