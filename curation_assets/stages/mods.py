"""Selection `mods` (Du et al. 2023, "MoDS: Model-oriented Data Selection for Instruction
Tuning"), all four steps in one selection:

1. Quality: pool samples whose `reward` stage score is > `reward_threshold` (0.0 as published;
   compared as numbers: the released script compares the score's string form).
2. Seeds: k-center greedy on the `embedding` stage's vectors of the high-quality set.
3. Necessity: LoRA fine-tune the causal LM on the seeds, generate (greedy) a response to every
   other high-quality sample's prompt, score (question, generated response) with the reward
   stage's own scorer (its Hugging Face model, or its trained head), so the numbers compare
   with the stored rewards. A sample whose generated response scores below
   `necessity_threshold` is "necessary": the seed-tuned model cannot answer it well yet.
4. Augmentation: k-center greedy over the necessary set (the paper's step, over that set
   alone) up to the rest of the budget. Final = seeds ∪ augmentation; each member's reason
   (`seed` / `necessity`) is in `selection_details`, every generation in `mods_generations`.

The budget (`budget`/`fraction` of the embedded pool) bounds the final set; `seed_share` of it
goes to the seeds (the paper: 1,000 seeds, then about as many necessary samples). When the
necessary set is smaller than the rest of the budget, the selection is smaller than the budget
(MoDS keeps only what the model needs). Only the last assistant turn is generated; a
conversation's question is its last user turn with the earlier turns as input, as `reward_scores`
builds it.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curation_assets.methods.kcenter import k_center_greedy
from curation_assets.models.causal_lm import fresh_causal_lm
from curation_assets.models.chat_format import encode_conversation, prompt_ids
from curation_assets.models.device import compute_device
from curation_assets.models.generation import generate_batch
from curation_assets.models.lora import LoraSettings, attach_lora, lora_finetune
from curation_assets.stages.budget_spec import BudgetedSelectionSpec
from curation_assets.stages.context import StageContext, StageOutput
from curation_assets.stages.diversity import EmbeddingInput
from curation_assets.stages.lm_loss import CausalLMSpec, run_batches_with_oom_backoff
from curation_assets.stages.registry import StageKind, register_kind
from curation_assets.stages.reward_scores import reward_turns, stored_reward_scorer
from curation_assets.store.sql_files import execute_sql_file

GENERATIONS_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("question", pa.string()), ("generated", pa.string()),
    ("generated_reward", pa.float64()), ("necessary", pa.bool_()), ("failure", pa.string()),
])


class ModsSpec(EmbeddingInput, CausalLMSpec, BudgetedSelectionSpec):
    """MoDS: reward filter, k-center seeds, necessity by a seed-tuned model, k-center augmentation."""

    kind: Literal["mods"]
    reward: str = Field(description="The `reward_scores` stage: quality filter and scorer of generated responses.")
    reward_threshold: float = Field(0.0, description="Quality: keep samples whose reward is > this (published 0).")
    seed_share: float = Field(0.5, gt=0, le=1, description="Share of the budget taken by the k-center seeds.")
    necessity_threshold: float = Field(0.0, description=(
        "A generated response rewarded below this marks its instruction as necessary."))
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA fine-tune on the seeds.")
    max_new_tokens: int = Field(256, gt=0, description="Tokens generated per response (greedy).")

    def references(self) -> dict[str, str]:
        return {**super().references(), "reward": self.reward}

    def check_references(self, stage_kinds: Any, selection_names: set[str]) -> list[tuple[str, str]]:
        problems = super().check_references(stage_kinds, selection_names)
        kind = stage_kinds.get(self.reward)
        if (kind is None and self.reward in selection_names) or (kind is not None and kind.kind != "reward_scores"):
            problems.append(("reward", f"{self.reward!r} is not a reward_scores stage"))
        return problems


def run_mods(spec: ModsSpec, ctx: StageContext) -> StageOutput:
    started = time.perf_counter()
    sample_ids, x = ctx.stage_matrix(spec.embedding, "embedding")
    x = np.asarray(x)
    rewards = {r["sample_id"]: r["reward"] for r in ctx.stage_rows(spec.reward, ["reward"]).to_pylist()}
    quality = np.array([i for i, sid in enumerate(sample_ids)
                        if rewards.get(sid) is not None and rewards[sid] > spec.reward_threshold], dtype=np.int64)
    if quality.size == 0:
        raise ValueError(f"{ctx.stage}: no sample of {spec.reward!r} has a reward > `reward_threshold` "
                         f"{spec.reward_threshold} (of {len(sample_ids)} embedded samples, "
                         f"{sum(v is not None for v in rewards.values())} rewarded)")
    budget = spec.budget_for(len(sample_ids))
    n_seeds = min(quality.size, budget, max(1, round(spec.seed_share * budget)))
    seeds = quality[k_center_greedy(x[quality], n_seeds, rng=np.random.default_rng(spec.seed)).indices]
    stats: dict[str, Any] = {"pool": len(sample_ids), "budget": budget, "high_quality": int(quality.size),
                             "seeds": int(n_seeds), "device": compute_device().describe()}

    candidates = np.setdiff1d(quality, seeds)
    room = budget - n_seeds
    generations = empty_generations()
    augmentation = np.array([], dtype=np.int64)
    if room > 0 and candidates.size:
        generations = necessity(spec, ctx, [sample_ids[i] for i in seeds], [sample_ids[i] for i in candidates],
                                stats)
        necessary_ids = set(generations.filter(generations.column("necessary")).column("sample_id").to_pylist())
        necessary = np.array([i for i in candidates if sample_ids[i] in necessary_ids], dtype=np.int64)
        if necessary.size:
            picked = k_center_greedy(x[necessary], min(room, necessary.size),
                                     rng=np.random.default_rng(spec.seed)).indices
            augmentation = necessary[picked]
        stats["necessary"] = int(necessary.size)
    stats.update({"augmentation": int(augmentation.size), "selected": int(n_seeds + augmentation.size),
                  "seconds": round(time.perf_counter() - started, 1)})
    chosen = [sample_ids[i] for i in (*seeds, *augmentation)]
    scores = [rewards[sid] for sid in chosen]
    generated_reward = dict(zip(generations.column("sample_id").to_pylist(),
                                generations.column("generated_reward").to_pylist()))
    details = ctx.write_details({
        "sample_id": chosen,
        "role": ["seed"] * len(seeds) + ["necessity"] * len(augmentation),
        "value": [None] * len(seeds) + [generated_reward[sample_ids[i]] for i in augmentation]})
    generations_file = ctx.staging_dir / f"{ctx.stage}.mods_generations.parquet"
    pq.write_table(generations, generations_file)
    return StageOutput(ctx.write_members(chosen, scores), rows_in=len(sample_ids), stats=stats,
                       metadata=dict(stats), details_file=details,
                       extra={"generations_file": str(generations_file)})


def necessity(spec: ModsSpec, ctx: StageContext, seed_ids: list[str], candidate_ids: list[str],
              stats: dict[str, Any]) -> pa.Table:
    """Fine-tune on the seeds, generate for the candidates, reward the generations (step 3)."""
    device = compute_device()
    texts = {r["sample_id"]: r for r in ctx.active_samples(["instruction", "input", "output", "messages"]).to_pylist()}
    model, tokenizer = fresh_causal_lm(spec.model, spec.chat_template)
    model = attach_lora(model, spec.lora, spec.seed)
    training = [encode_conversation(tokenizer, texts[sid]["messages"], spec.max_length, spec.model)
                for sid in seed_ids]
    tuned = lora_finetune(model, training, spec.lora, pad_token_id=tokenizer.pad_token_id, seed=spec.seed,
                          device=device.name, checkpoint_dir=ctx.artifacts_dir)
    model.eval()
    stats.update({"training_steps": len(tuned.step_losses),
                  "final_training_loss": tuned.step_losses[-1] if tuned.step_losses else None,
                  "checkpoints": [c.as_record() for c in tuned.checkpoints]})
    prompt_budget = max(8, spec.max_length - spec.max_new_tokens)
    prompts = [prompt_ids(tokenizer, texts[sid]["messages"], prompt_budget, spec.model) for sid in candidate_ids]
    generated: list[str] = [""] * len(candidate_ids)

    def run(batch: list[int]) -> None:
        for i, text in zip(batch, generate_batch(model, tokenizer, [prompts[i] for i in batch],
                                                 max_new_tokens=spec.max_new_tokens, device=device.name)):
            generated[i] = text

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    chunks = [order[i:i + spec.batch_size] for i in range(0, len(order), spec.batch_size)]
    for chunk in ctx.progress(chunks, total=len(chunks), desc=f"generating {len(order)} responses"):
        run_batches_with_oom_backoff(run, chunk, spec.batch_size, stats)
    context_chars = ctx.stage_specs[spec.reward].context_chars  # the question as the reward stage built it
    questions = [reward_turns(texts[sid], "last", context_chars)[-1][0] for sid in candidate_ids]
    scores, _ = stored_reward_scorer(ctx, spec.reward)(list(zip(questions, generated)), stats)
    finite = np.isfinite(scores)
    return pa.table({
        "sample_id": candidate_ids, "question": questions, "generated": generated,
        "generated_reward": [float(s) if ok else None for s, ok in zip(scores, finite)],
        "necessary": [bool(ok and s < spec.necessity_threshold) for s, ok in zip(scores, finite)],
        "failure": [None if ok else "reward not finite" for ok in finite],
    }, schema=GENERATIONS_SCHEMA)


def empty_generations() -> pa.Table:
    return GENERATIONS_SCHEMA.empty_table()


def write_generations(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
    execute_sql_file(con, "writes/mods_replace.sql", {"selection": stage,
                                                      "generations_file": output.extra["generations_file"]})


MODS = register_kind(StageKind(
    kind="mods", role="selection", spec=ModsSpec, run=run_mods, version="1",
    summary="MoDS: reward filter, k-center seeds, necessity by a seed-tuned model's generations, k-center "
            "augmentation (Du et al. 2023).",
    schema_file="schema/stages/mods.sql", tags=("python", "torch", "peft", "numpy"), write_extra=write_generations,
))
