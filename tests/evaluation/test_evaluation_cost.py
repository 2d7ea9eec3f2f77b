"""Issue #19's cost column: target gain per hour (−Δ target vs random per hour of the selection with its
stages) and the sentence comparing methods with the target-aware reference, against hand arithmetic."""

from types import SimpleNamespace

import pytest

from curation_assets.evaluation.report import COST_REFERENCE, cost_sentence, gain_per_hour


def row(name: str, delta: float | None, seconds: float | None, role: str = "method") -> SimpleNamespace:
    return SimpleNamespace(selection=name, role=role, target_delta=delta, upstream_seconds=seconds)


def test_gain_per_hour_is_the_loss_removed_per_hour():
    assert gain_per_hour(row("less", -0.012, 1800.0)) == pytest.approx(0.024)  # type: ignore[arg-type]
    assert gain_per_hour(row("worse", 0.006, 7200.0)) == pytest.approx(-0.003)  # type: ignore[arg-type]
    assert gain_per_hour(row("no_time", -0.01, None)) is None  # type: ignore[arg-type]
    assert gain_per_hour(row("no_delta", None, 10.0)) is None  # type: ignore[arg-type]


def test_cost_sentence_names_the_methods_that_gain_more_per_hour_than_the_reference():
    rows = [
        row("random_s0", 0.001, 1.0, role="baseline"),
        row(COST_REFERENCE, -0.004, 3600.0),  # 0.004 / h
        row("cheap_and_good", -0.002, 360.0),  # 0.02 / h
        row("slow_and_good", -0.02, 36000.0),  # 0.002 / h
    ]
    sentence = cost_sentence(SimpleNamespace(rows=rows))  # type: ignore[arg-type]
    assert sentence is not None and "+0.0040/h" in sentence
    assert "higher: cheap_and_good." in sentence and "slow_and_good" not in sentence
    assert cost_sentence(SimpleNamespace(rows=rows[2:])) is None  # type: ignore[arg-type]
