"""Normalising alpaca, ShareGPT, OpenAI messages and custom-mapped records into one shape."""

from __future__ import annotations

import hashlib
import json

import pytest

from curation_assets.sources.normalise import (
    FieldMapping,
    RejectRecord,
    detect_format,
    normalise_record,
    sample_id_for,
)
from curation_assets.sources.spec import FieldMappingSpec, SourceSpec


def independent_sample_id(messages: list[dict[str, str]]) -> str:
    canonical = json.dumps(messages, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def conversation(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


# ---------------------------------------------------------------- formats


def test_alpaca_without_input() -> None:
    sample = normalise_record({"instruction": "  Name a colour.  ", "input": "", "output": "Blue.\n"}, "alpaca")

    assert sample.format == "alpaca"
    assert (sample.instruction, sample.input, sample.output) == ("Name a colour.", "", "Blue.")
    assert sample.messages == conversation("Name a colour.", "Blue.")
    assert sample.n_turns == 1


def test_alpaca_input_is_appended_to_the_user_turn() -> None:
    sample = normalise_record({"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}, "alpaca")

    assert sample.input == "Bonjour"
    assert sample.messages == conversation("Translate.\n\nBonjour", "Hello")


def test_alpaca_missing_input_and_numeric_output() -> None:
    sample = normalise_record({"instruction": "2 + 2?", "output": 4}, "alpaca")

    assert (sample.input, sample.output) == ("", "4")


def test_sharegpt_roles_human_gpt_system() -> None:
    record = {
        "id": "x1",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "Bye"},
            {"from": "gpt", "value": "Goodbye."},
        ],
    }

    sample = normalise_record(record, "sharegpt")

    assert sample.format == "sharegpt"
    assert sample.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    assert (sample.instruction, sample.input, sample.output) == ("Hi", "", "Hello!")
    assert sample.n_turns == 2


def test_sharegpt_conversation_stored_as_json_text() -> None:
    turns = [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]

    sample = normalise_record({"conversations": json.dumps(turns)}, "sharegpt")

    assert sample.messages == conversation("Q", "A")


def test_openai_messages() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    }

    sample = normalise_record(record, "messages")

    assert sample.format == "messages"
    assert sample.messages == record["messages"]
    assert (sample.instruction, sample.output, sample.n_turns) == ("What is 2+2?", "4", 1)


def test_custom_flat_mapping_with_dotted_path() -> None:
    mapping = FieldMapping(instruction="prompt.text", output="answer", input="prompt.context", system="sys")
    record = {"prompt": {"text": "Summarise.", "context": "Long text"}, "answer": "Short.", "sys": "Be terse."}

    sample = normalise_record(record, "custom", mapping)

    assert sample.format == "custom"
    assert (sample.instruction, sample.input, sample.output) == ("Summarise.", "Long text", "Short.")
    assert sample.messages == [
        {"role": "system", "content": "Be terse."},
        *conversation("Summarise.\n\nLong text", "Short."),
    ]


def test_custom_messages_mapping_with_role_and_content_keys_and_roles_map() -> None:
    spec = FieldMappingSpec(
        messages="chat.turns", role="speaker", content="text", roles={"Customer": "user", "Agent": "assistant"}
    )
    record = {
        "chat": {
            "turns": [
                {"speaker": "CUSTOMER", "text": "My order is late."},
                {"speaker": "agent", "text": "Sorry, let me check."},
                {"speaker": "user", "text": "Thanks"},  # default role names still work
                {"speaker": "Agent", "text": "It ships today."},
            ]
        }
    }

    sample = normalise_record(record, "custom", spec.to_mapping())

    assert sample.messages == [
        {"role": "user", "content": "My order is late."},
        {"role": "assistant", "content": "Sorry, let me check."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "It ships today."},
    ]
    assert sample.n_turns == 2


def test_custom_format_without_mapping_is_rejected() -> None:
    with pytest.raises(RejectRecord, match="needs a field mapping"):
        normalise_record({"q": "a", "a": "b"}, "custom", None)


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"instruction": "i", "output": "o"}, "alpaca"),
        ({"input": "x", "output": "o"}, "alpaca"),
        ({"conversations": [], "instruction": "i"}, "sharegpt"),
        ({"messages": []}, "messages"),
        ({"prompt": "p", "completion": "c"}, "unknown"),
        ({"output": "o"}, "unknown"),
    ],
)
def test_detect_format(record: dict, expected: str) -> None:
    assert detect_format(record) == expected


