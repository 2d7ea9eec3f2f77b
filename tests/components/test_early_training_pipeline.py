"""el2n, grand and the dynamic data diet through the runner, lobass through Dagster (the lm_signals
family's Dagster run), on a tiny random Llama."""

import pytest

from tests.support.files import write_pool
from tests.support.pipelines import pipeline_document
from tests.support.runs import materialize_document, run_document


def test_el2n_and_grand_are_averaged_over_runs_and_deterministic(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 12)
    common = {
        "model": str(tiny_lm),
        "max_length": 48,
        "train_steps": 2,
        "batch_size": 4,
        "lora": {"r": 4, "dropout": 0.0, "lr": 0.01, "batch_size": 2},
    }
    document = pipeline_document(
        "early",
        stages=[
            {"name": "el2n", "kind": "el2n", "runs": 3, **common},
            {"name": "el2n_again", "kind": "el2n", "runs": 3, **common},
            {"name": "grand", "kind": "grand", "runs": 2, **common},
            {"name": "grand_one", "kind": "grand", "runs": 1, **common},
        ],
        selections=[{"name": "hard", "kind": "top_score", "stage": "el2n", "column": "el2n", "fraction": 0.5}],
        automation=None,
    )
    component = run_document(tmp_path, document)
    with component.store.reader() as con:
        el2n = dict(con.execute("SELECT sample_id, el2n FROM el2n_scores WHERE stage = 'el2n'").fetchall())
        again = dict(con.execute("SELECT sample_id, el2n FROM el2n_scores WHERE stage = 'el2n_again'").fetchall())
        grand = con.execute("SELECT grand, grand_std, runs FROM grand_scores WHERE stage = 'grand'").fetchall()
        one = con.execute("SELECT grand_std, runs FROM grand_scores WHERE stage = 'grand_one'").fetchall()
        selected = con.execute("SELECT count(*) FROM selections WHERE selection = 'hard'").fetchall()[0][0]
    assert len(el2n) == 13 and all(0 < v < 2**0.5 for v in el2n.values())  # EL2N lies in (0, sqrt 2)
    assert el2n == pytest.approx(again)  # same seeds, same scores
    assert all(g > 0 and s >= 0 and r == 2 for g, s, r in grand)
    assert any(s > 0 for _, s, _ in grand)  # runs differ
    assert all(s == 0 and r == 1 for s, r in one)
    assert selected == 7  # 0.5 * 13 rounded half up


def test_lobass_learnability_is_base_minus_finetuned_loss(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 16)
    lora = {
        "r": 8,
        "dropout": 0.0,
        "lr": 0.05,
        "epochs": 4,
        "batch_size": 4,
        "scheduler": "constant",
        "warmup_ratio": 0.0,
    }
    document = pipeline_document(
        "lob",
        stages=[
            {
                "name": "lobass",
                "kind": "lobass",
                "model": str(tiny_lm),
                "max_length": 48,
                "train_fraction": 0.5,
                "lora": lora,
            },
            {"name": "loss", "kind": "lm_loss", "model": str(tiny_lm), "max_length": 48},
        ],
        selections=[
            {
                "name": "learnable",
                "kind": "top_score",
                "stage": "lobass",
                "column": "learnability_normalised",
                "budget": 4,
            }
        ],
        automation=None,
    )
    component = materialize_document(tmp_path, document)  # the lm_signals family's Dagster run
    with component.store.reader() as con:
        rows = con.execute(
            "SELECT b.loss_base, b.loss_finetuned, b.learnability, b.learnability_normalised, "
            "b.in_training_set, l.loss FROM lobass_scores b JOIN lm_loss l USING (sample_id)"
        ).fetchall()
        checkpoints = con.execute("SELECT stats->'checkpoints' FROM stage_runs WHERE stage = 'lobass'").fetchall()[0][0]
    import hashlib
    import json
    from pathlib import Path

    checkpoints = json.loads(checkpoints)
    assert [c["epoch"] for c in checkpoints] == [1, 2, 3, 4]
    for checkpoint in checkpoints:  # recorded hashes match the files kept next to the DuckDB file
        adapter = next(Path(checkpoint["path"]).glob("adapter_model.*"))
        assert hashlib.sha256(adapter.read_bytes()).hexdigest() == checkpoint["adapter_sha256"]
        assert (Path(checkpoint["path"]) / "optimizer.pt").exists()
    assert len(rows) == 17 and sum(r[4] for r in rows) == 8  # round(0.5 * 17) rows trained on
    for base, tuned, learnability, normalised, _, plain_loss in rows:
        assert base == pytest.approx(plain_loss, rel=1e-5)  # adapters disabled = the base model
        assert learnability == pytest.approx(base - tuned) and normalised == pytest.approx((base - tuned) / base)
    trained = [r[2] for r in rows if r[4]]
    held_out = [r[2] for r in rows if not r[4]]
    assert sum(trained) / len(trained) > sum(held_out) / len(held_out)  # training samples got learned most


def test_dynamic_data_diet_keeps_the_ema_window(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 19)
    document = pipeline_document(
        "diet",
        stages=None,
        automation=None,
        selections=[
            {
                "name": "diet",
                "kind": "data_diet_dynamic",
                "model": str(tiny_lm),
                "max_length": 48,
                "epochs": 3,
                "size": 0.4,
                "offset": 0.1,
                "lora": {"r": 4, "dropout": 0.0, "lr": 0.01, "batch_size": 4},
            }
        ],
    )
    component = run_document(tmp_path, document)
    with component.store.reader() as con:
        members = dict(con.execute("SELECT sample_id, score FROM selections WHERE selection = 'diet'").fetchall())
        details = dict(
            con.execute("SELECT sample_id, value FROM selection_details WHERE selection = 'diet'").fetchall()
        )
        stats = con.execute("SELECT stats FROM stage_runs WHERE stage = 'diet'").fetchall()[0][0]
    import json

    import numpy as np

    assert len(details) == 20
    scores = np.array(list(details.values()))
    low, high = np.quantile(scores, [0.5, 0.9])  # window (1 - offset - size, 1 - offset)
    assert set(members) == {s for s, v in details.items() if low <= v <= high}
    window_sizes = json.loads(stats)["window_sizes"]
    assert len(window_sizes) == 2 and all(7 <= size <= 9 for size in window_sizes)  # re-selected at epochs 2, 3
