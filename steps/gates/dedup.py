"""The dedup and leakage gates: exact and near copies within train, train text found in eval/held-out.

``content_text`` is the text both gates compare (system turns left out); ``dedup_columns``
marks every train record after the first of its exact (meta.hash) or MinHash near-copy
group; ``leakage_columns`` marks train records that near-duplicate, or share many word
n-grams with, validation/test/held-out text, using ``near_leaks`` (which the augment
step reuses). Both note why in ``details`` with where the other copy lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from steps.data import dedup
from steps.data.lsh import candidate_pairs, cross_pairs, similarity
from steps.data.minhash import shingle_hashes
from steps.gates.records import EXAMPLES, record_turns

if TYPE_CHECKING:
    from steps.gates.config import ValidateConfig


def content_text(rec: Any) -> str:
    """A record's text without system turns: a shared system prompt is neither a duplicate nor a leak."""
    if not isinstance(rec, dict):
        return ""
    parts = [m["content"] for key in ("messages", "chosen", "rejected", "completion") for m in record_turns(rec, key)
             if isinstance(m, dict) and m.get("role") != "system" and isinstance(m.get("content"), str)]
    if isinstance(rec.get("text"), str):
        parts.append(rec["text"])
    return "\n".join(parts)


def _where(df: pd.DataFrame, i: int) -> str:
    r = df.loc[i]
    return f"{r.split}.jsonl:{r.line} (dataset {r.dataset}, row {r.row}, id {r.id})"


def dedup_columns(df: pd.DataFrame, train: pd.Index, sigs: np.ndarray, details: dict, cfg: ValidateConfig) -> None:
    """exact_dup / near_dup: 1 for each train record after the first of its group."""
    group = dedup.exact_groups(df.loc[train, "hash"].tolist())  # position of the first record with that hash
    exact = group != np.arange(len(train))
    df["exact_dup"] = 0
    df.loc[train[exact], "exact_dup"] = 1
    for k in np.flatnonzero(exact)[: EXAMPLES * 4]:
        details[("exact_dup", train[k])] = f"same content (meta.hash) as {_where(df, train[group[k]])}"
    reps = train[~exact]  # near-duplicates among distinct contents only
    pairs = candidate_pairs(sigs[reps], cfg.near_dup_threshold) if len(reps) > 1 else np.empty((0, 2), int)
    label = dedup.union_groups(len(reps), pairs)
    near = label != np.arange(len(reps))
    df["near_dup"] = 0
    df.loc[reps[near], "near_dup"] = 1
    for k in np.flatnonzero(near)[:EXAMPLES * 4]:
        sim = float(similarity(sigs[reps[k]], sigs[reps[label[k]]]))
        details[("near_dup", reps[k])] = f"near-copy (Jaccard ~{sim:.2f}) of {_where(df, reps[label[k]])}"


