"""Near-duplicate pairs from MinHash signatures: LSH banding, then verification.

The band/row split comes from datasketch's own optimiser (weighted for recall); banding sorts
band keys instead of filling Python dicts, and an oversized bucket is walked as a star so the
work stays linear. A pair found by banding is kept only when its Jaccard similarity, exact over
the shingle sets or estimated as the fraction of equal signature slots, reaches the threshold,
which keeps precision high. ``containment`` is the n-gram overlap measure of the leakage rule.
Signatures and shingles come from ``steps/data/minhash.py``.
"""

from __future__ import annotations

import numpy as np
from datasketch.lsh import _optimal_param

from steps.data.minhash import NUM_PERM, Shingles

MAX_FULL_BUCKET = 32  # LSH buckets up to this size compare every pair (see _bucket_pairs)


# Weights of datasketch's band/row optimiser (false positives, false negatives). Every
# candidate is verified afterwards (exactly, or on its signature), so a false positive costs a
# comparison while a false negative is a missed duplicate (a leak): favour recall.
# At threshold 0.8 this gives 18 bands of 7 rows: a pair at Jaccard 0.8 is found with
# probability 0.986 and one at 0.85 with 0.999 (equal weights: 0.40 and 0.69).
LSH_WEIGHTS = (0.01, 0.99)


def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows) that datasketch's MinHashLSH chooses for ``threshold`` with LSH_WEIGHTS."""
    return _optimal_param(threshold, num_perm, *LSH_WEIGHTS)


def _band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (record, band): a hash of the band's signature slice."""
    keys = np.empty((len(sigs), bands), dtype=np.uint64)
    for i in range(bands):
        block = np.ascontiguousarray(sigs[:, i * rows : (i + 1) * rows]).astype(np.uint64)
        k = np.full(len(sigs), (i + 1) * 0x9E3779B97F4A7C15 % (1 << 64), dtype=np.uint64)
        for j in range(rows):
            k = (k ^ block[:, j]) * np.uint64(0x100000001B3)
        keys[:, i] = k
    return keys


def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of matching rows of two signature arrays."""
    return (sig_a == sig_b).mean(axis=-1)


def _pair_overlap(shingles: Shingles, pairs: np.ndarray, denominator) -> np.ndarray:
    """|A & B| / denominator(A, B) for the shingle sets of each pair (i, j); each set is built once."""
    hashes, offsets = shingles
    sets: dict[int, set[int]] = {}

    def get(i: int) -> set[int]:
        if i not in sets:
            sets[i] = set(hashes[offsets[i] : offsets[i + 1]].tolist())
        return sets[i]

    out = np.empty(len(pairs))
    for k, (i, j) in enumerate(pairs.tolist()):
        a, b = get(i), get(j)
        out[k] = len(a & b) / denominator(a, b)
    return out


def exact_jaccard(shingles: Shingles, pairs: np.ndarray) -> np.ndarray:
    """True Jaccard similarity of the shingle sets of each pair (i, j)."""
    return _pair_overlap(shingles, pairs, lambda a, b: len(a | b))


def _verify(sigs: np.ndarray, pairs: np.ndarray, threshold: float, shingles: Shingles | None) -> np.ndarray:
    """Keep candidate pairs at or above ``threshold``: exact when shingles are given, else estimated.

    The signature estimate has a standard deviation of about 0.03 at Jaccard 0.85
    with 128 permutations; exact verification removes that noise on both sides.
    """
    if len(pairs) == 0:
        return pairs
    sim = exact_jaccard(shingles, pairs) if shingles is not None else similarity(sigs[pairs[:, 0]], sigs[pairs[:, 1]])
    return pairs[sim >= threshold]


def _bucket_pairs(keys: np.ndarray, split: int | None) -> np.ndarray:
    """Pairs of rows sharing a key.

    Buckets up to MAX_FULL_BUCKET give every pair; a larger one (thousands of
    near-copies) gives a star from its first member, and, when ``split`` divides
    index rows (< split) from query rows, from the first member of each side, so
    a cross pair is always proposed and the work stays linear.
    """
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, len(k)])
    found = []
    small = (sizes > 1) & (sizes <= MAX_FULL_BUCKET)
    for size in np.unique(sizes[small]):
        members = order[starts[small & (sizes == size)][:, None] + np.arange(size)]  # (buckets, size)
        ii, jj = np.triu_indices(size, 1)
        found.append(np.stack([members[:, ii].ravel(), members[:, jj].ravel()], axis=1))
    for start, size in zip(starts[sizes > MAX_FULL_BUCKET], sizes[sizes > MAX_FULL_BUCKET]):
        members = np.sort(order[start : start + size])
        hubs = {members[0]} if split is None else {members[0], members[-1]}  # sorted: a hub on each side
        for hub in hubs:
            found.append(np.stack([np.full(size, hub), members], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def lsh_pairs(sigs: np.ndarray, threshold: float, split: int | None = None) -> np.ndarray:
    bands, rows = lsh_params(threshold, sigs.shape[1])
    keys = _band_keys(sigs, bands, rows)
    pairs = np.concatenate([_bucket_pairs(keys[:, band], split) for band in range(bands)])
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def candidate_pairs(sigs: np.ndarray, threshold: float, shingles: Shingles | None = None) -> np.ndarray:
    """Verified near-duplicate pairs (i, j), i < j, within one signature array."""
    return _verify(sigs, lsh_pairs(sigs, threshold), threshold, shingles)


def cross_pairs(
    query: np.ndarray, index: np.ndarray, threshold: float, shingles: tuple[Shingles, Shingles] | None = None
) -> np.ndarray:
    """Verified pairs (q, i): query row q is a near-duplicate of index row i.

    ``shingles``, when given, is (query shingles, index shingles) for exact verification.
    """
    both = np.concatenate([index, query])
    joined = None
    if shingles is not None:
        (qh, qo), (ih, io) = shingles
        joined = (np.concatenate([ih, qh]), np.concatenate([io[:-1], qo + io[-1]]))
    n = len(index)
    pairs = lsh_pairs(both, threshold, split=n)
    pairs = pairs[(pairs[:, 0] < n) & (pairs[:, 1] >= n)]  # sorted pairs: the index side comes first
    pairs = _verify(both, pairs, threshold, joined)
    return np.stack([pairs[:, 1] - n, pairs[:, 0]], axis=1)


def containment(shingles: Shingles, pairs: np.ndarray) -> np.ndarray:
    """For each pair, the larger of |A & B| / |A| and |A & B| / |B| over the shingle sets."""
    return _pair_overlap(shingles, pairs, lambda a, b: min(len(a), len(b)))
