"""Stage `lora_warmup` (LESS, Xia et al. 2024): LoRA warm-up on a seeded random fraction of
the pool (published: 5%, 4 epochs, r 128, alpha 512, dropout 0.1 on q/k/v/o, lr 2e-5 linear,
warm-up ratio 0.03, batch 1 x 32 accumulation steps = effective batch 32, gradient norm
clipped at 1.0, 2048 tokens, every assistant turn labelled), an adapter + AdamW state
checkpoint per epoch (hashes and the epoch's mean learning rate in `lora_checkpoints`).
Rows: every sample, with `in_training_set`.

Training happens once per config; later runs (new samples) only add rows.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curation_assets.arrow_compute import pc
from curation_assets.models.device import compute_device
from curation_assets.models.lora import LoraSettings
from curation_assets.stages.core.causal_lm import CausalLMInput, finetune_fresh_lora
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.warmup import checkpoint_records
from curation_assets.store.sql_files import execute_sql_file
from curation_assets.store.writes import utc_now

WARMUP_SCHEMA = pa.schema([("sample_id", pa.string()), ("in_training_set", pa.bool_())])
# the released scripts (less/scripts/train/base_training_args.sh): per-device batch 1 with 32
# accumulation steps, and transformers' Trainer defaults for what they leave unset (clip 1.0)
LESS_LORA = LoraSettings(
    r=128,
    alpha=512,
    dropout=0.1,
    target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
    lr=2e-5,
    scheduler="linear",
    warmup_ratio=0.03,
    epochs=4,
    batch_size=1,
    grad_accumulation=32,
    max_grad_norm=1.0,
)


class LoraWarmupSpec(CausalLMInput):
    """LoRA warm-up whose per-epoch checkpoints give LESS its gradient features."""

    kind: Literal["lora_warmup"]
    max_length: int = Field(
        2048,
        gt=8,
        description=(
            "Tokens per conversation in the warm-up and in every gradient taken at its checkpoints (published: "
            "2048); longer ones are cut (`turns: all` keeps the start)."
        ),
    )
    train_fraction: float = Field(0.05, gt=0, le=1, description="Share of the pool trained on (published: 5%).")
    lora: LoraSettings = Field(LESS_LORA, description="LoRA and optimiser settings (published LESS defaults).")
    seed: int = Field(0, description="Seed of the training draw, adapter initialisation and batch order.")


def run_lora_warmup(spec: LoraWarmupSpec, ctx: StageContext) -> StageOutput:
    pending, count = ctx.pending_samples("lora_warmup", [])
    stats: dict[str, Any] = {"model": spec.model, "pending": count}
    existing = checkpoint_records(ctx, ctx.stage, ctx.config_hash)
    if existing:
        training_ids = set(_training_ids(ctx))
        stats["trained"] = False
        checkpoints: list[dict[str, Any]] = []
    else:
        pool = ctx.active_samples(["messages"])
        if pool.num_rows == 0:
            raise ValueError(f"{ctx.stage}: no active samples to warm up on")
        draw = sorted(
            random.Random(spec.seed).sample(range(pool.num_rows), max(1, round(spec.train_fraction * pool.num_rows)))
        )
        device = compute_device()
        conversations = pool.column("messages").to_pylist()
        result, _ = finetune_fresh_lora(
            spec,
            [conversations[i] for i in draw],
            spec.lora,
            seed=spec.seed,
            device=device.name,
            checkpoint_dir=ctx.artifacts_dir,
        )
        training_ids = {pool.column("sample_id")[i].as_py() for i in draw}
        checkpoints = [c.as_record() for c in result.checkpoints]
        stats.update(
            {
                "trained": True,
                "device": device.describe(),
                "training_samples": len(draw),
                "training_steps": len(result.step_losses),
                "final_training_loss": result.step_losses[-1] if result.step_losses else None,
                "checkpoints": checkpoints,
            }
        )
    ids = pq.read_table(pending, columns=["sample_id"]) if count else None
    writer = ctx.rows_writer(WARMUP_SCHEMA)
    if ids is not None:
        column = ids.column("sample_id")
        writer.write(
            pa.table(
                {"sample_id": column, "in_training_set": pc.is_in(column, pa.array(sorted(training_ids)))},
                schema=WARMUP_SCHEMA,
            )
        )
    writer.close()
    return StageOutput(
        writer.path,
        rows_in=count,
        stats=stats,
        metadata={k: v for k, v in stats.items() if k != "checkpoints"},
        extra={"checkpoints": checkpoints},
    )


def _training_ids(ctx: StageContext) -> list[str]:
    with ctx.store.reader() as con:
        return [
            r[0]
            for r in con.execute(
                "SELECT sample_id FROM lora_warmup WHERE stage = $s AND config_hash = $h AND in_training_set",
                {"s": ctx.stage, "h": ctx.config_hash},
            ).fetchall()
        ]


def write_checkpoints(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
    for record in output.extra.get("checkpoints", []):
        execute_sql_file(
            con,
            "writes/lora_checkpoint_insert.sql",
            {
                "stage": stage,
                "config_hash": config_hash,
                "epoch": record["epoch"],
                "path": record["path"],
                "adapter_sha256": record["adapter_sha256"],
                "optimizer_sha256": record["optimizer_sha256"],
                "mean_lr": record["mean_lr"],
                "now": utc_now(),
            },
        )


LORA_WARMUP = register_kind(
    StageKind(
        kind="lora_warmup",
        role="stage",
        spec=LoraWarmupSpec,
        run=run_lora_warmup,
        version="1",
        summary="LESS warm-up: LoRA on a random 5% of the pool, a checkpoint (adapter + AdamW state) per epoch.",
        table="lora_warmup",
        schema_file="schema/stages/lora_warmup.sql",
        rows_schema=WARMUP_SCHEMA,
        column_lineage={"in_training_set": ("messages",)},
        tags=("python", "torch", "peft"),
        write_extra=write_checkpoints,
    )
)
