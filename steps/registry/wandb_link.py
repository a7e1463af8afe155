"""The W&B Registry mirror: link a registered version there when W&B is online.

The git tags stay the truth; W&B gets the version's record (metrics, lineage, DVC md5 and
remote) under a stage alias, so that a failed or skipped link never blocks a registration or
a promotion.
"""

from __future__ import annotations

import json
import os

from steps.registry.settings import RegistrySettings
from steps.registry.state import VersionInfo


def wandb_online() -> bool:
    """W&B counts as online with an API key in the environment and WANDB_MODE not offline."""
    return bool(os.environ.get("WANDB_API_KEY")) and os.environ.get("WANDB_MODE", "online") not in ("offline", "disabled", "dryrun")


def link_wandb(settings: RegistrySettings, info: VersionInfo, alias: str) -> str:
    """Link ``info`` in the W&B Registry under ``alias`` when W&B is online; say what happened.

    The W&B artifact is the version's record (metrics, lineage, DVC md5 and remote), not the
    weights: the files stay in DVC storage and are fetched from there.
    """
    if not wandb_online():
        return "skipped: W&B is offline (set WANDB_API_KEY, and WANDB_MODE to online, to link)"
    import wandb

    collection = settings.wandb_collection or settings.artifact.replace("/", "-")
    target = f"wandb-registry-{settings.wandb_registry}/{collection}"
    try:
        with wandb.init(project=settings.wandb_project, job_type="registry", name=f"{info.version}-{alias}",
                        reinit="create_new") as run:  # never the training run that may still be active
            art = wandb.Artifact(settings.artifact.replace("/", "-"), type="model",
                                 metadata={"gto_version": info.version, "commit": info.commit, **info.record})  # fmt: skip
            with art.new_file("registry.json") as fh:
                json.dump({"version": info.version, "tag": info.tag, **info.record}, fh, indent=1, default=str)
            run.link_artifact(art, target, aliases=[alias])
    except Exception as exc:  # noqa: BLE001  (network, permissions: the git registry stays the truth)
        return f"failed: {target}:{alias}: {exc}"
    return f"linked {target}:{alias}"
