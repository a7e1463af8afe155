"""What every part of the model registry shares: its names, its error and its settings.

The artifact and stage names, ``RegistryError``, the ``registry:`` section of params.yaml
(``RegistrySettings``) and the small loaders the register and promote steps use to fill their
configs. It imports nothing else of the registry,
so every other steps/registry/ module can build on it without import cycles.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError, load_section, params_of

ARTIFACT = "tunegate-model"
STAGING, PRODUCTION = "staging", "production"
BUMPS = ("major", "minor", "patch")
FIRST_VERSION = "v0.1.0"
_NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-/_]*[a-zA-Z0-9])?$")  # GTO's artifact name rule


class RegistryError(RuntimeError):
    """A registry operation that cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class RegistrySettings:
    """The ``registry:`` section of params.yaml, shared by register, promote, the CLI and serve."""

    repo: str = "."  # the git repository holding the GTO tags
    artifact: str = ARTIFACT
    remote: str = "~/.cache/tunegate/dvc-remote"  # a folder (relative to repo), s3://..., gs://..., or remote://NAME
    cache_dir: str = "~/.cache/tunegate/registry"  # where fetched model folders are checked out
    lock_timeout_s: float = 120.0  # a promotion holds the lock for about a second
    wandb_project: str = "tunegate"
    wandb_registry: str = "model"  # links go to wandb-registry-<wandb_registry>/<collection>
    wandb_collection: str | None = None  # None: the artifact name

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.artifact):
            raise ConfigError(f"registry.artifact: letters, digits, '-', '_', '/' only, e.g. tunegate-model; got {self.artifact!r}")
        if self.lock_timeout_s <= 0:
            raise ConfigError(f"registry.lock_timeout_s: must be > 0 seconds; got {self.lock_timeout_s}")


def load_settings(params: Path | str | dict[str, Any] = "params.yaml") -> RegistrySettings:
    """The ``registry:`` section, or the defaults when the params file does not exist."""
    return load_section(RegistrySettings, "registry", params, missing_ok=True)


def load_step_config(cls: type, section: str, params: Path | str | dict[str, Any]) -> Any:
    """A step config (with a ``registry`` field) from its own section plus ``registry:``."""
    values = params_of(params)
    cfg = load_section(cls, section, values)
    return dataclasses.replace(cfg, registry=load_settings(values))
