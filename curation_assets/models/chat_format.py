"""Turn a conversation into model inputs whose labels cover the assistant turns.

`turns: all` (Tulu/open-instruct SFT, as LESS's released `encode_with_messages_format`): the
whole conversation up to its last assistant turn, rendered with the tokenizer's chat template;
every assistant turn's tokens (its text, end-of-turn token and what the template closes the
turn with) are labels, everything else (system and user turns, each assistant header) is
-100. Turn spans come from rendering incremental prefixes: a turn starts where the conversation
before it plus the generation prompt ends, and stops where the conversation through it ends.

`turns: last`: prompt = every turn before the last assistant turn with the generation prompt;
only the last assistant turn is labelled.

Losses and gradients then measure the labelled tokens given everything before them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

IGNORE_INDEX = -100

Turns = Literal["all", "last"]


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
            "stage's `chat_template` to a Jinja template (e.g. the one in the model card)"
        )


def encode_conversation(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    max_length: int,
    model_name: str = "the model",
    turns: Turns = "all",
) -> EncodedSample:
    """Tokenise the conversation with labels on its assistant turns (`turns`: all, or the last).

    Truncation to `max_length`: `all` keeps the start and cuts the end (the released LESS/Tulu
    encoding); when that would leave no assistant token, the first assistant turn is kept as
    `last` keeps its turn. `last` cuts the response's end, then the prompt's start.
    """
    require_chat_template(tokenizer, model_name)
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant:
        raise ValueError("conversation has no assistant turn")
    if turns == "last":
        return _encode_last(tokenizer, messages, assistant[-1], max_length)
    if turns != "all":
        raise ValueError(f"turns must be 'all' or 'last', got {turns!r}")
    return _encode_all(tokenizer, messages, assistant, max_length, model_name)


def _encode_all(
    tokenizer: Any, messages: Sequence[dict[str, str]], assistant: list[int], max_length: int, model_name: str
) -> EncodedSample:
    full = _render(tokenizer, messages[: assistant[-1] + 1])
    spans: list[tuple[int, int]] = []
    for k in assistant:
        if spans and spans[-1][1] >= max_length:
            break  # later turns fall past the cut
        previous_end = spans[-1][1] if spans else 0
        if k == 0:  # an opening assistant turn has no prefix to render (templates refuse an empty one)
            spans.append(_locate_turn(tokenizer, full, messages[0]["content"], 0, 0, model_name))
            continue
        start = _render(tokenizer, messages[:k], generation_prompt=True)
        stop = _render(tokenizer, messages[: k + 1])
        if _is_prefix(start, full) and _is_prefix(stop, full) and previous_end <= len(start) <= len(stop):
            spans.append((len(start), len(stop)))
        else:  # the template renders earlier turns differently in each prefix: find the turn's text
            after = len(start) if _is_prefix(start, full) and len(start) >= previous_end else previous_end
            spans.append(_locate_turn(tokenizer, full, messages[k]["content"], after, k, model_name))
    first_start, first_stop = spans[0]
    if first_start >= max_length:  # nothing labelled would survive keep-the-start: keep the first turn
        return _cut_prompt_then_response(full[:first_start], full[first_start:first_stop], max_length, True)
    labels = [IGNORE_INDEX] * len(full)
    for begin, end in spans:
        labels[begin:end] = full[begin:end]
    truncated = len(full) > max_length
    return EncodedSample(full[:max_length], labels[:max_length], truncated)


def _locate_turn(
    tokenizer: Any, full: list[int], content: str, after: int, index: int, model_name: str
) -> tuple[int, int]:
    """Span of an assistant turn's text (plus a following end-of-sequence token) in `full`."""
    for text in dict.fromkeys((content, content.strip())):
        needle = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if not needle:
            continue
        for begin in range(after, len(full) - len(needle) + 1):
            if full[begin : begin + len(needle)] == needle:
                end = begin + len(needle)
                if end < len(full) and full[end] == tokenizer.eos_token_id:
                    end += 1
                return begin, end
    raise ChatTemplateError(
        f"the chat template of {model_name} renders the conversation's earlier turns differently in each "
        f"prefix, and assistant turn {index} could not be found in the whole conversation's rendering: use "
        "`turns: last`, or a `chat_template` that renders every turn the same way in every prefix"
    )


def _encode_last(tokenizer: Any, messages: Sequence[dict[str, str]], last: int, max_length: int) -> EncodedSample:
    """Prompt + last assistant turn; truncate the response's end, then the prompt's start."""
    if last == 0:  # a lone assistant turn: no prompt to render, the turn's text is the response
        response = list(tokenizer(messages[0]["content"], add_special_tokens=False)["input_ids"])
        response += [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return _cut_prompt_then_response([], response, max_length, len(response) > max_length)
    prompt = _render(tokenizer, messages[:last], generation_prompt=True)
    full = _render(tokenizer, messages[: last + 1])
    if full[: len(prompt)] != prompt:  # templates that re-render earlier turns differently
        response = tokenizer(messages[last]["content"], add_special_tokens=False)["input_ids"]
        full = prompt + response + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    return _cut_prompt_then_response(prompt, full[len(prompt) :], max_length, len(full) > max_length)


def _cut_prompt_then_response(
    prompt: list[int], response: list[int], max_length: int, truncated: bool
) -> EncodedSample:
    """Fit prompt + response in `max_length`: the response keeps at least half the budget (its
    start), the prompt keeps its end."""
    if len(prompt) + len(response) > max_length:
        keep_response = min(len(response), max(max_length - len(prompt), max_length // 2))
        response = response[:keep_response]
        prompt = prompt[len(prompt) - (max_length - keep_response) :] if max_length > keep_response else []
    return EncodedSample(prompt + response, [IGNORE_INDEX] * len(prompt) + response, truncated)


def prompt_ids(
    tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int, model_name: str = "the model"
) -> list[int]:
    """The generation prompt for the last assistant turn: every turn before it, rendered with the
    chat template and its generation prompt, cut from the start to `max_length` tokens."""
    require_chat_template(tokenizer, model_name)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return _render(tokenizer, messages[:last], generation_prompt=True)[-max_length:]


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], generation_prompt: bool = False) -> list[int]:
    return _ids(tokenizer.apply_chat_template(list(messages), add_generation_prompt=generation_prompt, tokenize=True))


def _is_prefix(prefix: list[int], sequence: list[int]) -> bool:
    return len(prefix) <= len(sequence) and sequence[: len(prefix)] == prefix


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
