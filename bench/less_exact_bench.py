"""Exact LESS scores (`grad_features` with `projection: none`) vs projected ones (issue #19).

A LoRA warm-up checkpoint (Adam moments) is trained once; then, each in a fresh process so its
peak memory is its own, the pool's per-sample preconditioned LoRA gradients are scored against
the target validation samples' plain gradients: exactly (`TargetCosines`: full gradients dotted
with the few target gradients held in memory, nothing stored per sample but the m cosines) and
through the projections (Kronecker 2,048 / 8,192 dims; on the tiny model also the released
dense Rademacher 8,192). Reported: seconds, peak RSS, bytes stored per sample and checkpoint,
and the Pearson / Spearman correlation and top-k overlap of each projected LESS score with the
exact one. Run `python -m bench.less_exact_bench [--quick]` (writes bench/results/less_exact.md).
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BenchResult, progress

POOL, TARGETS, TOP = 64, 10, 6


class Timed:
    """A `projector` that times its own work (the only step where exact and projected scoring differ;
    the batched backward pass before it is the same)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds, self.dim = inner, 0.0, getattr(inner, "dim", None)

    def project_layers(self, layer_grads: Any) -> Any:
        import torch

        started = time.perf_counter()
        out = self.inner.project_layers(layer_grads)
        if out.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - started
        return out


def _variant(
    model_name: str, checkpoint: str, pool: list, targets: list, max_length: int, rank: int, kind: str, dim: int
) -> dict[str, Any]:
    """One scoring run in its own process: (n, m) cosines, seconds, peak RSS."""
    import torch

    from curation_assets.methods.less import TargetCosines, projected_cosines
    from curation_assets.methods.projection import FlatGradients
    from curation_assets.models.causal_lm import fresh_causal_lm
    from curation_assets.models.chat_format import collate, encode_conversation, longest_first
    from curation_assets.models.device import compute_device
    from curation_assets.models.gradients import LoraGradientCapture, per_sample_gradient_features
    from curation_assets.models.lora import attach_lora
    from curation_assets.models.warmup_checkpoints import load_checkpoint, make_projector

    device = compute_device().name
    model, tokenizer = fresh_causal_lm(model_name)
    model = attach_lora(model, _settings(rank), seed=0).to(device).eval()
    moments = load_checkpoint(model, Path(checkpoint))
    capture = LoraGradientCapture(model)
    pad = tokenizer.pad_token_id
    pool_encoded = [encode_conversation(tokenizer, c, max_length) for c in pool]
    target_encoded = [encode_conversation(tokenizer, c, max_length) for c in targets]
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def features(encoded: list, projector: Any, with_moments: bool) -> torch.Tensor:
        out: list[Any] = [None] * len(encoded)
        order = longest_first(encoded)
        for start in range(0, len(order), 8):
            batch = order[start : start + 8]
            rows = per_sample_gradient_features(
                model,
                collate([encoded[i] for i in batch], pad, device),
                projector,
                moments if with_moments else None,
                capture=capture,
            )
            for row, i in enumerate(batch):
                out[i] = rows[row].detach().cpu()
        return torch.stack(out)

    started = time.perf_counter()
    if kind == "none":
        targets_side = Timed(FlatGradients())
        scorer = Timed(TargetCosines(features(target_encoded, targets_side, False)))
        cosines = features(pool_encoded, scorer, True)
        stored = TARGETS  # one cosine per validation sample
    else:
        scorer = Timed(make_projector(model, kind, dim, seed=0))  # type: ignore[arg-type]
        targets_side = scorer
        val = features(target_encoded, scorer, False).numpy()
        cosines = torch.from_numpy(projected_cosines(features(pool_encoded, scorer, True).numpy(), val))
        stored = scorer.dim
    seconds = time.perf_counter() - started
    scoring = scorer.seconds + (targets_side.seconds if targets_side is not scorer else 0.0)
    peak_gpu = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None
    return {
        "cosines": cosines.numpy(),
        "seconds": seconds,
        "scoring_seconds": scoring,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "peak_gpu_gb": peak_gpu,
        "stored_floats": stored,
        "n_params": n_params,
    }


def _settings(rank: int) -> Any:
    from curation_assets.models.lora import LoraSettings

    return LoraSettings(
        r=rank,
        alpha=4 * rank,
        dropout=0.0,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        lr=2e-4,
        max_steps=4,
        batch_size=4,
    )


def _warm_up(model_name: str, pool: list, max_length: int, rank: int, folder: Path) -> str:
    from curation_assets.models.causal_lm import fresh_causal_lm
    from curation_assets.models.chat_format import encode_conversation
    from curation_assets.models.device import compute_device
    from curation_assets.models.lora import attach_lora, lora_finetune

    model, tokenizer = fresh_causal_lm(model_name)
    model = attach_lora(model, _settings(rank), seed=0)
    train = [encode_conversation(tokenizer, c, max_length) for c in pool[:16]]
    result = lora_finetune(
        model,
        train,
        _settings(rank),
        pad_token_id=tokenizer.pad_token_id,
        seed=0,
        device=compute_device().name,
        checkpoint_dir=folder,
    )
    return str(result.checkpoints[-1].folder)


