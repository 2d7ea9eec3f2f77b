"""Which (instruction, input, response) triples of a sample an LLM judge sees.

Rule for multi-turn conversations (every LLM recipe): each assistant turn is judged on its
own, with the user turn before it as the instruction and the earlier conversation (its last
`context_chars` characters) as the input; the recipe then aggregates over turns. A
single-turn sample uses its instruction / input / output columns (alpaca's input stays separate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

TurnChoice = Literal["all", "last", "first"]
TRUNCATION_MARK = "\n[... truncated]"


@dataclass(frozen=True)
class JudgedTurn:
    instruction: str
    input: str
    response: str
    truncated: bool


def clip(text: str, limit: int) -> tuple[str, bool]:
    """Keep the first `limit` characters, marking the cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit] + TRUNCATION_MARK, True


def clip_tail(text: str, limit: int) -> tuple[str, bool]:
    """Keep the last `limit` characters (recent context matters most)."""
    if len(text) <= limit:
        return text, False
    return "[... earlier turns cut]\n" + text[-limit:], True


def judged_turns(
    messages: Sequence[Mapping[str, str]],
    instruction: str,
    input_text: str,
    output: str,
    *,
    which: TurnChoice = "all",
    field_chars: int = 6000,
    context_chars: int = 2000,
) -> list[JudgedTurn]:
    turns: list[tuple[str, str, str]] = []
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if len(replies) <= 1:
        turns.append((instruction, input_text, output))
    else:
        for index in replies:
            user = next((j for j in range(index - 1, -1, -1) if messages[j]["role"] == "user"), None)
            prompt = messages[user]["content"] if user is not None else ""
            earlier = messages[:user] if user is not None else messages[:index]
            context = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in earlier if m["role"] != "system")
            turns.append((prompt, context, messages[index]["content"]))
    if which == "last":
        turns = turns[-1:]
    elif which == "first":
        turns = turns[:1]
    result = []
    for prompt, context, response in turns:
        prompt, cut_prompt = clip(prompt, field_chars)
        context, cut_context = clip_tail(context, context_chars)
        response, cut_response = clip(response, field_chars)
        result.append(JudgedTurn(prompt, context, response, cut_prompt or cut_context or cut_response))
    return result
