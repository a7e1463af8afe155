"""Exact and near-duplicate detection: MinHash signatures, LSH banding, and the grouping rule.

Signatures are bit-identical to ``datasketch.MinHash`` and the band/row split comes from
datasketch's own optimiser; what differs from the textbook loop is speed (a few numpy calls
per corpus). A pair found by banding is kept only when its Jaccard similarity reaches the
threshold, which keeps precision high.

Where things live: normalisation, shingles and signatures in ``steps/data/minhash.py``;
LSH banding, pair verification and the overlap measures in ``steps/data/lsh.py``. This
module turns pairs into groups (``duplicate_groups``: the rule ingest splits by, the same one
the leakage gate checks); callers import the other names from the module that defines them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from steps.data.lsh import candidate_pairs, containment, exact_jaccard, lsh_pairs
from steps.data.minhash import shingle_hashes, signatures_of


def union_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes joined by ``pairs``: one label (smallest member) per node."""
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for i, j in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def exact_groups(keys: Sequence[str]) -> np.ndarray:
    """Label each item by the first index holding the same key."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(k, i) for i, k in enumerate(keys)])


# Candidates for the n-gram overlap rule come from LSH tuned this low: a pair that
# shares half its 8-grams has a 3-gram Jaccard well above it unless one side is
# much longer than the other (that case is left to the validate gate).
OVERLAP_LSH_THRESHOLD = 0.5


def duplicate_groups(
    texts: Sequence[str],
    exact_keys: Sequence[str],
    threshold: float,
    ngram: int | None = None,
    max_overlap: float | None = None,
) -> np.ndarray:
    """Group labels joining exact duplicates (same key) and near-duplicates.

    Two records are near-duplicates when their word-3-gram Jaccard similarity is
    at least ``threshold`` or, with ``ngram`` and ``max_overlap`` given, when more
    than ``max_overlap`` of either one's word ``ngram``-grams appear in the other:
    the same rules the leakage gate applies, so a split built on these groups
    passes it.
    """
    exact = exact_groups(exact_keys)
    reps = np.flatnonzero(exact == np.arange(len(exact)))
    pairs = np.empty((0, 2), dtype=np.int64)
    if len(reps) > 1:
        rep_texts = [texts[i] for i in reps]
        shingles = shingle_hashes(rep_texts)
        sigs = signatures_of(shingles)
        if ngram and max_overlap is not None:
            pairs = lsh_pairs(sigs, min(threshold, OVERLAP_LSH_THRESHOLD))
            if len(pairs):
                keep = exact_jaccard(shingles, pairs) >= threshold
                keep |= containment(shingle_hashes(rep_texts, ngram), pairs) > max_overlap
                pairs = pairs[keep]
        else:
            pairs = candidate_pairs(sigs, threshold, shingles)
    rep_label = union_groups(len(reps), pairs)
    label_of_rep = dict(zip(reps.tolist(), reps[rep_label].tolist()))
    return np.array([label_of_rep[e] for e in exact.tolist()])
