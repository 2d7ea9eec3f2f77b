"""`target_similarity` through the runner on a tiny random sentence model, against a brute-force
computation with sentence-transformers directly (same model, same template)."""

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from curation_assets.store import DuckDBStore
from tests.support.files import write_samples
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_document


def write_target(path, n=9):
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    records = [
        {
            "instruction": f"Solve {' '.join(words[i % 5 : i % 5 + 2])}",
            "input": f"x = {i}" if i % 2 else "",
            "output": f"{i}",
            "cat": "odd" if i % 2 else "even",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_target_similarity_equals_brute_force(tmp_path, tiny_sentence_model):
    write_samples(tmp_path / "pool.jsonl", 30)
    write_target(tmp_path / "target.jsonl")
    template = "{instruction}\n{input}"
    run_document(
        tmp_path,
        pipeline_document(
            "sim",
            stages=[
                {
                    "name": "embed",
                    "kind": "embedding",
                    "model": str(tiny_sentence_model),
                    "template": template,
                    "batch_size": 8,
                }
            ],
            selections=[
                {
                    "name": "closest",
                    "kind": "target_similarity",
                    "embedding": "embed",
                    "budget": 6,
                    "distinct": False,  # plain top-k: the brute force below ranks every sample
                    "targets": [
                        {
                            "name": "task",
                            "path": "target.jsonl",
                            "subtask_field": "cat",
                            "validation_size": 5,
                            "split_seed": 2,
                        }
                    ],
                }
            ],
            source_format="alpaca",
        ),
    )

    with DuckDBStore(tmp_path / "sim.duckdb").reader(read_only=True) as con:
        pool = con.execute(
            "SELECT sample_id, instruction, input FROM samples WHERE active ORDER BY sample_id"
        ).fetchall()
        members = con.execute(
            "SELECT sample_id, score FROM selections WHERE selection = 'closest' ORDER BY rank"
        ).fetchall()
        targets = con.execute(
            "SELECT t.split, t.subtask, t.messages[1].content FROM target_samples AS t WHERE selection = 'closest'"
        ).fetchall()
    assert len(targets) == 9 and sum(t[0] == "validation" for t in targets) == 5

    model = SentenceTransformer(str(tiny_sentence_model), device="cpu")
    records = [json.loads(line) for line in (tmp_path / "target.jsonl").read_text().splitlines()]
    by_user_turn = {(f"{r['instruction']}\n\n{r['input']}" if r["input"] else r["instruction"]): r for r in records}
    validation = [(by_user_turn[text], subtask) for split, subtask, text in targets if split == "validation"]
    target_vectors = model.encode([template.format(**r).strip() for r, _ in validation])
    pool_vectors = model.encode([template.format(instruction=i, input=x).strip() for _, i, x in pool])

    def cosine(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    best = []
    for vector in pool_vectors:
        means = []
        for subtask in {s for _, s in validation}:
            sims = [cosine(vector, t) for t, (_, s) in zip(target_vectors, validation) if s == subtask]
            means.append(sum(sims) / len(sims))
        best.append(max(means))
    order = sorted(range(len(pool)), key=lambda i: -best[i])[:6]
    assert [m[0] for m in members] == [pool[i][0] for i in order]
    assert [m[1] for m in members] == pytest.approx([best[i] for i in order], abs=1e-5)
