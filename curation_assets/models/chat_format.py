"""Turn a conversation into model inputs whose labels cover only the response.

Prompt = every turn before the last assistant turn, rendered with the tokenizer's chat
template and its generation prompt; response = the last assistant turn. Prompt tokens
get label -100, so losses and gradients measure the response given the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


class ChatTemplateError(ValueError):
    pass


@dataclass(frozen=True)
class EncodedSample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def n_response_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def require_chat_template(tokenizer: Any, model_name: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"the tokenizer of {model_name} has no chat template: use an instruct/chat model, or set the "
            "stage's `chat_template` to a Jinja template (e.g. the one in the model card)")


def encode_conversation(tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int,
                        model_name: str = "the model") -> EncodedSample:
    """Tokenise prompt + last assistant turn; truncate the response's end, then the prompt's start."""
    require_chat_template(tokenizer, model_name)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError("conversation has no assistant turn")
    prompt = _ids(tokenizer.apply_chat_template(list(messages[:last]), add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(list(messages[:last + 1]), tokenize=True))
    if full[:len(prompt)] != prompt:  # templates that re-render earlier turns differently
        response = tokenizer(messages[last]["content"], add_special_tokens=False)["input_ids"]
        full = prompt + response + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    response = full[len(prompt):]
    truncated = len(full) > max_length
    if truncated:
        keep_response = min(len(response), max(max_length - len(prompt), max_length // 2))
        response = response[:keep_response]
        prompt = prompt[len(prompt) - (max_length - keep_response):] if max_length > keep_response else []
    return EncodedSample(prompt + response, [IGNORE_INDEX] * len(prompt) + response, truncated)


def prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int,
               model_name: str = "the model") -> list[int]:
    """The generation prompt for the last assistant turn: every turn before it, rendered with the
    chat template and its generation prompt, cut from the start to `max_length` tokens."""
    require_chat_template(tokenizer, model_name)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    ids = _ids(tokenizer.apply_chat_template(list(messages[:last]), add_generation_prompt=True, tokenize=True))
    return ids[-max_length:]


def longest_first(encoded: Sequence[EncodedSample]) -> list[int]:
    """Sample indices by decreasing length: consecutive batches need little padding, and an
    out-of-memory error shows up on the first batch."""
    return sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))


def _ids(encoded: Any) -> list[int]:
    """apply_chat_template returns a list, or a BatchEncoding-like mapping in newer transformers."""
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def collate(samples: Sequence[EncodedSample], pad_token_id: int, device: str | None = None) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, labels (-100 on padding), on `device` if given."""
    import torch

    width = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        input_ids[row, :n] = torch.tensor(sample.input_ids)
        labels[row, :n] = torch.tensor(sample.labels)
        attention[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    return {key: value.to(device) for key, value in batch.items()} if device else batch
