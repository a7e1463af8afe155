"""Atomic writes, JSON and JSONL reading, and digests: no reader ever sees a half-written file or folder."""

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


def read_json(path: Path | str, fix: str = "rerun the step that wrote it", *, error: type[Exception] = ValueError,
              missing_ok: bool = False) -> Any:
    """Read a JSON file a step wrote or a package shipped.

    Args:
        path: the file.
        fix: what the user should do, appended to the message when the file is missing or broken.
        error: the exception class to raise (a step's own, e.g. ``MergeError``), built from the message.
        missing_ok: return None for a missing file instead of raising.

    Raises:
        error: the file is missing (unless ``missing_ok``) or not valid JSON; the message names the
            file, where it broke, and ``fix``.
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return None
        raise error(f"{path}: not found; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from exc


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


class FolderError(ValueError):
    """A step was pointed at a folder it must not replace or read (one line naming the folder and the fix; exit 2)."""


def _manifest(folder: Path | str) -> dict[str, Any] | None:
    """``folder``'s manifest.json as a mapping; None when it is missing, unreadable or not a JSON object."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _step_of(manifest: dict[str, Any] | None) -> str | None:
    step = manifest.get("step") if manifest else None
    return step if isinstance(step, str) else None


def owner(folder: Path | str) -> str | None:
    """The step whose output ``folder`` is (its manifest.json's ``step``), or None."""
    return _step_of(_manifest(folder))


def check_output(out_dir: Path | str, step: str, inputs: Iterable[Path | str] = ()) -> None:
    """Refuse (FolderError) to let ``step`` publish into ``out_dir`` unless that is safe to replace.

    Safe: a missing or empty folder, or a previous output of the same step (its manifest.json names
    ``step``). Never an input of this run, a folder holding one, or a folder inside an input folder:
    a step never touches what it reads.
    """
    out = Path(out_dir)
    where = out.resolve()
    for p in inputs:
        inp = Path(p).resolve()
        if inp == where or where in inp.parents or (inp.is_dir() and inp in where.parents):
            raise FolderError(f"{out}: is (or holds, or lies in) the input {p}; {step} never writes over what it reads: "
                              f"give another output folder")
    if out.exists() and not out.is_dir():
        raise FolderError(f"{out}: a file, not a folder; {step} publishes a folder there: give another output folder")
    if out.is_dir() and any(out.iterdir()) and (found := owner(out)) != step:
        what = f"the output of {found}" if found else "not the output of a step (no manifest.json naming one)"
        raise FolderError(f"{out}: not empty and {what}; {step} replaces only its own output: give an empty or new "
                          f"folder, or move {out} away first")


def publish_dir(tmp_dir: Path, final_dir: Path) -> Path:
    """Swap a fully written ``tmp_dir`` in place of ``final_dir`` (old contents removed after).

    When ``tmp_dir`` holds a step's manifest.json, ``final_dir`` must pass ``check_output`` for that
    step and its recorded inputs; if not, ``tmp_dir`` is removed and FolderError raised, ``final_dir`` untouched.
    """
    final_dir = Path(final_dir)
    manifest = _manifest(tmp_dir)
    step = _step_of(manifest)
    if step is not None:
        try:
            inputs = manifest.get("inputs") or {}
            check_output(final_dir, step, [v for v in inputs.values() if isinstance(v, str)])
        except FolderError:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old.{os.getpid()}")
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final_dir


def failed_dir(out_dir: Path | str) -> Path:
    """Where a step whose gate failed publishes its output and report: ``OUT_DIR.failed`` beside OUT_DIR,
    so OUT_DIR keeps the last output that passed."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}.failed")


def publish_failed(tmp_dir: Path, out_dir: Path | str) -> Path:
    """Publish a failed gate's output into ``failed_dir(out_dir)``; OUT_DIR stays as it was."""
    return publish_dir(tmp_dir, failed_dir(out_dir))


def clear_failed(out_dir: Path | str, step: str) -> None:
    """After a passing run: remove ``failed_dir(out_dir)`` if it is ``step``'s own stale failure."""
    stale = failed_dir(out_dir)
    if stale.is_dir() and owner(stale) == step:
        shutil.rmtree(stale, ignore_errors=True)


def check_inputs(step: str, inputs: Iterable[Path | str]) -> None:
    """Refuse (FolderError) an input whose folder's manifest.json says its step's gate failed."""
    for p in inputs:
        p = Path(p)
        folder = p if p.is_dir() else p.parent
        manifest = _manifest(folder)
        if manifest is None:
            continue
        metrics = manifest.get("metrics")
        if isinstance(metrics, dict) and metrics.get("passed") is False:
            by = manifest.get("step") or "the step that wrote it"
            raise FolderError(f"{folder}: {by}'s gate failed there (manifest.json: passed false), so {step} will not "
                              f"read it; fix what {by}'s report names and rerun `tunegate {by}`")


def usual_modes(folder: Path | str) -> None:
    """Give every file under ``folder`` the umask's usual mode (0644) and every folder 0755, whatever the
    library that wrote it chose (safetensors' temp files are 0600): a serving container running as
    another user reads them all, and equal runs publish equal modes."""
    for p in [Path(folder), *Path(folder).rglob("*")]:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~_UMASK)


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
