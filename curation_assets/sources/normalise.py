"""Normalise instruction records of any supported format into one sample shape.

Formats: alpaca (instruction/input/output), sharegpt (conversations of from/value),
messages (OpenAI role/content), and custom (an explicit field mapping). With
`format: auto` each record is recognised by its keys, so one file may mix formats.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FormatName = Literal["auto", "alpaca", "sharegpt", "messages", "custom"]

# Role names seen in ShareGPT/OpenAI-style data, mapped to the three roles we keep.
DEFAULT_ROLE_MAP: dict[str, str] = {
    "human": "user",
    "user": "user",
    "prompter": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
}


class RejectRecord(Exception):
    """The record cannot be normalised; the message is the reason stored with it."""


@dataclass(frozen=True)
class FieldMapping:
    """Where to find a sample's parts in a custom record (dotted paths allowed)."""

    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    system: str | None = None
    messages: str | None = None
    role: str = "role"
    content: str = "content"
    roles: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NormalisedSample:
    sample_id: str
    format: str
    instruction: str
    input: str
    output: str
    messages: list[dict[str, str]]
    n_turns: int


def sample_id_for(messages: list[dict[str, str]]) -> str:
    """Stable id: SHA-256 of the canonical JSON of the normalised conversation (128 bits)."""
    canonical = json.dumps(messages, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def generated_sample_id(messages: list[dict[str, str]], parent_id: str, round_no: int) -> str:
    """Stable id of a generated sample: SHA-256 of the canonical JSON of its conversation, its parent's
    sample_id and its round (128 bits), so identical text from two parents is two samples, each with
    its own parent_id, and a generated sample never takes the id of an ingested one."""
    payload = {"messages": messages, "parent_id": parent_id, "round": round_no}
    canonical = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def normalise_record(record: Any, fmt: FormatName, mapping: FieldMapping | None = None) -> NormalisedSample:
    """Normalise one decoded record, or raise RejectRecord with the reason."""
    if not isinstance(record, Mapping):
        raise RejectRecord(f"record is a {type(record).__name__}, not a JSON object")
    detected = detect_format(record) if fmt == "auto" else fmt
    if detected == "alpaca":
        return _from_alpaca(record)
    if detected == "sharegpt":
        return _from_turns(record, "sharegpt", record.get("conversations"), "from", "value", {})
    if detected == "messages":
        return _from_turns(record, "messages", record.get("messages"), "role", "content", {})
    if detected == "custom":
        if mapping is None:
            raise RejectRecord("format 'custom' needs a field mapping (`fields`)")
        return _from_mapping(record, mapping)
    keys = ", ".join(sorted(map(str, record))[:12])
    raise RejectRecord(
        "no known format matches this record: expected instruction/output (alpaca), "
        f"conversations (sharegpt) or messages (openai); record keys: [{keys}]"
    )


def detect_format(record: Mapping[str, Any]) -> str:
    if "conversations" in record:
        return "sharegpt"
    if "messages" in record:
        return "messages"
    if "instruction" in record or ("output" in record and "input" in record):
        return "alpaca"
    return "unknown"


def _from_alpaca(record: Mapping[str, Any]) -> NormalisedSample:
    for key in ("instruction", "output"):
        if key not in record:
            raise RejectRecord(f"alpaca record has no {key!r} field")
    instruction = _text(record.get("instruction"), "instruction")
    input_text = _text(record.get("input"), "input")
    output = _text(record.get("output"), "output")
    return _build("alpaca", instruction, input_text, output, system="")


def _from_mapping(record: Mapping[str, Any], mapping: FieldMapping) -> NormalisedSample:
    if mapping.messages:
        turns = _get_path(record, mapping.messages, "messages")
        return _from_turns(record, "custom", turns, mapping.role, mapping.content, mapping.roles)
    if not mapping.instruction or not mapping.output:
        raise RejectRecord("field mapping needs `messages`, or both `instruction` and `output`")
    instruction = _text(_get_path(record, mapping.instruction, "instruction"), mapping.instruction)
    output = _text(_get_path(record, mapping.output, "output"), mapping.output)
    input_text = _text(_get_path(record, mapping.input, "input"), mapping.input) if mapping.input else ""
    system = _text(_get_path(record, mapping.system, "system"), mapping.system) if mapping.system else ""
    return _build("custom", instruction, input_text, output, system=system)


def _from_turns(
    record: Mapping[str, Any], fmt: str, turns: Any, role_key: str, content_key: str, extra_roles: Mapping[str, str]
) -> NormalisedSample:
    if isinstance(turns, str):
        try:
            turns = json.loads(turns)  # CSV/Parquet sources often store conversations as JSON text
        except json.JSONDecodeError as err:
            raise RejectRecord(f"conversation is a string that is not JSON: {err.msg}") from err
    if not isinstance(turns, list):
        raise RejectRecord(f"conversation must be a list of turns, got {type(turns).__name__}")
    role_map = {**DEFAULT_ROLE_MAP, **{k.lower(): v for k, v in extra_roles.items()}}
    messages: list[dict[str, str]] = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RejectRecord(f"turn {index} is not an object")
        if role_key not in turn or content_key not in turn:
            raise RejectRecord(f"turn {index} lacks {role_key!r} or {content_key!r} (has {sorted(turn)})")
        raw_role = str(turn[role_key]).strip().lower()
        role = role_map.get(raw_role)
        if role is None:
            raise RejectRecord(f"turn {index} has unknown role {turn[role_key]!r}; map it with `fields.roles`")
        messages.append({"role": role, "content": _text(turn[content_key], f"turn {index} {content_key}")})
    return _from_messages(fmt, messages)


def _from_messages(fmt: str, messages: list[dict[str, str]]) -> NormalisedSample:
    if not any(m["role"] == "user" for m in messages):
        raise RejectRecord("conversation has no user turn")
    if not any(m["role"] == "assistant" for m in messages):
        raise RejectRecord("conversation has no assistant turn")
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    replies = [m["content"] for m in messages[first_user + 1 :] if m["role"] == "assistant"]
    if not replies:
        raise RejectRecord("conversation has no assistant reply after the first user turn")
    instruction = messages[first_user]["content"]
    if not instruction and not any(replies):
        raise RejectRecord("empty instruction and empty output")
    return NormalisedSample(sample_id_for(messages), fmt, instruction, "", replies[0], messages, len(replies))


def _build(fmt: str, instruction: str, input_text: str, output: str, *, system: str) -> NormalisedSample:
    if not instruction and not output:
        raise RejectRecord("empty instruction and empty output")
    user = f"{instruction}\n\n{input_text}" if input_text else instruction
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": output},
    ]
    return NormalisedSample(sample_id_for(messages), fmt, instruction, input_text, output, messages, 1)


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RejectRecord(f"{name} must be text, got {type(value).__name__}")


def _get_path(record: Mapping[str, Any], path: str, role: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            keys = ", ".join(sorted(map(str, record))[:12])
            raise RejectRecord(f"field {path!r} (mapped to {role}) is missing; record keys: [{keys}]")
        value = value[part]
    return value
