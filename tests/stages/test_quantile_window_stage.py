"""Selection `quantile_window` (NLU data diets, Attendu & Corbeil 2023) through the runner on a
temporary store, against quantiles interpolated by hand over the stored stage column."""

from pathlib import Path

import pytest

from tests.support.files import alpaca_records, write_jsonl
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document


def hand_quantile(values: list[float], q: float) -> float:
    """The linear-interpolation quantile (numpy's default), written out: position q·(n − 1)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


@pytest.mark.parametrize(("size", "offset"), [(0.3, 0.1), (0.25, 0.0), (1.0, 0.0)])
def test_quantile_window_keeps_the_scores_between_the_two_quantiles(tmp_path: Path, size: float, offset: float):
    write_jsonl(tmp_path / "pool.jsonl", alpaca_records(30))  # record i has i + 1 output words
    document = pipeline_document(
        "window",
        stages=[{"name": "lengths", "kind": "text_stats"}],
        selections=[
            {
                "name": "window",
                "kind": "quantile_window",
                "stage": "lengths",
                "column": "output_words",
                "size": size,
                "offset": offset,
            }
        ],
        automation=None,
    )
    component = run_document(tmp_path, document)
    with component.store.reader() as con:
        words = dict(con.execute("SELECT sample_id, output_words FROM lengths").fetchall())
        members = con.execute("SELECT sample_id, score FROM selections WHERE selection = 'window' ORDER BY rank")
        members = members.fetchall()
    low = hand_quantile(list(words.values()), max(0.0, 1 - offset - size))
    high = hand_quantile(list(words.values()), 1 - offset)
    expected = sorted((sid for sid, w in words.items() if low <= w <= high), key=lambda sid: -words[sid])
    assert [m[0] for m in members] == expected and expected
    assert [m[1] for m in members] == [float(words[sid]) for sid in expected]
    assert len(words) == 30
