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
"""

from __future__ import annotations

import dataclasses
import fcntl
import getpass
import json
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps._config import ConfigError, load_section, read_params
from steps._io import publish_dir, staging_dir
from steps._promotion import Decision, Thresholds, decide_promotion, stale_evaluation

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
    if not isinstance(params, dict) and not Path(params).is_file():
        return RegistrySettings()
    return load_section(RegistrySettings, "registry", params)


def load_step_config(cls: type, section: str, params: Path | str | dict[str, Any]) -> Any:
    """A step config (with a ``registry`` field) from its own section plus ``registry:``."""
    values = params if isinstance(params, dict) else read_params(params)
    cfg = load_section(cls, section, values)
    return dataclasses.replace(cfg, registry=load_settings(values))


def registry_step_main(argv: list[str] | None, *, run: Any, **kwargs: Any) -> int:
    """``steps._cli.step_main`` with the config's ``registry`` field filled from the ``registry:`` section."""
    import argparse

    from steps._cli import step_main

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--params", default="params.yaml")
    params = pre.parse_known_args(argv)[0].params

    def run_with_registry(cfg: Any, *paths: Path) -> Any:
        return run(dataclasses.replace(cfg, registry=load_settings(params)), *paths)

    return step_main(argv, run=run_with_registry, **kwargs)


def read_json(path: Path | str) -> dict[str, Any] | None:
    """A JSON file a step wrote, or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); re-run the step that wrote it") from exc


# ---------------------------------------------------------------- pure helpers


def next_version(existing: Iterable[str], bump: str = "minor") -> str:
    """The version after the highest of ``existing`` (``v0.1.0`` when there is none)."""
    import semver

    if bump not in BUMPS:
        raise ConfigError(f"register.bump: one of {', '.join(BUMPS)}; got {bump!r}")
    parsed = [semver.Version.parse(v[1:]) for v in existing if v.startswith("v") and semver.Version.is_valid(v[1:])]
    if not parsed:
        return FIRST_VERSION
    return f"v{getattr(max(parsed), f'bump_{bump}')()}"


def annotate(summary: str, record: dict[str, Any]) -> str:
    """A tag message: one human line, a blank line, then the JSON record."""
    return f"{summary}\n\n{json.dumps(record, indent=1, sort_keys=True, default=str)}"


def parse_annotation(message: str) -> dict[str, Any]:
    """The JSON record of a tag message ({} for tags written by hand with ``gto``)."""
    _, _, body = message.partition("\n\n")
    try:
        record = json.loads(body)
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def production_stack(assignments: Iterable[tuple[str, str]]) -> list[str]:
    """Replay (version, action) production assignments, oldest first, into the rollback stack.

    A promotion pushes its version; a rollback to V pops down to V. The previous production is
    the entry below the current one.
    """
    stack: list[str] = []
    for version, action in assignments:
        if action == "rollback" and version in stack:
            while stack[-1] != version:
                stack.pop()
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


# ---------------------------------------------------------------- git: root, identity, lock


def _git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RegistryError(f"git {' '.join(args)} in {root}: {done.stderr.strip()}")
    return done.stdout.strip()


def repo_root(repo: Path | str) -> Path:
    try:
        return Path(_git(Path(repo), "rev-parse", "--show-toplevel"))
    except (RegistryError, FileNotFoundError) as exc:
        raise RegistryError(f"{repo}: the registry lives in git tags: run inside a git repository (git init; git commit)") from exc


def identity(root: Path, who: str | None = None) -> tuple[str, str]:
    """(name, email) recorded as the tagger: ``who`` if given, else git's identity, else $USER."""
    try:
        m = re.match(r"(.*) <(.*)> \d+ [+-]\d{4}$", _git(root, "var", "GIT_COMMITTER_IDENT"))
    except RegistryError:
        m = None
    user = os.environ.get("USER") or getpass.getuser() or "unknown"
    name, email = (m.group(1), m.group(2)) if m else (user, f"{user}@localhost")
    return (who or name), email


@contextmanager
def registry_lock(root: Path, timeout_s: float, shared: bool = False) -> Iterator[None]:
    """flock on .git/tunegate-registry.lock: exclusive for writers, shared for readers.

    flock (not lockf) so that threads of one process exclude each other too: every call opens
    the file anew, and Linux ties flock to the open file description.
    """
    path = Path(root) / _git(root, "rev-parse", "--git-common-dir") / "tunegate-registry.lock"
    try:
        fh = open(path, "a+")  # noqa: SIM115  (closed below)
    except OSError as exc:
        if not shared:
            raise RegistryError(f"{path}: cannot open the registry lock ({exc.strerror}); the registry needs a writable .git") from exc
        yield  # a read-only checkout (a serving container): nobody writes here, read without the lock
        return
    with fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(f"{path}: held by another registry operation for over {timeout_s:.0f} s; "
                                        "wait for it or raise registry.lock_timeout_s") from None  # fmt: skip
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- reading the state


