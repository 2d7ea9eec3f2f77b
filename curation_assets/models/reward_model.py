"""Reward models: any Hugging Face AutoModelForSequenceClassification scoring a
(question, answer) pair, as MoDS scores (instruction + input, output) with OpenAssistant's
reward-model-deberta-v3-large-v2 (score = logits[0] of the single output).

The pair is tokenised as the tokenizer's text pair; pairs longer than `max_length` are cut
longest-first and counted as truncated (MoDS skipped the pairs the model refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from curation_assets.models.device import compute_device


class RewardModelLoadError(RuntimeError):
    pass


def resolve_reward_model(name: str) -> str:
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


@lru_cache(maxsize=2)
def load_reward_model(name: str) -> tuple[Any, Any]:
    """(model in eval mode on the chosen device and dtype, tokenizer)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = compute_device()
    resolved = resolve_reward_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForSequenceClassification.from_pretrained(resolved, dtype=device.torch_dtype)
    except (OSError, ValueError) as err:
        raise RewardModelLoadError(f"cannot load reward model {name!r} (resolved to {resolved!r}): {err}") from err
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise RewardModelLoadError(f"the tokenizer of {name!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # sequence classifiers find the last token by it
    model.to(device.name)
    model.eval()
    return model, tokenizer


@dataclass(frozen=True)
class RewardBatch:
    scores: torch.Tensor  # (n,) float64, NaN where the logit is not finite
    truncated: list[bool]


def pair_lengths(tokenizer: Any, questions: Sequence[str], answers: Sequence[str]) -> list[int]:
    encoded = tokenizer(list(questions), list(answers), truncation=False, verbose=False)
    return [len(ids) for ids in encoded["input_ids"]]


def reward_scores(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    max_length: int,
    label_index: int = 0,
    device: str = "cpu",
) -> RewardBatch:
    """One forward over the padded batch; score = logits[:, label_index]."""
    lengths = pair_lengths(tokenizer, questions, answers)
    batch = tokenizer(
        list(questions),
        list(answers),
        padding=True,
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(**batch).logits
    if label_index >= logits.shape[-1]:
        raise ValueError(f"label_index {label_index} but the reward model has {logits.shape[-1]} outputs")
    scores = logits[:, label_index].double()
    scores = scores.masked_fill(~torch.isfinite(scores), float("nan"))
    return RewardBatch(scores.cpu(), [n > max_length for n in lengths])
