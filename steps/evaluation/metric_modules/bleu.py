"""Corpus BLEU (sacrebleu) with per-sentence BLEU for ranking examples: a local `evaluate` module.

Loaded by path, offline: ``evaluate.load("<repo>/steps/evaluation/metric_modules/bleu.py")``. The
arguments and the corpus keys are those of the Hub's ``sacrebleu`` module, so the two are
interchangeable; ``sentence_scores`` is added here (the Hub module has no per-example BLEU).
"""

from __future__ import annotations

import datasets
import evaluate
import sacrebleu

_CITATION = """\
@inproceedings{post-2018-call,
  title = "A Call for Clarity in Reporting {BLEU} Scores",
  author = "Post, Matt",
  booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
  year = "2018",
  url = "https://www.aclweb.org/anthology/W18-6319",
}
"""

_DESCRIPTION = (
    "Corpus BLEU from sacrebleu (0-100, tokenizer 13a, exp smoothing by default) and the "
    "per-sentence BLEU of every prediction (effective order, so a short sentence is not 0 "
    "for lack of 4-grams), which ranks the best and worst examples of a report."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, the generated texts.
    references: list of str, or list of lists of str (the same number of references each).
    smooth_method: 'none', 'floor', 'add-k' or 'exp' (default), as sacrebleu.
    smooth_value: value for 'floor' and 'add-k'.
    lowercase: compare lowercased text.
    tokenize: sacrebleu tokenizer name; None means sacrebleu's default ('13a').
    use_effective_order: effective order for the corpus score (sentence scores always use it).
    force: accept text that already looks tokenized.
Returns:
    score: corpus BLEU, 0-100.
    sentence_scores: BLEU of each prediction against its references, 0-100.
    counts, totals, precisions, bp, sys_len, ref_len: the parts of the corpus score.
Examples:
    A three-word sentence has no 4-gram: its corpus BLEU (no effective order) is 0, its sentence
    BLEU (effective order) 100. A test runs these examples.

    >>> bleu = evaluate.load("steps/evaluation/metric_modules/bleu.py")
    >>> out = bleu.compute(predictions=["the cat sat"], references=[["the cat sat"]])
    >>> out["score"], out["sentence_scores"]
    (0.0, [100.00000000000004])
    >>> out = bleu.compute(predictions=["the cat sat on the mat", "a dog ran"],
    ...                    references=[["the cat sat on the mat"], ["the dog ran away"]])
    >>> round(out["score"], 2), [round(s, 2) for s in out["sentence_scores"]]
    (79.07, [100.0, 39.43])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    """Corpus and per-sentence BLEU."""

    def _info(self):
        string = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacrebleu",
            features=[
                datasets.Features({"predictions": string, "references": datasets.Sequence(string, id="references")}),
                datasets.Features({"predictions": string, "references": string}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(
        self,
        predictions,
        references,
        smooth_method="exp",
        smooth_value=None,
        force=False,
        lowercase=False,
        tokenize=None,
        use_effective_order=False,
    ):
        if not predictions:
            raise ValueError("bleu: no predictions; pass at least one (prediction, reference) pair")
        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        counts = {len(r) for r in refs}
        if len(counts) != 1:
            raise ValueError(
                f"bleu: every prediction needs the same number of references, got {sorted(counts)}; "
                "pad with duplicates of a reference or score each group apart"
            )
        streams = [list(stream) for stream in zip(*refs)]  # sacrebleu wants one stream per reference slot
        options = dict(lowercase=lowercase, tokenize=tokenize, smooth_method=smooth_method,
                       smooth_value=smooth_value, force=force)
        corpus = sacrebleu.corpus_bleu(predictions, streams, use_effective_order=use_effective_order, **options)
        sentence = sacrebleu.BLEU(effective_order=True, **options)
        return {
            "score": corpus.score,
            "sentence_scores": [sentence.sentence_score(p, r).score for p, r in zip(predictions, refs)],
            "counts": corpus.counts,
            "totals": corpus.totals,
            "precisions": corpus.precisions,
            "bp": corpus.bp,
            "sys_len": corpus.sys_len,
            "ref_len": corpus.ref_len,
        }
