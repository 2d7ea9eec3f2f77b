"""`make bench`: run every benchmark, write bench/results/latest.md.

--quick finishes in a few minutes on 2 CPU cores (smaller k and sizes); the full run
takes about 10 minutes there.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from bench import (
    embedding_bench,
    influence_bench,
    judge_bench,
    kcenter_bench,
    less_bench,
    lm_bench,
    sharding_bench,
)
from bench.common import machine

BENCHMARKS = {"kcenter": kcenter_bench.run, "embedding": embedding_bench.run, "lm": lm_bench.run,
              "judge": judge_bench.run, "less": less_bench.run,
              "influence": influence_bench.run, "sharding": sharding_bench.run}
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes; minutes on 2 cores")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    stamp = (f"{'quick' if args.quick else 'full'} run, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"machine: {machine()}")
    for name in args.only or BENCHMARKS:
        print(f"running {name} ...", flush=True)
        text = BENCHMARKS[name](args.quick).markdown()
        print(text, flush=True)
        (RESULTS / f"{name}.md").write_text(f"{text}\n_{stamp}_\n")
    sections = ["# Benchmarks", "", "Baseline and ours are measured in the same run; ratio > 1 means ours is better.",
                "Each section was last run as stated under it.", ""]
    sections += [(RESULTS / f"{name}.md").read_text() for name in BENCHMARKS if (RESULTS / f"{name}.md").exists()]
    (RESULTS / "latest.md").write_text("\n".join(sections))
    print(f"wrote {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
