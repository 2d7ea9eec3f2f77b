"""Selection `minhash_dedup` end to end through the runner: planted near-duplicates are dropped and
point at the sample kept (the one earlier in the file), an exact Jaccard written here agrees, and a
later ingest keeps the older sample of a cluster even when the new copy comes first in the file."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

from curation_assets.components.standalone import load_pipeline_file
from tests.support.files import write_jsonl
from tests.support.pipelines import pipeline_document
from tests.support.runs import run_pipeline


def shingles(text: str) -> set[str]:
    words = text.lower().split()
    return {" ".join(words[i : i + 5]) for i in range(len(words) - 4)} if len(words) > 5 else {" ".join(words)}


def conversation(record: dict) -> str:
    return f"user: {record['instruction']}\nassistant: {record['output']}"


def base_records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    vocabulary = [f"word{i}" for i in range(3_000)]
    return [
        {
            "instruction": " ".join(rng.choice(vocabulary, size=60)),
            "input": "",
            "output": " ".join(rng.choice(vocabulary, size=60)),
        }
        for _ in range(n)
    ]


def near_copy(record: dict, position: int, word: str) -> dict:
    """The record with one output word replaced: exact Jaccard of the conversation about 0.92."""
    words = record["output"].split()
    words[position] = word
    return {**record, "output": " ".join(words)}


def pipeline(tmp_path: Path, **options) -> Path:
    document = pipeline_document(
        "mh",
        stages=[],
        selections=[
            {"name": "dedup", "kind": "minhash_dedup", "batch_size": 7, **options},
            {"name": "sample", "kind": "random", "budget": 5, "input_selection": "dedup"},
        ],
        source_format="alpaca",
        automation=None,
    )
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(path: Path):
    return run_pipeline(load_pipeline_file(path))  # the runner: the diversity family's Dagster run is elsewhere


def write(path: Path, records: list[dict]) -> None:
    write_jsonl(path, records, append=True)


def test_minhash_dedup_drops_planted_near_duplicates(tmp_path):
    records = base_records(30)
    planted = [near_copy(records[i], 10 + i, f"edit{i}") for i in range(0, 30, 3)]  # 10 near-copies
    write(tmp_path / "pool.jsonl", records + planted)
    component = run(pipeline(tmp_path))
    with component.store.reader() as con:
        ids = {
            conversation(dict(zip(("instruction", "output"), row[1:]))): row[0]
            for row in con.execute("SELECT sample_id, instruction, output FROM samples").fetchall()
        }
        members = {r[0] for r in con.execute("SELECT sample_id FROM selections WHERE selection = 'dedup'").fetchall()}
        details = con.execute(
            "SELECT sample_id, role, related_id, value FROM selection_details WHERE selection = 'dedup'"
        ).fetchall()
        sampled = {r[0] for r in con.execute("SELECT sample_id FROM selections WHERE selection = 'sample'").fetchall()}
    texts = {sample_id: text for text, sample_id in ids.items()}
    # exact Jaccard over every pair: the planted pairs are the only ones above 0.3
    exact = {
        (a, b): len(shingles(texts[a]) & shingles(texts[b])) / len(shingles(texts[a]) | shingles(texts[b]))
        for a, b in itertools.combinations(sorted(texts), 2)
    }
    duplicates = {pair for pair, value in exact.items() if value >= 0.7}
    assert len(duplicates) == 10 and all(value < 0.3 for pair, value in exact.items() if pair not in duplicates)
    # the copy of each pair is dropped and points at its original (earlier in the file, one ingest)
    copies = {ids[conversation(r)]: ids[conversation(records[i])] for r, i in zip(planted, range(0, 30, 3))}
    assert {tuple(sorted(pair)) for pair in copies.items()} == duplicates
    assert {d[0]: d[2] for d in details} == copies
    assert any(copy < original for copy, original in copies.items())  # not sample_id order
    assert members == set(texts) - set(copies)
    assert all(d[1] == "duplicate" and abs(d[3] - exact[tuple(sorted((d[0], d[2])))]) < 0.15 for d in details)
    assert sampled <= members and len(sampled) == 5


def test_a_later_ingest_keeps_the_older_sample(tmp_path):
    records = base_records(12, seed=1)
    write(tmp_path / "pool.jsonl", records)
    path = pipeline(tmp_path)
    component = run(path)
    with component.store.reader() as con:
        original = dict(con.execute("SELECT instruction, sample_id FROM samples").fetchall())[records[0]["instruction"]]
    # five near-copies of record 0 arrive later, first in the file; some hash below the original's sample_id
    (tmp_path / "pool.jsonl").unlink()
    write(tmp_path / "pool.jsonl", [near_copy(records[0], k, f"late{k}") for k in range(5)] + records)
    run(path)
    with component.store.reader() as con:
        late = [
            r[0]
            for r in con.execute(
                "SELECT sample_id FROM samples WHERE instruction = ? AND sample_id <> ?",
                [records[0]["instruction"], original],
            ).fetchall()
        ]
        members = {r[0] for r in con.execute("SELECT sample_id FROM selections WHERE selection = 'dedup'").fetchall()}
        related = {
            r[0] for r in con.execute("SELECT related_id FROM selection_details WHERE selection = 'dedup'").fetchall()
        }
        rank = con.execute(
            "SELECT rank FROM selections WHERE selection = 'dedup' AND sample_id = ?", [original]
        ).fetchall()
    assert len(late) == 5 and min(late) < original  # sample_id order alone would keep a late copy
    assert original in members and not set(late) & members and related == {original}
    assert len(members) == 12 and rank[0][0] <= 12


def test_bands_must_fit_the_permutations(tmp_path):
    write(tmp_path / "pool.jsonl", base_records(2))
    with pytest.raises(Exception, match="exceeds num_permutations"):
        load_pipeline_file(pipeline(tmp_path, num_bands=30, num_rows_per_band=10))
    with pytest.raises(Exception, match="give both"):
        load_pipeline_file(pipeline(tmp_path, num_bands=30))
