"""MinHash + LSH near-duplicate clustering (Broder 1997; banding as in Leskovec et al., *Mining of
Massive Datasets* ch. 3), with data-juicer's `document_minhash_deduplicator` defaults.

Signatures are bit-identical to datasketch's `MinHash(num_perm, seed, scheme="legacy")` and to
data-juicer's: sha1_hash32 of each shingle, permutations (a*h + b) mod (2^61 - 1) & (2^32 - 1)
with a, b drawn from `numpy.random.RandomState(seed)` (taken from datasketch, so they match).
Unlike both, the permutations are applied to every shingle of many documents in one numpy
operation and the per-document minimum is a `minimum.reduceat` over the flat shingle array.

LSH: a pair is a candidate when one of `bands` bands of `rows` consecutive signature values is
equal; clusters are the connected components of the candidate graph (data-juicer's union-find,
NeMo Curator's connected components); no pairwise Jaccard check, as in data-juicer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64((1 << 32) - 1)
Shingling = Literal["complete", "data_juicer"]


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the equally weighted false positive and false negative
    probability mass at `threshold` (datasketch's `MinHashLSH` choice, which data-juicer copies)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return int(lsh.b), int(lsh.r)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) uint64 permutation parameters of datasketch's legacy MinHash (= data-juicer's)."""
    from datasketch import MinHash

    parameters = np.asarray(MinHash(num_perm=num_perm, seed=seed, scheme="legacy").permutations, dtype=np.uint64)
    return parameters[0], parameters[1]


def word_shingles(text: str, window: int, lowercase: bool = True, shingling: Shingling = "complete") -> set[bytes]:
    """Word `window`-grams of `text`, joined by one space, UTF-8 encoded.

    "data_juicer" reproduces the released code: tokens split on the space character only and
    windows `range(len(tokens) - window)`, which drops the last window and gives a text of at most
    `window` words no shingle at all (every such text then has the same signature and they all
    merge). "complete" splits on any whitespace, keeps every window, and a shorter text is one
    shingle of all its words.
    """
    if lowercase:
        text = text.lower()
    if shingling == "data_juicer":
        tokens = [token for token in text.split(" ") if token]
        return {" ".join(tokens[i : i + window]).encode() for i in range(len(tokens) - window)}
    tokens = text.split()
    if not tokens:
        return set()
    if len(tokens) <= window:
        return {" ".join(tokens).encode()}
    return {" ".join(tokens[i : i + window]).encode() for i in range(len(tokens) - window + 1)}


def sha1_hash32(shingles: Iterable[bytes]) -> np.ndarray:
    """The first 4 bytes of each shingle's SHA-1 as a little-endian uint32 (datasketch's
    `sha1_hash32`), as uint64 for the permutation arithmetic."""
    digests = b"".join(hashlib.sha1(shingle).digest()[:4] for shingle in shingles)
    return np.frombuffer(digests, dtype="<u4").astype(np.uint64)


