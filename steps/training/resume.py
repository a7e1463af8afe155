"""Checkpoints that survive a kill, and resuming from the last complete one.

A run trains in ``work_dir(out_dir)`` = ``out_dir.parent/.{out_dir.name}.resume/``, a folder with
a fixed name that outlives the process: ``run.json`` (what the run is: config, data, upstream
models, library versions) and ``checkpoints/checkpoint-N``. At the end the final model is saved
into the same folder, ``run.json`` is removed and the folder is renamed to ``out_dir``
(``steps.core.io.publish_dir``), checkpoints included: a reader never sees a half-written ``out_dir``.

Completeness. ``Trainer._save_checkpoint`` writes the model, optimizer, scheduler, RNG state and
trainer_state.json one after another, so a kill leaves any prefix of them, and
``get_last_checkpoint`` would pick that folder. In transformers 5 ``_maybe_log_save_evaluate``
calls ``callback_handler.on_save`` only after ``_save_checkpoint`` has returned, i.e. after every
file and after rotation; ``complete_marker().on_save`` then fsyncs the files and writes
``.complete`` (names and sizes of the files). Only a folder whose marker matches its files is
resumed from; one without is deleted when the next run starts.

Rotation (``trainer_utils.rotate_checkpoints``) runs inside ``_save_checkpoint``, before the marker:
it keeps the newest folder (not yet marked) and the best one, and deletes the oldest others down to
``save_total_limit``. So TrainConfig asks for a limit of >= 2 (>= 3 with early stopping) and the
last complete checkpoint survives until the next one is marked.

A finished run. A kill after the last checkpoint is marked (during the final evaluation or the final
save) leaves a checkpoint that ends the run (``finished``). Handing it to ``trainer.train`` would
run one more update before the Trainer checks ``max_steps``, so ``finish_from`` loads it instead:
the run ends where it ended, with nothing trained twice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.io import atomic_write_json, file_digest, read_json
from steps.training.config import TrainConfig

MARKER = ".complete"
RUN_FILE = "run.json"
log = logging.getLogger("tunegate.train")


def work_dir(out_dir: Path) -> Path:
    """The folder a run of ``out_dir`` trains in; the next run with the same ``out_dir`` finds it."""
    return out_dir.parent / f".{out_dir.name}.resume"


def run_identity(cfg: TrainConfig, inputs: dict[str, Path]) -> dict[str, Any]:
    """What must match for a resume: the config, data digests, upstream outputs and library versions."""
    from importlib.metadata import version

    upstream = {key: _manifest_digest(where) for key, where in (("init_from", cfg.init_from), ("rl.reward_model", cfg.rl.reward_model)) if where}
    identity = {"config": dataclasses.asdict(cfg), "data": {k: file_digest(p) if p.is_file() else None for k, p in inputs.items()},
                "upstream": upstream, "versions": {name: version(name) for name in ("torch", "transformers", "trl", "peft")}}  # fmt: skip
    return json.loads(json.dumps(identity, default=str))  # the form run.json reads back (tuples as lists)


def _manifest_digest(where: str) -> str:
    manifest = Path(where).expanduser() / "manifest.json"  # a train output: its manifest digests its files
    return file_digest(manifest) if manifest.is_file() else where


def lock(work: Path) -> int:
    """Create ``work`` and hold an exclusive lock on it (released when the process ends, SIGKILL included)."""
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"{work}: another train run with this out_dir is running now; wait for it to end or stop it") from None
    return fd


def prepare(work: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Keep ``work``'s complete checkpoints if they belong to the same run, else empty it (main process only).

    Returns:
        A note for the manifest: ``discarded`` checkpoints and, when starting fresh, ``fresh_because``.
    """
    note: dict[str, Any] = {"discarded": []}
    try:
        old = read_json(work / RUN_FILE)
    except (OSError, ValueError):  # none yet, or torn by a kill: another run
        old = None
    keep = (RUN_FILE, "checkpoints") if old == identity else ()
    if old != identity and checkpoints(work):
        note["fresh_because"] = _changed(old, identity) if isinstance(old, dict) else [f"no valid {RUN_FILE}"]
        log.warning("train: %s holds checkpoints of another run (%s changed); starting fresh", work, ", ".join(note["fresh_because"]))
    for p in work.iterdir():  # a different run, or the leftovers of a final save that was cut short
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for ckpt in checkpoints(work):
        if (why := incomplete(ckpt)) is not None:
            log.warning("train: %s %s; deleting it", ckpt, why)
            shutil.rmtree(ckpt)
            note["discarded"].append(ckpt.name)
            note.setdefault("discarded_because", {})[ckpt.name] = why
    atomic_write_json(work / RUN_FILE, identity)
    return note


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    before, after = old.get("config") or {}, new["config"]
    keys = [f"config.{k}" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return keys + [k for k in sorted(set(old) | set(new)) if k != "config" and old.get(k) != new.get(k)]


def resume_point(work: Path) -> Path | None:
    """The checkpoint to resume from (logged), or None to start from step 0."""
    last = last_complete(work)
    if last is not None:
        log.warning("train: resuming from %s", last)
    return last


def abandon(work: Path) -> None:
    """After a failed run: keep ``work`` when it holds a checkpoint to resume from, else remove it."""
    last = last_complete(work)
    if last is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log.warning("train: stopped; run again with the same params and data to resume from %s", last)


def checkpoints(work: Path) -> list[Path]:
    """``checkpoint-N`` folders under ``work/checkpoints``, by step."""
    found = [p for p in (work / "checkpoints").glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def last_complete(work: Path) -> Path | None:
    """The highest-numbered checkpoint whose marker matches its files, or None."""
    return next((p for p in reversed(checkpoints(work)) if is_complete(p)), None)


def is_complete(ckpt: Path) -> bool:
    return incomplete(ckpt) is None


def incomplete(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be resumed from (the real reason, for the log and the manifest), or None."""
    if not (ckpt / MARKER).exists():
        return f"was being written when the last run stopped (no {MARKER} marker)"
    try:
        marker = read_json(ckpt / MARKER)
    except (OSError, ValueError):  # torn by a kill while the marker itself was written
        return f"has a torn {MARKER} marker (the run stopped while marking it)"
    files = marker.get("files") if isinstance(marker, dict) else None
    if not files:
        return f"has a {MARKER} marker that lists no files"
    for name, size in files.items():
        if not (ckpt / name).is_file():
            return f"lost {name} after it was complete (the marker lists it)"
        if (found := (ckpt / name).stat().st_size) != size:
            return f"has {name} of {found} bytes where its marker says {size} (changed or truncated after it was complete)"
    return None


def finished(ckpt: Path) -> bool:
    """True when ``ckpt`` ends its run: its step reached max_steps, or a callback (early stopping) stopped training there."""
    state = read_json(ckpt / "trainer_state.json")
    control = ((state.get("stateful_callbacks") or {}).get("TrainerControl") or {}).get("args") or {}
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0) or bool(control.get("should_training_stop"))


def finish_from(trainer: Any, ckpt: Path) -> Any:
    """End a run whose last checkpoint ``ckpt`` is ``finished``, without training: load its weights and
    state (and the best checkpoint when the Trainer loads that at the end), as ``trainer.train`` would have left them.

    Returns:
        A ``TrainOutput`` for this call: no step trained, runtime 0.
    """
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    log.warning("train: %s ends the run (step %s); loading it, nothing left to train", ckpt, ckpt.name.split("-")[-1])
    trainer._load_from_checkpoint(str(ckpt))  # the Trainer's own loader: full weights or the adapter
    trainer.state = TrainerState.load_from_json(str(ckpt / "trainer_state.json"))
    if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint is not None:
        trainer._load_best_model()
    return TrainOutput(trainer.state.global_step, 0.0, {"train_runtime": 0.0})


def mark_complete(ckpt: Path) -> None:
    """fsync every file of ``ckpt``, then write its marker (names and sizes) and fsync the folder."""
    files = {}
    for p in sorted(q for q in ckpt.rglob("*") if q.is_file() and q.name != MARKER):
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
        files[str(p.relative_to(ckpt))] = p.stat().st_size
    atomic_write_json(ckpt / MARKER, {"files": files})
    fd = os.open(ckpt, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_marker(before_mark: Callable[[Path], None] | None = None) -> Any:
    """A ``TrainerCallback`` that marks each checkpoint complete once the Trainer has written it.

    ``before_mark(folder)``, run on the main process first, adds files of our own to the checkpoint.
    """
    from transformers import TrainerCallback

    class CompleteMarker(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.barrier()  # every rank has written its RNG state (and shards) before the folder is marked
            if args.should_save:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if before_mark is not None:
                    before_mark(folder)
                mark_complete(folder)

    return CompleteMarker()
