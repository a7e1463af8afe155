"""The raw-data watch: a flow that fires the event that starts a retrain when DVC-tracked raw data changes.

Raw data lands as ``data/raw/*.dvc`` files (``dvc add``), each naming the md5 of what it tracks.
The watch reduces those md5s to one digest, compares it with the last digest it saw (a Prefect
Variable, so the memory lives on the server, not on the machine that runs the watch) and, when
they differ, emits ``tunegate.raw-data.changed``. The retrain deployments in deploy/prefect.yaml
carry a trigger on that event, so the watch holds no knowledge of what runs next.

The first run, with no Variable yet, records the digest **and fires**: the server has no record
of the model having been trained on this data, so unknown counts as changed. To take the current
data as the baseline without retraining, run the watch once before deploying the retrain
deployments (``python -m flows.watch``), or set the Variable by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.variables import Variable

EVENT = "tunegate.raw-data.changed"
RESOURCE_PREFIX = "tunegate.raw-data."
VARIABLE = "tunegate-raw-data-hash"
MAX_VARIABLE_CHARS = 5000  # Prefect's limit on a Variable's JSON value


class RawDataError(ValueError):
    """A .dvc file the watch cannot read; the message names the file, the field and the fix."""


def raw_data_md5s(raw_dir: str | Path) -> dict[str, str]:
    """Map each DVC-tracked output under ``raw_dir`` (its path relative to raw_dir) to its md5.

    Reads the ``outs`` of every ``*.dvc`` file directly (no DVC call, no data read): what changes
    when new data is ``dvc add``-ed is exactly these md5s (a folder's ends in ``.dir``).
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise RawDataError(f"{root}: no such folder; point raw_dir at the folder that holds the *.dvc files")
    md5s: dict[str, str] = {}
    for dvc_file in sorted(root.rglob("*.dvc")):
        doc = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
        outs = doc.get("outs") if isinstance(doc, dict) else None
        if not outs:
            raise RawDataError(f"{dvc_file}: no `outs:` list; re-track the data with `dvc add`")
        for i, out in enumerate(outs):
            md5 = out.get("md5") if isinstance(out, dict) else None
            if md5 in (None, "") or "path" not in out:
                raise RawDataError(
                    f"{dvc_file}: outs[{i}] has no md5 or path (DVC md5 hashes expected); "
                    "re-track the data with `dvc add`"
                )
            md5s[(dvc_file.parent / str(out["path"])).relative_to(root).as_posix()] = str(md5)
    return md5s


def digest(md5s: dict[str, str]) -> str:
    """One sha256 over the sorted (path, md5) pairs: a renamed, added or removed file changes it too."""
    lines = "".join(f"{path}\t{md5s[path]}\n" for path in sorted(md5s))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def raw_data_hash(raw_dir: str | Path) -> str:
    """The digest of the DVC-tracked raw data under ``raw_dir``; equal digests mean equal data."""
    return digest(raw_data_md5s(raw_dir))


def changed_files(old: dict[str, str] | None, new: dict[str, str]) -> list[str] | None:
    """Paths added, removed or changed between two md5 maps; None when the old map is unknown."""
    if old is None:
        return None
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


def seen_value(new_hash: str, md5s: dict[str, str]) -> dict:
    """What the Variable stores: the digest, plus the per-file md5s when they fit Prefect's 5000-char limit.

    Without the per-file map the next change is still detected; only its list of files is unknown.
    """
    value = {"hash": new_hash, "files": md5s}
    if len(json.dumps(value)) > MAX_VARIABLE_CHARS:
        value = {"hash": new_hash}
    return value


@flow(name="raw-data-watch")
def raw_data_watch(raw_dir: str = "data/raw", variable: str = VARIABLE) -> bool:
    """Emit ``tunegate.raw-data.changed`` when the DVC hashes under ``raw_dir`` changed since the last run.

    Returns:
        True when the event fired (data changed, or the first run), False when nothing changed.
    """
    logger = get_run_logger()
    md5s = raw_data_md5s(raw_dir)
    new_hash = digest(md5s)
    seen = Variable.get(variable, default=None)
    seen = seen if isinstance(seen, dict) else {}
    old_hash = seen.get("hash")
    if old_hash == new_hash:
        logger.info("raw data unchanged (%s, %d files)", new_hash[:12], len(md5s))
        return False

    changed = changed_files(seen.get("files"), md5s)
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": RESOURCE_PREFIX + new_hash[:12],
            "prefect.resource.name": str(raw_dir),
            "tunegate.raw-data.hash": new_hash,
        },
        payload={"old_hash": old_hash, "new_hash": new_hash, "changed_files": changed, "raw_dir": str(raw_dir)},
    )
    # Recorded after the emit: if emitting raises, the next run sees the change again.
    Variable.set(variable, seen_value(new_hash, md5s), overwrite=True)
    which = ", ".join(changed) if changed is not None else "files not known before"
    logger.info("raw data changed %s -> %s (%s): emitted %s", (old_hash or "none")[:12], new_hash[:12], which, EVENT)
    return True


if __name__ == "__main__":
    print(raw_data_watch())