@dataclass(frozen=True)
class VersionInfo:
    version: str
    commit: str
    tag: str
    created_at: str
    author: str
    record: dict[str, Any]  # the registration's JSON: metrics, gate, lineage, model storage
    stages: tuple[str, ...]  # active stages
    active: bool  # False once deregistered


@dataclass(frozen=True)
class RegistryState:
    artifact: str
    versions: dict[str, VersionInfo]
    stages: dict[str, list[str]]  # stage -> versions holding it, newest assignment first
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first, with parsed records

    @property
    def production(self) -> str | None:
        return (self.stages.get(PRODUCTION) or [None])[0]

    def resolve(self, ref: str) -> VersionInfo:
        """A version by name (v1.2.3), stage (production, staging) or ``latest``."""
        if ref == "latest" and self.versions:
            ref = max(self.versions, key=_semver_key)
        elif ref in self.stages:
            ref = self.stages[ref][0]
        if ref not in self.versions:
            known = ", ".join(sorted(self.versions, key=_semver_key)) or "none registered yet"
            stages = ", ".join(self.stages) or "none"
            raise RegistryError(f"{self.artifact}: no version or stage {ref!r} (versions: {known}; stages: {stages})")
        return self.versions[ref]

    def previous_production(self) -> str | None:
        """The production before the current one, replayed from the assignment history."""
        moves = [(e["version"], e["record"].get("action", "promote")) for e in self.events
                 if e["event"] == "assignment" and e["stage"] == PRODUCTION]  # fmt: skip
        stack = production_stack(moves)
        if stack and stack[-1] == self.production:
            stack.pop()
        usable = [v for v in stack if v in self.versions and self.versions[v].active and v != self.production]
        return usable[-1] if usable else None


def _semver_key(version: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", version)
    return tuple(int(n) for n in nums[:3])


def read_state(root: Path, artifact: str) -> RegistryState:
    """Every version, active stage and event of ``artifact`` from the GTO tags."""
    from gto.constants import VersionSort
    from gto.registry import GitRegistry

    with GitRegistry.from_url(str(root)) as reg:
        art = reg.find_artifact(artifact, create_new=True)
        vstages = art.get_vstages(versions_per_stage=-1, sort=VersionSort.Timestamp) if art.versions else {}
        stages = {s: [v.version for v in vs] for s, vs in vstages.items() if vs}
        versions = {}
        for v in art.versions:
            if not v.registrations:
                continue
            reg_event = v.registrations[0]
            held = tuple(s for s, vs in stages.items() if v.version in vs)
            versions[v.version] = VersionInfo(v.version, v.commit_hexsha, reg_event.tag, reg_event.created_at.isoformat(),
                                              reg_event.author, parse_annotation(reg_event.message), held, v.is_active)  # fmt: skip
        events = sorted((e for e in art.get_events() if hasattr(e, "tag")), key=lambda e: (e.created_at, e.priority))
        history = [{"event": e.event, "version": getattr(e, "version", None), "stage": getattr(e, "stage", None),
                    "time": e.created_at, "author": e.author, "tag": e.tag, "message": e.message.partition("\n\n")[0],
                    "record": parse_annotation(e.message)} for e in events]  # fmt: skip
    return RegistryState(artifact, versions, stages, history)


def _settle(state: RegistryState, stage: str) -> None:
    """Wait until the clock is past the last second in which ``stage`` changed (git tag times are whole seconds)."""
    times = [e["time"].timestamp() for e in state.events if e["stage"] == stage]
    if times:
        wait = max(times) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)


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
            _settle(read_state(self.root, self.artifact), stage)  # the newest in a stage must be the latest second
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

        _settle(state, PRODUCTION)
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
            head = _git(self.root, "rev-parse", "--verify", "HEAD")
        except RegistryError as exc:
            raise RegistryError(f"{self.root}: no commit yet; versions are tags on commits: commit the code first") from exc
        tagged = {t.split("^")[0] for t in _git(self.root, "tag", "--points-at", head).split()}
        if not any(t.startswith(f"{self.artifact}@") or t.startswith(f"{self.artifact}#") for t in tagged):
            return head, head
        env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
               "GIT_COMMITTER_EMAIL": email}  # fmt: skip
        msg = f"tunegate: register {self.artifact} {version}\n\nSame tree as {head}, which holds another {self.artifact} version."
        return _git(self.root, "commit-tree", f"{head}^{{tree}}", "-p", head, "-m", msg, env=env), head

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
        return {"artifact": self.artifact, "version": info.version, "stages": list(info.stages), "tag": info.tag,
                "commit": info.commit, "code_revision": rec.get("code_revision"), "registered_by": info.author,
                "registered_at": info.created_at, "model": rec.get("model"), "metrics": rec.get("metrics"),
                "git_revision": lin.get("git_revision"), "train": lin.get("train"), "merge": lin.get("merge"),
                "data": lin.get("data")}  # fmt: skip


