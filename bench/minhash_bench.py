"""MinHash LSH near-duplicate removal (methods/minhash.py, data-juicer defaults: word 5-grams,
256 permutations, threshold 0.7 -> 25 bands x 10 rows) on N synthetic instruction-like texts.

Baselines: datasketch's own per-document path (`MinHash.update_batch` per text, then
`MinHashLSH.insert` and `query` per text, union-find over the candidates), which must keep exactly
the same samples, and the exact pairwise Jaccard computation (every pair of shingle sets) on an
m-sample prefix, extrapolated to N by (N/m)^2, which gives recall and precision.

Texts: Zipf-distributed words (20,000-word vocabulary), 40 to 400 words (log-normal, median 120);
20% are edited copies (1 to 20 words replaced, inserted or deleted) of one of the 50 texts before
them, so every prefix holds near-duplicates at similarities from about 0.99 down to 0.3.
Each method runs in a fresh subprocess that streams the texts from a JSON Lines file in batches
of 2,048 (as the selection streams them from DuckDB); peak RSS is that subprocess's VmHWM.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import cast

import numpy as np

from bench.common import BenchResult, progress

THRESHOLD, NUM_PERM, WINDOW, SEED = 0.7, 256, 5, 42
BATCH = 2_048


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(20_000)])
    weights = 1.0 / np.arange(1, vocabulary.size + 1)
    lengths = np.clip(rng.lognormal(np.log(120), 0.6, size=n), 40, 400).astype(int)
    words = rng.choice(vocabulary, size=int(lengths.sum()), p=weights / weights.sum())
    texts: list[str] = []
    offset = 0
    for i, length in enumerate(lengths):
        if i > 0 and rng.random() < 0.2:
            tokens = texts[int(rng.integers(max(0, i - 50), i))].split()
            for _ in range(int(rng.integers(1, 21))):
                at = int(rng.integers(0, len(tokens)))
                edit = rng.integers(0, 3)
                if edit == 0:
                    tokens[at] = str(rng.choice(vocabulary[:2_000]))
                elif edit == 1:
                    tokens.insert(at, str(rng.choice(vocabulary[:2_000])))
                elif len(tokens) > 10:
                    del tokens[at]
            texts.append(" ".join(tokens))
        else:
            texts.append(" ".join(words[offset : offset + length]))
        offset += length
    return texts


def ours(path: str, n: int, out: str) -> dict:
    """Batched signatures into a memmap, then LSH clusters (the selection's computation)."""
    from curation_assets.methods.minhash import (
        lsh_bands,
        lsh_clusters,
        minhash_signatures,
        permutations,
        sha1_hash32,
        word_shingles,
    )

    bands, rows = lsh_bands(THRESHOLD, NUM_PERM)
    a, b = permutations(NUM_PERM, SEED)
    signatures = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint32, shape=(n, NUM_PERM))
    start = 0
    for batch in read_batches(path):
        hashes = [sha1_hash32(word_shingles(text, WINDOW)) for text in batch]
        signatures[start : start + len(batch)] = minhash_signatures(hashes, a, b)
        start += len(batch)
    return {"keeper": lsh_clusters(signatures, bands, rows).keeper.tolist()}


def datasketch_reference(path: str, n: int, out: str) -> dict:
    """datasketch's documented path: one MinHash per text, MinHashLSH insert then query, union-find."""
    from datasketch import MinHash, MinHashLSH

    from curation_assets.methods.minhash import word_shingles

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    minhashes = []
    for batch in read_batches(path):
        for text in batch:
            minhash = MinHash(num_perm=NUM_PERM, seed=SEED, scheme="legacy")
            minhash.update_batch(list(word_shingles(text, WINDOW)))
            lsh.insert(len(minhashes), minhash)
            minhashes.append(minhash)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, minhash in enumerate(minhashes):
        for j in lsh.query(minhash):
            ri, rj = find(i), find(cast(int, j))  # the keys inserted above
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return {"keeper": [find(i) for i in range(n)]}


