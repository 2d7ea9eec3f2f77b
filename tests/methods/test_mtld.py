"""MTLD against a hand-computed example and a plain token-by-token loop."""

import math

import numpy as np
import pytest

from curation_assets.methods.mtld import mtld, mtld_words


def reference_direction(words: list[str], threshold: float = 0.72) -> float:
    """McCarthy & Jarvis (2010), one direction, token by token."""
    factors, types, count, ttr = 0.0, set(), 0, 1.0
    for word in words:
        count += 1
        types.add(word)
        ttr = len(types) / count
        if ttr <= threshold:
            factors, types, count, ttr = factors + 1, set(), 0, 1.0
    factors += (1 - ttr) / (1 - threshold)
    return len(words) / factors if factors else math.nan


def reference(words: list[str]) -> float:
    return (reference_direction(words) + reference_direction(words[::-1])) / 2


def test_hand_computed_example():
    # forward  "a a | b c d e": "a a" has TTR 1/2 <= 0.72 (one factor), "b c d e" ends at TTR 1 (partial 0)
    #          -> 6 / 1 = 6
    # backward "e d c b a a": never reaches 0.72; ends at TTR 5/6, partial (1 - 5/6) / 0.28 = 0.595238...
    #          -> 6 / 0.595238 = 10.08
    assert mtld([["a", "a", "b", "c", "d", "e"]])[0] == pytest.approx((6 + 10.08) / 2)
    # "x y z x w" both ways: TTR 4/5 at the end, partial 0.2 / 0.28 -> 5 / 0.714285 = 7
    assert mtld([["x", "y", "z", "x", "w"]])[0] == pytest.approx(7.0)


def test_undefined_for_empty_and_all_distinct_texts():
    scores = mtld([[], ["one", "two", "three"], ["one", "one"]])
    assert math.isnan(scores[0]) and math.isnan(scores[1])
    assert scores[2] == pytest.approx(2.0)  # "one one": TTR 1/2 -> one factor each way


def test_words_are_lower_cased_without_punctuation():
    words = mtld_words(["Hello, hello WORLD! Don't stop.", None, ""]).to_pylist()
    assert words == [["hello", "hello", "world", "don't", "stop"], [], []]


def test_matches_the_token_loop_on_random_texts_of_very_different_lengths():
    rng = np.random.default_rng(0)
    texts = []
    for i in range(300):
        vocabulary = [f"w{j}" for j in range(int(rng.integers(2, 400)))]
        length = int(rng.integers(0, 40)) if i % 3 else int(rng.integers(200, 3000))  # long segments too
        weights = rng.dirichlet(np.full(len(vocabulary), 0.3))
        texts.append(list(rng.choice(vocabulary, size=length, p=weights)))
    got = mtld(texts)
    expected = np.array([reference(t) for t in texts])
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-12)
