"""The split files every step after ingest reads and writes: their names, and loading a folder of them.

Ingest writes ``train``, ``validation`` and ``test`` (and ``heldout`` when there is a held-out set)
as ``<name>.jsonl``; validate and augment read them back with ``load_splits``, train and evaluate
one split at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steps.core.config import ConfigError
from steps.core.io import read_jsonl

SPLITS = ("train", "validation", "test")  # required; heldout.jsonl is optional
HELDOUT = "heldout"


class InputError(ConfigError):
    """An input folder lacks a split file; the message says which and how to make it."""


def load_splits(folder: Path, command: str) -> dict[str, list[dict[str, Any]]]:
    """train, validation, test (required) and heldout (when present), in file order.

    Args:
        folder: the folder holding ``<split>.jsonl``.
        command: the command that writes ``folder``, named in the error when a file is missing or broken.

    Raises:
        InputError: a required split file is missing.
        ValueError: a line is not valid JSON.
    """
    splits = {}
    for name in (*SPLITS, HELDOUT):
        path = folder / f"{name}.jsonl"
        if path.is_file():
            splits[name] = read_jsonl(path, fix=f"rerun `{command}` to rewrite it")
        elif name != HELDOUT:
            raise InputError(f"{path}: missing; run `{command}` first")
    return splits
