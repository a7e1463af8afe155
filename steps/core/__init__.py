"""What every step builds on: config loading, atomic io, manifests, the canonical record, the step CLI.

Imports no other package of ``steps``, so any of them can use it.

- cli: the entry point every step shares, ``python -m steps.<name> PATHS... [--params params.yaml]``.
- config: params.yaml loaded into frozen, self-checking dataclasses; ``ConfigError``.
- io: atomic writes (bytes, text, JSON, JSONL, whole folders), JSON and JSONL reading, digests.
- lineage: what a model comes from (code revision, data, DVC hashes): one builder for W&B and the registry.
- manifest: the manifest.json every step leaves in its output folder.
- pii: personal data and secrets in text, found and masked (pure functions over strings).
- schema: the canonical record every input format becomes.
- step: the ``Step`` descriptor (name, Config, Result, run, default folders) each step module names as ``STEP``.
- tracking: the training lineage and the dataset and model artifacts on the active W&B run.
"""

__all__ = ["cli", "config", "io", "lineage", "manifest", "pii", "schema", "step", "tracking"]
