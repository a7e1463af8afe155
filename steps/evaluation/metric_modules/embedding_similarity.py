"""Cosine similarity of sentence embeddings, prediction against reference: a local `evaluate` module.

Loaded by path, offline: ``evaluate.load("<repo>/steps/evaluation/metric_modules/embedding_similarity.py")``.
The encoder is a sentence-transformers model folder or id, by default the packaged
all-MiniLM-L6-v2 (the same encoder BERTScore uses here), loaded once per process. It
catches paraphrases that word-overlap metrics score low; it reads at most the encoder's
``max_seq_length`` tokens of each text (256 for all-MiniLM-L6-v2).
"""

from __future__ import annotations

import datasets
import evaluate
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import pairwise_cos_sim

_DESCRIPTION = (
    "Cosine similarity between the sentence embedding of each prediction and of its reference "
    "(-1 to 1; near 1 means the same meaning), and the mean over examples."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str.
    references: list of str, or list of lists of str (the most similar reference counts).
    model_path: sentence-transformers folder or id; default the packaged all-MiniLM-L6-v2.
    batch_size: texts per forward pass (default 32).
    device: "cpu", "cuda", ...; default sentence-transformers' choice (cuda when available).
Returns:
    embedding_similarity: the mean of scores.
    scores: cosine similarity per example.
"""

_MODELS: dict[tuple, SentenceTransformer] = {}  # one loaded encoder per (path, device), per process


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 folder (found where tunegate finds every encoder)."""
    from steps.models.encoders import packaged_encoder

    return packaged_encoder()


def encoder(model_path: str, device=None) -> SentenceTransformer:
    """The sentence-transformers model at ``model_path``, loaded once per process."""
    key = (model_path, device)
    if key not in _MODELS:
        _MODELS[key] = SentenceTransformer(model_path, device=device)
    return _MODELS[key]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EmbeddingSimilarity(evaluate.Metric):
    """Sentence-embedding cosine similarity per example and its mean."""

    def _info(self):
        string = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://www.sbert.net",
            features=[
                datasets.Features({"predictions": string, "references": datasets.Sequence(string)}),
                datasets.Features({"predictions": string, "references": string}),
            ],
        )

    def _compute(self, predictions, references, model_path=None, batch_size=32, device=None):
        if not predictions:
            raise ValueError("embedding_similarity: no predictions; pass at least one (prediction, reference) pair")
        model = encoder(model_path or default_model(), device)
        options = dict(batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        pred = model.encode(list(predictions), **options)
        if all(isinstance(r, str) for r in references):
            scores = pairwise_cos_sim(pred, model.encode(list(references), **options)).tolist()  # cosine whatever the model's own
        else:
            owner = [i for i, refs in enumerate(references) for _ in refs]  # the prediction of each reference
            sims = pairwise_cos_sim(pred[owner], model.encode([r for refs in references for r in refs], **options)).tolist()
            scores = [None] * len(predictions)
            for i, sim in zip(owner, sims):
                scores[i] = sim if scores[i] is None else max(scores[i], sim)
            if None in scores:
                raise ValueError(f"embedding_similarity: predictions[{scores.index(None)}] has an empty list of "
                                 "references; give it at least one")
        return {"embedding_similarity": sum(scores) / len(scores), "scores": scores}
