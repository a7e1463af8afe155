"""The model registry: versions and stages as GTO git tags, model files in DVC storage.

Each registered version is a GTO annotated tag (``tunegate-model@v0.2.0``) whose message
carries a JSON record: metrics, gate, lineage and the DVC ``.dir`` md5 of the model files,
which are pushed to a DVC remote (a local folder by default; ``s3://`` or ``gs://`` once
``pip install dvc-s3`` / ``dvc-gs``). Stages are GTO assignment tags whose messages say who
did it, why, and whether it was a promotion or a rollback.

One production: promote and rollback take an exclusive ``flock`` on ``.git/tunegate-registry.lock``
around read-decide-write, assign ``production`` to the new version, then unassign it from every
other version. Readers take the shared lock, so they never see the moment between; and should a
process die there, production still resolves to the newest assignment (as ``gto show`` does) and
the next promotion clears the rest. GTO orders events by tag time, which git keeps in whole
seconds: a write that would touch the production stage twice within one second waits for the next.

Where things live: names, error and settings in ``steps/registry/settings.py``; git, tagger
and lock in ``steps/registry/git.py``; reading tags into state, and the pure rules, in
``steps/registry/state.py``; model files in DVC in ``steps/registry/store.py``; the W&B mirror in
``steps/registry/wandb_link.py``. This module holds the ``Registry`` that writes (register, promote,
rollback).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.registry.git import identity, registry_lock, repo_root, run_git
from steps.registry.promotion import Decision, Thresholds, decide_promotion, stale_evaluation
from steps.registry.settings import (
    ARTIFACT,
    PRODUCTION,
    STAGING,
    RegistryError,
    RegistrySettings,
    load_settings,  # fmt: skip
)
from steps.registry.state import RegistryState, VersionInfo, annotate, next_version, read_state, settle
from steps.registry.store import fetch_model, store_model

# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Outcome:
    """What a promotion or rollback did."""

    changed: bool  # tags were written
    accepted: bool  # the version is production now (False: refused, production unchanged)
    version: str | None
    previous: str | None  # production before
    production: str | None  # production after
    reasons: list[str]


class Registry:
    """GTO versions and stages of one artifact in one git repository."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self.root = repo_root(self.settings.repo)
        self.artifact = self.settings.artifact

    def state(self) -> RegistryState:
        with registry_lock(self.root, self.settings.lock_timeout_s, shared=True):
            return read_state(self.root, self.artifact)

    def production_version(self) -> str | None:
        return self.state().production

    def register(self, model_dir: Path | str, record: dict[str, Any], *, bump: str = "minor", stage: str = STAGING,
                 who: str | None = None, why: str = "") -> VersionInfo:  # fmt: skip
        """Store ``model_dir`` in DVC, tag a new version carrying ``record``, assign ``stage``."""
        from gto import api

        storage = store_model(model_dir, self.root, self.settings)  # outside the lock: slow, content-addressed
        name, email = identity(self.root, who)
        with registry_lock(self.root, self.settings.lock_timeout_s):
            settle(read_state(self.root, self.artifact), stage)  # the newest in a stage must be the latest second
            version = next_version(self._all_version_names(), bump)
            commit, code_revision = self._commit_for(version, name, email)
            full = {**record, "action": "register", "version": version, "who": name, "why": why, "model": storage,
                    "code_revision": code_revision}  # fmt: skip
            summary = f"register {self.artifact} {version} (model md5 {storage['md5']})"
            api.register(str(self.root), self.artifact, commit, version=version, message=annotate(summary, full),
                         author=name, author_email=email)  # fmt: skip
            api.assign(str(self.root), self.artifact, stage, version=version, force=True, author=name, author_email=email,
                       message=annotate(f"{stage}: {version}", {"action": "register", "who": name, "why": why}))  # fmt: skip
            return read_state(self.root, self.artifact).versions[version]

    def promote(self, version: str, gate: dict[str, Any] | None, thresholds: Thresholds, *, who: str | None = None,
                why: str = "") -> Outcome:  # fmt: skip
        """Make ``version`` production if ``decide_promotion`` agrees; read, decide and write under one lock."""
        name, email = identity(self.root, who)
        with registry_lock(self.root, self.settings.lock_timeout_s):
            state = read_state(self.root, self.artifact)
            cand, current = state.resolve(version), state.production
            if current == cand.version:
                return Outcome(False, True, cand.version, current, current, [f"{cand.version} is production already"])
            stale = stale_evaluation(cand.record.get("evaluated_against"), current)
            if stale:
                return Outcome(False, False, cand.version, current, current, [stale])
            prod_metrics = None if current is None else (cand.record.get("production_metrics")
                                                         or state.versions[current].record.get("metrics"))  # fmt: skip
            decision: Decision = decide_promotion(gate, cand.record.get("metrics"), prod_metrics, thresholds)
            if not decision.promote:
                return Outcome(False, False, cand.version, current, current, decision.reasons)
            self._move_production(state, cand.version, "promote", name, email, why, decision.reasons)
        return Outcome(True, True, cand.version, current, cand.version, decision.reasons)

    def rollback(self, *, who: str | None = None, why: str = "") -> Outcome:
        """Production goes back to the version that held it before the current one."""
        name, email = identity(self.root, who)
        with registry_lock(self.root, self.settings.lock_timeout_s):
            state = read_state(self.root, self.artifact)
            current, previous = state.production, state.previous_production()
            if previous is None:
                raise RegistryError(f"{self.artifact}: no earlier production version to roll back to (production: {current})")
            reasons = [f"rollback from {current} to {previous}"]
            self._move_production(state, previous, "rollback", name, email, why, reasons)
        return Outcome(True, True, previous, current, previous, reasons)

    def _move_production(self, state: RegistryState, version: str, action: str, name: str, email: str, why: str,
                         reasons: list[str]) -> None:  # fmt: skip
        from gto import api

        settle(state, PRODUCTION)
        previous = state.production
        record = {"action": action, "who": name, "why": why, "previous": previous, "reasons": reasons}
        summary = f"{action}: {version} to production (was {previous or 'none'}) by {name}: {why}"
        api.assign(str(self.root), self.artifact, PRODUCTION, version=version, force=True, author=name, author_email=email,
                   message=annotate(summary, record))  # fmt: skip
        for other in state.stages.get(PRODUCTION, []):
            if other != version:
                api.unassign(str(self.root), self.artifact, version=other, stage=PRODUCTION, author=name, author_email=email,
                             message=annotate(f"retire {other} from production: replaced by {version}",
                                              {"action": "retire", "replaced_by": version, "who": name, "why": why}))  # fmt: skip

    def _all_version_names(self) -> list[str]:
        """Every version name ever tagged, deregistered ones too (GTO refuses to reuse them)."""
        from gto.registry import GitRegistry

        with GitRegistry.from_url(str(self.root)) as reg:
            return [v.version for v in reg.find_artifact(self.artifact, create_new=True).versions]

    def _commit_for(self, version: str, name: str, email: str) -> tuple[str, str]:
        """(commit to tag, code revision). GTO allows one version per commit: when HEAD has one,
        the version gets a registration commit: a child of HEAD with HEAD's tree, on no branch."""
        try:
            head = run_git(self.root, "rev-parse", "--verify", "HEAD")
        except RegistryError as exc:
            raise RegistryError(f"{self.root}: no commit yet; versions are tags on commits: commit the code first") from exc
        tagged = {t.split("^")[0] for t in run_git(self.root, "tag", "--points-at", head).split()}
        if not any(t.startswith(f"{self.artifact}@") or t.startswith(f"{self.artifact}#") for t in tagged):
            return head, head
        env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
               "GIT_COMMITTER_EMAIL": email}  # fmt: skip
        msg = f"tunegate: register {self.artifact} {version}\n\nSame tree as {head}, which holds another {self.artifact} version."
        return run_git(self.root, "commit-tree", f"{head}^{{tree}}", "-p", head, "-m", msg, env=env), head

    # -------------------------------------------------------- model files

    def fetch(self, ref: str, dest: Path | str | None = None) -> Path:
        """Check the model files of version/stage ``ref`` out into ``dest`` (default: the cache folder)."""
        info = self.state().resolve(ref)
        model = info.record.get("model") or {}
        if "md5" not in model:
            raise RegistryError(f"{self.artifact} {info.version}: its tag records no DVC md5 (registered outside tunegate?)")
        if dest is None:
            dest = Path(self.settings.cache_dir).expanduser() / self.artifact / f"{info.version}-{model['md5'][:12]}"
            if dest.is_dir():
                return dest
        return fetch_model(model["md5"], Path(dest), self.root, self.settings, model.get("remote"))

    def production_model_dir(self) -> Path | None:
        return self.fetch(PRODUCTION) if self.production_version() else None

    def lineage(self, ref: str = PRODUCTION) -> dict[str, Any]:
        """The chain behind ``ref``: version -> tag/commit -> model md5 -> train params, git revision -> data DVC md5s."""
        info = self.state().resolve(ref)
        rec, lin = info.record, info.record.get("lineage") or {}
        # versions registered before the data_* keys name them validated_* (the folder is whatever train read)
        data = {k.replace("validated_", "data_", 1): v for k, v in (lin.get("data") or {}).items()}
        return {"artifact": self.artifact, "version": info.version, "stages": list(info.stages), "tag": info.tag,
                "commit": info.commit, "code_revision": rec.get("code_revision"), "registered_by": info.author,
                "registered_at": info.created_at, "model": rec.get("model"), "metrics": rec.get("metrics"),
                "git_revision": lin.get("git_revision"), "train": lin.get("train"), "merge": lin.get("merge"),
                "data": data or lin.get("data")}  # fmt: skip


def production_version(repo: Path | str = ".", artifact: str = ARTIFACT) -> str | None:
    """The version in production, or None (no registry, or nothing promoted yet)."""
    try:
        return Registry(RegistrySettings(repo=str(repo), artifact=artifact)).production_version()
    except RegistryError:
        return None


def production_model_dir(repo: Path | str = ".", settings: RegistrySettings | None = None) -> Path | None:
    """The production model's files (fetched from DVC into ``settings.cache_dir`` once), or None (no registry:
    not a git repository; or nothing promoted yet)."""
    settings = settings or load_settings(Path(repo) / "params.yaml")
    try:
        registry = Registry(dataclasses.replace(settings, repo=str(repo)))
    except RegistryError:  # only repo_root raises here: outside git there is no registry, so no production model
        return None
    return registry.production_model_dir()
