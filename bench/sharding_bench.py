"""Scaling of a sharded stage, simulated with synthetic per-sample gradients: pools of 1x, 10x
and 100x a base size, each split into shards of the base size, every shard in its own process
(as a Dagster step would be) streaming batches of synthetic gradients through a seeded
random projection into its own Parquet file. Per-shard peak memory should stay flat and the
total time grow linearly with the pool."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import BenchResult

PARAMS, DIM, BATCH = 8192, 512, 256


def own_peak_mb() -> float:
    """Peak RSS of this process's own address space (VmHWM). ru_maxrss would not do: Linux keeps it
    across exec, so a shard started from the (multi-GB) benchmark process would report that one's size."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_shard(shard: int, size: int, folder: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one shard, measured inside its own process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    projection = np.random.default_rng(12345).choice(np.float32([-1, 1]), size=(PARAMS, DIM)) / np.float32(np.sqrt(DIM))
    with pq.ParquetWriter(
        Path(folder) / f"shard-{shard:05d}.parquet",
        pa.schema([("sample_id", pa.int64()), ("features", pa.list_(pa.float32()))]),
    ) as writer:
        for start in range(0, size, BATCH):
            rows = min(BATCH, size - start)
            grads = np.random.default_rng(shard * 1_000_003 + start).standard_normal((rows, PARAMS), np.float32)
            features = grads @ projection
            offsets = pa.array(np.arange(0, features.size + 1, DIM, dtype=np.int32))
            writer.write_table(
                pa.table(
                    {
                        "sample_id": np.arange(shard * size + start, shard * size + start + rows),
                        "features": pa.ListArray.from_arrays(offsets, pa.array(features.reshape(-1))),
                    }
                )
            )
    return time.perf_counter() - started, own_peak_mb()


def _launch(args: tuple[int, int, str]) -> tuple[float, float]:
    """One shard in a fresh Python process (numpy + pyarrow only), like a Dagster step."""
    shard, size, folder = args
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.sharding_bench", str(shard), str(size), folder],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
    )
    seconds, peak = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, peak


def simulate(pool: int, shard_size: int, workers: int) -> tuple[float, float, float, int]:
    """(wall seconds, summed shard seconds, max per-shard peak MB, shards)."""
    shards = -(-pool // shard_size)
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(workers) as executor:
        started = time.perf_counter()
        results = list(
            executor.map(_launch, [(i, min(shard_size, pool - i * shard_size), folder) for i in range(shards)])
        )
        wall = time.perf_counter() - started
    return wall, sum(r[0] for r in results), max(r[1] for r in results), shards


def run(quick: bool) -> BenchResult:
    base, workers = (200 if quick else 2_000), 2
    shard_size = base // workers  # the 1x pool already keeps both workers busy
    result = BenchResult(
        f"sharded stage scaling (simulated: synthetic {PARAMS}-dim gradients projected to {DIM}), "
        f"shards of {shard_size} samples, {workers} worker processes of 1 thread"
    )
    wall, _, peak, shards = simulate(base, shard_size, workers)
    for scale in (10, 100):
        big_wall, _, big_peak, big_shards = simulate(base * scale, shard_size, workers)
        result.add(
            f"wall seconds, {scale}x pool ({base * scale} samples, {big_shards} shards) vs {scale} x the "
            f"1x pool's ({shards} shards)",
            wall * scale,
            big_wall,
            "s",
            "roughly linear (ratio >= 0.7)",
            wall * scale / big_wall >= 0.7,
        )
        result.add(
            f"peak MB per shard process, {scale}x pool vs 1x pool",
            peak,
            big_peak,
            "MB",
            "flat (ratio >= 0.9)",
            peak / big_peak >= 0.9,
        )
    result.notes.append(
        f"1x pool: {base} samples in {wall:.1f} s wall (process start-up included, as for a Dagster "
        f"step), peak {peak:.0f} MB per shard process"
    )
    return result


if __name__ == "__main__":  # one shard: `python -m bench.sharding_bench SHARD SIZE FOLDER`
    print(json.dumps(run_shard(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
