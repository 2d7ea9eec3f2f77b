"""The `curation` CLI (run, query, export, check) on a small alpaca pipeline, in-process."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curation_assets.cli import main
from tests.support.files import alpaca_records, line_of, valid_pipeline_yaml, write_pipeline

N_RECORDS = 30
TOP_BUDGET = 5
PIPELINE_TEXT = valid_pipeline_yaml(budget=TOP_BUDGET, exports="- selection: longest\n  path: exports/longest.jsonl\n")


def invoke(*args: str) -> object:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def table_rows(output: str) -> dict[str, list[str]]:
    """The rows of a `_format_table` printout keyed by their first cell."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 1 and not set(line) <= set("-+ "):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(autouse=True)
def _ephemeral_instance(monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    """The pipeline, run once through `curation run` from a working directory elsewhere."""
    root = tmp_path_factory.mktemp("cli")
    yaml_file = write_pipeline(root / "pipe", PIPELINE_TEXT, records=N_RECORDS)
    (root / "elsewhere").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        mp.chdir(root / "elsewhere")  # relative paths must resolve against the YAML's folder
        result = CliRunner().invoke(main, ["run", str(yaml_file)], catch_exceptions=False)
    source_lines = (yaml_file.parent / "data" / "alpaca.jsonl").read_text().splitlines()
    return {
        "yaml": yaml_file,
        "db": yaml_file.parent / "tiny.duckdb",
        "result": result,
        "root": root,
        "records": [json.loads(line) for line in source_lines],
    }


def query_json(ran: dict, sql: str) -> list[dict]:
    result = invoke("query", sql, "--db", ran["db"], "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# ---- run ---------------------------------------------------------------------------------------


def test_run_prints_summary_with_every_stage_and_the_db(ran: dict) -> None:
    result = ran["result"]
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows["stage"][:4] == ["kind", "rows in", "rows out", "seconds"]
    assert rows["alpaca"][:3] == ["source", str(N_RECORDS), str(N_RECORDS)]
    assert rows["lengths"][:3] == ["text_stats", str(N_RECORDS), str(N_RECORDS)]
    assert rows["random_few"][:3] == ["random", str(N_RECORDS), "4"]
    assert rows["longest"][:3] == ["top_score", str(N_RECORDS), str(TOP_BUDGET)]
    assert f"DuckDB: {ran['db']}" in result.output
    assert ran["db"].is_file()
    assert not (ran["root"] / "elsewhere" / "tiny.duckdb").exists()


def test_run_materialises_the_pipeline_exports(ran: dict) -> None:
    exported = ran["yaml"].parent / "exports" / "longest.jsonl"
    lines = exported.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [ran["records"][i] for i in range(29, 29 - TOP_BUDGET, -1)]


def test_run_records_stage_runs(ran: dict) -> None:
    rows = query_json(ran, "SELECT stage, kind, rows_out FROM stage_runs ORDER BY started_at")
    assert [(r["stage"], r["kind"]) for r in rows] == [
        ("alpaca", "source"),
        ("lengths", "text_stats"),
        ("random_few", "random"),
        ("longest", "top_score"),
    ]


def test_second_run_recomputes_nothing_for_unchanged_stage(tmp_path: Path) -> None:
    yaml_file = write_pipeline(tmp_path / "pipe", valid_pipeline_yaml(), records=10)
    assert invoke("run", yaml_file).exit_code == 0
    again = invoke("run", yaml_file)
    assert again.exit_code == 0, again.output
    rows = table_rows(again.output)
    assert rows["lengths"][:3] == ["text_stats", "0", "0"]  # incremental: no pending samples
    assert rows["longest"][:3] == ["top_score", "10", "5"]


def test_run_select_materialises_only_the_selection(tmp_path: Path) -> None:
    yaml_file = write_pipeline(tmp_path / "pipe", valid_pipeline_yaml(), records=10)
    result = invoke("run", yaml_file, "--select", "tiny/alpaca")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert "alpaca" in rows and "lengths" not in rows and "longest" not in rows


# ---- query -------------------------------------------------------------------------------------


def test_query_prints_a_table(ran: dict) -> None:
    result = invoke(
        "query", "SELECT selection, count(*) AS n FROM selections GROUP BY 1 ORDER BY 1", "--pipeline", ran["yaml"]
    )
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows["selection"] == ["n"]
    assert rows["longest"] == [str(TOP_BUDGET)]
    assert rows["random_few"] == ["4"]
    assert "(2 rows)" in result.output


def test_query_truncates_wide_cells(ran: dict) -> None:
    result = invoke("query", "SELECT repeat('x', 100) AS wide", "--db", ran["db"], "--max-width", "10")
    assert result.exit_code == 0, result.output
    assert "x" * 9 + "…" in result.output
    assert "x" * 10 not in result.output


def test_query_json(ran: dict) -> None:
    rows = query_json(ran, "SELECT selection, count(*) AS n FROM selections GROUP BY 1 ORDER BY 1")
    assert rows == [{"selection": "longest", "n": TOP_BUDGET}, {"selection": "random_few", "n": 4}]


def test_query_csv(ran: dict) -> None:
    result = invoke(
        "query",
        "SELECT rank, score FROM selections WHERE selection = 'longest' ORDER BY rank",
        "--db",
        ran["db"],
        "--format",
        "csv",
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0] == ["rank", "score"]
    assert [(int(r), float(s)) for r, s in rows[1:]] == [(i + 1, float(30 - i)) for i in range(TOP_BUDGET)]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM samples",
        "UPDATE samples SET active = false",
        "DROP TABLE selections",
    ],
)
def test_query_refuses_writes(ran: dict, statement: str) -> None:
    before = query_json(
        ran,
        "SELECT (SELECT count(*) FROM samples WHERE active) AS samples, (SELECT count(*) FROM selections) AS members",
    )
    result = invoke("query", statement, "--db", ran["db"])
    assert result.exit_code != 0
    assert "`curation query` is read-only" in result.output
    assert (
        query_json(
            ran,
            "SELECT (SELECT count(*) FROM samples WHERE active) AS samples, "
            "(SELECT count(*) FROM selections) AS members",
        )
        == before
    )
    assert before == [{"samples": N_RECORDS, "members": TOP_BUDGET + 4}]


