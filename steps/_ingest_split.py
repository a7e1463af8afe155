"""The leakage-safe split of ingest: one split name per record, duplicate groups kept together.

``assign_splits`` groups exact and near duplicates with the leakage gate's own rule
(``steps._dedup.duplicate_groups``), then splits whole groups: by a seeded hash of each group's
content, so a record keeps its split when data is added, or oldest-first by timestamp. Kept
apart from steps/ingest.py (which re-exports ``assign_splits``) so the step module holds only
its config, ``run()`` and ``main()``, and the split rule reads on its own.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from steps._config import ConfigError
from steps._dedup import duplicate_groups
from steps._schema import record_text

if TYPE_CHECKING:  # annotation only: steps.ingest imports this module
    from steps.ingest import IngestConfig


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
    the newest test.
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
    times = [_timestamp(r["meta"]["timestamp"]) for r in records]
    by_time = cfg.time_split == "on" or (cfg.time_split == "auto" and all(t is not None for t in times))
    if by_time and any(t is None for t in times):
        missing = next(r for r, t in zip(records, times) if t is None)["meta"]
        raise ConfigError(f"ingest.time_split=on but {missing['source']} row {missing['row']} has no parseable timestamp")
    r = cfg.split
    out = [""] * len(records)
    if by_time:
        ordered = sorted(groups.values(), key=lambda g: min(times[i] for i in g))
        done = 0
        for g in ordered:
            frac = done / len(records)
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
