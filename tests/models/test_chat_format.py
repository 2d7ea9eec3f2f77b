import pytest
from transformers import AutoTokenizer

from curation_assets.models.chat_format import IGNORE_INDEX, ChatTemplateError, collate, encode_conversation
from tests.models_fixtures import build_tiny_causal_lm


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(build_tiny_causal_lm(tmp_path_factory.mktemp("lm")))


CONVERSATION = [{"role": "system", "content": "you are a assistant"}, {"role": "user", "content": "q1 hello"},
                {"role": "assistant", "content": "yes"}, {"role": "user", "content": "q2 write code"},
                {"role": "assistant", "content": "one two three"}]


def test_labels_cover_only_the_last_assistant_turn(tokenizer):
    encoded = encode_conversation(tokenizer, CONVERSATION, max_length=200)
    prompt = tokenizer.apply_chat_template(CONVERSATION[:4], add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    assert encoded.input_ids[:len(prompt)] == list(prompt)
    assert encoded.labels[:len(prompt)] == [IGNORE_INDEX] * len(prompt)
    scored = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(scored).split() == ["one", "two", "three", "<|im_end|>"]
    assert not encoded.truncated and encoded.n_response_tokens == 4


def test_truncation_keeps_the_response_start_and_counts(tokenizer):
    long = [{"role": "user", "content": " ".join(["hello"] * 100)},
            {"role": "assistant", "content": " ".join(["yes"] * 100)}]
    encoded = encode_conversation(tokenizer, long, max_length=64)
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
    assert (batch["labels"][1, len(b.input_ids):] == IGNORE_INDEX).all()
