"""Conversation embeddings from a causal LM: the last layer's hidden state at the last token.

This is DEITA's representation (Liu et al. 2024; hkust-nlp/deita `CLM_Embedder`): the whole
conversation is rendered as one text, tokenised (cut at the end to `max_length`), run through
the decoder, and the final hidden state (after the last norm, i.e. `hidden_states[-1]`) at the
last non-padding token is the sample's vector. DEITA renders with FastChat's `vicuna_v1.1`
template (its fixed system prompt, then `USER: ... ASSISTANT: ...</s>` turns) and stores the
vector unnormalised; its filter L2-normalises before the cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# FastChat's vicuna_v1.1 conversation template, as DEITA's embedder renders with it
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_ROLES = {"user": "USER", "assistant": "ASSISTANT"}


def render_vicuna(messages: Sequence[dict[str, str]], eos: str = "</s>") -> str:
    """The conversation in vicuna_v1.1 form: system prompt + ' ', then 'USER: u ' / 'ASSISTANT: a</s>'.

    The sample's own system turns are dropped (the template's fixed system prompt stands in, as in
    DEITA, whose ShareGPT input has none), and so is a leading assistant turn (DEITA skips a first
    turn not from the user). An empty turn renders as 'ROLE:' with no separator, as FastChat does.
    `eos` closes each assistant turn: the template's '</s>' is Llama's and Mistral's EOS token (their
    tokenizers read the literal as that token), so `conversation_ids` passes the model's own EOS.
    """
    separator = {"user": " ", "assistant": eos}
    turns = [m for m in messages if m["role"] in VICUNA_ROLES]
    if turns and turns[0]["role"] != "user":
        turns = turns[1:]
    text = VICUNA_SYSTEM + " "
    for turn in turns:
        role = VICUNA_ROLES[turn["role"]]
        text += f"{role}: {turn['content']}{separator[turn['role']]}" if turn["content"] else f"{role}:"
    return text


def conversation_ids(tokenizer: Any, messages: Sequence[dict[str, str]], render: str) -> list[int]:
    """Token ids of the whole conversation, uncut: `vicuna_v1.1` text (assistant turns closed by the
    tokenizer's EOS token) through the tokenizer with its own special tokens (e.g. a BOS), or the
    tokenizer's chat template (`chat_template`)."""
    if render == "vicuna_v1.1":
        return list(tokenizer(render_vicuna(messages, tokenizer.eos_token or "</s>"))["input_ids"])
    if render == "chat_template":
        text = tokenizer.apply_chat_template(list(messages), tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    raise ValueError(f"unknown render {render!r}: use vicuna_v1.1 or chat_template")


def last_token_states(decoder: Any, input_ids: Any, attention_mask: Any) -> Any:
    """(batch, d) final hidden state at each row's last real token; rows are right-padded."""
    import torch

    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