def measure(
    result: BenchResult,
    label: str,
    model_name: str,
    pool: list,
    targets: list,
    max_length: int,
    rank: int,
    variants: list[tuple[str, int]],
) -> None:
    """Rows of `result` for one model: each variant against the exact scores."""
    from curation_assets.methods.less import less_scores_from_cosines, rank_correlations

    with tempfile.TemporaryDirectory() as tmp:
        progress(f"less_exact: {label} warm-up")
        checkpoint = _warm_up(model_name, pool, max_length, rank, Path(tmp))
        runs = {}
        for kind, dim in [variants[0], ("none", 0), *variants[1:]]:  # exact not first: load changes over a run
            progress(f"less_exact: {label} {kind} {dim or ''}")
            with multiprocessing.get_context("spawn").Pool(1) as worker:
                runs[(kind, dim)] = worker.apply(
                    _variant, (model_name, checkpoint, pool, targets, max_length, rank, kind, dim)
                )
    exact = runs[("none", 0)]
    exact_scores, _ = less_scores_from_cosines([exact["cosines"]], [1.0])
    top_exact = set(np.argsort(-exact_scores)[:TOP])
    n_params = exact["n_params"]
    result.notes.append(
        f"{label}: {len(pool)} pool samples, {len(targets)} targets, LoRA r{rank} q/k/v/o, "
        f"{n_params / 1e6:.3f}M adapter parameters; exact: {exact['seconds']:.1f} s (scoring step "
        f"{exact['scoring_seconds']:.2f} s), peak RSS "
        f"{exact['peak_rss_gb']:.2f} GB, target gradients held {len(targets) * n_params * 4 / 1e6:.1f} "
        f"MB, stored {exact['stored_floats']} floats per sample and checkpoint"
        + (f", GPU peak {exact['peak_gpu_gb']:.2f} GB" if exact["peak_gpu_gb"] else "")
    )
    for kind, dim in variants:
        run = runs[(kind, dim)]
        scores, _ = less_scores_from_cosines([run["cosines"]], [1.0])
        corr = rank_correlations(scores, exact_scores)
        overlap = len(set(np.argsort(-scores)[:TOP]) & top_exact) / TOP
        name = f"{label}, {kind} {dim}"
        result.add(
            f"seconds for {len(pool)} samples + {len(targets)} targets, exact vs {name}",
            run["seconds"],
            exact["seconds"],
            "s",
            "(context: same backward pass, shared CPU)",
            None,
        )
        result.add(
            f"seconds of the scoring step (projection vs exact dot products), exact vs {name}",
            run["scoring_seconds"],
            exact["scoring_seconds"],
            "s",
            "exact <= projected",
            exact["scoring_seconds"] <= run["scoring_seconds"],
        )
        result.add(f"peak RSS, exact vs {name}", run["peak_rss_gb"], exact["peak_rss_gb"], "GB", "(context)", None)
        result.add(
            f"Pearson r of LESS scores with the exact ones, {name}",
            1.0,
            corr["pearson"] or float("nan"),
            "r",
            "(context)",
            None,
            higher_is_better=True,
        )
        result.add(
            f"Spearman rho of LESS scores with the exact ones, {name}",
            1.0,
            corr["spearman"] or float("nan"),
            "rho",
            "(context)",
            None,
            higher_is_better=True,
        )
        result.add(
            f"top-{TOP} overlap with the exact selection, {name}",
            1.0,
            overlap,
            "fraction",
            "(context)",
            None,
            higher_is_better=True,
        )
        result.notes.append(
            f"{name}: {run['seconds']:.1f} s (scoring step {run['scoring_seconds']:.2f} s), peak RSS {run['peak_rss_gb']:.2f} GB, stored "
            f"{run['stored_floats']} floats per sample and checkpoint"
            + (f", GPU peak {run['peak_gpu_gb']:.2f} GB" if run["peak_gpu_gb"] else "")
        )


def run(quick: bool) -> BenchResult:
    from bench.less_bench import gsm8k_conversations
    from bench.lm_bench import sharegpt_conversations
    from curation_assets.models.causal_lm import PACKAGED_SMOLLM2
    from tests.support.models import build_tiny_causal_lm

    result = BenchResult("Exact LESS scores (projection: none) vs projected, baseline = the projected run")
    pool, targets = sharegpt_conversations(POOL), gsm8k_conversations(TARGETS)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = str(build_tiny_causal_lm(Path(tmp)))
        # the tiny model's word vocabulary: other words become <unk>, but gradients still flow
        measure(
            result,
            "tiny Llama",
            tiny,
            pool,
            targets,
            64,
            4,
            [("kronecker", 2048), ("kronecker", 8192), ("dense", 8192)],
        )
    measure(result, "SmolLM2-135M", PACKAGED_SMOLLM2, pool, targets, 128, 8, [("kronecker", 2048), ("kronecker", 8192)])
    return result


def main() -> None:
    import datetime as dt

    from bench.common import machine
    from bench.run import RESULTS, result_suffix

    started = time.perf_counter()
    text = run(quick=True).markdown()
    stamp = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine()}"
    (RESULTS / f"less_exact{result_suffix()}.md").write_text(
        f"{text}\n_run {stamp}; took {time.perf_counter() - started:.0f} s_\n"
    )
    print(text)


if __name__ == "__main__":
    main()
