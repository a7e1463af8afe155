"""Accuracy and macro precision, recall and F1 (scikit-learn): a local `evaluate` module.

Loaded by path, offline: ``evaluate.load("<repo>/steps/evaluation/metric_modules/classification.py")``.
Macro averages run over the reference classes by default (``labels``), so a prediction that
names no class (a generated label the model made up) counts against recall instead of
adding a class of its own with zero support.
"""

from __future__ import annotations

import datasets
import evaluate
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

_DESCRIPTION = "Accuracy and precision, recall and F1 averaged over classes (macro by default)."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of labels (all str, or all int; bools are read as 0/1).
    references: list of labels of the same type.
    labels: the classes to average over; default the sorted set of references.
    average: "macro" (default), "micro" or "weighted", as scikit-learn.
    zero_division: value of a 0/0 precision or recall (default 0.0).
Returns:
    accuracy, precision, recall, f1: floats in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    """Accuracy and averaged precision, recall and F1."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://scikit-learn.org/stable/modules/model_evaluation.html",
            features=[  # strings first: a string would otherwise be read as an int or a bool
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, labels=None, average="macro", zero_division=0.0):
        if not predictions:
            raise ValueError("classification: no predictions; pass at least one (prediction, reference) pair")
        labels = sorted(set(references), key=str) if labels is None else list(labels)
        precision, recall, f1, _ = precision_recall_fscore_support(
            references, predictions, labels=labels, average=average, zero_division=zero_division
        )
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
        }
