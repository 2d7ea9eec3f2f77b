"""A source that suddenly shrinks (truncated by mistake, caught while being rewritten) is not
ingested: nothing is deactivated until the shrink is accepted for that exact file content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation_assets.sources.fingerprint import SourceChangingError, content_hash, file_fingerprint
from curation_assets.sources.ingest import IngestError, stage_source
from curation_assets.sources.spec import SourceSpec
from curation_assets.stages.core.runner import run_ingest, source_config_hash
from curation_assets.store import DuckDBStore

TABLES = ("samples", "source_samples", "rejected_samples", "stage_runs")


def lines(n: int, start: int = 0) -> str:
    return "".join(
        json.dumps({"instruction": f"Q{i}?", "input": "", "output": f"A{i}."}) + "\n" for i in range(start, start + n)
    )


@pytest.fixture
def store(tmp_path: Path) -> DuckDBStore:
    store = DuckDBStore(tmp_path / "db" / "curation.duckdb", lock_timeout_s=5)
    store.ensure_schema()
    return store


def snapshot(store: DuckDBStore) -> dict[str, list[tuple]]:
    with store.reader(read_only=True) as con:
        return {t: sorted(map(str, con.execute(f"SELECT * FROM {t}").fetchall())) for t in TABLES}


def active(store: DuckDBStore) -> int:
    with store.reader(read_only=True) as con:
        return con.execute("SELECT count(*) FROM source_samples WHERE source = 'pool' AND active").fetchone()[0]


def ingest(store: DuckDBStore, folder: Path, **keys) -> None:
    run_ingest(SourceSpec(name="pool", path="pool.jsonl", **keys), pipeline="p", base_dir=folder, store=store)


def test_truncated_file_fails_naming_file_and_counts_and_writes_nothing(tmp_path: Path, store: DuckDBStore) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text(lines(10))
    ingest(store, tmp_path)
    before = snapshot(store)
    with path.open("r+b") as handle:  # a real truncation, cutting the fourth line in half
        handle.truncate(len(lines(3).encode()) + 12)

    with pytest.raises(IngestError) as caught:
        ingest(store, tmp_path)

    message = str(caught.value)
    assert str(path) in message
    assert "would deactivate 7 of the source's 10 active samples" in message
    assert "max_deactivated_fraction 50%" in message
    assert f"accept_shrink: {content_hash(path)}" in message  # the override, for this content only
    assert snapshot(store) == before  # nothing deactivated, no rejects replaced, no stage_runs row


def test_accept_shrink_applies_to_that_content_only(tmp_path: Path, store: DuckDBStore) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text(lines(10))
    ingest(store, tmp_path)
    path.write_text(lines(3))
    accepted = content_hash(path)

    ingest(store, tmp_path, accept_shrink=accepted)
    assert active(store) == 3

    path.write_text(lines(10))  # grows back: no guard needed
    ingest(store, tmp_path, accept_shrink=accepted)
    assert active(store) == 10
    path.write_text(lines(2, start=5))  # a different shrink: the old acceptance does not cover it
    with pytest.raises(IngestError, match="would deactivate 8 of the source's 10"):
        ingest(store, tmp_path, accept_shrink=accepted)
    assert active(store) == 10


def test_threshold_is_inclusive_and_configurable(tmp_path: Path, store: DuckDBStore) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text(lines(10))
    ingest(store, tmp_path)
    path.write_text(lines(5))
    ingest(store, tmp_path)  # exactly half: allowed
    assert active(store) == 5
    path.write_text(lines(1))
    with pytest.raises(IngestError, match="would deactivate 4 of the source's 5"):
        ingest(store, tmp_path)
    ingest(store, tmp_path, max_deactivated_fraction=0.8)
    assert active(store) == 1


def test_guard_keys_at_defaults_leave_the_config_hash_alone() -> None:
    spec = SourceSpec(name="pool", path="pool.jsonl")
    dumped = spec.model_dump(mode="json")
    assert "max_deactivated_fraction" not in dumped and "accept_shrink" not in dumped
    guarded = SourceSpec(name="pool", path="pool.jsonl", max_deactivated_fraction=0.9, accept_shrink="ab12")
    assert SourceSpec.model_validate(guarded.model_dump(mode="json")) == guarded  # survives a round trip
    assert source_config_hash(guarded) != source_config_hash(spec)
    assert SourceSpec.model_validate(spec.model_dump(mode="json")) == spec


# ---------------------------------------------------------------- files being written

WRITER = """
import sys, time
with open(sys.argv[1], "a") as out:
    for i in range(100000):
        out.write('{"instruction": "W%d?", "input": "", "output": "x"}\\n' % i)
        out.flush()
        time.sleep(0.002)
"""


def test_file_being_written_gets_no_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text(lines(50))
    size = path.stat().st_size
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        while path.stat().st_size == size:  # the writer has started
            time.sleep(0.01)
        with pytest.raises(SourceChangingError, match="changed between reads"):
            file_fingerprint(path, settle_s=0.2, attempts=2)
    finally:
        writer.kill()
        writer.wait()
    assert file_fingerprint(path, settle_s=0.2) == content_hash(path)  # once written, two reads agree


def test_file_changed_while_ingested_fails_and_stages_nothing_usable(tmp_path: Path) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text(lines(20))
    staging = tmp_path / "staging"
    staging.mkdir()
    appended = []

    def rewrite_during_read(count: int) -> None:
        if not appended:  # another program appends while the ingest reads the file
            with open(path, "a") as out:
                out.write(lines(1, start=99))
            os.utime(path)
            appended.append(True)

    with pytest.raises(IngestError, match=r"pool.jsonl changed while it was read.*nothing was written"):
        stage_source(SourceSpec(name="pool", path="pool.jsonl"), tmp_path, staging, progress=rewrite_during_read)
