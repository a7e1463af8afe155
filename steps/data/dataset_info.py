"""LLaMA-Factory's ``dataset_info.json`` read as ingest dataset declarations, one to one.

An entry's ``file_name`` (relative to the dataset_info.json) becomes ``path``; ``formatting``
(alpaca, the default, or sharegpt), ``ranking: true`` and a ``kto_tag`` column pick the format
(alpaca/sharegpt, preference, feedback); ``columns`` maps LLaMA-Factory's column names (prompt,
query, response, history, messages, system, tools, chosen, rejected, kto_tag) to ingest's
canonical fields; ``tags`` are the sharegpt role tags, named the same. A key ingest cannot honour
(a hub URL, images, ``num_samples``) is an error naming the dataset, never ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steps.data.config import DatasetSpec, IngestConfig
from steps.data.errors import FileError
from steps.data.formats import DEFAULT_TAGS

_KEYS = {"file_name", "formatting", "ranking", "columns", "tags"}
_UNSUPPORTED = {"hf_hub_url": "a local file_name", "ms_hub_url": "a local file_name", "om_hub_url": "a local file_name",
                "script_url": "a local file_name", "cloud_file_name": "a local file_name", "subset": "a file of that subset",
                "split": "a file of that split", "folder": "a file_name", "num_samples": "a file of that size"}  # fmt: skip
# LLaMA-Factory column -> ingest canonical field, per formatting.
_ALPACA = {"prompt": "instruction", "query": "input", "response": "output", "history": "history", "system": "system",
           "tools": "tools", "chosen": "chosen", "rejected": "rejected", "kto_tag": "label"}  # fmt: skip
_SHAREGPT = {"messages": "conversations", "system": "system", "tools": "tools", "chosen": "chosen",
             "rejected": "rejected", "kto_tag": "label"}  # fmt: skip


def resolve_datasets(cfg: IngestConfig, root: Path = Path(".")) -> tuple[tuple[DatasetSpec, ...], tuple[DatasetSpec, ...]]:
    """``cfg.datasets`` and ``cfg.heldout`` with every name-only entry filled in from ``cfg.dataset_info``."""
    if not cfg.dataset_info:
        return cfg.datasets, cfg.heldout
    path = root / cfg.dataset_info
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise FileError(
            f"{path}: cannot read ingest.dataset_info ({exc}); point it at LLaMA-Factory's dataset_info.json"
        ) from exc
    if not isinstance(info, dict):
        raise FileError(f"{path}: expected an object of named datasets, got {type(info).__name__}")
    base = Path(cfg.dataset_info).parent

    def one(spec: DatasetSpec) -> DatasetSpec:
        if spec.path:
            return spec
        if spec.name not in info:
            raise FileError(f"{path}: no dataset named '{spec.name}'; it names {', '.join(sorted(info))}")
        return spec_from_entry(spec.name, info[spec.name], base, f"{path}: {spec.name}")

    return tuple(map(one, cfg.datasets)), tuple(map(one, cfg.heldout))


def spec_from_entry(name: str, entry: Any, base: Path, where: str) -> DatasetSpec:
    """One dataset_info.json entry as a DatasetSpec; unknown or unsupported keys are errors."""
    if not isinstance(entry, dict):
        raise FileError(f"{where}: expected an object, got {type(entry).__name__}")
    for key in entry:
        if key in _UNSUPPORTED:
            raise FileError(f"{where}: '{key}' is not supported by ingest; download the data and give {_UNSUPPORTED[key]}")
        if key not in _KEYS:
            raise FileError(f"{where}: unknown key '{key}'; known: {', '.join(sorted(_KEYS))}")
    if "file_name" not in entry:
        raise FileError(f"{where}: no file_name; give the data file's path relative to dataset_info.json")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise FileError(f"{where}: formatting '{formatting}' unknown; use alpaca or sharegpt")
    names = _ALPACA if formatting == "alpaca" else _SHAREGPT
    columns: dict[str, str] = {}
    for key, col in (entry.get("columns") or {}).items():
        if key not in names:
            known = ", ".join(names)
            raise FileError(
                f"{where}: column '{key}' is not supported for {formatting} (images, videos and audios are not); known: {known}"
            )
        columns[names[key]] = col
    tags = entry.get("tags") or {}
    unknown = set(tags) - set(DEFAULT_TAGS)
    if unknown:
        raise FileError(f"{where}: unknown tags {sorted(unknown)}; known: {', '.join(DEFAULT_TAGS)}")
    if entry.get("ranking"):
        fmt = "preference"
    elif "label" in columns:
        fmt = "feedback"
        if formatting == "alpaca":  # the response is the judged completion
            columns["completion"] = columns.pop("output", "output")
    else:
        fmt = formatting
    if fmt == "preference" and formatting == "alpaca":
        columns.pop("output", None)  # ranking alpaca: chosen and rejected are the answers
    return DatasetSpec(path=str(base / entry["file_name"]), format=fmt, name=name, columns=columns, tags=dict(tags))
