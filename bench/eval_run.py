"""`make eval`: materialise the selection-quality pipeline (curation_assets/defs/eval/defs.yaml)
end to end, evaluation included, then print bench/results/eval.md.

With no option it runs issue #19's plan for 2 CPU cores (`--plan cpu-3h`, 2.4 hours measured); `--plan full`
runs the shipped YAML as it is (N = 2,000, k = 5%, every method, all on the whole pool: a GPU's
job). Every other variant is a modified copy under .curation/eval_<variant>/ with its own DuckDB
file, so a reduced run never mixes with another:

  --pool N        read N ShareGPT records instead of 2,000
  --epochs E      fine-tune every selection for E epochs
  --heldout M     evaluate on M target and M general held-out samples
  --no-judge      drop every LLM-judged stage and whatever reads it (AlpaGasus, MoDS, DEITA)
  --without A,B   drop these stages/selections and whatever reads them
  --only A,B      evaluate only these selections (and the baselines); drop every stage and
                  selection neither they nor the baselines read
  --output-dir D  write eval.md / eval.png to D instead of bench/results (relative to the project)
  --training-seeds S, --token-matched D, --no-full-pool
                  fewer fine-tunes: S training seeds per set (shipped 2), D token-matched random
                  subsets per method (shipped 1, 0 = none), no full-pool reference row
  --plan cpu-3h   (default) issue #19's plan for 2 CPU cores (`plan_cpu_3h`): k = 100 of the 2,000
                  pool, the gradient/EL2N methods on a seeded 500 sub-pool with its own random band,
                  a 1-epoch 256-token fine-tune, 2 training seeds per method and 1 per random set,
                  no judge; the other options apply on top
  --plan full     the shipped YAML (every method on the whole pool; sized for a GPU)

The packaged SmolLM2 judge is served on 127.0.0.1:8765 for the run when an LLM stage remains.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
SHIPPED = PROJECT / "curation_assets" / "defs" / "eval" / "defs.yaml"


def _specs(attributes: dict[str, Any]) -> dict[str, Any]:
    from curation_assets.components.spec import pipeline_spec_model

    spec = pipeline_spec_model().model_validate(attributes)
    return {s.name: s for s in [*spec.stages, *spec.selections]}


def llm_stage_names(attributes: dict[str, Any]) -> list[str]:
    from curation_assets.stages.core.llm_stage import LLMStageSpec

    return [name for name, spec in _specs(attributes).items() if isinstance(spec, LLMStageSpec)]


def dependents(attributes: dict[str, Any], names: set[str]) -> set[str]:
    """`names` and every stage or selection reading one of them, directly or not."""
    specs = _specs(attributes)
    unknown = names - set(specs)
    if unknown:
        raise SystemExit(f"--without: no stage or selection named {sorted(unknown)}")
    dropped = set(names)
    changed = True
    while changed:
        changed = False
        for name, spec in specs.items():
            if name not in dropped and dropped & set(spec.references().values()):
                dropped.add(name)
                changed = True
    return dropped


def requirements(attributes: dict[str, Any], names: set[str]) -> set[str]:
    """`names` and every stage or selection they read, directly or not."""
    specs = _specs(attributes)
    unknown = names - set(specs)
    if unknown:
        raise SystemExit(f"--only: no stage or selection named {sorted(unknown)}")
    needed, frontier = set(), set(names)
    while frontier:
        name = frontier.pop()
        needed.add(name)
        frontier |= {ref for ref in specs[name].references().values() if ref in specs} - needed
    return needed


def _pools_keeping(evaluation: dict[str, Any], methods: set[str]) -> list[dict[str, Any]]:
    """The evaluation's sub-pool bands (`pools:`) restricted to `methods`; a band left with no method goes,
    so its baselines are neither required nor fine-tuned."""
    kept = []
    for band in evaluation.get("pools") or []:
        selections = [s for s in band["selections"] if s in methods]
        if selections:
            kept.append({**band, "selections": selections})
    return kept


CPU_PLAN_METHODS = ("target_similarity", "kcenter", "deft_ucs", "el2n_top", "less", "influence_distillation")
CPU_PLAN_SUB_POOL = ("el2n_top", "less", "influence_distillation")  # their stages take per-sample gradients
CPU_PLAN_STAGES = ("embed", "el2n", "warmup", "grads", "jvp")


def plan_cpu_3h(document: dict[str, Any], sub_pool: int = 500, budget: int = 100) -> dict[str, Any]:
    """Issue #19's plan for 2 CPU cores, derived from the shipped YAML: every evaluated selection keeps
    `budget` samples; target_similarity, k-center and DEFT-UCS read the whole pool, EL2N (1 run), the
    LESS warm-up, gradient features and JVP embeddings run on a seeded `sub_pool` whose own 5 random
    selections are the band of EL2N/LESS/Influence Distillation; the fine-tune is LoRA r16 for 1 epoch
    at 256 tokens (it moved random-97 ~0.07 nat below the base model on GSM8K, bench probe of
    2026-11-30), each method under the YAML's 2 training seeds and each random or token-matched set
    under 1 (the 5-seed band already spans training noise), 200 target + 100 general held out, no
    full-pool row. The judge, LoBaSS, Instruction
    Mining, DEITA and the `_v0` rows stay out: on 2 cores they alone exceed the 3 hours."""
    document = yaml.safe_load(yaml.safe_dump(document))
    attributes = document["attributes"]
    attributes["stages"] = [s for s in attributes["stages"] if s["name"] in CPU_PLAN_STAGES]
    for stage in attributes["stages"]:
        if stage["name"] != "embed":
            stage["input_selection"] = "sub_pool"
        if stage["name"] == "el2n":
            stage["runs"] = 1
    baselines = [f"random_s{seed}" for seed in range(5)]
    sub_baselines = [f"sub_random_s{seed}" for seed in range(5)]
    kept = [s for s in attributes["selections"] if s["name"] in (*baselines, *CPU_PLAN_METHODS)]
    for selection in kept:
        selection.pop("fraction", None)
        selection["budget"] = budget
        if selection["name"] in CPU_PLAN_SUB_POOL:
            selection["input_selection"] = "sub_pool"
    attributes["selections"] = [
        {"name": "sub_pool", "kind": "random", "budget": sub_pool, "seed": 11},
        *kept,
        *(
            {"name": name, "kind": "random", "budget": budget, "seed": seed, "input_selection": "sub_pool"}
            for seed, name in enumerate(sub_baselines)
        ),
    ]
    evaluation = attributes["evaluation"]
    evaluation["baselines"] = baselines
    evaluation["selections"] = list(CPU_PLAN_METHODS)
    evaluation["pools"] = [
        {
            "name": f"sub{sub_pool}",
            "selection": "sub_pool",
            "baselines": sub_baselines,
            "selections": list(CPU_PLAN_SUB_POOL),
        }
    ]
    evaluation["finetune"]["max_length"] = 256
    evaluation["finetune"]["lora"]["epochs"] = 1
    evaluation["target_heldout_size"] = 200
    evaluation["general"]["size"] = 100
    evaluation["full_pool"] = False
    evaluation["baseline_training_seeds"] = 1
    return document


def derive(
    document: dict[str, Any],
    *,
    pool: int | None = None,
    epochs: int | None = None,
    heldout: int | None = None,
    drop: set[str] = frozenset(),
    no_judge: bool = False,
    only: set[str] = frozenset(),
    output_dir: str | None = None,
    training_seeds: int | None = None,
    token_matched: int | None = None,
    full_pool: bool = True,
    plan: str | None = None,
) -> tuple[dict[str, Any], str]:
    """A modified copy of the pipeline document and the variant's name (`full` when unchanged)."""
    document = yaml.safe_load(yaml.safe_dump(document))
    parts = []
    if plan is not None:
        if plan != "cpu-3h":
            raise SystemExit(f"--plan: unknown plan {plan!r} (known: cpu-3h)")
        document = plan_cpu_3h(document)
        parts.append("cpu3h")
    attributes = document["attributes"]
    if only:
        evaluation = attributes["evaluation"]
        if only - set(evaluation["selections"]):
            raise SystemExit(f"--only: not an evaluated selection: {sorted(only - set(evaluation['selections']))}")
        pools = _pools_keeping(evaluation, only)
        pool_baselines = {b for band in pools for b in band["baselines"]}
        needed = requirements(attributes, set(only) | set(evaluation["baselines"]) | pool_baselines)
        attributes["stages"] = [s for s in attributes["stages"] if s["name"] in needed]
        attributes["selections"] = [s for s in attributes["selections"] if s["name"] in needed]
        evaluation["selections"] = [s for s in evaluation["selections"] if s in only]
        if "pools" in evaluation:
            evaluation["pools"] = pools
        parts.append("only_" + "_".join(sorted(only)))
    judged = set(llm_stage_names(attributes)) if no_judge else set()
    named = set(drop)
    drop = named | judged
    if drop:
        dropped = dependents(attributes, drop)
        evaluation = attributes["evaluation"]
        kept = set(evaluation["selections"]) - dropped
        pools = _pools_keeping(evaluation, kept)
        baselines = set(evaluation["baselines"]) | {b for band in pools for b in band["baselines"]}
        if dropped & baselines:
            raise SystemExit(f"cannot drop the baselines {sorted(dropped & baselines)}")
        attributes["stages"] = [s for s in attributes["stages"] if s["name"] not in dropped]
        attributes["selections"] = [s for s in attributes["selections"] if s["name"] not in dropped]
        evaluation["selections"] = [s for s in evaluation["selections"] if s not in dropped]
        if "pools" in evaluation:
            evaluation["pools"] = pools
        parts += (["nojudge"] if judged else []) + (["without_" + "_".join(sorted(named))] if named else [])
    if pool is not None:
        attributes["sources"][0]["limit"] = pool
        parts.append(f"n{pool}")
    if epochs is not None:
        attributes["evaluation"].setdefault("finetune", {}).setdefault("lora", {})["epochs"] = epochs
        parts.append(f"e{epochs}")
    if heldout is not None:
        attributes["evaluation"]["target_heldout_size"] = heldout
        attributes["evaluation"]["general"]["size"] = heldout
        parts.append(f"h{heldout}")
    if training_seeds is not None:
        attributes["evaluation"]["training_seeds"] = training_seeds
        parts.append(f"s{training_seeds}")
    if token_matched is not None:
        attributes["evaluation"]["token_matched_draws"] = token_matched
        parts.append(f"t{token_matched}")
    if not full_pool:
        attributes["evaluation"]["full_pool"] = False
        parts.append("nofull")
    if output_dir is not None:
        attributes["evaluation"]["output_dir"] = output_dir
    variant = "_".join(parts) or "full"
    if parts:
        attributes["duckdb_path"] = f"{{{{ context.project_root }}}}/.curation/eval_{variant}.duckdb"
    return document, variant


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, help="ShareGPT records in the pool (default: the YAML's 2,000)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs of every evaluated selection")
    parser.add_argument("--heldout", type=int, help="target and general held-out samples (default 200 each)")
    parser.add_argument("--no-judge", action="store_true", help="drop the LLM-judged stages and their readers")
    parser.add_argument("--without", default="", help="comma-separated stages/selections to drop")
    parser.add_argument("--only", default="", help="comma-separated evaluated selections to keep (with the baselines)")
    parser.add_argument("--output-dir", help="where eval.md / eval.png go (default bench/results)")
    parser.add_argument("--training-seeds", type=int, help="fine-tunes per training set (default: the YAML's 2)")
    parser.add_argument("--token-matched", type=int, help="token-matched random subsets per method (0: none)")
    parser.add_argument("--no-full-pool", action="store_true", help="skip the full-pool reference fine-tune")
    parser.add_argument(
        "--plan",
        choices=["cpu-3h", "full"],
        default="cpu-3h",
        help="cpu-3h: issue #19's 2-core plan (default, see plan_cpu_3h); full: the shipped YAML as it is",
    )
    parser.add_argument("--dry-run", action="store_true", help="write and check the YAML, run nothing")
    parser.add_argument("--log-level", default="WARNING", help="Dagster console log level (INFO shows progress)")
    args = parser.parse_args(argv)

    document = yaml.safe_load(SHIPPED.read_text())
    drop = {name for name in args.without.split(",") if name}
    only = {name for name in args.only.split(",") if name}
    report_dir = (PROJECT / args.output_dir).resolve() if args.output_dir else PROJECT / "bench" / "results"
    derived, variant = derive(
        document,
        pool=args.pool,
        epochs=args.epochs,
        heldout=args.heldout,
        drop=drop,
        no_judge=args.no_judge,
        only=only,
        output_dir=str(report_dir) if args.output_dir else None,
        training_seeds=args.training_seeds,
        token_matched=args.token_matched,
        full_pool=not args.no_full_pool,
        plan=None if args.plan == "full" else args.plan,
    )
    path = SHIPPED
    if variant != "full":
        path = PROJECT / ".curation" / f"eval_{variant}" / "defs.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# Written by bench/eval_run.py from {SHIPPED.relative_to(PROJECT)}\n"
            + yaml.safe_dump(derived, sort_keys=False, width=120)
        )
        print(f"variant {variant}: {path}", flush=True)
    command = [sys.executable, "-m", "curation_assets.cli", "check" if args.dry_run else "run", str(path)]
    if not args.dry_run:
        command += ["--log-level", args.log_level]
        if llm_stage_names(derived["attributes"]):
            command.append("--serve-llm")
    print(" ".join(command), flush=True)
    code = subprocess.call(command, cwd=PROJECT)
    report = report_dir / "eval.md"
    if code == 0 and not args.dry_run and report.exists():
        print(report.read_text())
    raise SystemExit(code)


if __name__ == "__main__":
    main()
