"""Word shingles and MinHash signatures, vectorised and bit-identical to ``datasketch.MinHash``.

Signatures use datasketch's default ``affine32`` scheme and permutations, with word n-gram
hashes as the hashed values; ``datasketch_signature`` is the reference path the tests compare
against. What differs from the textbook per-record loop is speed: every record's shingles are
hashed and permuted in a few numpy calls. ``words`` is the one text normalisation (NFKC,
casefold, CJK characters as tokens) that dedup, the leakage gates and augmentation share.
Finding pairs among the signatures is ``steps/data/lsh.py``'s work.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Sequence

import numpy as np
from datasketch import MinHash

NUM_PERM = 128
SEED = 1
SHINGLE = 3  # word 3-grams: robust to a changed word, strict enough for short answers

# A CJK character alone (no spaces in Chinese: characters are the units), or a run of other word characters.
_TOKEN = re.compile("[\u3400-\u9fff]|[^\\W\u3400-\u9fff]+")
_M32 = np.uint64(0xFFFFFFFF)
_PERMS: dict[tuple[int, int], np.ndarray] = {}

Shingles = tuple[np.ndarray, np.ndarray]  # (flat hashes, offsets) from shingle_hashes


def words(text: str) -> list[str]:
    """Case- and width-folded word tokens; each CJK character is a token of its own."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


class _Vocab(dict):
    """Word -> crc32, filled on first sight."""

    def __missing__(self, word: str) -> int:
        h = self[word] = zlib.crc32(word.encode("utf-8"))
        return h


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser on uint64 lanes holding 32-bit values."""
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & _M32
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & _M32
    return h ^ (h >> np.uint64(16))


def shingle_hashes(texts: Sequence[str], n: int = SHINGLE) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram of every text, as one flat array plus offsets.

    Record ``i`` owns ``hashes[offsets[i]:offsets[i + 1]]``. A text with fewer
    than ``n`` words has one shingle (all its words); an empty text has one
    shingle for the empty string, so every record has a signature.
    """
    vocab = _Vocab()
    ids: list[int] = []
    lengths = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        ws = words(text) or [""]
        ids.extend(map(vocab.__getitem__, ws))
        lengths[i] = len(ws)
    wh = np.asarray(ids, dtype=np.uint64)
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    # n-gram hash at word position p combines words p..p+n-1 (a rolling polynomial in 32 bits).
    count = np.maximum(lengths - n + 1, 1)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    pos = np.repeat(starts[:-1], count) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], count))
    span = np.repeat(np.minimum(lengths, n), count)
    acc = np.zeros(offsets[-1], dtype=np.uint64)
    for k in range(n):
        valid = k < span
        idx = np.where(valid, pos + k, 0)
        acc = np.where(valid, (acc * np.uint64(0x01000193) + wh[idx]) & _M32, acc)
    return acc.astype(np.uint32), offsets


def permutations(num_perm: int = NUM_PERM, seed: int = SEED) -> np.ndarray:
    """datasketch's own (a, b) permutation parameters, shape (2, num_perm)."""
    key = (num_perm, seed)
    if key not in _PERMS:
        _PERMS[key] = MinHash(num_perm=num_perm, seed=seed).permutations.astype(np.uint64)
    return _PERMS[key]


def minhash_signatures(
    texts: Sequence[str], num_perm: int = NUM_PERM, seed: int = SEED, n: int = SHINGLE, chunk: int = 1 << 12
) -> np.ndarray:
    """MinHash signatures of ``texts``, shape (len(texts), num_perm), uint32."""
    return signatures_of(shingle_hashes(texts, n), num_perm, seed, chunk)


def signatures_of(shingles: Shingles, num_perm: int = NUM_PERM, seed: int = SEED, chunk: int = 1 << 12) -> np.ndarray:
    """MinHash signatures from shingle hashes already computed (see ``shingle_hashes``)."""
    hashes, offsets = shingles
    n_records = len(offsets) - 1
    a, b = permutations(num_perm, seed).astype(np.uint32)
    mixed = _fmix32(hashes.astype(np.uint64)).astype(np.uint32)
    sigs = np.empty((n_records, num_perm), dtype=np.uint32)
    # uint32 arithmetic wraps mod 2**32, exactly datasketch's affine32 scheme.
    # Whole records in chunks of about `chunk` shingles keep the work in cache.
    rec = 0
    while rec < n_records:
        end = max(int(np.searchsorted(offsets, offsets[rec] + chunk, side="right")) - 1, rec + 1)
        lo, hi = offsets[rec], offsets[end]
        phv = mixed[lo:hi, None] * a[None, :]
        phv += b[None, :]
        sigs[rec:end] = np.minimum.reduceat(phv, offsets[rec:end] - lo, axis=0)
        rec = end
    return sigs


def datasketch_signature(text: str, num_perm: int = NUM_PERM, seed: int = SEED, n: int = SHINGLE) -> np.ndarray:
    """The reference: plain ``datasketch.MinHash`` over the same shingle hashes."""
    hashes, _ = shingle_hashes([text], n)
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
    m.update_batch([int(h) for h in hashes])
    return m.hashvalues.astype(np.uint32)
