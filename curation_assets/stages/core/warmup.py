"""A `lora_warmup` stage's stored checkpoints and the warm model built from them, shared by the
stages that take gradients at those checkpoints (`grad_features`, `influence_distillation`) and
the `less` selection (target gradients)."""

from __future__ import annotations

from typing import Any

from curation_assets.models.causal_lm import fresh_causal_lm
from curation_assets.models.chat_format import collate, encode_conversation, longest_first
from curation_assets.models.device import compute_device
from curation_assets.models.lora import attach_lora
from curation_assets.models.warmup_checkpoints import load_checkpoint
from curation_assets.stages.core.causal_lm import run_batches_with_oom_backoff
from curation_assets.stages.core.context import StageContext
from curation_assets.store.sql_files import read_sql


def checkpoint_records(ctx: StageContext, stage: str, config_hash: str) -> list[dict[str, Any]]:
    """The stored checkpoints of a warm-up stage at a config, by epoch."""
    with ctx.store.reader() as con:
        rows = con.execute(
            read_sql("reads/lora_checkpoints.sql"), {"stage": stage, "config_hash": config_hash}
        ).fetchall()
    return [
        {"epoch": e, "path": p, "adapter_sha256": a, "optimizer_sha256": o, "mean_lr": lr} for e, p, a, o, lr in rows
    ]


class WarmupModel:
    """The warm-up's base model with adapters, switchable between its checkpoints."""

    def __init__(self, ctx: StageContext, warmup_stage: str) -> None:
        spec: Any = ctx.stage_specs.get(warmup_stage)  # a lora_warmup spec
        if getattr(spec, "kind", None) != "lora_warmup":
            raise ValueError(f"{warmup_stage!r} is not a lora_warmup stage of this pipeline")
        self.spec = spec
        self.checkpoints = checkpoint_records(ctx, warmup_stage, ctx.stage_hashes[warmup_stage])
        if not self.checkpoints:
            raise ValueError(
                f"warm-up stage {warmup_stage!r} has no checkpoints for its current config: materialise it first"
            )
        from curation_assets.models.gradients import LoraGradientCapture

        self.device = compute_device()
        model, self.tokenizer = fresh_causal_lm(spec.model, spec.chat_template)
        self.model = attach_lora(model, spec.lora, spec.seed).to(self.device.name)
        self.model.eval()
        self.capture = LoraGradientCapture(self.model)
        self._moments: dict[int, Any] = {}

    def use(self, epoch: int) -> Any:
        """Load checkpoint `epoch`; returns its AdamW moments."""
        from pathlib import Path

        record = next(c for c in self.checkpoints if c["epoch"] == epoch)
        return load_checkpoint(self.model, Path(record["path"]))

    def encode(self, conversations: list[list[dict[str, str]]]) -> list[Any]:
        """The warm-up's own encoding (max_length, `turns`): LESS takes gradients of what it trained on."""
        spec = self.spec
        return [encode_conversation(self.tokenizer, c, spec.max_length, spec.model, spec.turns) for c in conversations]

    def features(
        self,
        encoded: list[Any],
        projector: Any,
        moments: Any,
        batch_size: int,
        stats: dict,
        epsilon_inside_sqrt: bool = True,
    ) -> list[Any]:
        """Projected features of `encoded` samples (preconditioned when `moments` is given)."""
        from curation_assets.models.gradients import per_sample_gradient_features

        out: list[Any] = [None] * len(encoded)

        def run(batch: list[int]) -> None:
            tensors = {
                k: v.to(self.device.name)
                for k, v in collate([encoded[i] for i in batch], self.tokenizer.pad_token_id).items()
            }
            projected = per_sample_gradient_features(
                self.model, tensors, projector, moments, capture=self.capture, epsilon_inside_sqrt=epsilon_inside_sqrt
            )
            for row, i in enumerate(batch):
                out[i] = projected[row].detach().cpu().numpy()

        run_batches_with_oom_backoff(run, longest_first(encoded), batch_size, stats)
        return out
