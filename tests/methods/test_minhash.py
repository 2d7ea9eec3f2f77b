"""MinHash LSH dedup (methods/minhash.py) against plain implementations written here: per-shingle
signatures with Python integers, and exact Jaccard similarity of shingle sets over every pair."""

import hashlib
import itertools
import struct

import numpy as np
import pytest

from curation_assets.methods.minhash import (
    estimated_jaccard,
    lsh_bands,
    lsh_clusters,
    minhash_signatures,
    permutations,
    sha1_hash32,
    word_shingles,
)

PRIME, MASK32, MASK64 = (1 << 61) - 1, (1 << 32) - 1, (1 << 64) - 1


def plain_shingles(text: str, n: int) -> set[bytes]:
    """Every word n-gram of the lower-cased, whitespace-split text (the whole text when shorter)."""
    words = text.lower().split()
    if len(words) <= n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def plain_signature(shingles: set[bytes], a: list[int], b: list[int]) -> list[int]:
    """datasketch's legacy MinHash one shingle and one permutation at a time; the uint64 product
    and sum wrap modulo 2^64 as numpy's do."""
    values = [MASK32] * len(a)
    for shingle in shingles:
        h = struct.unpack("<I", hashlib.sha1(shingle).digest()[:4])[0]
        for k in range(len(a)):
            values[k] = min(values[k], ((((a[k] * h) & MASK64) + b[k]) & MASK64) % PRIME & MASK32)
    return values


def jaccard(x: set, y: set) -> float:
    return len(x & y) / len(x | y) if x | y else 1.0


def planted_corpus(seed: int = 0) -> list[str]:
    """60 random 120-word documents over a 5,000-word vocabulary (no shared 5-grams between them),
    each followed by 0-3 variants with 1, 2, 6, 15 or 40 words replaced: exact Jaccard with their
    original from about 0.95 down to about 0.2."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(5_000)]
    texts = []
    for _ in range(60):
        words = list(rng.choice(vocabulary, size=120))
        texts.append(" ".join(words))
        for _ in range(int(rng.integers(0, 4))):
            variant = list(words)
            for position in rng.choice(120, size=int(rng.choice([1, 2, 6, 15, 40])), replace=False):
                variant[position] = str(rng.choice(vocabulary))
            texts.append(" ".join(variant))
    return texts


def test_shingles_complete_and_data_juicer():
    assert word_shingles("A b  c\nd e f", 5) == {b"a b c d e", b"b c d e f"}
    assert word_shingles("Only three words", 5) == {b"only three words"}
    assert word_shingles("   ", 5) == set()
    # data-juicer: split on ' ' only, windows range(len - n): the last window is dropped ...
    assert word_shingles("a b c d e f g", 5, shingling="data_juicer") == {b"a b c d e", b"b c d e f"}
    assert word_shingles("a b c\nd e f", 5, shingling="data_juicer") == set()  # 'c\nd' is one token
    # ... and a text of at most 5 words has no shingle
    assert word_shingles("one two three four five", 5, shingling="data_juicer") == set()
    assert word_shingles("Keep Case", 1, lowercase=False) == {b"Keep", b"Case"}


def test_signatures_equal_plain_loop_and_datasketch():
    from datasketch import MinHash

    texts = [
        "the quick brown fox jumps over the lazy dog " * 3,
        "hello world",
        "",
        "x " * 40,
        "one two three four five six seven eight nine ten",
    ]
    a, b = permutations(64, 42)
    shingles = [plain_shingles(t, 5) for t in texts]
    ours = minhash_signatures([sha1_hash32(s) for s in shingles], a, b, chunk_rows=7)  # chunks cut documents
    for text_shingles, row in zip(shingles, ours):
        assert row.tolist() == plain_signature(text_shingles, [int(v) for v in a], [int(v) for v in b])
        reference = MinHash(num_perm=64, seed=42, scheme="legacy")
        reference.update_batch(list(text_shingles))
        assert row.tolist() == reference.hashvalues.tolist()


def test_data_juicer_bands_for_its_defaults():
    assert lsh_bands(0.7, 256) == (25, 10)  # what data-juicer's optimal_param gives for its defaults


def test_lsh_clusters_against_exact_jaccard():
    texts = planted_corpus()
    sets = [plain_shingles(t, 5) for t in texts]
    a, b = permutations(256, 42)
    signatures = minhash_signatures([sha1_hash32(s) for s in sets], a, b)
    bands, rows = lsh_bands(0.7, 256)
    clusters = lsh_clusters(signatures, bands, rows)
    same = clusters.keeper[:, None] == clusters.keeper[None, :]
    exact = {(i, j): jaccard(sets[i], sets[j]) for i, j in itertools.combinations(range(len(sets)), 2)}
    high = [pair for pair, value in exact.items() if value >= 0.9]
    low = [pair for pair, value in exact.items() if value <= 0.3]
    assert len(high) >= 20 and any(0.3 < exact[p] <= 0.5 for p in exact) and len(low) > 1_000
    # a pair at J >= 0.9 shares no band with probability (1 - 0.9^10)^25 < 3e-5: every one is found
    assert all(same[i, j] for i, j in high)
    # no false merge: rows of one cluster are joined by a path of pairs with exact J >= 0.5 (a pair at
    # J = 0.5 becomes a candidate with probability 1 - (1 - 0.5^10)^25 < 0.025)
    parent = list(range(len(sets)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for (i, j), value in exact.items():
        if value >= 0.5:
            parent[find(i)] = find(j)
    for i, j in itertools.combinations(range(len(sets)), 2):
        if same[i, j]:
            assert find(i) == find(j), (i, j, exact[(i, j)])
    assert not any(same[i, j] for i, j in low if find(i) != find(j))
    # the kept row of each cluster is its first; cluster numbers only on shared clusters
    for row in range(len(sets)):
        members = np.flatnonzero(clusters.keeper == clusters.keeper[row])
        assert clusters.keeper[row] == members.min()
        assert (clusters.cluster[row] >= 0) == (members.size > 1)
    estimate = estimated_jaccard(signatures, np.array([i for i, _ in high]), np.array([j for _, j in high]))
    assert np.abs(estimate - np.array([exact[p] for p in high])).max() < 0.15  # 256 permutations: sd < 0.02


def test_priority_picks_the_keeper():
    signatures = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 7, 7], [1, 2, 8, 8]], dtype=np.uint32)
    clusters = lsh_clusters(signatures, bands=2, rows=2, priority=np.array([3, 1, 0, 2]))
    assert clusters.keeper.tolist() == [1, 1, 2, 1]
    assert clusters.kept.tolist() == [1, 2] and clusters.dropped.tolist() == [0, 3]
    assert clusters.cluster.tolist() == [0, 0, -1, 0]
    with pytest.raises(ValueError, match="permutation"):
        lsh_clusters(signatures, 2, 2, priority=np.array([0, 0, 1, 2]))
    with pytest.raises(ValueError, match="need 6 signature values"):
        lsh_clusters(signatures, 3, 2)
