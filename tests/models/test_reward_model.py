"""Reward models through AutoModelForSequenceClassification, on tiny random DeBERTa-v2 / BERT."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from curation_assets.models.reward_model import reward_scores
from tests.support.models import build_tiny_reward_model

QUESTIONS = ["what is two plus two", "say hello", "explain the world in detail please", "why"]
ANSWERS = ["four", "hello there", "the world is big and round " * 40, "because"]


@pytest.mark.parametrize("architecture", ["deberta", "bert"])
def test_batched_scores_equal_one_pair_at_a_time(tmp_path, architecture):
    folder = build_tiny_reward_model(tmp_path, architecture)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        batch = reward_scores(model, tokenizer, QUESTIONS, ANSWERS, max_length=64)
        single = [
            model(**tokenizer(q, a, truncation="longest_first", max_length=64, return_tensors="pt")).logits[0, 0].item()
            for q, a in zip(QUESTIONS, ANSWERS)
        ]
    assert batch.scores.tolist() == pytest.approx(single, abs=1e-5)
    assert batch.truncated == [False, False, True, False]
    assert len({round(s, 4) for s in single}) == len(single)  # the tiny model tells pairs apart
    with pytest.raises(ValueError, match="label_index"):
        reward_scores(model, tokenizer, QUESTIONS[:1], ANSWERS[:1], max_length=64, label_index=1)
