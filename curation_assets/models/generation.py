"""Batched greedy generation from a causal LM (used by MoDS's necessity step): prompts are
left-padded so every row's new tokens start at the same position."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def generate_batch(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, device: str
) -> list[str]:
    """Greedy continuations of token-id prompts, decoded without special tokens (one call of
    `model.generate` for the whole batch)."""
    import torch

    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        attention[row, width - len(prompt) :] = 1
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
    return [text.strip() for text in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]
