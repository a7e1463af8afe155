"""Guard rails on augmented candidates, in order: format, exact duplicate, similarity, near duplicate, leak, cap.

Each rule is a function over all candidates that returns, per candidate, why it fails (""
when it passes); ``judge`` runs them in order on the candidates still standing, so every
rejection names the first rule it broke. The dedup and leakage rules are the validate gates'
(steps/data/dedup.py, steps/gates/): an accepted record is no near-copy of another train record's
user side, and no near-duplicate (word-3-gram MinHash Jaccard >= leak_threshold) nor
n-gram overlap (> max_ngram_overlap of its word n-grams) of any validation, test or held-out
record.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from steps.augmentation.methods import Candidate
from steps.augmentation.text import units
from steps.data import dedup
from steps.data.lsh import candidate_pairs, cross_pairs
from steps.data.minhash import minhash_signatures, shingle_hashes, signatures_of
from steps.gates.dedup import content_text, near_leaks
from steps.gates.format import format_problems
from steps.models.encoders import PACKAGED, encoder_path

REASONS = ("format", "duplicate", "similarity", "leak", "cap")


def changed_text(c: Candidate) -> tuple[str, str]:
    """(origin's text, candidate's text) of the rewritten units, joined: what similarity compares."""
    get = lambda rec, path: rec["text"] if path == ("text",) else rec["messages"][path[1]]["content"]  # noqa: E731
    before = "\n".join(get(c.origin, p) for p in c.changed) if c.origin else ""
    return before, "\n".join(get(c.record, p) for p in c.changed)


def format_rule(cands: Sequence[Candidate]) -> list[str]:
    """A protected span lost while rewriting, or a record the validate format checks refuse."""
    out = []
    for c in cands:
        problems = format_problems(c.record)
        out.append(c.problem or "; ".join(f"{k}: {v}" for k, v in problems.items()))
    return out


def exact_rule(cands: Sequence[Candidate], train: Sequence[dict[str, Any]]) -> list[str]:
    """Same content (meta.hash) as its origin, another train record or an earlier candidate."""
    seen = {r["meta"]["hash"]: r["id"] for r in train}
    out = []
    for c in cands:
        h = c.record["meta"]["hash"]
        if c.duplicate:
            out.append(c.duplicate)
        elif h in seen:
            out.append("unchanged: same content as its origin" if c.origin and seen[h] == c.origin["id"]
                       else f"same content as record {seen[h]}")
        else:
            seen[h] = c.record["id"]
            out.append("")
    return out


def similarity_rule(cands: Sequence[Candidate], minimum: float | None, encoder: Callable[[], Any]) -> list[str]:
    """Cosine similarity of the rewritten units to the origin's, by the sentence encoder, below ``minimum``."""
    pairs = [changed_text(c) for c in cands]
    todo = [i for i, c in enumerate(cands) if c.origin is not None and c.changed]
    if minimum is None or not todo:
        return [""] * len(cands)
    texts = sorted({t for i in todo for t in pairs[i]})
    emb = encoder().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    row = {t: k for k, t in enumerate(texts)}
    out = [""] * len(cands)
    for i in todo:
        sim = float(emb[row[pairs[i][0]]] @ emb[row[pairs[i][1]]])
        cands[i].record["meta"]["augment_similarity"] = round(sim, 4)
        if sim < minimum:
            out[i] = f"cosine similarity {sim:.3f} to its origin is below min_similarity {minimum}"
    return out


def near_dup_rule(cands: Sequence[Candidate], train: Sequence[dict[str, Any]], fields: Sequence[str],
                  threshold: float) -> list[str]:
    """Rewritten units that near-copy (word-3-gram Jaccard) another train record's or an earlier candidate's."""
    if not cands:
        return []
    mine = [changed_text(c)[1] for c in cands]
    theirs = ["\n".join(t for _, t in units(r, fields)) for r in train]
    out = [""] * len(cands)
    if theirs:
        q, t = shingle_hashes(mine), shingle_hashes(theirs)
        pairs = cross_pairs(signatures_of(q), signatures_of(t), threshold, (q, t))
        for i, j in pairs.tolist():
            if (cands[i].origin or {}).get("id") != train[j]["id"] and theirs[j].strip():
                out[i] = out[i] or f"its rewritten text near-copies train record {train[j]['id']}"
    shingles = shingle_hashes(mine)
    pairs = candidate_pairs(signatures_of(shingles), threshold, shingles)
    label = dedup.union_groups(len(cands), pairs)  # the first candidate of each group stays
    for i in np.flatnonzero(label != np.arange(len(cands))).tolist():
        out[i] = out[i] or f"its rewritten text near-copies candidate {cands[label[i]].record['id']}"
    return out