def read_batches(path: str):
    batch: list[str] = []
    with open(path) as handle:
        for line in handle:
            batch.append(json.loads(line))
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def in_subprocess(function: str, path: Path, n: int, folder: Path) -> tuple[float, float, list[int]]:
    """(seconds, peak RSS MB, keeper per text) of `function` in a fresh Python process."""
    code = textwrap.dedent(f"""
        import json, time
        from bench.minhash_bench import {function} as run
        start = time.perf_counter()
        result = run({str(path)!r}, {n}, {str(folder / "signatures.npy")!r})
        seconds = time.perf_counter() - start
        peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))
        json.dump({{"seconds": seconds, "peak_mb": peak / 1024, **result}}, open({str(folder / "out.json")!r}, 'w'))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
    result = json.loads((folder / "out.json").read_text())
    return result["seconds"], result["peak_mb"], result["keeper"]


def exact_pairs(texts: list[str]) -> tuple[float, dict[tuple[int, int], float]]:
    """Seconds and every pair's exact Jaccard of the word 5-gram sets (a plain loop over pairs)."""
    from curation_assets.methods.minhash import word_shingles

    start = time.perf_counter()
    sets = [word_shingles(text, WINDOW) for text in texts]
    similarity = {}
    for i, j in itertools.combinations(range(len(sets)), 2):
        shared = len(sets[i] & sets[j])
        union = len(sets[i]) + len(sets[j]) - shared
        similarity[(i, j)] = shared / union if union else 1.0
    return time.perf_counter() - start, similarity


def run(quick: bool) -> BenchResult:
    n, m = (10_000, 2_000) if quick else (100_000, 2_000)
    result = BenchResult(
        f"MinHash LSH dedup, {n:,} texts (word 5-grams, {NUM_PERM} permutations, threshold {THRESHOLD})"
    )
    progress(f"minhash: {n} synthetic texts")
    texts = synthetic_texts(n)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "texts.jsonl"
        path.write_text("".join(json.dumps(t) + "\n" for t in texts))
        progress("minhash: ours")
        our_seconds, our_peak, keeper = in_subprocess("ours", path, n, Path(folder))
        progress("minhash: datasketch per-document reference")
        ds_seconds, ds_peak, ds_keeper = in_subprocess("datasketch_reference", path, n, Path(folder))
    progress(f"minhash: exact pairwise Jaccard on {m} texts")
    exact_seconds, exact = exact_pairs(texts[:m])
    keeper = np.asarray(keeper)
    same = {(i, j) for i, j in exact if keeper[i] == keeper[j]}
    truth = {pair for pair, value in exact.items() if value >= THRESHOLD}
    recall = len(same & truth) / len(truth) if truth else float("nan")
    clear = {pair for pair, value in exact.items() if value >= 0.85}
    clear_recall = len(same & clear) / len(clear) if clear else float("nan")
    precision = len(same & truth) / len(same) if same else float("nan")
    loose = len({p for p in same if exact[p] >= 0.5}) / len(same) if same else float("nan")
    # a dropped text's keeper comes earlier (row order is the keep priority), so it is in the prefix too
    dropped = [(int(keeper[i]), i) for i in range(m) if keeper[i] != i]
    near_keeper = sum(exact[pair] >= THRESHOLD for pair in dropped) / len(dropped) if dropped else float("nan")
    loose_keeper = sum(exact[pair] >= 0.5 for pair in dropped) / len(dropped) if dropped else float("nan")
    extrapolated = exact_seconds * (n / m) ** 2
    kept = int((keeper == np.arange(n)).sum())
    result.add(
        f"seconds for {n:,} texts: datasketch per-document MinHash + MinHashLSH vs ours",
        ds_seconds,
        our_seconds,
        "s",
        "faster than datasketch's loop",
        our_seconds < ds_seconds,
    )
    result.add(
        f"peak RSS for {n:,} texts (whole process)", ds_peak, our_peak, "MB", "below datasketch's", our_peak < ds_peak
    )
    result.add(
        f"seconds: exact pairwise Jaccard ({exact_seconds:.1f} s on {m:,} texts, x (N/m)^2) vs ours",
        extrapolated,
        our_seconds,
        "s",
        ">= 10x faster",
        extrapolated > 10 * our_seconds,
    )
    result.add(
        f"pair recall at exact J >= 0.85 on the first {m:,} texts ({len(clear)} pairs)",
        1.0,
        clear_recall,
        "fraction",
        ">= 0.95",
        clear_recall >= 0.95,
        higher_is_better=True,
    )
    result.add(
        f"pair recall at exact J >= {THRESHOLD} ({len(truth)} pairs)",
        1.0,
        recall,
        "fraction",
        "n/a: a pair at J = 0.7 shares a band with probability 0.51",
        None,
        higher_is_better=True,
    )
    result.add(
        f"pair precision (same cluster and exact J >= {THRESHOLD}; {len(same)} pairs)",
        1.0,
        precision,
        "fraction",
        "n/a: clusters are connected components",
        None,
        higher_is_better=True,
    )
    result.add(
        f"dropped texts of the prefix whose exact J with the text kept for them >= {THRESHOLD} ({len(dropped)} dropped)",
        1.0,
        near_keeper,
        "fraction",
        f"n/a: {loose_keeper:.3f} have J >= 0.5",
        None,
        higher_is_better=True,
    )
    result.notes += [
        f"kept {kept:,} of {n:,}; same kept set as datasketch's reference: {bool(np.array_equal(keeper, ds_keeper))}",
        f"pairs in one cluster whose exact J >= 0.5: {loose:.3f} (a cluster is a connected component of the "
        "candidate graph, as in data-juicer and NeMo Curator, so two members can be joined through a third)",
        "datasketch's signatures are the same numbers (legacy scheme, seed 42); ours permutes all shingles of a "
        "batch of texts in one numpy operation and buckets each band with one np.unique, instead of a Python "
        "call per text and a dict insert per text and band",
    ]
    return result
