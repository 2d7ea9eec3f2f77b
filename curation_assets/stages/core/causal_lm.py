"""`CausalLMInput`: the keys of stages that run a causal LM, and what they share (loading the
model, encoding conversations, batches that halve on out-of-memory)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from curation_assets.models.causal_lm import PACKAGED_SMOLLM2, fresh_causal_lm, load_causal_lm
from curation_assets.models.chat_format import EncodedSample, Turns, encode_conversation
from curation_assets.models.lora import FineTuneResult, LoraSettings, attach_lora, lora_finetune
from curation_assets.stages.core.registry import StageSpec

CHUNK_SAMPLES = 256  # samples tokenised and length-sorted together; bounds memory


class CausalLMInput(StageSpec):
    """Keys shared by stages that run the small causal LM."""

    model: str = Field(
        PACKAGED_SMOLLM2,
        description=(
            "Causal LM: the packaged SmolLM2-135M-Instruct (default, offline), a Hugging Face name, a local folder "
            "or a .gguf file."
        ),
    )
    max_length: int = Field(1024, gt=8, description="Tokens per sample (prompt + response); longer ones are cut.")
    chat_template: str | None = Field(None, description="Jinja chat template for tokenizers that lack one.")
    batch_size: int = Field(8, gt=0, description="Samples per forward pass (halved on out-of-memory).")
    turns: Turns = Field(
        "all",
        description=(
            "Assistant turns that are labels (trained on / scored): all (Tulu-style SFT, the released LESS code) "
            "or last (the last assistant turn given the conversation before it)."
        ),
    )

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # does not change results


def load_model_for(spec: CausalLMInput) -> tuple[Any, Any]:
    model, tokenizer = load_causal_lm(spec.model)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    return model, tokenizer


def encode_batch(
    tokenizer: Any, conversations: Sequence[list[dict[str, str]]], spec: CausalLMInput
) -> list[EncodedSample]:
    """Encode conversations with the spec's max_length and `turns`."""
    return [encode_conversation(tokenizer, c, spec.max_length, spec.model, spec.turns) for c in conversations]


def finetune_fresh_lora(
    spec: CausalLMInput,
    conversations: Sequence[list[dict[str, str]]],
    settings: LoraSettings,
    *,
    seed: int,
    device: str,
    checkpoint_dir: Path | None = None,
) -> tuple[FineTuneResult, Any]:
    """A fresh copy of the spec's causal LM with new LoRA adapters (initialised from `seed`),
    fine-tuned on `conversations`: (the result, whose `model` is the tuned model, its tokenizer)."""
    model, tokenizer = fresh_causal_lm(spec.model, spec.chat_template)
    model = attach_lora(model, settings, seed)
    training = encode_batch(tokenizer, conversations, spec)
    result = lora_finetune(
        model,
        training,
        settings,
        pad_token_id=tokenizer.pad_token_id,
        seed=seed,
        device=device,
        checkpoint_dir=checkpoint_dir,
    )
    return result, tokenizer


def run_batches_with_oom_backoff(run_batch: Any, indices: list[int], batch_size: int, stats: dict) -> int:
    """Run `run_batch` over `indices` in batches, halving the batch size on out-of-memory."""
    import torch

    start = 0
    while start < len(indices):
        batch = indices[start : start + batch_size]
        try:
            run_batch(batch)
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as err:
            out_of_memory = isinstance(err, MemoryError) or "out of memory" in str(err).lower()
            if not out_of_memory or batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            stats["oom_halvings"] = stats.get("oom_halvings", 0) + 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += len(batch)
    return batch_size
