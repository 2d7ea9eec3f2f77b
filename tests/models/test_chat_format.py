import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.methods.lm_signals import forward_signals
from curation_assets.models.chat_format import IGNORE_INDEX, ChatTemplateError, collate, encode_conversation
from curation_assets.models.gradients import per_sample_response_losses
from tests.support.models import build_tiny_causal_lm


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def tokenizer(lm_folder):
    return AutoTokenizer.from_pretrained(lm_folder)


CONVERSATION = [
    {"role": "system", "content": "you are a assistant"},
    {"role": "user", "content": "q1 hello"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "q2 write code"},
    {"role": "assistant", "content": "one two three"},
]


def test_labels_cover_only_the_last_assistant_turn(tokenizer):
    encoded = encode_conversation(tokenizer, CONVERSATION, max_length=200, turns="last")
    prompt = tokenizer.apply_chat_template(CONVERSATION[:4], add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    assert encoded.input_ids[: len(prompt)] == list(prompt)
    assert encoded.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    scored = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(scored).split() == ["one", "two", "three", "<|im_end|>"]
    assert not encoded.truncated and encoded.n_response_tokens == 4


def test_truncation_keeps_the_response_start_and_counts(tokenizer):
    long = [
        {"role": "user", "content": " ".join(["hello"] * 100)},
        {"role": "assistant", "content": " ".join(["yes"] * 100)},
    ]
    encoded = encode_conversation(tokenizer, long, max_length=64, turns="last")
    assert encoded.truncated and len(encoded.input_ids) == 64
    assert encoded.n_response_tokens == 32  # half the budget goes to the response when the prompt is long
    assert tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX]).split() == ["yes"] * 32


def test_missing_chat_template_names_the_model_and_fix(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_causal_lm(tmp_path, chat_template=None))
    with pytest.raises(ChatTemplateError, match="my-model.*chat_template"):
        encode_conversation(tokenizer, CONVERSATION, 100, model_name="my-model")


def test_collate_pads_right_with_ignored_labels(tokenizer):
    a = encode_conversation(tokenizer, CONVERSATION, 200)
    b = encode_conversation(tokenizer, CONVERSATION[:3], 200)
    batch = collate([a, b], tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, len(a.input_ids))
    assert batch["attention_mask"][1].sum().item() == len(b.input_ids)
    assert (batch["labels"][1, len(b.input_ids) :] == IGNORE_INDEX).all()


THREE_TURNS = [
    {"role": "system", "content": "you are a assistant"},
    {"role": "user", "content": "q1 hello"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "q2 write code"},
    {"role": "assistant", "content": "one two"},
    {"role": "user", "content": "q3 list"},
    {"role": "assistant", "content": "three four five"},
]
# the ChatML rendering of THREE_TURNS, token by token (word-level vocabulary), written out by hand
S, E = "<|im_start|>", "<|im_end|>"
THREE_TURN_TOKENS = [
    S,
    "system",
    "you",
    "are",
    "a",
    "assistant",
    E,
    S,
    "user",
    "q1",
    "hello",
    E,
    S,
    "assistant",
    "yes",
    E,
    S,
    "user",
    "q2",
    "write",
    "code",
    E,
    S,
    "assistant",
    "one",
    "two",
    E,
    S,
    "user",
    "q3",
    "list",
    E,
    S,
    "assistant",
    "three",
    "four",
    "five",
    E,
]
# positions of the assistant turns' tokens (each turn's words and its <|im_end|>)
ALL_TURN_POSITIONS = [14, 15, 24, 25, 26, 34, 35, 36, 37]
LAST_TURN_POSITIONS = [34, 35, 36, 37]


def test_all_turns_label_every_assistant_turn_and_nothing_else(tokenizer):
    encoded = encode_conversation(tokenizer, THREE_TURNS, max_length=200, turns="all")
    assert tokenizer.convert_ids_to_tokens(encoded.input_ids) == THREE_TURN_TOKENS
    assert [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX] == ALL_TURN_POSITIONS
    assert all(encoded.labels[i] == encoded.input_ids[i] for i in ALL_TURN_POSITIONS)
    assert encoded.n_response_tokens == 9 and not encoded.truncated
    last = encode_conversation(tokenizer, THREE_TURNS, max_length=200, turns="last")
    assert last.input_ids == encoded.input_ids
    assert [i for i, label in enumerate(last.labels) if label != IGNORE_INDEX] == LAST_TURN_POSITIONS


