"""Near-duplicate machinery: bit-identical to datasketch, finds planted pairs, groups transitively."""

from __future__ import annotations

import random

import numpy as np

from steps.data import dedup as d
from steps.data.lsh import candidate_pairs, cross_pairs
from steps.data.minhash import datasketch_signature, minhash_signatures, shingle_hashes, words


def test_signatures_are_bit_identical_to_datasketch():
    texts = ["The quick brown fox jumps over the lazy dog", "hi", "", "你好世界，我们 kettle E4", "a b c d " * 50]
    sigs = minhash_signatures(texts, chunk=7)  # tiny chunks exercise the chunk boundaries
    for text, sig in zip(texts, sigs):
        assert np.array_equal(sig, datasketch_signature(text))


def test_words_fold_case_width_and_split_chinese():
    assert words("Ｈｅｌｌｏ, WORLD") == ["hello", "world"]
    assert words("水壶 E4") == ["水", "壶", "e4"]


def _corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    return [" ".join(rng.choices(vocab, k=40)) for _ in range(n)]


def test_planted_near_duplicates_are_found_with_exact_verification():
    texts = _corpus(400)
    rng = random.Random(1)
    planted = set()
    for i in range(0, 400, 8):
        words = texts[i].split()
        words[rng.randrange(5, 35)] = "changed"
        planted.add((i, len(texts)))
        texts.append(" ".join(words))
    sigs = minhash_signatures(texts)
    found = {tuple(p) for p in candidate_pairs(sigs, 0.8, shingle_hashes(texts)).tolist()}
    assert found == planted


def test_cross_pairs_map_query_rows_to_index_rows():
    index = _corpus(50, seed=2)
    query = _corpus(30, seed=3) + [index[7], index[21] + " extra"]
    pairs = cross_pairs(minhash_signatures(query), minhash_signatures(index), 0.8,
                          (shingle_hashes(query), shingle_hashes(index)))
    assert sorted(map(tuple, pairs.tolist())) == [(30, 7), (31, 21)]


def test_duplicate_groups_join_exact_and_near_copies_transitively():
    base = _corpus(3, seed=4)
    a = base[0]
    b = a.replace(a.split()[10], "x", 1)
    c = b.replace(b.split()[30], "y", 1)
    texts = [a, base[1], a, b, c, base[2]]
    labels = d.duplicate_groups(texts, [t.upper() for t in texts], 0.8)
    assert labels.tolist() == [0, 1, 0, 0, 0, 5]
