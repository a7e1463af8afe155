"""The register and promote steps' settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from steps.core.config import ConfigError
from steps.registry.promotion import Thresholds
from steps.registry.settings import BUMPS, PRODUCTION, RegistrySettings


@dataclass(frozen=True)
class RegisterConfig:
    """The ``register:`` section; ``registry`` comes from the ``registry:`` section."""

    bump: str = "minor"  # major | minor | patch: the part raised for each new version
    stage: str = "staging"  # a new version waits here; production is reached only through promote
    train_dir: str = "models/train"  # its manifest.json holds the params, git revision and data digests
    data_dir: str = "data/augmented"  # what train read: its files are checked against the train manifest's digests
    raw_dir: str = "data/raw"  # the DVC-tracked raw files (*.dvc)
    who: str | None = None  # None: git's user.name, else $USER
    message: str = "registered by the retrain pipeline"
    registry: RegistrySettings = field(default_factory=RegistrySettings)

    def __post_init__(self) -> None:
        if self.bump not in BUMPS:
            raise ConfigError(f"register.bump: one of {', '.join(BUMPS)}; got {self.bump!r}")
        if self.stage == PRODUCTION:
            raise ConfigError("register.stage: production is reached only through the promote step's gate; use staging")


@dataclass(frozen=True)
class PromoteConfig:
    """The ``promote:`` section; ``registry`` comes from the ``registry:`` section."""

    compare: tuple[str, ...] = ("test_perplexity", "f1", "reward_pairwise_accuracy")  # those neither model has are skipped
    min_improvement: float = 0.0  # relative change needed on each: 0 = never replace a better production model
    who: str | None = None  # None: git's user.name, else $USER
    message: str | None = None  # why; None: the gate's own verdict
    registry: RegistrySettings = field(default_factory=RegistrySettings)

    def __post_init__(self) -> None:
        if isinstance(self.compare, list):
            object.__setattr__(self, "compare", tuple(self.compare))
        if not -1.0 < self.min_improvement < 1.0:
            raise ConfigError(f"promote.min_improvement: a relative change such as 0.0 or 0.01 (1%); got {self.min_improvement}")

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(compare=self.compare, min_improvement=self.min_improvement)
