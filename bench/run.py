"""`make bench`: run every benchmark, write bench/results/latest.md.

--quick finishes in a few minutes on 2 CPU cores (smaller k and sizes); the full run
takes about 10 minutes there.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from bench import embedding_bench, kcenter_bench
from bench.common import machine

BENCHMARKS = {"kcenter": kcenter_bench.run, "embedding": embedding_bench.run}
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes; minutes on 2 cores")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these")
    args = parser.parse_args()
    sections = [f"# Benchmarks ({'quick' if args.quick else 'full'})", "",
                f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine()}", "",
                "Baseline and ours are measured in the same run; ratio > 1 means ours is better.", ""]
    for name in args.only or BENCHMARKS:
        print(f"running {name} ...", flush=True)
        result = BENCHMARKS[name](args.quick)
        text = result.markdown()
        print(text, flush=True)
        sections.append(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text("\n".join(sections))
    print(f"wrote {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
