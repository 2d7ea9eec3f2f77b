"""Hostile input in bounded memory: a JSON Lines line or JSON array element larger than
`max_record_bytes` is skipped without being read whole, and only its prefix and length are kept.

The peak-memory tests ingest a file holding one 200 MB record (with max_record_bytes 1 MB) in
a fresh subprocess and compare its peak resident memory (VmHWM) with the same ingest of the
file without that record: the peak must not grow by anything near the record's size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from curation_assets.sources import records
from curation_assets.sources.records import REJECTED_PREFIX_BYTES, read_records

HUGE_BYTES = 200 * 1024 * 1024
LIMIT = 1_000_000
SMALL = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(40)]

PEAK_SCRIPT = textwrap.dedent("""\
    import json, sys
    from pathlib import Path
    from curation_assets.sources.ingest import stage_source
    from curation_assets.sources.spec import SourceSpec
    import pyarrow.parquet as pq

    path, staging, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    staging.mkdir()
    result = stage_source(SourceSpec(name="big", path=str(path), max_record_bytes=limit), path.parent, staging)
    rejected = pq.read_table(result.rejected_file).to_pylist()
    peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"peak_kib": peak_kib, "samples": result.samples, "rejected": result.rejected,
                      "reasons": [r["reason"] for r in rejected],
                      "raw_lengths": [len(r["raw_record"].encode()) for r in rejected],
                      "raw_heads": [r["raw_record"][:40] for r in rejected]}))
    """)


def _write_huge_file(path: Path, *, array: bool, huge: bool) -> int:
    """SMALL records around one record whose output is HUGE_BYTES of 'x' (written in 1 MiB pieces);
    returns the huge record's size in bytes (0 without it)."""
    head = '{"instruction": "Huge?", "input": "", "output": "'
    tail = '"}'
    first, second = SMALL[:20], SMALL[20:]
    with path.open("w", encoding="utf-8") as out:
        if array:
            out.write("[" + ", ".join(json.dumps(r) for r in first) + ", ")
        else:
            out.write("".join(json.dumps(r) + "\n" for r in first))
        if huge:
            out.write(head)
            piece = "x" * (1 << 20)
            for _ in range(HUGE_BYTES // len(piece)):
                out.write(piece)
            out.write(tail + (", " if array else "\n"))
        if array:
            out.write(", ".join(json.dumps(r) for r in second) + "]\n")
        else:
            out.write("".join(json.dumps(r) + "\n" for r in second))
    return len(head) + HUGE_BYTES + len(tail) if huge else 0


def _peak_ingest(path: Path, staging: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), str(staging), str(LIMIT)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("array", [False, True], ids=["jsonl", "json_array"])
def test_one_huge_record_does_not_raise_peak_memory(tmp_path: Path, array: bool) -> None:
    suffix = ".json" if array else ".jsonl"
    baseline_file, huge_file = tmp_path / f"small{suffix}", tmp_path / f"huge{suffix}"
    _write_huge_file(baseline_file, array=array, huge=False)
    size = _write_huge_file(huge_file, array=array, huge=True)

    baseline = _peak_ingest(baseline_file, tmp_path / "staging-small")
    measured = _peak_ingest(huge_file, tmp_path / "staging-huge")

    grown_mib = (measured["peak_kib"] - baseline["peak_kib"]) / 1024
    assert grown_mib < 64, f"peak memory grew by {grown_mib:.0f} MiB for a {size >> 20} MiB record"
    assert (measured["samples"], measured["rejected"]) == (40, 1)
    [reason] = measured["reasons"]
    assert f"record too large: {size} bytes > max_record_bytes {LIMIT}" in reason  # the true length
    assert measured["raw_lengths"] == [REJECTED_PREFIX_BYTES]  # a bounded prefix, not the record
    assert measured["raw_heads"] == ['{"instruction": "Huge?", "input": "", "o']


# ---------------------------------------------------------------- the reader on small inputs


def _oversized(n: int) -> dict:
    # strings full of brackets, quotes and escapes: the skip must track strings, not just brackets
    return {"instruction": 'tricky "}]," \\" ' * n, "output": ["[{", {"k": "\\\\"}] * n}


def test_jsonl_oversized_line_is_rejected_with_length_and_the_rest_read(tmp_path: Path) -> None:
    big = json.dumps(_oversized(400))
    lines = [json.dumps(SMALL[0]), big, json.dumps(SMALL[1]), big + "   ", json.dumps(SMALL[2])]
    path = tmp_path / "data.jsonl"
    path.write_text("\r\n".join(lines) + "\n", encoding="utf-8")

    got = list(read_records(path, max_record_bytes=len(big) - 1))

    assert [r.value for r in got if r.error is None] == SMALL[:3]
    too_large = [r for r in got if r.error is not None]
    assert [r.record_no for r in too_large] == [2, 4]
    assert too_large[0].error.startswith(f"record too large: {len(big)} bytes > max_record_bytes {len(big) - 1}")
    assert too_large[1].error.startswith(f"record too large: {len(big) + 3} bytes")
    assert too_large[0].raw_text == big[:REJECTED_PREFIX_BYTES]
    # a record of exactly max_record_bytes is still read
    assert [r.error for r in read_records(path, max_record_bytes=len(big) + 3)] == [None] * 5


@pytest.mark.parametrize("chunk", [7, 4096])
def test_json_array_oversized_element_is_skipped_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(records, "_CHUNK_CHARS", chunk)
    elements = [SMALL[0], _oversized(300), SMALL[1], "a plain string", 12345, _oversized(2), SMALL[2]]
    texts = [json.dumps(e, ensure_ascii=False) for e in elements]
    path = tmp_path / "data.json"
    path.write_text("[" + ",\n ".join(texts) + "]", encoding="utf-8")
    limit = 1000
    assert len(texts[1].encode()) > 10 * limit and len(texts[5].encode()) < limit

    got = list(read_records(path, max_record_bytes=limit))

    # an independent expectation: every element decodes as json.loads does, but the oversized one
    assert [r.value for r in got if r.error is None] == [e for e, t in zip(elements, texts) if len(t.encode()) <= limit]
    [rejected] = [r for r in got if r.error is not None]
    assert rejected.record_no == 2
    assert rejected.error.startswith(f"record too large: {len(texts[1].encode())} bytes > max_record_bytes {limit}")
    assert rejected.raw_text == texts[1][:REJECTED_PREFIX_BYTES]
    assert [r.record_no for r in got] == list(range(1, 8))


def test_json_array_truncated_inside_an_oversized_element(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "_CHUNK_CHARS", 64)
    text = "[" + json.dumps(SMALL[0]) + ", " + json.dumps(_oversized(300))[:5000]
    path = tmp_path / "cut.json"
    path.write_text(text, encoding="utf-8")

    got = list(read_records(path, max_record_bytes=1000))

    assert got[0].value == SMALL[0]
    assert got[1].error.startswith("truncated: the file ends inside this record after ")
    assert len(got) == 2


def test_data_after_the_array_is_reported_without_reading_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "_CHUNK_CHARS", 16)
    path = tmp_path / "tail.json"
    path.write_text("[" + json.dumps(SMALL[0]) + "]" + " " * 100 + "junk" * 10_000, encoding="utf-8")

    got = list(read_records(path))

    assert got[0].value == SMALL[0]
    assert got[1].error == "data after the end of the JSON array"
    assert got[1].raw_text == ("junk" * 10_000)[:10_000]