def test_query_bad_sql_is_a_clean_error(ran: dict) -> None:
    result = invoke("query", "SELECT * FROM no_such_table", "--db", ran["db"])
    assert result.exit_code != 0
    assert "no_such_table" in result.output
    assert "Traceback" not in result.output


def test_query_without_a_db_file_says_run_first(tmp_path: Path) -> None:
    result = invoke("query", "SELECT 1", "--db", tmp_path / "none.duckdb")
    assert result.exit_code != 0
    assert "run the pipeline first" in result.output
    assert not (tmp_path / "none.duckdb").exists()


# ---- export ------------------------------------------------------------------------------------


def test_export_jsonl_writes_original_records_in_rank_order(ran: dict, tmp_path: Path) -> None:
    out = tmp_path / "longest.jsonl"
    result = invoke("export", "longest", "--pipeline", ran["yaml"], "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {TOP_BUDGET} samples of 'longest'" in result.output
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    # record i has i + 1 output words: the longest answers are the last records, longest first
    assert exported == [ran["records"][i] for i in range(29, 29 - TOP_BUDGET, -1)]
    assert all("id" in record for record in exported)  # fields outside alpaca are kept


def test_export_jsonl_of_random_selection_follows_its_ranks(ran: dict, tmp_path: Path) -> None:
    out = tmp_path / "random.jsonl"
    assert invoke("export", "random_few", "--db", ran["db"], "--out", out).exit_code == 0
    ranked = query_json(
        ran,
        "SELECT s.raw_record FROM selections m JOIN samples s USING (sample_id) "
        "WHERE m.selection = 'random_few' ORDER BY m.rank",
    )
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported == [json.loads(r["raw_record"]) for r in ranked]
    assert len(exported) == 4 and all(record in ran["records"] for record in exported)


def test_export_all_samples(ran: dict, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    assert invoke("export", "samples", "--db", ran["db"], "--out", out).exit_code == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(exported, key=lambda r: r["id"]) == ran["records"]


def test_export_parquet_has_normalised_columns(ran: dict, tmp_path: Path) -> None:
    out = tmp_path / "longest.parquet"
    result = invoke("export", "longest", "--format", "parquet", "--db", ran["db"], "--out", out)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert {
        "sample_id",
        "source",
        "format",
        "instruction",
        "input",
        "output",
        "messages",
        "n_turns",
        "raw_record",
        "rank",
        "score",
    } <= set(table.column_names)
    rows = table.to_pylist()
    expected = [ran["records"][i] for i in range(29, 29 - TOP_BUDGET, -1)]
    assert [r["rank"] for r in rows] == list(range(1, TOP_BUDGET + 1))
    assert [r["output"] for r in rows] == [e["output"] for e in expected]
    assert [r["instruction"] for r in rows] == [e["instruction"] for e in expected]
    assert [r["input"] for r in rows] == [e["input"] for e in expected]
    assert {r["source"] for r in rows} == {"alpaca"} and {r["format"] for r in rows} == {"alpaca"}
    assert all(r["n_turns"] == 1 for r in rows)
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in rows)
    assert [json.loads(r["raw_record"]) for r in rows] == expected
    assert [r["score"] for r in rows] == [float(30 - i) for i in range(TOP_BUDGET)]


def test_export_hf_is_loadable(ran: dict, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "longest_hf"
    result = invoke("export", "longest", "--format", "hf", "--db", ran["db"], "--out", out)
    assert result.exit_code == 0, result.output
    dataset = datasets.load_from_disk(str(out))
    assert len(dataset) == TOP_BUDGET
    assert {"instruction", "output", "messages", "rank"} <= set(dataset.column_names)
    assert dataset["rank"] == list(range(1, TOP_BUDGET + 1))
    assert dataset[0]["output"] == ran["records"][29]["output"]


def test_export_overwrites_an_existing_file_only_with_force(ran: dict, tmp_path: Path) -> None:
    """A file the export did not write stays unless --force (more cases: tests/test_export_safety.py)."""
    out = tmp_path / "longest.jsonl"
    out.write_text("stale\n" * 100)
    refused = invoke("export", "longest", "--db", ran["db"], "--out", out)
    assert refused.exit_code != 0 and "--force" in refused.output
    assert out.read_text() == "stale\n" * 100
    assert invoke("export", "longest", "--db", ran["db"], "--out", out, "--force").exit_code == 0
    assert len(out.read_text().splitlines()) == TOP_BUDGET


def test_export_unknown_selection_names_the_known_ones(ran: dict, tmp_path: Path) -> None:
    out = tmp_path / "nope.jsonl"
    result = invoke("export", "nope", "--pipeline", ran["yaml"], "--out", out)
    assert result.exit_code != 0
    assert "no selection named 'nope'" in result.output
    assert "known: samples, longest, random_few" in result.output
    assert not out.exists()


# ---- check and invalid pipelines ---------------------------------------------------------------


def test_check_validates(ran: dict) -> None:
    result = invoke("check", ran["yaml"])
    assert result.exit_code == 0, result.output
    assert f"ok: pipeline 'tiny': 1 sources, 1 stages, 2 selections, 1 exports; DuckDB {ran['db']}" in result.output


def test_check_missing_file(tmp_path: Path) -> None:
    result = invoke("check", tmp_path / "nope.yaml")
    assert result.exit_code != 0
    assert "pipeline file not found" in result.output


# (YAML text, needles of the acceptable error lines, message). Errors inside a stage/selection entry
# may point at the entry's first line (see the union line bug in tests/components/test_pipeline_yaml.py).
INVALID = {
    "bad_reference": (
        PIPELINE_TEXT.replace("stage: lengths", "stage: nowhere"),
        ["stage: nowhere"],
        "no stage or selection named 'nowhere'",
    ),
    "missing_source": (
        PIPELINE_TEXT.replace("path: data/alpaca.jsonl", "path: data/gone.jsonl"),
        ["path: data/gone.jsonl"],
        "source file not found",
    ),
    "bad_type": (
        PIPELINE_TEXT.replace("budget: 4", "budget: four"),
        ["- name: random_few", "budget: four"],
        "valid integer",
    ),
    "unknown_stage_kind": (
        PIPELINE_TEXT.replace("kind: text_stats", "kind: word_vectors"),
        ["- name: lengths", "kind: word_vectors"],
        "'word_vectors'",
    ),
}


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize(("text", "needles", "message"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_pipeline_exits_nonzero_with_yaml_line(
    tmp_path: Path, command: str, text: str, needles: list[str], message: str
) -> None:
    yaml_file = write_pipeline(tmp_path / "pipe", text)
    result = invoke(command, yaml_file)
    assert result.exit_code != 0
    assert f"invalid pipeline {yaml_file}" in result.output
    lines = [int(n) for n in re.findall(rf"{re.escape(str(yaml_file))}:(\d+)", result.output)]
    assert lines and set(lines) <= {line_of(text, needle) for needle in needles}, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "pipe" / "tiny.duckdb").exists()


def test_run_failure_exits_nonzero(tmp_path: Path) -> None:
    """A pipeline that loads but cannot ingest: every record is rejected."""
    yaml_file = write_pipeline(tmp_path / "pipe", valid_pipeline_yaml(), records=3)
    (tmp_path / "pipe" / "data" / "alpaca.jsonl").write_text('{"prompt": "x"}\n' * 3)
    result = invoke("run", yaml_file)
    assert result.exit_code != 0
    assert "run failed" in result.output
    assert "3 of 3 records rejected" in result.output


def test_records_helper_is_distinct() -> None:
    """The fixture data: distinct records with strictly increasing output lengths."""
    records = alpaca_records(N_RECORDS)
    assert len({json.dumps(r, sort_keys=True) for r in records}) == N_RECORDS
    assert [len(r["output"].split()) for r in records] == list(range(1, N_RECORDS + 1))


def test_query_reads_sql_from_a_file_starting_with_a_comment(ran: dict, tmp_path: Path) -> None:
    query_file = tmp_path / "q.sql"
    query_file.write_text(
        "-- selections and their sizes\nSELECT selection, count(*) AS n FROM selections GROUP BY 1;\n"
    )
    result = invoke("query", "--file", str(query_file), "--db", ran["db"])
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)["random_few"] == ["4"]
    neither = invoke("query", "--db", ran["db"])
    assert neither.exit_code != 0 and "--file" in neither.output


# ---- errors: the cause last, in one line; tracebacks only with --verbose -------------------------

BAD_CSV = {  # file content, what the last line must also name
    "unterminated_quote": ('instruction,input,output\n"Say hi,,Hi.\nAdd 1 and 1.,,2\n', "EOF inside string"),
    "empty_file": ("", "empty"),
    "whitespace_only": ("  \n\n\t \n", ""),
}


def _bad_csv_pipeline(folder: Path, content: str) -> tuple[Path, Path]:
    yaml_file = write_pipeline(folder, valid_pipeline_yaml(source_path="data/bad.csv"), records=3)
    bad = folder / "data" / "bad.csv"
    bad.write_text(content)
    return yaml_file, bad


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_run_failure_names_the_cause_last_without_traceback(tmp_path: Path, case: str) -> None:
    content, needle = BAD_CSV[case]
    yaml_file, bad = _bad_csv_pipeline(tmp_path / "pipe", content)
    result = invoke("run", yaml_file)
    assert result.exit_code != 0
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: run failed at tiny/alpaca: "), last
    assert str(bad) in last and "source 'alpaca'" in last and needle in last, last
    assert "Traceback" not in result.output and "Stack Trace" not in result.output
    assert "--verbose" in result.output  # where the traceback is
    assert len(result.output.splitlines()) < 30, result.output


def test_run_failure_with_verbose_shows_the_traceback(tmp_path: Path) -> None:
    yaml_file, bad = _bad_csv_pipeline(tmp_path / "pipe", BAD_CSV["unterminated_quote"][0])
    for args in (["run", yaml_file, "--verbose"], ["--verbose", "run", yaml_file]):
        result = invoke(*args)
        assert result.exit_code != 0
        assert "Stack Trace" in result.output and 'File "' in result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("Error: run failed at tiny/alpaca: ") and "EOF inside string" in last, last


def test_invalid_yaml_syntax_is_one_line_with_its_position(tmp_path: Path) -> None:
    yaml_file = tmp_path / "defs.yaml"
    yaml_file.write_text("type: curation_assets.CurationPipeline\nattributes:\n  name: [unclosed\n")
    for command in ("check", "run"):
        result = invoke(command, yaml_file)
        assert result.exit_code != 0
        assert result.output.strip().splitlines() == [
            f"Error: {yaml_file}:4:1: not valid YAML: while parsing a flow sequence expected ',' or ']', "
            f"but got '<stream end>'"
        ]


def test_unforeseen_errors_end_in_one_line_unless_verbose(tmp_path: Path) -> None:
    """The console script (a real process): an exception no command expects is named in the last line."""
    import os
    import subprocess

    db = tmp_path / "not_a_db.duckdb"
    db.write_text("this is not a DuckDB file\n")
    curation = Path(sys.executable).parent / "curation"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    plain = subprocess.run(
        [str(curation), "report", "x", "--db", str(db), "--out", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert plain.returncode == 1
    lines = (plain.stdout + plain.stderr).strip().splitlines()
    assert "Traceback" not in plain.stderr and len(lines) <= 3, plain.stderr
    assert lines[-1].startswith("Error: ") and str(db) in lines[-1], lines
    verbose = subprocess.run(
        [str(curation), "--verbose", "report", "x", "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == lines[-1]


def test_verbose_does_not_outlive_its_invocation(tmp_path: Path) -> None:
    yaml_file, _ = _bad_csv_pipeline(tmp_path / "pipe", "")
    assert "Stack Trace" in invoke("--verbose", "run", yaml_file).output
    assert "Stack Trace" not in invoke("run", yaml_file).output