def production_version(repo: Path | str = ".", artifact: str = ARTIFACT) -> str | None:
    """The version in production, or None (no registry, or nothing promoted yet)."""
    try:
        return Registry(RegistrySettings(repo=str(repo), artifact=artifact)).production_version()
    except RegistryError:
        return None


def production_model_dir(repo: Path | str = ".", settings: RegistrySettings | None = None) -> Path | None:
    """The production model's files (fetched from DVC into ``settings.cache_dir`` once), or None."""
    settings = settings or load_settings(Path(repo) / "params.yaml")
    return Registry(dataclasses.replace(settings, repo=str(repo))).production_model_dir()


# ---------------------------------------------------------------- DVC storage


@contextmanager
def _dvc(root: Path, settings: RegistrySettings) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(cache ODB, DVC config): the repo's own cache in a DVC repo, else one under cache_dir."""
    if (root / ".dvc").is_dir():
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            yield repo.cache.local, repo.config
        return
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    path = Path(settings.cache_dir).expanduser() / "dvc-cache" / "files" / "md5"
    yield LocalHashFileDB(LocalFileSystem(), str(path)), {}


def _remote(root: Path, url: str, config: dict[str, Any]) -> Any:
    """The DVC remote ODB (files/md5 layout, like ``dvc push``) for a folder or URL."""
    from dvc.data_cloud import Remote
    from dvc.fs import get_cloud_fs

    if "://" not in url:
        path = Path(url).expanduser()
        url = str(path if path.is_absolute() else root / path)
    try:
        cls, conf, fs_path = get_cloud_fs(config, url=url)
    except ImportError as exc:  # s3://, gs://: the plugin is missing
        raise RegistryError(f"registry.remote {url}: {exc}; pip install -c constraints.txt dvc-s3 (or dvc-gs, dvc-azure)") from exc
    return Remote("registry", fs_path, cls(**conf), **conf).odb


def _ids(tree: Any) -> set[Any]:
    return {tree.hash_info} | {oid for _, _, oid in tree}


def store_model(model_dir: Path | str, root: Path, settings: RegistrySettings) -> dict[str, Any]:
    """Add ``model_dir`` to the DVC cache and push it to the registry remote; return its md5 and size."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.transfer import transfer

    model_dir = Path(model_dir).resolve()
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise RegistryError(f"{model_dir}: no model folder to register; run the merge step first")
    with _dvc(root, settings) as (cache, config):
        staging, meta, tree = build(cache, str(model_dir), cache.fs, "md5")
        transfer(staging, cache, _ids(tree), shallow=False, hardlink=False)
        pushed = transfer(cache, _remote(root, settings.remote, config), _ids(tree), shallow=False)
        if pushed.failed:
            raise RegistryError(f"pushing {model_dir} to {settings.remote} failed for {len(pushed.failed)} objects")
    return {"md5": tree.hash_info.value, "nfiles": meta.nfiles, "size": meta.size, "remote": settings.remote}


def fetch_model(md5: str, dest: Path, root: Path, settings: RegistrySettings, recorded_remote: str | None = None) -> Path:
    """Check DVC object ``md5`` (a .dir) out into ``dest`` atomically, pulling from the remote if needed."""
    from dvc_data.hashfile.checkout import checkout
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.transfer import transfer
    from dvc_data.hashfile.tree import Tree
    from dvc_objects.fs.local import LocalFileSystem

    oid = HashInfo("md5", md5)
    with _dvc(root, settings) as (cache, config):
        try:
            tree = Tree.load(cache, oid)
            complete = all(cache.exists(i.value) for i in _ids(tree))
        except FileNotFoundError:
            complete = False
        for url in dict.fromkeys([settings.remote, recorded_remote or settings.remote]):
            if complete:
                break
            remote = _remote(root, url, config)
            try:
                tree = Tree.load(remote, oid)
            except FileNotFoundError:
                continue
            complete = not transfer(remote, cache, _ids(tree), shallow=False).failed
        if not complete:
            raise RegistryError(f"DVC object {md5}: not in the cache nor in remote {settings.remote}; "
                                "point registry.remote at the storage it was pushed to")  # fmt: skip
        tmp = staging_dir(dest)
        tmp.rmdir()  # checkout creates the folder
        checkout(str(tmp), LocalFileSystem(), tree, cache)
    return publish_dir(tmp, dest)


def dvc_md5(path: Path | str) -> str | None:
    """The md5 ``dvc add`` would give ``path`` (a .dir hash for folders), computed without writing."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    if not Path(path).exists():
        return None
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as tmp:
        _, _, obj = build(LocalHashFileDB(fs, tmp), str(Path(path).resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value


# ---------------------------------------------------------------- W&B Registry


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