def minhash_signatures(
    hashes: Sequence[np.ndarray], a: np.ndarray, b: np.ndarray, chunk_rows: int = 4_096
) -> np.ndarray:
    """(n, num_perm) uint32 signatures of n documents given each one's shingle hashes.

    The flat array of all shingle hashes is permuted `chunk_rows` shingles at a time (memory
    about chunk_rows x num_perm x 20 bytes), each chunk's per-document minima taken with one
    `minimum.reduceat`. uint64 products wrap modulo 2^64 exactly as in datasketch, so the
    values are bit-identical to its. A document without shingles keeps MAX_HASH everywhere.
    """
    n = len(hashes)
    signatures = np.full((n, a.size), MAX_HASH, dtype=np.uint32)
    lengths = np.fromiter((h.size for h in hashes), dtype=np.int64, count=n)
    if n == 0 or lengths.sum() == 0:
        return signatures
    flat = np.concatenate([h for h in hashes if h.size]).astype(np.uint64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    for lo in range(0, flat.size, chunk_rows):
        hi = min(lo + chunk_rows, flat.size)
        touched = np.flatnonzero((starts < hi) & (ends > lo) & (lengths > 0))
        permuted = permute(flat[lo:hi], a, b)
        local_starts = np.maximum(starts[touched], lo) - lo
        signatures[touched] = np.minimum(signatures[touched], np.minimum.reduceat(permuted, local_starts, axis=0))
    return signatures


def permute(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(hashes), len(a)) uint32 values ((a*h + b) mod 2^64) mod (2^61 - 1) & (2^32 - 1).

    The reduction modulo the Mersenne prime is (x & p) + (x >> 61) and one conditional
    subtraction (x < 2^64 gives at most p + 7), about ten times faster than numpy's uint64 `%`.
    """
    x = np.multiply(hashes[:, None], a)  # wraps modulo 2^64, as datasketch's does
    x += b
    low = x & MERSENNE_PRIME
    x >>= np.uint64(61)
    x += low
    np.subtract(x, MERSENNE_PRIME, out=x, where=x >= MERSENNE_PRIME)
    x &= MAX_HASH
    return x.astype(np.uint32)


@dataclass(frozen=True)
class MinHashClusters:
    keeper: np.ndarray  # (n,) int64: the row each row's cluster keeps (itself for kept rows)
    cluster: np.ndarray  # (n,) int64: cluster number of rows in clusters of 2 or more, -1 otherwise
    candidate_pairs: int  # distinct (row, band-bucket first row) edges of the candidate graph

    @property
    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.keeper == np.arange(self.keeper.size))

    @property
    def dropped(self) -> np.ndarray:
        return np.flatnonzero(self.keeper != np.arange(self.keeper.size))


def lsh_clusters(signatures: np.ndarray, bands: int, rows: int, priority: np.ndarray | None = None) -> MinHashClusters:
    """Connected components of the LSH candidate graph; each keeps its member of lowest `priority`
    (a permutation of 0..n-1; default: row order).

    Reads one band (n x rows values) of `signatures` (which may be a memmap) at a time; rows
    sharing a band's values are linked to the band bucket's first row.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = signatures.shape[0]
    if bands * rows > signatures.shape[1]:
        raise ValueError(
            f"{bands} bands x {rows} rows need {bands * rows} signature values; "
            f"the signatures have {signatures.shape[1]}"
        )
    sources, targets = [], []
    for band in range(bands):
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        bucket_first = first[inverse.ravel()]
        linked = np.flatnonzero(bucket_first != np.arange(n))
        sources.append(linked)
        targets.append(bucket_first[linked])
    src = np.concatenate(sources) if sources else np.empty(0, np.int64)
    dst = np.concatenate(targets) if targets else np.empty(0, np.int64)
    edges = np.unique(np.stack([src, dst], axis=1), axis=0) if src.size else np.empty((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    rank = np.arange(n) if priority is None else np.asarray(priority, dtype=np.int64)
    if not np.array_equal(np.sort(rank), np.arange(n)):
        raise ValueError("priority must be a permutation of 0..n-1")
    row_of_rank = np.empty(n, dtype=np.int64)
    row_of_rank[rank] = np.arange(n)
    best = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(best, labels, rank)
    keeper = row_of_rank[best[labels]]
    sizes = np.bincount(labels)
    shared = sizes[labels] > 1
    cluster = np.full(n, -1, dtype=np.int64)
    _, cluster[shared] = np.unique(labels[shared], return_inverse=True)
    return MinHashClusters(keeper=keeper, cluster=cluster, candidate_pairs=len(edges))


def estimated_jaccard(signatures: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, batch: int = 8_192) -> np.ndarray:
    """Fraction of equal signature values of each (rows_a[i], rows_b[i]) pair: the MinHash
    estimate of their Jaccard similarity."""
    out = np.empty(len(rows_a), dtype=np.float64)
    for lo in range(0, len(rows_a), batch):
        a = signatures[rows_a[lo : lo + batch]]
        b = signatures[rows_b[lo : lo + batch]]
        out[lo : lo + batch] = (a == b).mean(axis=1)
    return out
