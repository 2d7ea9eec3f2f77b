"""DEITA digit scorer on a tiny random Llama whose vocabulary has the digit tokens."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation_assets.models.digit_scorer import (
    COMPLEXITY_TEMPLATE,
    QUALITY_TEMPLATE,
    DigitTokenError,
    check_template,
    digit_scores,
    digit_token_ids,
    encode_prompt,
    training_sample,
)
from tests.support.models import build_tiny_causal_lm

DIGITS = ("1", "2", "3", "4", "5", "6")


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("scorer"), extra_words=DIGITS, name="tiny_scorer")
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_digit_ids_are_the_vocabulary_entries(scorer, tmp_path):
    _, tokenizer = scorer
    assert digit_token_ids(tokenizer) == [tokenizer.get_vocab()[d] for d in DIGITS]
    plain = AutoTokenizer.from_pretrained(build_tiny_causal_lm(tmp_path))
    with pytest.raises(DigitTokenError, match="digit '1'"):
        digit_token_ids(plain, "tiny")


def test_expectation_matches_a_hand_computation_from_full_logits(scorer):
    model, tokenizer = scorer
    digit_ids = digit_token_ids(tokenizer)
    texts = ["what is the answer", "write code", "explain how a list of one two three four five is in it " * 3, "q1"]
    prompts = [encode_prompt(tokenizer, COMPLEXITY_TEMPLATE, 256, instruction=t).input_ids for t in texts]
    assert len({len(p) for p in prompts}) > 1  # padding is exercised
    with torch.inference_mode():
        batched = digit_scores(model, prompts, digit_ids, tokenizer.pad_token_id).tolist()
        for prompt, got in zip(prompts, batched):
            logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].tolist()  # no padding, full vocab
            weights = [math.exp(logits[i]) for i in digit_ids]
            assert got == pytest.approx(sum((k + 1) * w for k, w in enumerate(weights)) / sum(weights), abs=1e-5)
    assert len({round(v, 6) for v in batched}) > 1


def test_non_finite_logits_give_nan_not_a_default(scorer, tmp_path):
    _, tokenizer = scorer
    folder = build_tiny_causal_lm(tmp_path, extra_words=DIGITS, name="broken")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight[:] = float("nan")
    prompt = encode_prompt(tokenizer, COMPLEXITY_TEMPLATE, 64, instruction="q1").input_ids
    with torch.inference_mode():
        assert math.isnan(digit_scores(model, [prompt], digit_token_ids(tokenizer), tokenizer.pad_token_id)[0])


def test_prompt_fits_untouched_or_keeps_the_cue_when_cut(scorer):
    _, tokenizer = scorer
    full = QUALITY_TEMPLATE.replace("{instruction}", "what is it").replace("{output}", "yes")
    short = encode_prompt(tokenizer, QUALITY_TEMPLATE, 256, instruction="what is it", output="yes")
    assert short.input_ids == tokenizer(full)["input_ids"] and not short.truncated
    long_instruction, long_output = "what " * 300, "yes " * 300
    cut = encode_prompt(tokenizer, QUALITY_TEMPLATE, 100, instruction=long_instruction, output=long_output)
    ending = tokenizer(" \n##Quality: ", add_special_tokens=False)["input_ids"]
    assert cut.truncated and len(cut.input_ids) == 100 and cut.input_ids[-len(ending) :] == ending
    yes, what = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("what")
    assert cut.input_ids.count(yes) >= cut.input_ids.count(what)  # the response keeps at least half
    with pytest.raises(ValueError, match="no room"):
        encode_prompt(tokenizer, COMPLEXITY_TEMPLATE, 3, instruction=long_instruction)


def test_training_sample_labels_only_the_digit():
    sample = training_sample(type("P", (), {"input_ids": [5, 6, 7], "truncated": False})(), 42)
    assert sample.input_ids == [5, 6, 7, 42] and sample.labels == [-100, -100, -100, 42]


def test_templates_are_checked():
    assert check_template(COMPLEXITY_TEMPLATE, "complexity") and check_template(QUALITY_TEMPLATE, "quality")
    with pytest.raises(ValueError, match="instruction"):
        check_template("Score: {output}", "complexity")
    with pytest.raises(ValueError):
        check_template("{output} {instruction}", "quality")
