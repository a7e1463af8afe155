"""Models on disk and in memory: resolving, loading with or without an adapter, templates, builders, generation.

- adapters: which parameters train: PEFT configs (one switch on ``method``) and the freeze method.
- builders: a ``TrainConfig`` turned into library objects: model, quantisation, schedule, trainer args.
- card: the model card (README.md) the merge step publishes beside the weights.
- encoders: the packaged sentence encoder and the folder or id an ``encoder`` setting names.
- folders: model folders: an adapter's config, the base it sits on, loading a folder with or without its adapter.
- generation: batched generation and perplexity under a model's own chat template.
- loading: resolving ``base_model`` to a local folder, loading its tokenizer and model; ``ModelError``.
- merge_config: the merge step's settings (``MergeConfig``).
- merging: folding an adapter into its base and checking the merged logits.
- structured: structured generation with xgrammar: JSON-schema grammars for the judge and the server.
- template: one chat template for training and serving, and the proof that they agree.
"""

__all__ = [
    "adapters", "builders", "card", "encoders", "folders", "generation", "loading", "merge_config", "merging", "structured", "template",
]  # fmt: skip
