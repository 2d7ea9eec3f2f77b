"""eval.md and eval.png of an evaluation: the results table (Δ against the random mean with a
paired bootstrap 95% interval, whether every random seed is beaten, Δ against token-matched
random subsets; the `pool` column says which band, the whole pool's or a sub-pool's, a row is
compared with) and a bar chart of the Δs with their intervals (matplotlib Agg, no pyplot)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from curation_assets.evaluation.harness import BASE_MODEL, FULL_POOL, Band, EvaluationResult, ResultRow
from curation_assets.evaluation.spec import WHOLE_POOL, EvaluationSpec

COLUMNS = (
    "method",
    "pool",
    "kind",
    "k",
    "response tokens",
    "target loss",
    "Δ target vs random [95% CI]",
    "beats all random seeds?",
    "Δ target vs token-matched random [95% CI]",
    "general loss",
    "Δ general vs random [95% CI]",
    "selection s",
    "incl. upstream s",
    "target gain per hour",
)
TOKEN_COLUMNS = ("subset", "matches", "pool", "k", "response tokens", "target loss", "general loss")
METHOD_COLOR, BASELINE_COLOR, BAND_COLOR, REFERENCE_COLOR = "#1c7ed6", "#868e96", "#ced4da", "#f59f00"
SUB_POOL_BAND_COLOR = "#d0bfff"
MIN_RANDOM_SEEDS = 5
COST_REFERENCE = "target_similarity"  # the cheap target-aware baseline gains per hour are compared with


def _loss(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.4f}"


def _delta(delta: float | None, interval: tuple[float, float] | None) -> str:
    """Δ with its bootstrap interval: +0.0123 [-0.0040, +0.0290]."""
    if delta is None or not np.isfinite(delta):
        return "n/a"
    if interval is None or not all(np.isfinite(interval)):
        return f"{delta:+.4f}"
    return f"{delta:+.4f} [{interval[0]:+.4f}, {interval[1]:+.4f}]"


def bands(result: EvaluationResult) -> dict[str, Band]:
    """Pool name -> band, the whole pool's first (results built without `bands` have only it)."""
    return result.bands or {WHOLE_POOL: result.band}


def pool_label(result: EvaluationResult, pool: str) -> str:
    """`all`, or a sub-pool's name with its size: `sub500 (500)`."""
    return WHOLE_POOL if pool == WHOLE_POOL else f"{pool} ({bands(result)[pool].pool_size:,})"


def _beats(row: ResultRow, n: int) -> str:
    if row.beats_all_random is None:
        return ""
    return f"{'yes' if row.beats_all_random else 'no'} ({row.random_beaten}/{n})"


