"""The model registry: GTO tags for versions and stages, DVC storage for model files, the promotion decision.

- config: the register and promote steps' settings (``RegisterConfig``, ``PromoteConfig``).
- git: git plumbing: running git, finding the repository, the tagger, the registry lock.
- promotion: the pure promotion decision: may a registered candidate replace production?
- settings: what every registry module shares: names, ``RegistryError``, the ``registry:`` settings.
- state: the registry as read from GTO tags, and the pure rules over it.
- store: model files in DVC storage: push on register, pull and check out on fetch.
- versions: the ``Registry`` that writes: register, promote, rollback.
- wandb_link: the W&B Registry mirror, when W&B is online.
"""

__all__ = ["config", "git", "promotion", "settings", "state", "store", "versions", "wandb_link"]
