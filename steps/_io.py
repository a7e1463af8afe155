"""Atomic writes and digests: no reader ever sees a half-written file or folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# mkstemp/mkdtemp create 0600/0700 entries; published files get the usual umask-based modes so a
# serving container running as another user can read them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: Path | str, rows: Iterable[dict[str, Any]]) -> Path:
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    return atomic_write_text(path, body)


def read_jsonl(path: Path | str, fix: str = "rerun the step that wrote it") -> list[dict[str, Any]]:
    """Read a JSONL file a step wrote or a package shipped (a bad line is a bug: the error says where and ``fix``)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg}); {fix}") from exc
    return rows


def publish_dir(tmp_dir: Path, final_dir: Path) -> Path:
    """Swap a fully written ``tmp_dir`` in place of ``final_dir`` (old contents removed after)."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old.{os.getpid()}")
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final_dir


def staging_dir(final_dir: Path | str) -> Path:
    """A fresh temp folder beside ``final_dir`` (same filesystem, so the rename is atomic)."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent))
    tmp.chmod(0o777 & ~_UMASK)
    return tmp


def file_digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_digest(path: Path | str) -> str:
    """sha256 of a file, or of a folder's relative names and file digests (sorted)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(file_digest(p).encode())
    return h.hexdigest()