def leak_rule(cands: Sequence[Candidate], evals: Sequence[dict[str, Any]], leak_threshold: float, ngram: int,
              max_overlap: float) -> list[str]:
    """The validate leakage rule against every validation, test and held-out record."""
    if not cands or not evals:
        return [""] * len(cands)
    texts = [content_text(c.record) for c in cands]
    eval_texts = [content_text(r) for r in evals]
    partner = near_leaks(minhash_signatures(texts), minhash_signatures(eval_texts), leak_threshold)
    t_hash, t_off = shingle_hashes(texts, ngram)
    e_hash, e_off = shingle_hashes(eval_texts, ngram)
    shared = pd.Series(t_hash).isin(e_hash).to_numpy()
    overlap = np.add.reduceat(shared.astype(np.int64), t_off[:-1]) / np.diff(t_off)
    owner = np.repeat(np.arange(len(evals)), np.diff(e_off))  # eval record of each eval n-gram
    out = []
    for i in range(len(cands)):
        why = []
        if i in partner:
            why.append(f"near-duplicate (Jaccard ~{partner[i][1]:.2f}) of eval record {evals[partner[i][0]]['id']}")
        if overlap[i] > max_overlap:
            source = np.bincount(owner[pd.Series(e_hash).isin(t_hash[t_off[i] : t_off[i + 1]]).to_numpy()]).argmax()
            why.append(f"{overlap[i]:.0%} of its word {ngram}-grams appear in eval text (max {max_overlap:.0%}), "
                       f"most in eval record {evals[source]['id']}")
        out.append("; ".join(why))
    return out


def cap_rule(cands: Sequence[Candidate], limit: int, seed: int) -> list[str]:
    """Keep at most ``limit``: first variants of every origin before second ones, ties in a seeded order."""
    def draw(c: Candidate) -> str:
        return hashlib.sha256(f"{seed}:{c.record['id']}".encode()).hexdigest()

    by_origin: dict[str, list[int]] = {}
    for i, c in enumerate(cands):
        by_origin.setdefault((c.origin or {}).get("id", c.record["id"]), []).append(i)
    keys = []  # (rank within its origin in a seeded order: methods mix fairly, draw, index)
    for members in by_origin.values():
        keys += [(rank, draw(cands[i]), i) for rank, i in enumerate(sorted(members, key=lambda i: draw(cands[i])))]
    keep = {i for *_, i in sorted(keys)[: max(limit, 0)]}
    return ["" if i in keep else f"over the cap of {limit} augmented records (augment.max_fraction)"
            for i in range(len(cands))]


def judge(cands: list[Candidate], rules: Sequence[tuple[str, Callable[[list[Candidate]], list[str]]]]
          ) -> tuple[list[Candidate], list[tuple[Candidate, str, str]]]:
    """Run ``rules`` (reason, rule) in order on the standing candidates: (accepted, [(cand, reason, detail)])."""
    standing, rejected = list(cands), []
    for reason, rule in rules:
        verdicts = rule(standing)
        rejected += [(c, reason, v) for c, v in zip(standing, verdicts) if v]
        standing = [c for c, v in zip(standing, verdicts) if not v]
    return standing, rejected


@functools.cache
def load_encoder(spec: str = PACKAGED, device: str = "cpu") -> Any:
    """The sentence encoder ``spec`` names: ``packaged`` (all-MiniLM-L6-v2), a folder or a cached id (encoder_path)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(encoder_path(spec), device=device)
