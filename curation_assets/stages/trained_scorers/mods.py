"""Selection `mods` (Du et al. 2023, "MoDS: Model-oriented Data Selection for Instruction
Tuning"), all four steps in one selection:

1. Quality: pool samples whose `reward` stage score is > `reward_threshold` (0.0 as published).
   Compared as numbers: the released scripts compare the float score with the threshold as
   typed on the command line, a string (`float(score) > sys.argv[3]`), which Python 3 rejects.
2. Seeds: k-center greedy on the `embedding` stage's vectors of the high-quality set (random
   first centre from `seed`). `seed_count` seeds, or `seed_fraction` of the selection budget
   (default 0.25: the paper's 4,000-pair selection started from 1,000 seeds). Seeds never exceed
   the budget: a larger `seed_count` keeps the first `budget` seeds in k-center order (the same
   as running k-center greedy with k = budget).
3. Necessity: LoRA fine-tune the causal LM on the seeds, generate (greedy, batched, left padded)
   a response to every other high-quality sample's prompt (its conversation up to the last
   assistant turn, in the chat template), score (question, generated response) with the reward
   stage's own scorer (its Hugging Face model, or its trained head at its current config), so
   the numbers compare with the stored rewards. A sample whose generated response scores below
   `necessity_threshold` is "necessary": the seed-tuned model cannot answer it well yet.
   Default 0.0: the paper's value is not in the sources we could read; the released extraction
   script's in-file default is 0.0 (then overridden by its command-line argument).
4. Augmentation: k-center greedy over the necessary set alone (random first centre), up to the
   rest of the budget. Final = seeds ∪ augmentation; each member's reason (`seed` / `necessity`)
   is in `selection_details`, every generation in `mods_generations`. When fewer samples are
   necessary than the budget leaves room for, the selection is smaller than the budget (MoDS
   keeps only what the model needs).

Where the released code differs (checked in CASIA-LM/MoDS): it generates for every high-quality
sample, seeds included (here seeds are skipped: they are selected anyway), with 4-beam search and
up to 1,024 new tokens under the Alpaca prompt (here greedy, `max_new_tokens`, the model's chat
template); and its final step concatenates the seeds with every necessary instruction (merge.py)
with no k-center over them, nor a k-center started from the seeds (its k-center script always
starts from a random point); the paper's k-center over the necessary set is followed here.

Memory: the LoRA fine-tune holds one micro-batch (`lora.batch_size`); generation and rewarding
read, generate and score `CHUNK_SAMPLES` candidates at a time, `batch_size` prompts per
`generate` call. The seed fine-tune labels the assistant turns `turns` picks (all by default); only
the last assistant turn is generated; a conversation's question is its last user turn with the
earlier turns as input, as `reward_scores` builds it.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curation_assets.methods.kcenter import k_center_greedy
from curation_assets.models.chat_format import prompt_ids
from curation_assets.models.device import compute_device
from curation_assets.models.generation import generate_batch
from curation_assets.models.lora import LoraSettings
from curation_assets.stages.core.budget import BudgetedSelectionSpec
from curation_assets.stages.core.causal_lm import CausalLMInput, finetune_fresh_lora, run_batches_with_oom_backoff
from curation_assets.stages.core.context import StageContext, StageOutput
from curation_assets.stages.core.embedding_input import EmbeddingInput
from curation_assets.stages.core.registry import StageKind, register_kind
from curation_assets.stages.core.rewards import reward_turns, stored_reward_scorer
from curation_assets.store.sql_files import execute_sql_file, read_sql

CHUNK_SAMPLES = 256
TEXT_COLUMNS = ("instruction", "input", "output", "messages")
GENERATIONS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("question", pa.string()),
        ("generated", pa.string()),
        ("generated_reward", pa.float64()),
        ("necessary", pa.bool_()),
        ("failure", pa.string()),
    ]
)


class ModsSpec(EmbeddingInput, CausalLMInput, BudgetedSelectionSpec):
    """MoDS: reward filter, k-center seeds, necessity by a seed-tuned model, k-center augmentation."""

    kind: Literal["mods"]
    reward: str = Field(description="The `reward_scores` stage: quality filter and scorer of generated responses.")
    reward_threshold: float = Field(0.0, description="Quality: keep samples whose reward is > this (published 0).")
    seed_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        description=("Share of the selection budget taken by the k-center seeds (the paper: 1,000 of 4,000)."),
    )
    seed_count: int | None = Field(
        None,
        gt=0,
        description=(
            "Instead of `seed_fraction`: this many seeds (the paper: 1,000); cut to the budget in k-center order."
        ),
    )
    necessity_threshold: float = Field(
        0.0, description=("A generated response rewarded below this marks its instruction as necessary.")
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA fine-tune on the seeds.")
    max_new_tokens: int = Field(256, gt=0, description="Tokens generated per response (greedy).")

    @model_validator(mode="after")
    def _one_seed_size(self) -> ModsSpec:
        if self.seed_count is not None and "seed_fraction" in self.model_fields_set:
            raise ValueError("give at most one of `seed_count` (a number of seeds) or `seed_fraction` (of the budget)")
        if self.max_new_tokens >= self.max_length:
            raise ValueError(
                f"`max_new_tokens` ({self.max_new_tokens}) must be below `max_length` "
                f"({self.max_length}): the prompt gets the difference"
            )
        return self

    STAGE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"reward": ("reward_scores",)}
    UPSTREAM_KEYS: ClassVar[tuple[str, ...]] = ("reward",)  # its scorer (model or trained head) rewards the generations

    def seeds_for(self, budget: int) -> int:
        """Seeds asked for (before the cut to the high-quality set and to the budget)."""
        return self.seed_count if self.seed_count is not None else max(1, round(self.seed_fraction * budget))


def run_mods(spec: ModsSpec, ctx: StageContext) -> StageOutput:
    started = time.perf_counter()
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    rewards = {r["sample_id"]: r["reward"] for r in ctx.stage_rows(spec.reward, ["reward"]).to_pylist()}
    quality = np.array(
        [
            i
            for i, sid in enumerate(sample_ids)
            if rewards.get(sid) is not None and rewards[sid] > spec.reward_threshold
        ],
        dtype=np.int64,
    )
    if quality.size == 0:
        raise ValueError(
            f"{ctx.stage}: no sample of the reward stage {spec.reward!r} has a reward > "
            f"`reward_threshold` {spec.reward_threshold} ({len(sample_ids)} embedded samples, "
            f"{sum(v is not None for v in rewards.values())} rewarded): lower the threshold"
        )
    budget = spec.budget_for(len(sample_ids))
    requested = spec.seeds_for(budget)
    n_seeds = min(requested, quality.size, budget)
    seeds = quality[k_center_greedy(x[quality], n_seeds, rng=np.random.default_rng(spec.seed)).indices]
    stats: dict[str, Any] = {
        "pool": len(sample_ids),
        "budget": budget,
        "high_quality": int(quality.size),
        "seeds_requested": requested,
        "seeds": int(n_seeds),
        "seeds_cut_to_budget": requested > budget,
        "device": compute_device().describe(),
    }

    candidates = np.setdiff1d(quality, seeds)
    room = budget - n_seeds
    augmentation = np.array([], dtype=np.int64)
    writer = ctx.rows_writer(GENERATIONS_SCHEMA, "mods_generations")
    generated_reward: dict[str, float | None] = {}
    if room > 0 and candidates.size:
        necessary_ids = necessity(
            spec,
            ctx,
            [sample_ids[i] for i in seeds],
            [sample_ids[i] for i in candidates],
            writer,
            generated_reward,
            stats,
        )
        necessary = np.array([i for i in candidates if sample_ids[i] in necessary_ids], dtype=np.int64)
        if necessary.size:
            picked = k_center_greedy(
                x[necessary], min(room, necessary.size), rng=np.random.default_rng(spec.seed)
            ).indices
            augmentation = necessary[picked]
        stats["necessary"] = int(necessary.size)
    writer.close()
    stats.update(
        {
            "augmentation": int(augmentation.size),
            "selected": int(n_seeds + augmentation.size),
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    chosen = [sample_ids[i] for i in (*seeds, *augmentation)]
    details = ctx.write_details(
        {
            "sample_id": chosen,
            "role": ["seed"] * len(seeds) + ["necessity"] * len(augmentation),
            "value": [None] * len(seeds) + [generated_reward[sample_ids[i]] for i in augmentation],
        }
    )
    return StageOutput(
        ctx.write_members(chosen, [rewards[sid] for sid in chosen]),
        rows_in=len(sample_ids),
        stats=stats,
        metadata=dict(stats),
        details_file=details,
        extra={"generations_file": str(writer.path)},
    )


def necessity(
    spec: ModsSpec,
    ctx: StageContext,
    seed_ids: list[str],
    candidate_ids: list[str],
    writer: Any,
    generated_reward: dict[str, float | None],
    stats: dict[str, Any],
) -> set[str]:
    """Step 3: fine-tune on the seeds, then per chunk of candidates generate, reward and stage the
    generations; returns the necessary sample_ids."""
    device = compute_device()
    tuned, tokenizer = finetune_fresh_lora(
        spec,
        [row["messages"] for row in sample_texts(ctx, seed_ids)],
        spec.lora,
        seed=spec.seed,
        device=device.name,
        checkpoint_dir=ctx.artifacts_dir,
    )
    model = tuned.model
    model.eval()
    stats.update(
        {
            "training_steps": len(tuned.step_losses),
            "final_training_loss": tuned.step_losses[-1] if tuned.step_losses else None,
            "checkpoints": [c.as_record() for c in tuned.checkpoints],
        }
    )
    if tuned.checkpoints:
        stats["adapter_sha256"] = tuned.checkpoints[-1].adapter_sha256
    reward_spec = ctx.stage_specs[spec.reward]
    scorer = stored_reward_scorer(ctx, spec.reward)
    necessary: set[str] = set()
    batch_size = spec.batch_size
    chunks = [candidate_ids[i : i + CHUNK_SAMPLES] for i in range(0, len(candidate_ids), CHUNK_SAMPLES)]
    for chunk in ctx.progress(chunks, total=len(chunks), desc=f"generating {len(candidate_ids)} responses"):
        rows = sample_texts(ctx, chunk)
        prompts = [
            prompt_ids(tokenizer, r["messages"], spec.max_length - spec.max_new_tokens, spec.model) for r in rows
        ]
        generated = [""] * len(rows)

        def run(batch: list[int], prompts: list = prompts, generated: list[str] = generated) -> None:
            texts = generate_batch(
                model, tokenizer, [prompts[i] for i in batch], max_new_tokens=spec.max_new_tokens, device=device.name
            )
            for i, text in zip(batch, texts):
                generated[i] = text

        order = sorted(range(len(rows)), key=lambda i: -len(prompts[i]))  # little padding per batch
        batch_size = run_batches_with_oom_backoff(run, order, batch_size, stats)
        # the question as the reward stage built it for the stored rewards (last turn)
        questions = [reward_turns(r, "last", reward_spec.context_chars)[-1][0] for r in rows]
        scores, _ = scorer(list(zip(questions, generated)), stats)
        finite = np.isfinite(scores)
        flags = [bool(ok and s < spec.necessity_threshold) for s, ok in zip(scores, finite)]
        ids = [r["sample_id"] for r in rows]
        values = [float(s) if ok else None for s, ok in zip(scores, finite)]
        writer.write(
            pa.table(
                {
                    "sample_id": ids,
                    "question": questions,
                    "generated": generated,
                    "generated_reward": values,
                    "necessary": flags,
                    "failure": [None if ok else "reward not finite" for ok in finite],
                },
                schema=GENERATIONS_SCHEMA,
            )
        )
        generated_reward.update(zip(ids, values))
        necessary.update(sid for sid, flag in zip(ids, flags) if flag)
    stats["generation_failures"] = sum(v is None for v in generated_reward.values())
    return necessary


def sample_texts(ctx: StageContext, sample_ids: list[str]) -> list[dict[str, Any]]:
    """Instruction, input, output and messages of the given samples, in sample_id order."""
    with ctx.store.reader() as con:
        return (
            con.sql(read_sql("reads/sample_texts.sql"), params={"sample_ids": sample_ids}).to_arrow_table().to_pylist()
        )


def write_generations(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
    execute_sql_file(
        con,
        "writes/mods_replace.sql",
        {"selection": stage, "config_hash": config_hash, "generations_file": output.extra["generations_file"]},
    )


MODS = register_kind(
    StageKind(
        kind="mods",
        role="selection",
        spec=ModsSpec,
        run=run_mods,
        version="1",
        summary="MoDS: reward filter, k-center seeds, necessity by a seed-tuned model's generations, k-center "
        "augmentation (Du et al. 2023).",
        schema_file="schema/stages/mods.sql",
        tags=("python", "torch", "peft", "numpy"),
        write_extra=write_generations,
    )
)
