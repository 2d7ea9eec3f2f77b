"""`make bench`: run every benchmark, write bench/results/latest.md.

--quick (smaller k and sizes) takes about 10 minutes on 2 CPU cores. The full mode runs the
published sizes and is meant for a GPU: on 2 CPU cores its LESS benchmark alone takes about a
day (the dense projection at r128 / 8,192 dims), the others about 1.5 hours together (docs/benchmarks.md). --only NAME (repeatable) runs some of them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import time
from pathlib import Path

from bench.common import machine

# imported when run, so a machine that lacks one benchmark's packages (a GPU box without
# Dagster, say) can still run the others with --only
BENCHMARKS = ["kcenter", "minhash", "embedding", "lm", "judge", "less", "influence", "sharding", "faults", "ducklake"]
MODULES = {"faults": "fault_bench"}  # names whose module is not NAME_bench
RESULTS = Path(__file__).resolve().parent / "results"


def result_suffix() -> str:
    """GPU runs keep their own result files (`less-cuda.md`), next to the CPU ones."""
    from curation_assets.models.device import compute_device

    return "-cuda" if compute_device().name == "cuda" else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes; minutes on 2 cores")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    stamp = (
        f"{'quick' if args.quick else 'full'} run, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"machine: {machine()}"
    )
    suffix = result_suffix()
    started = time.perf_counter()
    for name in args.only or BENCHMARKS:
        print(f"running {name} ...", flush=True)
        begin = time.perf_counter()
        text = importlib.import_module(f"bench.{MODULES.get(name, name + '_bench')}").run(args.quick).markdown()
        print(text, flush=True)
        (RESULTS / f"{name}{suffix}.md").write_text(f"{text}\n_{stamp}; took {time.perf_counter() - begin:.0f} s_\n")
    print(f"all benchmarks: {time.perf_counter() - started:.0f} s", flush=True)
    write_latest()


def write_latest() -> None:
    """bench/results/latest.md: every benchmark's last result file, CPU and GPU."""
    sections = [
        "# Benchmarks",
        "",
        "Baseline and ours are measured in the same run; ratio > 1 means ours is better.",
        "Each section was last run as stated under it; `-cuda` sections ran on a GPU.",
        "",
    ]
    sections += [
        (RESULTS / f"{name}{tag}.md").read_text()
        for name in BENCHMARKS
        for tag in ("", "-cuda")
        if (RESULTS / f"{name}{tag}.md").exists()
    ]
    (RESULTS / "latest.md").write_text("\n".join(sections))
    print(f"wrote {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