def test_auto_detection_is_per_record() -> None:
    records = [
        {"instruction": "A?", "input": "", "output": "a"},
        {"conversations": [{"from": "human", "value": "B?"}, {"from": "gpt", "value": "b"}]},
        {"messages": conversation("C?", "c")},
    ]

    samples = [normalise_record(r, "auto") for r in records]

    assert [s.format for s in samples] == ["alpaca", "sharegpt", "messages"]
    assert [s.output for s in samples] == ["a", "b", "c"]


def test_auto_detection_rejects_unknown_shape_listing_keys() -> None:
    with pytest.raises(RejectRecord, match=r"no known format.*record keys: \[completion, prompt\]"):
        normalise_record({"prompt": "p", "completion": "c"}, "auto")


# ---------------------------------------------------------------- sample ids


def test_same_conversation_as_alpaca_sharegpt_and_messages_has_one_sample_id() -> None:
    alpaca = normalise_record({"instruction": "Why is the sky blue?", "input": "", "output": "Rayleigh."}, "auto")
    messages = normalise_record({"messages": conversation("Why is the sky blue?", "Rayleigh.")}, "auto")
    sharegpt = normalise_record(
        {"conversations": [{"from": "human", "value": "Why is the sky blue?"}, {"from": "gpt", "value": "Rayleigh."}]},
        "auto",
    )

    assert alpaca.sample_id == messages.sample_id == sharegpt.sample_id
    assert alpaca.format != messages.format


def test_sample_id_matches_an_independent_computation() -> None:
    record = {
        "messages": [{"role": "system", "content": "Sé breve."}, *conversation("¿Qué hora es? 你好 😀", 'Las "tres".')]
    }

    sample = normalise_record(record, "messages")

    expected = independent_sample_id(sample.messages)
    assert sample.sample_id == expected == sample_id_for(sample.messages)
    assert len(sample.sample_id) == 32
    assert int(sample.sample_id, 16) >= 0  # hex digits only


def test_sample_id_depends_on_content_and_role() -> None:
    base = normalise_record({"messages": conversation("Q", "A")}, "messages").sample_id

    assert normalise_record({"messages": conversation("Q", "B")}, "messages").sample_id != base
    assert (
        normalise_record(
            {"messages": [{"role": "system", "content": "Q"}, *conversation("Q", "A")]}, "messages"
        ).sample_id
        != base
    )


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "record, fmt, reason",
    [
        ({"instruction": "", "input": "", "output": ""}, "alpaca", "empty instruction and empty output"),
        ({"instruction": "  ", "output": None}, "alpaca", "empty instruction and empty output"),
        ({"messages": conversation("", "")}, "messages", "empty instruction and empty output"),
        ({"output": "o", "input": ""}, "alpaca", "alpaca record has no 'instruction' field"),
        ({"instruction": "i"}, "alpaca", "alpaca record has no 'output' field"),
        ({"messages": [{"role": "user", "content": "Hi"}]}, "messages", "conversation has no assistant turn"),
        (
            {"conversations": [{"from": "system", "value": "S"}, {"from": "gpt", "value": "Hi"}]},
            "sharegpt",
            "conversation has no user turn",
        ),
        ({"messages": []}, "messages", "conversation has no user turn"),
        (
            {"conversations": [{"from": "human", "value": "Q"}, {"from": "narrator", "value": "A"}]},
            "sharegpt",
            "turn 1 has unknown role 'narrator'",
        ),
        ({"messages": [{"role": "user", "text": "Q"}]}, "messages", "turn 0 lacks 'role' or 'content'"),
        ({"messages": ["Q", "A"]}, "messages", "turn 0 is not an object"),
        ({"messages": {"role": "user"}}, "messages", "conversation must be a list of turns, got dict"),
        ({"conversations": "not json"}, "sharegpt", "conversation is a string that is not JSON"),
    ],
)
def test_rejections_have_clear_reasons(record: dict, fmt: str, reason: str) -> None:
    with pytest.raises(RejectRecord) as info:
        normalise_record(record, fmt)
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize(
    "record, type_name",
    [
        ([{"instruction": "i", "output": "o"}], "list"),
        ("just a string", "str"),
        (42, "int"),
        (None, "NoneType"),
    ],
)
def test_record_that_is_not_an_object_is_rejected(record: object, type_name: str) -> None:
    with pytest.raises(RejectRecord, match=f"record is a {type_name}, not a JSON object"):
        normalise_record(record, "auto")