def test_all_turn_and_last_turn_losses_equal_a_hand_computation(tokenizer, lm_folder):
    model = AutoModelForCausalLM.from_pretrained(lm_folder).eval()
    ids = tokenizer.convert_tokens_to_ids(THREE_TURN_TOKENS)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    # token t is predicted at position t - 1: -log softmax(logits[t-1])[ids[t]], one position at a time
    nll = {}
    for t in ALL_TURN_POSITIONS:
        row = [float(v) for v in logits[t - 1]]
        top = max(row)
        nll[t] = top + math.log(sum(math.exp(v - top) for v in row)) - row[ids[t]]
    want_all = sum(nll.values()) / len(ALL_TURN_POSITIONS)
    want_last = sum(nll[t] for t in LAST_TURN_POSITIONS) / len(LAST_TURN_POSITIONS)
    assert abs(want_all - want_last) > 1e-3  # far above the float tolerance below
    for turns, want in (("all", want_all), ("last", want_last)):
        batch = collate([encode_conversation(tokenizer, THREE_TURNS, 200, turns=turns)], tokenizer.pad_token_id)
        with torch.no_grad():
            assert float(forward_signals(model, batch).loss[0]) == pytest.approx(want, rel=1e-5)
            assert float(per_sample_response_losses(model, batch)[0]) == pytest.approx(want, rel=1e-5)
            assert float(model(**batch).loss) == pytest.approx(want, rel=1e-5)  # transformers' own loss


def test_all_turns_truncation_keeps_the_start(tokenizer):
    encoded = encode_conversation(tokenizer, THREE_TURNS, max_length=26, turns="all")
    assert encoded.truncated and tokenizer.convert_ids_to_tokens(encoded.input_ids) == THREE_TURN_TOKENS[:26]
    assert [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX] == [14, 15, 24, 25]


def test_all_turns_keeps_the_first_turn_when_its_context_fills_the_budget(tokenizer):
    long = [
        {"role": "user", "content": " ".join(["hello"] * 100)},
        {"role": "assistant", "content": "yes no"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "one"},
    ]
    encoded = encode_conversation(tokenizer, long, max_length=40, turns="all")
    assert encoded.truncated and len(encoded.input_ids) == 40
    # the user turn loses its start; the first assistant turn (yes no <|im_end|> ...) stays labelled
    labelled = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert tokenizer.convert_ids_to_tokens(labelled)[:3] == ["yes", "no", E]
    assert tokenizer.convert_ids_to_tokens(encoded.input_ids[-len(labelled) - 2 : -len(labelled)]) == [S, "assistant"]


# Qwen3-like: only the conversation's final assistant turn gets an extra word, so a prefix ending
# with an earlier assistant turn renders that turn differently from the whole conversation
RERENDERING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' and loop.last %}the "
    "{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)


def test_all_turns_under_a_template_that_rerenders_earlier_turns(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_causal_lm(tmp_path, chat_template=RERENDERING_TEMPLATE))
    encoded = encode_conversation(tokenizer, THREE_TURNS[1:], max_length=200, turns="all")
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    labelled = [tokens[i] for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    assert labelled == ["yes", E, "one", "two", E, "the", "three", "four", "five", E]


OPENS_WITH_ASSISTANT = [
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "q1 list"},
    {"role": "assistant", "content": "one two"},
]


def test_a_conversation_that_opens_with_the_assistant_labels_both_turns(tokenizer):
    # ShareGPT parts often open with a `gpt` turn; the opening turn has no prefix to render
    encoded = encode_conversation(tokenizer, OPENS_WITH_ASSISTANT, max_length=200, turns="all")
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    assert tokens == [S, "assistant", "hello", E, S, "user", "q1", "list", E, S, "assistant", "one", "two", E]
    assert [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX] == [2, 3, 11, 12, 13]
    last = encode_conversation(tokenizer, OPENS_WITH_ASSISTANT[:1], max_length=200, turns="last")
    assert tokenizer.convert_ids_to_tokens(last.input_ids) == ["hello", E] and last.n_response_tokens == 2
