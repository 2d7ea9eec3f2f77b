"""Stage `instruction_mining_fit` (Cao et al. 2023, Instruction Mining): fit the linear rule
from indicators to the fine-tuned model's validation loss, and predict every sample's loss.

1. Draw `subsets` random subsets of `subset_size` samples (seeded) from the pool that has
   indicator rows; each subset's indicators are averaged (NULLs skipped).
2. For each subset: fresh LoRA adapters (seed + r) on the base model, fine-tune on the subset
   (models/lora.py, the routine of lora_warmup / lobass), then measure the mean over the
   target's validation samples of the response-token loss (the target is read and split like
   the `less` selection's targets).
3. Least squares with an intercept from subset-mean indicators to the log of that loss
   (`response: log_loss`, the paper's form; `loss` fits the loss itself), on standardised
   indicators (predictions are unchanged by that; coefficients are stored in both scales).
4. Rows: every sample's predicted loss from its own indicators (the rule is linear, so a
   subset's mean prediction is its predicted loss); a NULL indicator takes the pool mean and
   is listed in `imputed`. Select with `top_score` on `predicted_loss`, `order: ascending`.

The fit runs once per config (its hash includes the indicators stage's, and through it every
stage the indicators read); later runs only predict new samples with the stored rule.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from curation_assets.arrow_compute import pc
from curation_assets.methods.instruction_mining import LinearRule, fit_linear_rule, random_subsets, subset_means
from curation_assets.models.causal_lm import fresh_causal_lm
from curation_assets.models.chat_format import EncodedSample, collate, encode_conversation, longest_first
from curation_assets.models.device import compute_device
from curation_assets.models.lora import LoraSettings, attach_lora, lora_finetune
from curation_assets.stages.core.causal_lm import CausalLMInput, run_batches_with_oom_backoff
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.instruction_mining import SCALAR_INDICATORS
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.targets import TargetSpec, read_target
from curation_assets.store.sql_files import execute_sql_file, read_sql
from curation_assets.store.writes import utc_now

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("predicted", pa.float64()),
        ("predicted_loss", pa.float64()),
        ("imputed", pa.list_(pa.string())),
    ]
)
INTERCEPT = "(intercept)"


class InstructionMiningFitSpec(CausalLMInput):
    """Linear rule from subset-mean indicators to fine-tuned validation loss; predicted loss per sample."""

    kind: Literal["instruction_mining_fit"]
    indicators: str = Field(description="The `instruction_mining_indicators` stage.")
    use: list[str] | None = Field(
        None,
        description=(
            "Indicators in the rule (input_length, output_length, reward, perplexity, mtld, knn, or an extra "
            "'<stage>.<column>'); default: every indicator the indicators stage fills."
        ),
    )
    response: Literal["log_loss", "loss"] = Field(
        "log_loss", description=("What the rule predicts: log_loss (the paper: log of the validation loss) or loss.")
    )
    target: TargetSpec = Field(description="The target task whose validation loss is measured (read like a source).")
    subsets: int = Field(20, gt=2, description="R: random subsets, one fine-tune each.")
    subset_size: int = Field(1000, gt=0, description="Samples per subset.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA and optimiser settings per fine-tune.")
    seed: int = Field(0, description="Seed of the subset draws; fine-tune r uses seed + r.")

    @model_validator(mode="after")
    def _enough_subsets(self) -> InstructionMiningFitSpec:
        if self.use is not None:
            if not self.use or len(set(self.use)) != len(self.use):
                raise ValueError(f"`use` must name distinct indicators, got {self.use}")
            if self.subsets < len(self.use) + 2:
                raise ValueError(
                    f"{len(self.use)} indicators need at least {len(self.use) + 2} subsets "
                    f"(coefficients, intercept and one residual degree of freedom)"
                )
        return self

    STAGE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"indicators": ("instruction_mining_indicators",)}
    UPSTREAM_KEYS: ClassVar[tuple[str, ...]] = ("indicators",)

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        if self.target.path and not (base_dir / Path(self.target.path).expanduser()).exists():
            return [("target", f"target file not found: {base_dir / Path(self.target.path).expanduser()}")]
        return []

    def with_base_dir(self, base_dir: Path) -> InstructionMiningFitSpec:
        if not self.target.path:
            return self
        target = self.target.model_copy(update={"path": str(base_dir / Path(self.target.path).expanduser())})
        return self.model_copy(update={"target": target})


def indicator_matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    """(samples x names) float matrix from indicator rows; NULL -> NaN; extras from the `extra` map."""
    columns = []
    for name in names:
        values = (
            table.column(name)
            if name in SCALAR_INDICATORS
            else pc.map_lookup(table.column("extra"), pa.scalar(name, pa.string()), "first")
        )
        columns.append(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False))
    return np.column_stack(columns) if columns else np.empty((table.num_rows, 0))


def mean_response_loss(
    model: Any, encoded: list[EncodedSample], pad_token_id: int, batch_size: int, device: str, stats: dict
) -> float:
    """Mean over samples of each sample's mean response-token cross-entropy (samples without a
    response token are skipped)."""
    import torch

    from curation_assets.methods.lm_signals import forward_signals

    losses = np.full(len(encoded), np.nan)

    def score(batch: list[int]) -> None:
        tensors = collate([encoded[i] for i in batch], pad_token_id, device)
        with torch.inference_mode():
            values = forward_signals(model, tensors).loss
        losses[batch] = values.double().cpu().numpy()

    model.eval()
    run_batches_with_oom_backoff(score, longest_first(encoded), batch_size, stats)
    if np.isnan(losses).all():
        raise ValueError("no target validation sample has a response token to score")
    return float(np.nanmean(losses))


def run_instruction_mining_fit(spec: InstructionMiningFitSpec, ctx: StageContext) -> StageOutput:
    indicators_spec: Any = ctx.stage_specs.get(spec.indicators)  # an instruction_mining_indicators spec
    if getattr(indicators_spec, "kind", None) != "instruction_mining_indicators":
        raise ValueError(f"{spec.indicators!r} is not an instruction_mining_indicators stage of this pipeline")
    pending, count = ctx.pending_samples("instruction_mining_predictions", [])
    stats: dict[str, Any] = {"pending": count}
    extra: dict[str, Any] = {}
    rule = stored_rule(ctx)
    stats["fitted"] = rule is None and count > 0  # false: the rule stored for this config predicts
    if rule is None and count:
        rule, extra = fit_rule(spec, indicators_spec, ctx, stats)
    writer = ctx.rows_writer(PREDICTIONS_SCHEMA)
    if count:
        assert rule is not None
        ids = pq.read_table(pending, columns=["sample_id"]).column("sample_id")
        pool = ctx.stage_rows(spec.indicators, [*SCALAR_INDICATORS, "extra"])
        rows = pc.index_in(ids, value_set=pool.column("sample_id"))
        if rows.null_count:
            raise ValueError(
                f"{ctx.stage}: {rows.null_count} samples have no indicator row in "
                f"{spec.indicators!r}; materialise it first"
            )
        x = indicator_matrix(pool.take(rows), list(rule.names))
        missing = np.isnan(x)
        x = np.where(missing, rule.imputation[None, :], x)
        predicted = rule.predict(x)
        writer.write(
            pa.table(
                {
                    "sample_id": ids,
                    "predicted": predicted,
                    "predicted_loss": np.exp(predicted) if rule.response == "log_loss" else predicted,
                    "imputed": [[n for n, m in zip(rule.names, row) if m] for row in missing],
                },
                schema=PREDICTIONS_SCHEMA,
            )
        )
        stats["imputed"] = {n: int(c) for n, c in zip(rule.names, missing.sum(axis=0)) if c}
    writer.close()
    return StageOutput(writer.path, rows_in=count, stats=stats, metadata=dict(stats), extra=extra)


@dataclass(frozen=True)
class StoredRule:
    """A fitted rule as the predictions need it (fresh from the fit, or read back from the store)."""

    response: str
    names: tuple[str, ...]
    intercept: float
    coefficients: np.ndarray
    imputation: np.ndarray  # per indicator: the pool mean a NULL value is replaced by

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + x @ self.coefficients


def stored_rule(ctx: StageContext) -> StoredRule | None:
    with ctx.store.reader() as con:
        rows = con.execute(
            read_sql("reads/instruction_mining_rule.sql"), {"stage": ctx.stage, "config_hash": ctx.config_hash}
        ).fetchall()
    if not rows:
        return None
    terms = rows[1:]
    return StoredRule(
        rows[0][0],
        tuple(t[1] for t in terms),
        rows[0][2],
        np.array([t[2] for t in terms]),
        np.array([t[3] for t in terms], dtype=np.float64),
    )


def fit_rule(
    spec: InstructionMiningFitSpec, indicators_spec: Any, ctx: StageContext, stats: dict[str, Any]
) -> tuple[StoredRule, dict[str, Any]]:
    """Fine-tune on the random subsets, fit the rule, stage its tables for `write_fit`."""
    available = indicators_spec.indicator_names()
    names = list(spec.use or available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(
            f"{ctx.stage}: `use` names indicators {spec.indicators!r} does not fill: {unknown} "
            f"(it fills: {', '.join(available)})"
        )
    if spec.subsets < len(names) + 2:
        raise ValueError(
            f"{ctx.stage}: {len(names)} indicators ({', '.join(names)}) need at least "
            f"{len(names) + 2} subsets; raise `subsets` or list fewer in `use`"
        )
    pool = ctx.stage_rows(spec.indicators, [*SCALAR_INDICATORS, "extra"])
    if spec.subset_size > pool.num_rows:
        raise ValueError(
            f"{ctx.stage}: subset_size {spec.subset_size} exceeds the {pool.num_rows} samples with indicators"
        )
    x = indicator_matrix(pool, names)
    draws = random_subsets(pool.num_rows, spec.subsets, spec.subset_size, spec.seed)
    means = subset_means(x, draws)
    empty = [(int(r), names[j]) for r, j in zip(*np.nonzero(np.isnan(means)))]
    if empty:
        raise ValueError(
            f"{ctx.stage}: subsets without any value of an indicator (subset, indicator): {empty[:5]}; "
            "drop it from `use` or cover more samples upstream"
        )
    pool_ids = pool.column("sample_id").to_pylist()
    losses, runs, base_loss, validation = finetune_subsets(spec, ctx, pool_ids, draws, stats)
    y = np.log(losses) if spec.response == "log_loss" else np.asarray(losses)
    linear = fit_linear_rule(means, y, names)
    imputation = np.array([np.nanmean(x[:, j]) if (~np.isnan(x[:, j])).any() else np.nan for j in range(len(names))])
    stats.update(
        {
            "indicators": names,
            "r_squared": linear.r_squared,
            "adjusted_r_squared": linear.adjusted_r_squared,
            "rmse": linear.rmse,
            "base_validation_loss": base_loss,
            "validation_loss_range": [float(min(losses)), float(max(losses))],
            "rule": f"{spec.response} = {linear.intercept:.6g} "
            + " ".join(f"{'+' if c >= 0 else '-'} {abs(c):.6g}*{n}" for n, c in zip(names, linear.coefficients)),
        }
    )
    extra = stage_fit_tables(
        spec, ctx, linear, imputation, pool.num_rows, validation, base_loss, draws, pool_ids, means, losses, runs
    )
    return StoredRule(spec.response, tuple(names), linear.intercept, linear.coefficients, imputation), extra


def finetune_subsets(
    spec: InstructionMiningFitSpec,
    ctx: StageContext,
    pool_ids: list[str],
    draws: list[np.ndarray],
    stats: dict[str, Any],
) -> tuple[list[float], list[dict[str, Any]], float, int]:
    """Validation loss after fine-tuning on each subset; also the base model's loss."""
    with tempfile.TemporaryDirectory(dir=ctx.staging_dir) as staging:
        target = read_target(spec.target, Path(staging) / spec.target.name)
    validation = [
        m
        for m, split in zip(target.column("messages").to_pylist(), target.column("split").to_pylist())
        if split == "validation"
    ]
    device = compute_device()
    model, tokenizer = fresh_causal_lm(spec.model, spec.chat_template)
    encode = lambda turns: encode_conversation(tokenizer, turns, spec.max_length, spec.model, spec.turns)  # noqa: E731
    encoded_validation = [encode(m) for m in validation]
    needed = sorted({int(i) for rows in draws for i in rows})
    conversations = _messages(ctx, [pool_ids[i] for i in needed])
    encoded_pool = {i: encode(m) for i, m in zip(needed, conversations)}
    stats.update({"device": device.describe(), "validation_samples": len(validation)})
    base_loss = mean_response_loss(
        model, encoded_validation, tokenizer.pad_token_id, spec.batch_size, device.name, stats
    )
    losses: list[float] = []
    runs: list[dict[str, Any]] = []
    for r, rows in enumerate(ctx.progress(draws, total=len(draws), desc=f"fine-tuning on {len(draws)} subsets")):
        peft_model = attach_lora(model, spec.lora, spec.seed + r)
        result = lora_finetune(
            peft_model,
            [encoded_pool[int(i)] for i in rows],
            spec.lora,
            pad_token_id=tokenizer.pad_token_id,
            seed=spec.seed + r,
            device=device.name,
        )
        losses.append(
            mean_response_loss(
                peft_model, encoded_validation, tokenizer.pad_token_id, spec.batch_size, device.name, stats
            )
        )
        runs.append(
            {
                "training_steps": len(result.step_losses),
                "final_training_loss": result.step_losses[-1] if result.step_losses else None,
            }
        )
        model = peft_model.unload()  # the base model again, adapters removed, for the next subset
    return losses, runs, base_loss, len(validation)


