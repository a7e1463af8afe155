"""BERTScore (bert-score) with a local encoder: a local `evaluate` module.

Loaded by path, offline: ``evaluate.load("<repo>/steps/evaluation/metric_modules/bertscore.py")``.
The arguments and keys are those of the Hub's ``bertscore`` module, with offline defaults:
no ``model_type`` means the packaged sentence-transformers/all-MiniLM-L6-v2 folder, and no
``num_layers`` means bert-score's tuned layer for a model it knows, else the encoder's last
layer (the one sentence-transformers pools). No baseline rescaling unless asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import bert_score
import datasets
import evaluate

_CITATION = """\
@inproceedings{bert-score,
  title={BERTScore: Evaluating Text Generation with BERT},
  author={Tianyi Zhang* and Varsha Kishore* and Felix Wu* and Kilian Q. Weinberger and Yoav Artzi},
  booktitle={International Conference on Learning Representations},
  year={2020},
  url={https://openreview.net/forum?id=SkeHuCVFDr}
}
"""

_DESCRIPTION = (
    "BERTScore matches each token of a prediction to the most similar token of its reference "
    "by contextual-embedding cosine similarity: precision, recall and F1 per example. An empty "
    "prediction or reference scores 0, as bert-score itself defines it."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str.
    references: list of str, or list of lists of str (the best-scoring reference counts).
    model_type: encoder folder or Hugging Face id; default the packaged all-MiniLM-L6-v2.
    num_layers: which layer's embeddings; default bert-score's tuned layer or the last layer.
    batch_size: sentences per forward pass (default 64).
    device: "cpu", "cuda", ...; default cuda when available.
    idf: weight tokens by inverse document frequency over the references.
    nthreads: processes for the idf counts.
    lang: language, needed only for rescale_with_baseline.
    rescale_with_baseline: rescale with bert-score's baseline for (lang, model_type), or baseline_path.
    baseline_path: a baseline tsv file for a model bert-score has none for.
    use_fast_tokenizer: passed to the tokenizer loader.
    verbose: let bert-score print its progress.
Returns:
    precision, recall, f1: lists of float, one per example; hashcode: the bert-score setting.
"""

_SCORERS: dict[tuple, bert_score.BERTScorer] = {}  # one loaded encoder per setting, per process


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 folder (found where tunegate finds every encoder)."""
    from steps.models.encoders import packaged_encoder

    return packaged_encoder()


def default_layers(model_type: str) -> int:
    """bert-score's tuned layer for a model it knows, else the encoder's last layer."""
    if model_type in bert_score.utils.model2layers:
        return bert_score.utils.model2layers[model_type]
    config = Path(model_type) / "config.json"
    if config.is_file():
        layers = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    else:
        from transformers import AutoConfig

        layers = getattr(AutoConfig.from_pretrained(model_type), "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise ValueError(f"bertscore: {model_type} declares no num_hidden_layers; pass num_layers=N")
    return layers


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BERTScore(evaluate.Metric):
    """BERTScore precision, recall and F1 per example."""

    def _info(self):
        string = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/Tiiiger/bert_score",
            features=[
                datasets.Features({"predictions": string, "references": datasets.Sequence(string)}),
                datasets.Features({"predictions": string, "references": string}),
            ],
            codebase_urls=["https://github.com/Tiiiger/bert_score"],
        )

    def _compute(self, predictions, references, model_type=None, num_layers=None, batch_size=64, device=None,
                 idf=False, nthreads=4, lang=None, rescale_with_baseline=False, baseline_path=None,
                 use_fast_tokenizer=False, verbose=False):
        if not predictions:
            raise ValueError("bertscore: no predictions; pass at least one (prediction, reference) pair")
        model_type = model_type or default_model()
        num_layers = default_layers(model_type) if num_layers is None else num_layers
        if rescale_with_baseline and lang is None:
            lang = "en"  # bert-score wants a language to find its baseline file; baseline_path overrides
        key = (model_type, num_layers, device, idf, lang, rescale_with_baseline, baseline_path, use_fast_tokenizer)
        if key not in _SCORERS:
            _SCORERS[key] = bert_score.BERTScorer(
                model_type=model_type, num_layers=num_layers, batch_size=batch_size, nthreads=nthreads, idf=idf,
                device=device, lang=lang, rescale_with_baseline=rescale_with_baseline, baseline_path=baseline_path,
                use_fast_tokenizer=use_fast_tokenizer,
            )
        scorer = _SCORERS[key]
        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        # bert-score scores an empty text 0, but under transformers 5 it crashes before it gets
        # there: score the non-empty pairs and give the others its 0.
        kept = [i for i, (p, r) in enumerate(zip(predictions, refs)) if p.strip() and any(x.strip() for x in r)]
        zero = 0.0 if not rescale_with_baseline else None
        out = {k: [zero] * len(predictions) for k in ("precision", "recall", "f1")}
        if kept:
            cands = [predictions[i] for i in kept]
            kept_refs = [[x for x in refs[i] if x.strip()] for i in kept]
            flat = [r[0] for r in kept_refs] if all(len(r) == 1 for r in kept_refs) else kept_refs
            if idf:
                scorer.compute_idf([x for r in kept_refs for x in r])
            p, r, f = scorer.score(cands, flat, verbose=verbose, batch_size=batch_size)
            for name, values in zip(("precision", "recall", "f1"), (p, r, f)):
                for i, v in zip(kept, values.tolist()):
                    out[name][i] = v
        if rescale_with_baseline and len(kept) < len(predictions):
            base = scorer.baseline_vals.tolist()  # bert-score rescales its raw 0 like any score
            for j, name in enumerate(("precision", "recall", "f1")):
                out[name] = [(-base[j] / (1 - base[j])) if v is None else v for v in out[name]]
        return {**out, "hashcode": scorer.hash}