def _unique_rows(sigs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct signature rows and each row's position among them (a 64-bit row digest as the key)."""
    key = np.full(len(sigs), 0xCBF29CE484222325, dtype=np.uint64)
    for j in range(sigs.shape[1]):  # FNV-1a over the slots: 128 vector ops, not a sort of 512-byte rows
        key = (key ^ sigs[:, j].astype(np.uint64)) * np.uint64(0x100000001B3)
    inverse, uniques = pd.factorize(key)
    first = np.zeros(len(uniques), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(sigs))[::-1]
    return sigs[first], inverse


def near_leaks(train_sigs: np.ndarray, eval_sigs: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """Train row -> (eval row, estimated Jaccard) of its closest eval near-duplicate at ``threshold``."""
    # Identical signatures collapse first, so a bucket of copies stays one row for the LSH.
    tu, tinv = _unique_rows(train_sigs)
    eu, einv = _unique_rows(eval_sigs)
    pairs = cross_pairs(tu, eu, threshold)
    if not len(pairs):
        return {}
    sim = similarity(tu[pairs[:, 0]], eu[pairs[:, 1]])
    best = pd.DataFrame({"t": pairs[:, 0], "e": pairs[:, 1], "s": sim}).sort_values("s").groupby("t").last()
    first_eval = pd.Series(np.arange(len(eval_sigs))).groupby(einv).first()  # a representative eval row
    found = pd.Series(np.arange(len(train_sigs)))[pd.Series(tinv).isin(best.index).to_numpy()]
    return {int(k): (int(first_eval[best.e[tinv[k]]]), float(best.s[tinv[k]])) for k in found}


def leakage_columns(df: pd.DataFrame, train: pd.Index, evals: pd.Index, texts: list[str], sigs: np.ndarray,
                    details: dict, cfg: ValidateConfig) -> None:
    """leaked: 1 for a train record that near-duplicates or shares many n-grams with eval/held-out text."""
    df["leak_jaccard"], df["ngram_overlap"], df["leaked"] = 0.0, 0.0, 0
    if len(train) == 0 or len(evals) == 0:
        return
    partner = near_leaks(sigs[train], sigs[evals], cfg.leak_threshold)
    near = np.zeros(len(train), dtype=bool)
    near[list(partner)] = True
    df.loc[train[near], "leak_jaccard"] = [partner[k][1] for k in np.flatnonzero(near)]
    # Word n-grams: the fraction of a train record's n-grams found anywhere in eval/held-out text.
    t_hash, t_off = shingle_hashes([texts[i] for i in train], cfg.ngram)
    e_hash, e_off = shingle_hashes([texts[i] for i in evals], cfg.ngram)
    shared = pd.Series(t_hash).isin(e_hash).to_numpy()  # a hash table: 10x np.isin's sort at 100k records
    overlap = np.add.reduceat(shared.astype(np.int64), t_off[:-1]) / np.diff(t_off)
    df.loc[train, "ngram_overlap"] = overlap
    many = overlap > cfg.max_ngram_overlap
    leaked = (near | many) & np.array([bool(texts[i].strip()) for i in train])  # empty text fails format instead
    df.loc[train[leaked], "leaked"] = 1
    owner = np.repeat(np.arange(len(evals)), np.diff(e_off))  # eval row of each eval n-gram
    for k in np.flatnonzero(leaked)[: EXAMPLES * 4]:
        why = []
        if near[k]:
            j, sim = partner[k]
            why.append(f"near-duplicate (Jaccard ~{sim:.2f}) of {_where(df, evals[j])}")
        if many[k]:
            source = np.bincount(owner[pd.Series(e_hash).isin(t_hash[t_off[k] : t_off[k + 1]]).to_numpy()]).argmax()
            why.append(f"{overlap[k]:.0%} of its word {cfg.ngram}-grams appear in eval text, "
                       f"most in {_where(df, evals[source])}")
        details[("leaked", train[k])] = "; ".join(why)


def probe_leak_columns(df: pd.DataFrame, train: pd.Index, texts: list[str], probes: list[tuple[str, str]],
                       details: dict, cfg: ValidateConfig, source: str) -> list[str]:  # fmt: skip
    """Mark as leaked each train record holding a behaviour probe's text; return the ids of the probes found.

    Probes are evaluation data: a probe answered from training is memorised, not learned. A probe
    leaks when more than ``max_ngram_overlap`` of its word n-grams (its own words, if shorter)
    appear in one train record; that record gets ``leaked = 1``, so the leakage gate fails on it.
    """
    if len(train) == 0 or not probes:
        return []
    t_hash, t_off = shingle_hashes([texts[i] for i in train], cfg.ngram)
    owner = np.repeat(np.arange(len(train)), np.diff(t_off))  # train row of each train n-gram
    p_hash, p_off = shingle_hashes([text for _, text in probes], cfg.ngram)
    found = []
    for k, (pid, _) in enumerate(probes):
        mine = p_hash[p_off[k] : p_off[k + 1]]
        hits = pd.Series(t_hash).isin(mine).to_numpy()
        if not hits.any():
            continue
        per_record = np.bincount(owner[hits], minlength=len(train))
        j = int(per_record.argmax())
        share = len(np.intersect1d(mine, t_hash[t_off[j] : t_off[j + 1]])) / len(np.unique(mine))
        if share > cfg.max_ngram_overlap:
            df.loc[train[j], "leaked"] = 1
            note = f"holds {share:.0%} of the word {cfg.ngram}-grams of probe {pid} ({source}): a probe must stay unseen"
            key = ("leaked", train[j])
            details[key] = f"{details[key]}; {note}" if key in details else note
            found.append(pid)
    return found