def _messages(ctx: StageContext, sample_ids: list[str]) -> list[Any]:
    wanted = set(sample_ids)
    table = ctx.active_samples(["messages"])
    by_id = {
        sid: m
        for sid, m in zip(table.column("sample_id").to_pylist(), table.column("messages").to_pylist())
        if sid in wanted
    }
    return [by_id[sid] for sid in sample_ids]


def stage_fit_tables(
    spec: InstructionMiningFitSpec,
    ctx: StageContext,
    linear: LinearRule,
    imputation: np.ndarray,
    pool_size: int,
    validation: int,
    base_loss: float,
    draws: list[np.ndarray],
    pool_ids: list[str],
    means: np.ndarray,
    losses: list[float],
    runs: list[dict[str, Any]],
) -> dict[str, Any]:
    names = list(linear.names)
    files = {key: ctx.staging_dir / f"{ctx.stage}.{key}.parquet" for key in ("fit", "terms", "subsets")}
    pq.write_table(
        pa.table(
            {
                "response": [spec.response],
                "indicators": [names],
                "n_subsets": [len(draws)],
                "subset_size": [spec.subset_size],
                "pool_size": [pool_size],
                "r_squared": [_finite(linear.r_squared)],
                "adjusted_r_squared": [_finite(linear.adjusted_r_squared)],
                "rmse": [linear.rmse],
                "target": [spec.target.name],
                "validation_samples": [validation],
                "base_validation_loss": [base_loss],
            }
        ),
        files["fit"],
    )
    pq.write_table(
        pa.table(
            {
                "term": [INTERCEPT, *names],
                "coefficient": [linear.intercept, *linear.coefficients.tolist()],
                "standardised_coefficient": [linear.standardised_intercept, *linear.standardised_coefficients.tolist()],
                "std_error": [None, *map(_finite, linear.std_errors)],
                "t_value": [None, *map(_finite, linear.t_values)],
                "p_value": [None, *map(_finite, linear.p_values)],
                "subset_mean": [None, *linear.means.tolist()],
                "subset_std": [None, *linear.stds.tolist()],
                "imputation_value": [None, *map(_finite, imputation)],
            }
        ),
        files["terms"],
    )
    pq.write_table(
        pa.table(
            {
                "subset": list(range(len(draws))),
                "sample_ids": [[pool_ids[int(i)] for i in rows] for rows in draws],
                "mean_indicators": pa.array(
                    [list(zip(names, row.tolist())) for row in means], pa.map_(pa.string(), pa.float64())
                ),
                "validation_loss": losses,
                "training_steps": [run["training_steps"] for run in runs],
                "final_training_loss": [run["final_training_loss"] for run in runs],
            }
        ),
        files["subsets"],
    )
    return {key: str(path) for key, path in files.items()}


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def write_fit(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
    if output.extra:
        execute_sql_file(
            con,
            "writes/instruction_mining_fit_replace.sql",
            {
                "stage": stage,
                "config_hash": config_hash,
                "fit_file": output.extra["fit"],
                "terms_file": output.extra["terms"],
                "subsets_file": output.extra["subsets"],
                "now": utc_now(),
            },
        )


INSTRUCTION_MINING_FIT = register_kind(
    StageKind(
        kind="instruction_mining_fit",
        role="stage",
        spec=InstructionMiningFitSpec,
        run=run_instruction_mining_fit,
        version="1",
        summary="Instruction Mining: least-squares rule from subset-mean indicators to fine-tuned validation loss.",
        table="instruction_mining_predictions",
        schema_file="schema/stages/instruction_mining.sql",
        rows_schema=PREDICTIONS_SCHEMA,
        column_lineage={
            "predicted": ("instruction", "input", "output", "messages"),
            "predicted_loss": ("instruction", "input", "output", "messages"),
            "imputed": ("instruction", "input", "output", "messages"),
        },  # indicators filled with the mean
        tags=("python", "numpy", "torch", "peft"),
        write_extra=write_fit,
    )
)