def test_unknown_role_hint_mentions_roles_mapping() -> None:
    with pytest.raises(RejectRecord, match=r"unknown role 'tool'.*fields\.roles"):
        normalise_record({"messages": [*conversation("Q", "A"), {"role": "tool", "content": "{}"}]}, "messages")


@pytest.mark.parametrize(
    "mapping, missing, role",
    [
        (FieldMapping(instruction="question", output="answer"), "question", "instruction"),
        (FieldMapping(instruction="prompt", output="reply.text"), "reply.text", "output"),
        (FieldMapping(instruction="prompt", output="answer", input="ctx"), "ctx", "input"),
        (FieldMapping(messages="dialogue"), "dialogue", "messages"),
    ],
)
def test_custom_mapping_with_missing_field_names_the_field(mapping: FieldMapping, missing: str, role: str) -> None:
    record = {"prompt": "P", "answer": "A", "reply": {"html": "<p>A</p>"}}

    with pytest.raises(RejectRecord) as info:
        normalise_record(record, "custom", mapping)

    message = str(info.value)
    assert f"field {missing!r} (mapped to {role}) is missing" in message
    assert "record keys: [answer, prompt, reply]" in message


@pytest.mark.parametrize(
    "record, fmt, reason",
    [
        ({"instruction": ["a", "b"], "output": "o"}, "alpaca", "instruction must be text, got list"),
        ({"instruction": "i", "output": {"text": "o"}}, "alpaca", "output must be text, got dict"),
        ({"instruction": "i", "input": True, "output": "o"}, "alpaca", "input must be text, got bool"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Q"}]},
                    {"role": "assistant", "content": "A"},
                ]
            },
            "messages",
            "turn 0 content must be text, got list",
        ),
        (
            {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": False}]},
            "sharegpt",
            "turn 1 value must be text, got bool",
        ),
    ],
)
def test_non_text_values_are_rejected(record: dict, fmt: str, reason: str) -> None:
    with pytest.raises(RejectRecord, match=f"^{reason}$"):
        normalise_record(record, fmt)


def test_custom_non_text_value_names_the_mapped_field() -> None:
    mapping = FieldMapping(instruction="q.text", output="a")
    with pytest.raises(RejectRecord, match=r"^q\.text must be text, got list$"):
        normalise_record({"q": {"text": ["x"]}, "a": "y"}, "custom", mapping)


# ---------------------------------------------------------------- spec validation


def test_field_mapping_spec_needs_messages_or_instruction_and_output() -> None:
    with pytest.raises(ValueError, match="needs `messages`, or both `instruction` and `output`"):
        FieldMappingSpec(instruction="q")


def test_field_mapping_spec_roles_must_map_to_known_roles() -> None:
    with pytest.raises(ValueError, match="roles must map to user, assistant or system"):
        FieldMappingSpec(messages="turns", roles={"narrator": "storyteller"})


def test_source_spec_with_fields_is_custom() -> None:
    spec = SourceSpec(name="qa", path="qa.jsonl", fields=FieldMappingSpec(instruction="q", output="a"))

    assert spec.effective_format == "custom"
    with pytest.raises(ValueError, match="exactly one of path, package, hf_dataset"):
        SourceSpec(name="qa", path="qa.jsonl", package="sharegpt")
