"""The leakage-safe split of ingest: one split name per record, duplicate groups kept together.

``assign_splits`` groups exact and near duplicates with the leakage gate's own rule
(``steps.data.dedup.duplicate_groups``), then splits whole groups: by a seeded hash of each group's
content, so a record keeps its split when data is added, or oldest-first by timestamp. Kept
apart from steps/ingest.py (which calls ``assign_splits``) so the step module holds only
its config, ``run()`` and ``main()``, and the split rule reads on its own.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from steps.core.config import ConfigError
from steps.core.schema import is_replay, record_text
from steps.data.config import IngestConfig
from steps.data.dedup import duplicate_groups


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None


def assign_splits(records: list[dict[str, Any]], cfg: IngestConfig) -> list[str]:
    """One split name per record; duplicate groups (exact and near) stay together.

    Without timestamps each group's split comes from a seeded hash of its
    content, so a record keeps its split when more data arrives later. With a
    timestamp on every record (time_split auto/on) the oldest groups train and
    the newest test. Replay data (``DatasetSpec.replay``) always trains, with its
    group; the ratios and the timestamps are those of the other records.
    """
    if not records:
        return []
    labels = duplicate_groups(
        [record_text(r) for r in records],
        [r["meta"]["hash"] for r in records],
        cfg.leak_threshold,
        cfg.ngram,
        cfg.max_ngram_overlap,
    )
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(labels.tolist()):
        groups.setdefault(g, []).append(i)
    out = [""] * len(records)
    replay = {g for g, members in groups.items() if any(is_replay(records[i]) for i in members)}
    for g in replay:  # replay data trains; a group keeps any task record that copies replay data with it
        for i in groups.pop(g):
            out[i] = "train"
    task = [i for members in groups.values() for i in members]
    times = {i: _timestamp(records[i]["meta"]["timestamp"]) for i in task}
    by_time = cfg.time_split == "on" or (cfg.time_split == "auto" and bool(task) and all(t is not None for t in times.values()))
    if by_time and any(t is None for t in times.values()):
        missing = records[next(i for i, t in times.items() if t is None)]["meta"]
        raise ConfigError(f"ingest.time_split=on but {missing['source']} row {missing['row']} has no parseable timestamp")
    r = cfg.split
    if by_time:
        ordered = sorted(groups.values(), key=lambda g: min(times[i] for i in g))
        done = 0
        for g in ordered:
            frac = done / len(task)
            name = "train" if frac < r.train else "validation" if frac < r.train + r.validation else "test"
            for i in g:
                out[i] = name
            done += len(g)
        return out
    for g in groups.values():
        u = _unit(cfg.seed, min(records[i]["meta"]["hash"] for i in g))
        name = "train" if u < r.train else "validation" if u < r.train + r.validation else "test"
        for i in g:
            out[i] = name
    return out
