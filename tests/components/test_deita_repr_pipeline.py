"""Selection `deita_repr_filter` through the runner: an embedding stage and a score from another stage,
checked against a one-sample-at-a-time loop over the stored vectors and scores."""

import numpy as np
import pytest

from tests.support.files import write_samples
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document


def test_deita_repr_filter_equals_the_sequential_loop(tmp_path, tiny_sentence_model):
    write_samples(tmp_path / "pool.jsonl", 80)
    document = pipeline_document(
        "deita",
        stages=[
            {"name": "embed", "kind": "embedding", "model": str(tiny_sentence_model), "batch_size": 16},
            {"name": "lengths", "kind": "text_stats"},
        ],
        selections=[
            {
                "name": "diverse",
                "kind": "deita_repr_filter",
                "embedding": "embed",
                "stage": "lengths",
                "column": "instruction_words",
                "budget": 15,
                "tau": 0.97,
            },
            {
                "name": "diverse_all",
                "kind": "deita_repr_filter",
                "embedding": "embed",
                "stage": "lengths",
                "column": "instruction_words",
                "fraction": 1.0,
                "tau": 0.97,
            },
            {
                "name": "diverse_short_first",
                "kind": "deita_repr_filter",
                "embedding": "embed",
                "stage": "lengths",
                "column": "instruction_words",
                "budget": 10,
                "tau": 0.97,
                "order": "ascending",
            },
        ],
        source_format="alpaca",
    )
    component = run_document(tmp_path, document)
    with component.store.reader() as con:
        pool = con.execute(
            "SELECT e.sample_id, e.embedding, t.instruction_words FROM embeddings e "
            "JOIN text_stats t USING (sample_id) ORDER BY e.sample_id"
        ).fetchall()
        members = {
            name: con.execute(
                "SELECT sample_id, score FROM selections WHERE selection = $s ORDER BY rank", {"s": name}
            ).fetchall()
            for name in ("diverse", "diverse_all", "diverse_short_first")
        }
        details = {
            r[0]: (r[1], r[2])
            for r in con.execute(
                "SELECT sample_id, related_id, value FROM selection_details WHERE selection = 'diverse_all' "
                "AND role = 'too_similar'"
            ).fetchall()
        }
        stats = con.execute("SELECT stats FROM stage_runs WHERE stage = 'diverse_all'").fetchall()[0][0]
    ids = [r[0] for r in pool]
    x = np.array([r[1] for r in pool], dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = np.array([r[2] for r in pool], dtype=float)

    def loop(budget, descending=True):
        walk = sorted(range(len(ids)), key=lambda i: ((-scores[i] if descending else scores[i]), ids[i]))
        kept, dropped = [], {}
        for i in walk:
            if len(kept) == budget:
                break
            sims = [x[i] @ x[j] for j in kept]
            if sims and max(sims) > 0.97:
                dropped[ids[i]] = (ids[kept[int(np.argmax(sims))]], max(sims))
            else:
                kept.append(i)
        return kept, dropped

    kept, _ = loop(15)
    assert [m[0] for m in members["diverse"]] == [ids[i] for i in kept] and len(kept) == 15
    assert [m[1] for m in members["diverse"]] == [scores[i] for i in kept]
    everything, dropped = loop(len(ids))
    assert [m[0] for m in members["diverse_all"]] == [ids[i] for i in everything]
    assert dropped and set(details) == set(dropped)  # the near duplicates of write_samples are dropped
    for sample_id, (nearest, similarity) in dropped.items():
        assert details[sample_id][0] == nearest and details[sample_id][1] == pytest.approx(similarity, abs=1e-5)
    assert '"budget_reached": false' in stats
    ascending, _ = loop(10, descending=False)
    assert [m[0] for m in members["diverse_short_first"]] == [ids[i] for i in ascending]
