"""ROUGE-1/2/L F-measure (rouge-score, Porter stemmer on) per example and as a plain mean.

Loaded by path, offline: ``evaluate.load("<repo>/steps/evaluation/metric_modules/rouge.py")``. The
arguments are those of the Hub's ``rouge`` module; two defaults differ on purpose:
``use_stemmer=True`` ("cats" matches "cat") and the aggregate is the plain mean of the
per-example F-measures, not the Hub's bootstrap estimate, so it is exact and repeatable.
"""

from __future__ import annotations

import datasets
import evaluate
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge,
  title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
  author = "Lin, Chin-Yew",
  booktitle = "Text Summarization Branches Out",
  year = "2004",
  url = "https://aclanthology.org/W04-1013",
}
"""

_DESCRIPTION = (
    "ROUGE F-measures from Google's rouge-score: rouge1 (words), rouge2 (word pairs), rougeL "
    "(longest common subsequence). The default tokenizer keeps only ASCII letters and digits, "
    "so text in other scripts scores 0 unless a tokenizer is passed."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str.
    references: list of str, or list of lists of str (the best-scoring reference counts).
    rouge_types: which scores, default ["rouge1", "rouge2", "rougeL"].
    use_stemmer: Porter-stem words before matching (default True).
    use_aggregator: True (default): the mean over examples; False: one list per type.
    tokenizer: a function text -> list[str] (as the Hub module takes) or an object with
        tokenize(text), replacing rouge-score's default.
Returns:
    {rouge_type: float} with use_aggregator, else {rouge_type: [float per example]}.
"""

DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    """ROUGE F-measures, per example or their mean."""

    def _info(self):
        string = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/google-research/google-research/tree/master/rouge",
            features=[
                datasets.Features({"predictions": string, "references": datasets.Sequence(string)}),
                datasets.Features({"predictions": string, "references": string}),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=True, use_aggregator=True,
                 tokenizer=None):
        if not predictions:
            raise ValueError("rouge: no predictions; pass at least one (prediction, reference) pair")
        types = list(rouge_types or DEFAULT_TYPES)
        if tokenizer is not None and not hasattr(tokenizer, "tokenize"):  # a function, as the Hub module takes
            tokenizer = _Tokenizer(tokenizer)
        scorer = rouge_scorer.RougeScorer(rouge_types=types, use_stemmer=use_stemmer, tokenizer=tokenizer)
        per = {t: [] for t in types}
        for pred, ref in zip(predictions, references):
            scores = scorer.score(ref, pred) if isinstance(ref, str) else scorer.score_multi(ref, pred)
            for t in types:
                per[t].append(scores[t].fmeasure)
        if not use_aggregator:
            return per
        return {t: sum(values) / len(values) for t, values in per.items()}


class _Tokenizer:
    """A tokenizing function in rouge-score's tokenizer interface."""

    def __init__(self, fn):
        self._fn = fn

    def tokenize(self, text):
        return self._fn(text)
