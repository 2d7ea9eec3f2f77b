"""DEITA-style scorers: a causal LM asked for a 1-6 score, read off the logits of the six
digit tokens at the first generated position (Liu et al. 2024; hkust-nlp/deita-complexity-scorer
and deita-quality-scorer use this format).

The prompt is plain text (no chat template), tokenised with the tokenizer's special tokens,
as the published scorers were trained. A prompt longer than `max_length` keeps the
template's ending (the "##Complexity: " cue) and cuts the sample text (quality keeps at
least half the budget for the response); only such prompts are tokenised piecewise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation_assets.methods.deita_scoring import DIGIT_SCORES, digit_expectation
from curation_assets.models.chat_format import IGNORE_INDEX, EncodedSample
from curation_assets.models.scorer_artifacts import hash_files

if TYPE_CHECKING:  # torch is imported where it runs: the DEITA stages' specs use the templates below
    import torch

COMPLEXITY_TEMPLATE = (
    "You are a helpful assistant. Please identify the complexity score of the following user "
    "query. \n##Query: {instruction}  \n##Complexity: "
)
QUALITY_TEMPLATE = (
    "You are a helpful assistant. Please identify the quality score of the Response corresponding "
    "to the Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: "
)
TEMPLATE_FIELDS = {"complexity": ("instruction",), "quality": ("instruction", "output")}
_PLACEHOLDER = re.compile(r"\{(instruction|output)\}")


class DigitTokenError(ValueError):
    pass


def check_template(template: str, dimension: str) -> str:
    """A scorer template must hold each of its fields exactly once, in order."""
    found = tuple(_PLACEHOLDER.findall(template))
    if found != TEMPLATE_FIELDS[dimension]:
        wanted = " then ".join("{" + f + "}" for f in TEMPLATE_FIELDS[dimension])
        raise ValueError(f"the {dimension} template must contain {wanted} once each, found {list(found)}")
    return template


def digit_token_ids(tokenizer: Any, model_name: str = "the scorer") -> list[int]:
    """Token ids of "1".."6": each digit must be one token of the vocabulary."""
    ids = []
    unknown = getattr(tokenizer, "unk_token_id", None)
    for digit in DIGIT_SCORES:
        token_id = tokenizer.convert_tokens_to_ids(str(digit))
        if token_id is None or (unknown is not None and token_id == unknown):
            pieces = tokenizer(str(digit), add_special_tokens=False)["input_ids"]
            token_id = pieces[0] if len(pieces) == 1 else None
        if token_id is None or (unknown is not None and token_id == unknown):
            raise DigitTokenError(
                f"the tokenizer of {model_name} has no single token for the digit '{digit}'; "
                "a DEITA scorer answers with one of the tokens '1'..'6'"
            )
        ids.append(int(token_id))
    if len(set(ids)) != len(ids):
        raise DigitTokenError(f"the tokenizer of {model_name} maps several digits to one token: {ids}")
    return ids


@dataclass(frozen=True)
class ScorerPrompt:
    input_ids: list[int]
    truncated: bool


def encode_prompt(tokenizer: Any, template: str, max_length: int, **fields: str) -> ScorerPrompt:
    """Tokenise the filled template; cut the sample text (never the template's cue) past max_length."""
    full = _PLACEHOLDER.sub(lambda m: fields[m.group(1)], template)  # one pass: sample text is not re-expanded
    ids = list(tokenizer(full, add_special_tokens=True)["input_ids"])
    if len(ids) <= max_length:
        return ScorerPrompt(ids, False)
    pieces = _PLACEHOLDER.split(template)  # text, field, text, field, text
    texts = pieces[0::2]
    names = pieces[1::2]
    encoded_texts = [list(tokenizer(texts[0], add_special_tokens=True)["input_ids"])] + [
        list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts[1:]
    ]
    encoded_fields = [list(tokenizer(fields[n], add_special_tokens=False)["input_ids"]) for n in names]
    budget = max_length - sum(len(t) for t in encoded_texts)
    if budget < 1:
        raise ValueError(
            f"max_length {max_length} leaves no room for the sample text: the template alone "
            f"takes {max_length - budget} tokens"
        )
    if len(encoded_fields) == 1:
        keep = [budget]
    else:  # instruction, response: the response keeps at least half the budget
        first, second = (len(f) for f in encoded_fields)
        keep_second = min(second, max(budget - first, budget // 2))
        keep = [budget - keep_second, keep_second]
    out = list(encoded_texts[0])
    for field_ids, n, text_ids in zip(encoded_fields, keep, encoded_texts[1:]):
        out += field_ids[:n] + text_ids
    return ScorerPrompt(out, True)


def right_padded(prompts: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


def digit_logits(
    model: Any, prompts: Sequence[Sequence[int]], digit_ids: Sequence[int], pad_token_id: int, device: str = "cpu"
) -> torch.Tensor:
    """(n, 6) float32 logits of the digit tokens at the position after each prompt: one forward
    over the right-padded batch, the LM head only on each prompt's last position."""
    import torch

    from curation_assets.methods.lm_signals import decoder_and_head

    batch = {k: v.to(device) for k, v in right_padded(prompts, pad_token_id).items()}
    decoder, head = decoder_and_head(model)
    hidden = decoder(**batch).last_hidden_state
    last = batch["attention_mask"].sum(dim=1) - 1
    states = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return head(states)[:, list(digit_ids)].float()


def digit_scores(
    model: Any, prompts: Sequence[Sequence[int]], digit_ids: Sequence[int], pad_token_id: int, device: str = "cpu"
) -> torch.Tensor:
    """Expected 1-6 score per prompt (float64; NaN where the logits are not finite)."""
    import torch

    logits = digit_logits(model, prompts, digit_ids, pad_token_id, device)
    scores = digit_expectation(logits)
    return scores.masked_fill(~torch.isfinite(logits).all(dim=-1), float("nan"))


def training_sample(prompt: ScorerPrompt, digit_id: int) -> EncodedSample:
    """Prompt followed by the target digit; only the digit is a label."""
    return EncodedSample(
        prompt.input_ids + [digit_id], [IGNORE_INDEX] * len(prompt.input_ids) + [digit_id], prompt.truncated
    )


def save_adapter(model: Any, folder: Path, meta: dict[str, Any]) -> dict[str, str]:
    """Save a peft adapter plus `scorer.json` (template, base model); returns file name -> SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "scorer.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return hash_files(folder)


def load_scorer_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "scorer.json").read_text())
