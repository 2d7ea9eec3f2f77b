"""A resumable stage (jvp_embeddings, grad_features) that dies half way keeps its finished
parts; the next run computes only the rest and the result equals an uninterrupted run."""

import numpy as np
import pytest

from curation_assets.models.jvp import JvpEmbedder
from curation_assets.stages.influence import jvp_embeddings
from curation_assets.store import DuckDBStore
from tests.support.files import write_pool
from tests.support.pipelines import jvp_stage, pipeline_document
from tests.support.runs import materialize_document, run_document


def document(tiny_lm):
    return pipeline_document("resume", [jvp_stage(tiny_lm)])


def rows(folder):
    with DuckDBStore(folder / "resume.duckdb").reader(read_only=True) as con:
        table = con.execute("SELECT sample_id, embedding FROM jvp_embeddings ORDER BY sample_id").fetchall()
        runs = con.execute(
            "SELECT rows_in, rows_out FROM stage_runs WHERE stage = 'jvp' ORDER BY started_at"
        ).fetchall()
    return {sid: np.array(vector) for sid, vector in table}, runs


def crash_after_chunks(tmp_path, tiny_lm, monkeypatch, chunks: int):
    """Run the pipeline uninterrupted in reference/ and, in resumed/ with chunks of 5 samples, let
    JvpEmbedder.embed raise "machine lost" once `chunks` chunks are done (batches of 4: two calls a
    chunk); embed works again afterwards. Returns the reference rows and the resumed/ folder."""
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    for folder in (reference_dir, resumed_dir):
        folder.mkdir()
        write_pool(folder / "pool.jsonl", 20)  # 21 samples
    run_document(reference_dir, document(tiny_lm))
    expected, _ = rows(reference_dir)

    monkeypatch.setattr(jvp_embeddings, "CHUNK_SAMPLES", 5)
    original = JvpEmbedder.embed
    calls = {"n": 0}

    def dies_in_the_next_chunk(self, batch):
        calls["n"] += 1
        if calls["n"] == 2 * chunks + 1:  # calls 1 to 2 * chunks computed the first `chunks` chunks
            raise RuntimeError("machine lost")
        return original(self, batch)

    monkeypatch.setattr(JvpEmbedder, "embed", dies_in_the_next_chunk)
    with pytest.raises(Exception, match="machine lost"):
        run_document(resumed_dir, document(tiny_lm))
    monkeypatch.setattr(JvpEmbedder, "embed", original)
    return expected, resumed_dir


def assert_same_embeddings(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for sid, vector in expected.items():
        np.testing.assert_allclose(got[sid], vector, rtol=1e-5, atol=1e-6)


def test_interrupted_stage_resumes_from_its_parts(tmp_path, tiny_lm, monkeypatch):
    expected, resumed_dir = crash_after_chunks(tmp_path, tiny_lm, monkeypatch, chunks=2)
    partial = resumed_dir / "resume.artifacts" / "jvp"
    parts = list(partial.glob("*/partial/part-*.parquet"))
    assert len(parts) == 2
    assert rows(resumed_dir) == ({}, [])  # nothing committed

    run_document(resumed_dir, document(tiny_lm))
    got, runs = rows(resumed_dir)
    assert runs == [(11, 21)]  # computed the 11 missing samples, inserted all 21 rows
    assert_same_embeddings(got, expected)
    assert not list(partial.glob("*/partial"))  # parts removed once committed


def test_zero_byte_and_corrupt_parts_are_set_aside_and_recomputed(tmp_path, tiny_lm, monkeypatch, capfd):
    expected, resumed_dir = crash_after_chunks(tmp_path, tiny_lm, monkeypatch, chunks=3)
    (partial,) = (resumed_dir / "resume.artifacts" / "jvp").glob("*/partial")
    first, second, third = sorted(partial.glob("part-*.parquet"))
    first.write_bytes(b"")  # renamed before its data reached the disk
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])  # cut short: no footer
    data = bytearray(third.read_bytes())
    data[len(data) // 3] ^= 0xFF  # one flipped byte inside a data page: the page checksum catches it
    third.write_bytes(bytes(data))

    capfd.readouterr()
    materialize_document(resumed_dir, document(tiny_lm))  # through Dagster: the warnings reach the run's log
    warnings = [line for line in capfd.readouterr().err.splitlines() if " - WARNING - " in line]
    got, runs = rows(resumed_dir)
    assert runs == [(21, 21)]  # every part was unusable: all 21 samples computed again
    assert_same_embeddings(got, expected)
    set_aside = sorted(p.name for p in partial.parent.glob("set_aside/*"))
    assert set_aside == [f"partial-{p.name}" for p in (first, second, third)]
    assert len([w for w in warnings if "is unreadable" in w and "moved to" in w]) == 3  # a warning, not a failure


WRITE_PARTS = """
import sys
import pyarrow as pa
from curation_assets.stages.core.context import ResumableRowsWriter
folder, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
writer = ResumableRowsWriter(__import__("pathlib").Path(folder), pa.schema([("sample_id", pa.string())]))
for i in range(n):
    writer.write(pa.table({"sample_id": [f"{tag}-{i}-{j}" for j in range(200)]}))
"""


def test_parts_of_two_writers_in_one_folder_never_overwrite_each_other(tmp_path):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    folder = tmp_path / "partial"
    folder.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", WRITE_PARTS, str(folder), tag, "60"]) for tag in ("a", "b")]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    parts = sorted(folder.glob("part-*.parquet"))
    ids = [sid for part in parts for sid in pq.read_table(part).column("sample_id").to_pylist()]
    assert len(parts) == 120 and len(ids) == len(set(ids)) == 120 * 200
    assert sorted(p.name for p in folder.iterdir()) == [p.name for p in parts]  # no temporary file left
