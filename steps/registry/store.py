"""DVC storage of registered model files: push on register, pull and check out on fetch.

A version's tag records only the DVC ``.dir`` md5 of its model folder; the files live in the
DVC cache (the repository's own in a DVC repo, else one under ``registry.cache_dir``) and in
the registry remote (a local folder by default; ``s3://`` or ``gs://`` once ``pip install
dvc-s3`` / ``dvc-gs``), in the files/md5 layout ``dvc push`` uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steps.core.io import publish_dir, staging_dir
from steps.registry.settings import RegistryError, RegistrySettings


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
