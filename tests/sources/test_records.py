"""Reading raw records: streaming JSON / JSON Lines, and files read through `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation_assets.sources import records
from curation_assets.sources.records import RawRecord, SourceReadError, read_records

# Objects whose strings contain brackets, braces, commas, quotes and escapes, plus nested
# lists and objects: a decoder that scans text instead of parsing it would trip on these.
TRICKY_ELEMENTS = [
    {"instruction": "split }, { here", "output": "and ], [ here"},
    {"conversations": [{"from": "human", "value": 'say "hi" \\ {"x": [1, 2]}'}, {"from": "gpt", "value": "ok ]]]}}}"}]},
    {"nested": {"a": [1, [2, [3, {"b": "}, {"}]]], "c": {"d": {"e": None}}}, "n": -12.5e3},
    {"unicode": "caf\u00e9 \u2014 \U0001f600 \u4e2d\u6587", "escaped": '\\u005d \\"', "empty": {}},
    {"list": [], "t": True, "f": False, "long": "x" * 50},
    {"instruction": "last", "output": "one"},
]


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read JSON arrays 7 characters at a time, so elements straddle chunk boundaries."""
    monkeypatch.setattr(records, "_CHUNK_CHARS", 7)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep `datasets`' cache for these tiny files inside the test's tmp_path."""
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def ok_values(recs: list[RawRecord]) -> list:
    return [r.value for r in recs if r.error is None]


def errors(recs: list[RawRecord]) -> list[RawRecord]:
    return [r for r in recs if r.error is not None]


# ---------------------------------------------------------------- JSON Lines


def test_jsonl_malformed_line_in_the_middle_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "data.jsonl",
        [
            b'{"id": 1}',
            b'{"id": 2}',
            b'{"id": 3, "broken": }',
            b'{"id": 4}',
            b'{"id": 5}',
        ],
    )

    recs = list(read_records(path))

    assert ok_values(recs) == [{"id": 1}, {"id": 2}, {"id": 4}, {"id": 5}]
    [bad] = errors(recs)
    assert bad.record_no == 3
    assert bad.location == "line 3"
    assert bad.error.startswith("malformed JSON")
    assert bad.raw_text == '{"id": 3, "broken": }'
    assert [r.record_no for r in recs] == [1, 2, 3, 4, 5]


def test_jsonl_blank_lines_are_skipped_but_line_numbers_stay_true(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "data.jsonl", [b'{"id": 1}', b"", b"   ", b'{"id": 2', b'{"id": 3}'])

    recs = list(read_records(path))

    assert [(r.record_no, r.location) for r in recs] == [(1, "line 1"), (4, "line 4"), (5, "line 5")]
    assert errors(recs)[0].location == "line 4"


def test_jsonl_non_utf8_line_is_rejected_with_reason_and_others_read(tmp_path: Path) -> None:
    bad_line = b'{"instruction": "caf\xe9", "output": "x"}'  # Latin-1 e-acute, invalid UTF-8
    path = write_lines(
        tmp_path / "data.ndjson",
        [
            b'{"instruction": "a", "output": "b"}',
            bad_line,
            '{"instruction": "caf\u00e9", "output": "y"}'.encode(),  # the same text, valid UTF-8
        ],
    )

    recs = list(read_records(path))

    assert ok_values(recs) == [{"instruction": "a", "output": "b"}, {"instruction": "caf\u00e9", "output": "y"}]
    [bad] = errors(recs)
    assert bad.location == "line 2"
    assert "invalid UTF-8" in bad.error
    bad_byte = bad_line.index(b"\xe9")
    assert f"byte {bad_byte} of the line" in bad.error
    assert "\\xe9" in bad.raw_text  # the undecodable byte is kept visibly


@pytest.mark.parametrize("name", ["data.jsonl", "data.json"])
def test_deeply_nested_record_is_rejected_not_fatal(tmp_path: Path, name: str) -> None:
    deep = "[" * 5000 + "]" * 5000
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text(f'{{"id": 1}}\n{deep}\n{{"id": 2}}\n', encoding="utf-8")
    else:
        path.write_text(f'[{{"id": 1}}, {deep}, {{"id": 2}}]', encoding="utf-8")

    recs = list(read_records(path))

    assert ok_values(recs) == [{"id": 1}, {"id": 2}]
    assert len(errors(recs)) == 1


def test_jsonl_with_utf8_bom_reads_first_line(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1}\n{"id": 2}\n')

    assert ok_values(list(read_records(path))) == [{"id": 1}, {"id": 2}]


# ---------------------------------------------------------------- whole-source errors


def test_missing_file_raises_with_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.jsonl"
    with pytest.raises(SourceReadError, match="not found") as info:
        list(read_records(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.jsonl", b""),
        ("empty.json", b""),
        ("blank.json", b"  \n\t\n"),
    ],
)
def test_empty_file_raises_with_path(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceReadError, match="empty") as info:
        list(read_records(path))
    assert str(path) in str(info.value)


def test_unsupported_extension_raises_naming_suffix_and_path(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"not really a spreadsheet")
    with pytest.raises(SourceReadError, match="unsupported file type '.xlsx'") as info:
        list(read_records(path))
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- JSON arrays


@pytest.mark.parametrize("chunk_chars", [None, 1, 2, 3, 7, 13])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_streamed_equals_json_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_chars: int | None, indent: int | None
) -> None:
    if chunk_chars is not None:
        monkeypatch.setattr(records, "_CHUNK_CHARS", chunk_chars)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(TRICKY_ELEMENTS, indent=indent, ensure_ascii=False), encoding="utf-8")

    recs = list(read_records(path))

    assert errors(recs) == []
    with path.open(encoding="utf-8") as handle:
        assert [r.value for r in recs] == json.load(handle)
    assert [r.record_no for r in recs] == list(range(1, len(TRICKY_ELEMENTS) + 1))


def test_json_array_locations_give_the_character_offset(tmp_path: Path, tiny_chunks: None) -> None:
    path = tmp_path / "data.json"
    text = json.dumps(TRICKY_ELEMENTS, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")

    recs = list(read_records(path))

    for rec, element in zip(recs, TRICKY_ELEMENTS):
        offset = text.index(json.dumps(element, ensure_ascii=False))
        assert rec.location == f"element {rec.record_no} (character {offset})"


def test_json_array_locations_count_leading_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    text = "\n\n  " + json.dumps([{"a": 1}, {"b": 2}])
    path.write_text(text, encoding="utf-8")

    recs = list(read_records(path))

    offset = text.index('{"b"')
    assert recs[1].location == f"element 2 (character {offset})"


def test_json_array_leading_whitespace_longer_than_a_chunk(tmp_path: Path, tiny_chunks: None) -> None:
    path = tmp_path / "data.json"
    path.write_text("\n" * 20 + json.dumps([{"a": 1}]), encoding="utf-8")

    assert ok_values(list(read_records(path))) == [{"a": 1}]


def test_json_array_of_scalars_with_tiny_chunks_equals_json_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = [1.5, 12345.25, -7, 1e10, -0.5e-3, True, None, "str", {"x": [1, 2]}, [1, [2]], {}]
    path = tmp_path / "scalars.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    for chunk_chars in range(1, 25):
        monkeypatch.setattr(records, "_CHUNK_CHARS", chunk_chars)
        assert [r.value for r in read_records(path)] == data, f"chunk size {chunk_chars}"


@pytest.mark.parametrize("chunk_chars", [None, 7])
def test_truncated_json_array_yields_complete_elements_and_one_truncated_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_chars: int | None
) -> None:
    if chunk_chars is not None:
        monkeypatch.setattr(records, "_CHUNK_CHARS", chunk_chars)
    full = json.dumps(TRICKY_ELEMENTS, ensure_ascii=False)
    last = json.dumps(TRICKY_ELEMENTS[-1], ensure_ascii=False)
    cut = full.rindex(last) + len(last) // 2  # in the middle of the last element's first string
    path = tmp_path / "truncated.json"
    path.write_text(full[:cut], encoding="utf-8")

    recs = list(read_records(path))

    assert ok_values(recs) == TRICKY_ELEMENTS[:-1]
    [tail] = errors(recs)
    assert tail is recs[-1]
    assert tail.record_no == len(TRICKY_ELEMENTS)
    assert tail.error.startswith("truncated")
    assert tail.raw_text == full[full.rindex(last) : cut]


def test_truncated_json_array_cut_inside_a_nested_list(tmp_path: Path, tiny_chunks: None) -> None:
    path = tmp_path / "truncated.json"
    path.write_text('[{"a": 1}, {"b": [1, [2, {"c": "], }"}', encoding="utf-8")

    recs = list(read_records(path))

    assert ok_values(recs) == [{"a": 1}]
    assert len(recs) == 2 and recs[1].error.startswith("truncated")


def test_json_array_cut_between_elements_is_a_clean_end(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text('[{"a": 1}, {"b": 2},  ', encoding="utf-8")

    recs = list(read_records(path))

    assert ok_values(recs) == [{"a": 1}, {"b": 2}]
    assert errors(recs) == []


@pytest.mark.parametrize("chunk_chars", [None, 7])
def test_malformed_element_in_the_middle_is_rejected_and_following_elements_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_chars: int | None
) -> None:
    if chunk_chars is not None:
        monkeypatch.setattr(records, "_CHUNK_CHARS", chunk_chars)
    bad = '{"id": 2, "text": "has ] and }", "oops": [1, 2,, 3]}'
    path = tmp_path / "data.json"
    path.write_text(f'[{{"id": 1}}, {bad}, {{"id": 3, "s": "}}"}}, {{"id": 4}}]', encoding="utf-8")

    recs = list(read_records(path))

    assert ok_values(recs) == [{"id": 1}, {"id": 3, "s": "}"}, {"id": 4}]
    [rejected] = errors(recs)
    assert rejected.record_no == 2
    assert rejected.location.startswith("element 2 ")
    assert rejected.error.startswith("malformed JSON")
    assert rejected.raw_text == bad


def test_malformed_scalar_element_does_not_swallow_the_next_element(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('[{"id": 1}, nope, {"id": 2}, {"id": 3}]', encoding="utf-8")

    recs = list(read_records(path))

    assert ok_values(recs) == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert [r.raw_text for r in errors(recs)] == ["nope"]


def test_json_array_invalid_utf8_inside_element_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b'[{"id": 1}, {"id": 2, "t": "caf\xe9"}, {"id": 3}]')

    recs = list(read_records(path))

    assert ok_values(recs) == [{"id": 1}, {"id": 3}]
    [bad] = errors(recs)
    assert bad.record_no == 2
    assert "invalid UTF-8" in bad.error
    assert "\\xe9" in bad.raw_text


def test_json_array_with_bom_and_leading_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b'\xef\xbb\xbf\n  [{"id": 1}, {"id": 2}]\n')

    assert ok_values(list(read_records(path))) == [{"id": 1}, {"id": 2}]


def test_empty_json_array_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text("[ ]", encoding="utf-8")

    assert list(read_records(path)) == []


# ---------------------------------------------------------------- through `datasets`


def test_parquet_file_is_read_via_datasets(tmp_path: Path, hf_cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(
        pa.table(
            {
                "instruction": ["a", "b"],
                "output": ["x", "y"],
                "messages": [[{"role": "user", "content": "hi"}], []],
            }
        ),
        path,
    )

    recs = list(read_records(path))

    assert [r.value for r in recs] == [
        {"instruction": "a", "output": "x", "messages": [{"role": "user", "content": "hi"}]},
        {"instruction": "b", "output": "y", "messages": []},
    ]
    assert [r.location for r in recs] == ["row 1", "row 2"]
    assert hf_cache.exists()  # the cache went to tmp_path, not the user's home


def test_csv_file_is_read_via_datasets(tmp_path: Path, hf_cache: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('instruction,input,output\nhello,,world\n"with, comma",ctx,"two\nlines"\n', encoding="utf-8")

    values = [r.value for r in read_records(path)]

    assert values == [
        {"instruction": "hello", "input": None, "output": "world"},
        {"instruction": "with, comma", "input": "ctx", "output": "two\nlines"},
    ]


def test_tsv_file_is_read_with_tab_separator(tmp_path: Path, hf_cache: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_text("instruction\toutput\nhello, you\tworld\n", encoding="utf-8")

    assert [r.value for r in read_records(path)] == [{"instruction": "hello, you", "output": "world"}]


def test_save_to_disk_dataset_folder(tmp_path: Path, hf_cache: Path) -> None:
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]).save_to_disk(
        str(folder)
    )

    recs = list(read_records(folder))

    assert [r.value for r in recs] == [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    assert [r.record_no for r in recs] == [1, 2]


def test_save_to_disk_dataset_dict_uses_split(tmp_path: Path, hf_cache: Path) -> None:
    import datasets

    folder = tmp_path / "saved_dict"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"instruction": "train", "output": "1"}]),
            "test": datasets.Dataset.from_list([{"instruction": "test", "output": "2"}]),
        }
    ).save_to_disk(str(folder))

    assert [r.value for r in read_records(folder)] == [{"instruction": "train", "output": "1"}]
    assert [r.value for r in read_records(folder, split="test")] == [{"instruction": "test", "output": "2"}]
    with pytest.raises(SourceReadError, match=r"splits \['test', 'train'\], not 'validation'"):
        list(read_records(folder, split="validation"))


def test_folder_that_is_not_a_saved_dataset_raises(tmp_path: Path, hf_cache: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")

    with pytest.raises(SourceReadError, match="not a datasets save_to_disk folder") as info:
        list(read_records(folder))
    assert str(folder) in str(info.value)