def _tokens(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def gain_per_hour(row: ResultRow) -> float | None:
    """Issue #19's cost column: the target loss a method removes against the random mean (−Δ) per hour of
    its selection compute, the stages it reads included; None without a Δ or a positive time."""
    if row.target_delta is None or not np.isfinite(row.target_delta) or not row.upstream_seconds:
        return None
    return -row.target_delta / (row.upstream_seconds / 3600.0)


def _gain(value: float | None) -> str:
    return "" if value is None else f"{value:+.4f}"


def cost_sentence(result: EvaluationResult) -> str | None:
    """Which methods remove more target loss per hour than the target-aware reference, if it was run."""
    methods = [r for r in result.rows if r.role == "method"]
    reference = next((r for r in methods if r.selection == COST_REFERENCE), None)
    reference_gain = None if reference is None else gain_per_hour(reference)
    if reference_gain is None:
        return None
    better = [r.selection for r in methods if r is not reference and (gain_per_hour(r) or -np.inf) > reference_gain]
    return (
        f"Target gain per hour = −Δ target vs random ÷ the hours of the selection with its stages "
        f"(nat per hour, this machine). `{COST_REFERENCE}` gains {reference_gain:+.4f}/h; "
        + (f"higher: {', '.join(better)}." if better else "no method gains more per hour.")
    )


def table_rows(result: EvaluationResult) -> list[dict[str, str]]:
    """The report table: the two references (un-tuned model, full pool), then per pool (the whole
    pool first, then each sub-pool band) its band, each of its baselines and each of its methods."""
    labels = {BASE_MODEL: "base model (no fine-tune)", FULL_POOL: "full pool (every active sample)"}
    rows = [_row(result, r, labels[r.selection]) for r in result.rows if r.role in ("base_model", "full_pool")]
    for pool, band in bands(result).items():
        baselines = [r for r in result.rows if r.role == "baseline" and r.pool == pool]
        rows.append(_band_row(result, band, baselines))
        rows += [_row(result, r, r.selection) for r in baselines]
        rows += [_row(result, r, f"**{r.selection}**") for r in result.rows if r.role == "method" and r.pool == pool]
    return rows


def _band_row(result: EvaluationResult, band: Band, baselines: list[ResultRow]) -> dict[str, str]:
    name = "random band" if band.pool == WHOLE_POOL else f"random band of {band.pool}"
    return {
        "method": f"**{name}** ({band.n} seeds, mean ± std)",
        "pool": pool_label(result, band.pool),
        "kind": baselines[0].kind,
        "k": "/".join(map(str, sorted({r.k for r in baselines}))),
        "response tokens": _tokens(int(np.mean([r.response_tokens or 0 for r in baselines]))),
        "target loss": f"{_loss(band.target_mean)} ± {_loss(band.target_std)}",
        "Δ target vs random [95% CI]": "0",
        "beats all random seeds?": "",
        "Δ target vs token-matched random [95% CI]": "",
        "general loss": f"{_loss(band.general_mean)} ± {_loss(band.general_std)}",
        "Δ general vs random [95% CI]": "0",
        "selection s": _seconds(float(np.mean([r.selection_seconds or 0.0 for r in baselines]))),
        "incl. upstream s": _seconds(float(np.mean([r.upstream_seconds or 0.0 for r in baselines]))),
        "target gain per hour": "",
    }


def _row(result: EvaluationResult, row: ResultRow, label: str) -> dict[str, str]:
    matched = row.token_matched
    return {
        "method": label,
        "pool": pool_label(result, row.pool),
        "kind": "" if row.role == "base_model" else row.kind,
        "k": str(row.k),
        "response tokens": _tokens(row.response_tokens),
        "target loss": _loss(row.target_loss),
        "Δ target vs random [95% CI]": _delta(row.target_delta, row.target_ci),
        "beats all random seeds?": _beats(row, bands(result)[row.pool].n),
        "Δ target vs token-matched random [95% CI]": (
            "" if matched is None else _delta(matched.delta, (matched.low, matched.high))
        ),
        "general loss": _loss(row.general_loss),
        "Δ general vs random [95% CI]": _delta(row.general_delta, row.general_ci),
        "selection s": _seconds(row.selection_seconds),
        "incl. upstream s": _seconds(row.upstream_seconds),
        "target gain per hour": _gain(gain_per_hour(row)) if row.role == "method" else "",
    }


def token_matched_rows(result: EvaluationResult) -> list[dict[str, str]]:
    """The token-matched random subsets each method is compared with."""
    return [
        {
            "subset": r.selection,
            "matches": r.matched_to or "",
            "pool": pool_label(result, r.pool),
            "k": str(r.k),
            "response tokens": _tokens(r.response_tokens),
            "target loss": _loss(r.target_loss),
            "general loss": _loss(r.general_loss),
        }
        for r in result.rows
        if r.role == "token_matched"
    ]


def markdown(result: EvaluationResult, image: str | None = None) -> str:
    """The report; `image` is an image reference (a file name or a data: URI) shown under the table."""
    spec, settings = result.spec, result.spec.finetune
    lora = settings.lora
    lines = [
        f"# Does the curated subset help? (`{spec.name}`)",
        "",
        f"Pool: {result.pool_size:,} active samples. Each selection below fine-tunes `{settings.model}` with the "
        f"same recipe: LoRA r {lora.r}, alpha {lora.alpha:g}, dropout {lora.dropout:g} on "
        f"{', '.join(lora.target_modules)}; AdamW lr {lora.lr:g} ({lora.scheduler}, warm-up {lora.warmup_ratio:g}), "
        f"{lora.epochs} epoch(s){f', at most {lora.max_steps} steps' if lora.max_steps else ''}, batch "
        f"{lora.batch_size} x {lora.grad_accumulation}, {settings.max_length} tokens, seed {settings.seed}.",
        "",
        f"Held out: {len(result.target.sample_ids)} samples of the target `{spec.target.name}` "
        f"(its held-out part, never used for selection) and {len(result.general.sample_ids)} "
        f"`{spec.general.name}` conversations outside the pool. Loss = mean over samples of the mean "
        f"response-token cross-entropy of "
        f"{'every assistant turn' if settings.turns == 'all' else 'the last assistant turn'}; lower is better. "
        f"{_seeds_sentence(spec, settings.seed)}; a held-out sample's loss is "
        f"their mean. Δ = mean over held-out samples of (loss − the mean loss of the {result.band.n} baselines "
        f"{', '.join(spec.baselines)}), with a paired bootstrap 95% interval ({spec.bootstrap_resamples:,} "
        'resamples of the held-out samples, percentile). "Beats all random seeds" = a target loss below every '
        "baseline's (baselines beaten / baselines). Token-matched random: random subsets of the pool with as many "
        f"response tokens as the method's selection ({spec.token_matched_draws} per method), so that more tokens "
        "is not read as better tokens. Seconds come from `stage_runs`: the selection asset's own run, and "
        "with every stage and selection it reads (shared stages count for each method).",
        "",
    ]
    for band in spec.pools:
        size = bands(result)[band.name].pool_size
        lines += [
            f"Sub-pool `{band.name}`: the {size:,} samples of the selection `{band.selection}` (their stages cannot "
            f"run on the whole pool here). Its methods ({', '.join(band.selections)}) chose among them and are "
            f"compared with its own random band ({', '.join(band.baselines)}, drawn from the same {size:,}): their "
            "Δ, intervals and beaten seeds use that band, and their token-matched subsets are drawn from the "
            "sub-pool. The base model and full-pool rows stay whole-pool references.",
            "",
        ]
    for band in bands(result).values():
        if band.n < MIN_RANDOM_SEEDS:
            where = "" if band.pool == WHOLE_POOL else f" in pool `{band.pool}`"
            lines += [
                f"**Only {band.n} random seeds{where}** (use at least {MIN_RANDOM_SEEDS}): a selection no better "
                f"than random beats all of them by chance with probability 1/{band.n + 1}.",
                "",
            ]
    lines += [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if c in ("method", "pool", "kind") else "---:" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in table_rows(result)]
    cost = cost_sentence(result)
    if cost:
        lines += ["", cost]
    matched = token_matched_rows(result)
    if matched:
        lines += [
            "",
            "Token-matched random subsets:",
            "",
            "| " + " | ".join(TOKEN_COLUMNS) + " |",
            "|" + "|".join("---" if c in ("subset", "matches", "pool") else "---:" for c in TOKEN_COLUMNS) + "|",
        ]
        lines += ["| " + " | ".join(row[c] for c in TOKEN_COLUMNS) + " |" for row in matched]
    stats = result.stats
    lines += [
        "",
        f"Machine: {result.machine}. This evaluation took {result.seconds:,.0f} s: "
        f"{stats.get('finetunes_run', 0)} fine-tunes run, {stats.get('finetunes_cached', 0)} cached; "
        f"{stats.get('loss_sets_measured', 0)} loss measurements run, "
        f"{stats.get('loss_sets_cached', 0)} cached.",
    ]
    timings = [(r.selection, r.measured.finetune_seconds, r.measured.eval_seconds) for r in result.rows]
    lines += [
        "",
        "Per model: "
        + "; ".join(f"{name} fine-tune {ft:,.0f} s + losses {ev:,.0f} s" for name, ft, ev in timings)
        + ".",
    ]
    if result.stage_timings:
        total = sum(seconds for _, _, seconds in result.stage_timings)
        lines += [
            "",
            f"Stages and selections of the pipeline at their current configs (`stage_runs`; a stage "
            f"sums the runs that computed its rows): {total:,.0f} s in all.",
            "",
            "| stage or selection | kind | seconds |",
            "|---|---|---:|",
        ]
        lines += [f"| {name} | {kind} | {seconds:,.1f} |" for name, kind, seconds in result.stage_timings]
    if image:
        lines += ["", f"![losses relative to the random band]({image})"]
    return "\n".join(lines) + "\n"


def bar_chart_png(result: EvaluationResult) -> bytes:
    """Two panels (target, general): each selection's loss minus its band's mean with its bootstrap
    interval, rows grouped by pool, each pool's band ± std shaded over its rows (sub-pool rows are
    labelled `name [pool]`)."""
    pools = bands(result)
    rows = [
        r for pool in pools for r in result.rows if r.role in ("baseline", "method", "full_pool") and r.pool == pool
    ]
    labels = [r.selection if r.pool == WHOLE_POOL else f"{r.selection} [{r.pool}]" for r in rows]
    colors = [{"baseline": BASELINE_COLOR, "full_pool": REFERENCE_COLOR}.get(r.role, METHOD_COLOR) for r in rows]
    figure = Figure(figsize=(10, 0.35 * len(rows) + 1.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(rows))[::-1]
    panels = [
        ("held-out target", [(r.target_delta, r.target_ci) for r in rows], {p: b.target_std for p, b in pools.items()},
         pools[WHOLE_POOL].target_mean),
        ("general held-out", [(r.general_delta, r.general_ci) for r in rows],
         {p: b.general_std for p, b in pools.items()}, pools[WHOLE_POOL].general_mean),
    ]  # fmt: skip
    for ax, (title, deltas, stds, mean) in zip(axes, panels):
        values = np.array([np.nan if d is None else d for d, _ in deltas], dtype=np.float64)
        low = np.array([v - ci[0] if ci else 0.0 for v, (_, ci) in zip(values, deltas)], dtype=np.float64)
        high = np.array([ci[1] - v if ci else 0.0 for v, (_, ci) in zip(values, deltas)], dtype=np.float64)
        for pool, std in stds.items():
            at = positions[[i for i, r in enumerate(rows) if r.pool == pool]]
            if np.isfinite(std) and at.size:
                ax.fill_betweenx(
                    [at.min() - 0.5, at.max() + 0.5],
                    -std,
                    std,
                    color=BAND_COLOR if pool == WHOLE_POOL else SUB_POOL_BAND_COLOR,
                    alpha=0.6,
                    linewidth=0,
                    label="random ± std" if len(pools) == 1 else f"random ± std ({pool})",
                )
        ax.barh(
            positions,
            np.nan_to_num(values),
            color=colors,
            xerr=np.nan_to_num(np.stack([low, high])),
            error_kw={"elinewidth": 0.8, "capsize": 2},
        )
        ax.axvline(0, color="black", linewidth=0.8)
        against = f"random mean ({mean:.4f})" if len(pools) == 1 else f"its pool's random mean (all: {mean:.4f})"
        ax.set_title(f"{title}: loss − {against}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("Δ loss (lower is better)", fontsize=8)
    axes[0].set_yticks(positions, labels)
    axes[0].legend(fontsize=7, loc="lower right", frameon=False)
    sizes = ", ".join(f"{pool} {band.pool_size:,}" for pool, band in pools.items() if pool != WHOLE_POOL)
    figure.suptitle(
        f"{result.spec.name}: fine-tuned on each selection (k ≈ {rows[0].k}), pool {result.pool_size:,}"
        + (f" (sub-pools: {sizes})" if sizes else ""),
        fontsize=10,
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_report_files(result: EvaluationResult, folder: Path) -> tuple[Path, Path]:
    """eval.md (referencing eval.png next to it) and eval.png, each written then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    md_path, png_path = folder / "eval.md", folder / "eval.png"
    for path, data in ((png_path, bar_chart_png(result)), (md_path, markdown(result, "eval.png").encode())):
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return md_path, png_path


__all__ = [
    "BASE_MODEL",
    "COLUMNS",
    "TOKEN_COLUMNS",
    "bar_chart_png",
    "bands",
    "cost_sentence",
    "gain_per_hour",
    "markdown",
    "png_data_uri",
    "pool_label",
    "table_rows",
    "token_matched_rows",
    "write_report_files",
]


def _seeds_sentence(spec: EvaluationSpec, first: int) -> str:
    """How many training seeds each role was fine-tuned with, and which."""

    def seeds(n: int) -> str:
        return f"{n} training seed(s) ({', '.join(str(first + i) for i in range(n))})"

    if spec.seeds_of("baseline") == spec.training_seeds:
        return f"Every training set is fine-tuned with {seeds(spec.training_seeds)}"
    return (
        f"Every method (and the full pool) is fine-tuned with {seeds(spec.training_seeds)}, the "
        f"random baselines and token-matched subsets with {seeds(spec.seeds_of('baseline'))}"
    )
