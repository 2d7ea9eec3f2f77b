"""Selection reports: the Markdown in each selection asset's metadata and `curation report` HTML,
checked against numbers computed here straight from the DuckDB tables."""

from __future__ import annotations

import base64
import re
import struct
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from curation_assets.cli import main
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from tests.support.files import alpaca_records, write_jsonl

HOSTILE_INSTRUCTION = "Explain <script>alert('x')</script> **bold** [link](http://example.com) | a_b & `code`"
LONG_OUTPUT = " ".join(f"word{j}" for j in range(200)) + "\nsecond line <b>tag</b>"
PREVIEW_CHARS = 280

PIPELINE = textwrap.dedent("""\
    type: curation_assets.CurationPipeline
    attributes:
      name: rep
      duckdb_path: rep.duckdb
      automation: {condition: none, observe_sources_cron: null}
      sources:
        - {name: alpaca, path: data/alpaca.jsonl, format: alpaca}
      stages:
        - {name: lengths, kind: text_stats}
      selections:
        - {name: random_few, kind: random, budget: 4, seed: 0}
        - {name: longest, kind: top_score, stage: lengths, column: output_words, budget: 5}
        - {name: top_half, kind: top_score, stage: lengths, column: output_chars, fraction: 0.5}
        - {name: shortest_of_random, kind: top_score, stage: lengths, column: output_words, budget: 2,
           order: ascending, input_selection: random_few}
        - {name: none_kept, kind: top_score, stage: lengths, column: output_words, budget: 3, min_score: 100000}
    """)
SELECTIONS = ("random_few", "longest", "top_half", "shortest_of_random", "none_kept")


def records() -> list[dict]:
    return [*alpaca_records(30), {"instruction": HOSTILE_INSTRUCTION, "input": "", "output": LONG_OUTPUT}]


def write_pipeline(folder: Path) -> Path:
    write_jsonl(folder / "data" / "alpaca.jsonl", records())
    (folder / "defs.yaml").write_text(PIPELINE, encoding="utf-8")
    return folder / "defs.yaml"


def materialize(yaml_file: Path) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    component = load_pipeline_file(yaml_file)
    result = dg.materialize(list(pipeline_definitions(component).assets), instance=instance, raise_on_error=True)
    return result, instance


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    yaml_file = write_pipeline(tmp_path_factory.mktemp("reports"))
    result, _ = materialize(yaml_file)
    metadata = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    return {"yaml": yaml_file, "db": yaml_file.parent / "rep.duckdb", "metadata": metadata}


def report_md(ran: dict, selection: str) -> str:
    value = ran["metadata"][selection]["report"]
    assert isinstance(value, dg.MarkdownMetadataValue)
    return value.md_str


def query(ran: dict, sql: str, params: dict | None = None) -> list[tuple]:
    with duckdb.connect(str(ran["db"]), read_only=True) as con:
        return con.execute(sql, params or {}).fetchall()


def output_words(ran: dict, selection: str | None = None) -> np.ndarray:
    """`text_stats.output_words` of active samples (of one selection's members), from the raw table."""
    sql = (
        "SELECT t.output_words FROM text_stats t JOIN samples s USING (sample_id) "
        "WHERE s.active AND t.stage = 'lengths'"
    )
    if selection:
        sql += " AND t.sample_id IN (SELECT sample_id FROM selections WHERE selection = $sel)"
    return np.array([r[0] for r in query(ran, sql, {"sel": selection} if selection else None)], dtype=float)


def table_cells(markdown: str, first_cell: str) -> list[str]:
    """Cells (after the first) of the Markdown table row whose first cell is `first_cell`."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells[1:]
    raise AssertionError(f"no table row {first_cell!r} in:\n{markdown[:3000]}")


def png_images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)]


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_every_selection_asset_carries_a_markdown_report(ran: dict) -> None:
    for selection in SELECTIONS:
        assert report_md(ran, selection).startswith(f"## Selection `{selection}`")
    for stage in ("alpaca", "lengths"):
        assert "report" not in ran["metadata"][stage]


def test_report_states_size_pool_budget_and_config(ran: dict) -> None:
    md = report_md(ran, "longest")
    active = query(ran, "SELECT count(*) FROM samples WHERE active")[0][0]
    config_hash = query(ran, "SELECT DISTINCT config_hash FROM selections WHERE selection = 'longest'")[0][0]
    assert active == 31
    assert table_cells(md, "size") == ["5"]
    assert table_cells(md, "pool") == [f"{active} active samples"]
    assert table_cells(md, "budget") == ["5"]
    assert table_cells(md, "share of pool") == [f"{100 * 5 / active:.1f}%"]
    assert table_cells(md, "kind") == ["top\\_score"]
    assert table_cells(md, "config hash") == [config_hash]

    half = report_md(ran, "top_half")
    budget = query(ran, "SELECT CAST(stats->>'budget' AS INTEGER) FROM stage_runs WHERE stage = 'top_half'")[0][0]
    assert budget == round(0.5 * active) and table_cells(half, "size") == [str(budget)]
    assert table_cells(half, "budget") == [f"{budget} (fraction 0.5 of the pool)"]

    # the pool of a selection with input_selection is that selection's active members
    assert table_cells(report_md(ran, "shortest_of_random"), "pool") == ["4 active members of random\\_few"]


def test_score_table_means_and_medians_match_the_tables(ran: dict) -> None:
    for selection in ("longest", "random_few", "top_half"):
        md = report_md(ran, selection)
        pool, chosen = output_words(ran), output_words(ran, selection)
        pool_n, selected_n, pool_mean, selected_mean, pool_median, selected_median = table_cells(
            md, "`lengths.output_words`"
        )
        assert (int(pool_n), int(selected_n)) == (pool.size, chosen.size)
        for cell, expected in (
            (pool_mean, pool.mean()),
            (selected_mean, chosen.mean()),
            (pool_median, np.median(pool)),
            (selected_median, np.median(chosen)),
        ):
            assert float(cell) == pytest.approx(expected, rel=1e-3), (selection, cell, expected)
    # the selection's own score exists only for members: no pool figures
    scores = np.array([r[0] for r in query(ran, "SELECT score FROM selections WHERE selection = 'longest'")])
    own = table_cells(report_md(ran, "longest"), "`selection score`")
    assert own[0] == "—" and int(own[1]) == 5 and float(own[3]) == pytest.approx(scores.mean(), rel=1e-3)
    assert "`selection score`" not in report_md(ran, "random_few")  # random members have no score


def test_report_embeds_one_small_png_figure(ran: dict) -> None:
    md = report_md(ran, "longest")
    images = png_images(md)
    assert len(images) == 1
    width, height = png_size(images[0])
    assert 200 <= width <= 1000 and 100 <= height <= 800
    assert len(images[0]) < 80_000
    assert len(md) < 150_000


def test_examples_are_escaped_clipped_and_ordered(ran: dict) -> None:
    md = report_md(ran, "longest")  # the hostile record has the longest output: rank 1
    assert "<script" not in md and "<b>" not in md
    assert "&lt;script&gt;" in md and "\\*\\*bold\\*\\*" in md and "\\[link\\]" in md and "a\\_b" in md
    assert "word199" not in md and "…" in md  # clipped
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    assert "<script" not in rendered and "&lt;script&gt;" in rendered
    assert "<strong>bold</strong>" not in rendered and '<a href="http://example.com"' not in rendered
    assert rendered.count('<img src="data:image/png;base64,') == 1
    assert "<table>" in rendered

    top_half = report_md(ran, "top_half")
    members = query(ran, "SELECT rank, score FROM selections WHERE selection = 'top_half' ORDER BY score DESC, rank")
    ranks = [int(r) for r in re.findall(r"^- \*\*rank (\d+)\*\*", top_half, flags=re.M)]
    assert "### Highest-scoring 5 selected" in top_half and "### Lowest-scoring 5 selected" in top_half
    by_score_desc = [r for r, _ in members]
    lowest = [r for r, _ in sorted(members, key=lambda m: (m[1], -m[0]))][:5]
    assert ranks == by_score_desc[:5] + lowest

    assert "### All 4 selected, by rank" in report_md(ran, "random_few")


def test_selection_that_kept_nothing_still_gets_a_report(ran: dict) -> None:
    md = report_md(ran, "none_kept")
    assert table_cells(md, "size") == ["0"]
    assert "No members." in md
    assert table_cells(md, "`lengths.output_words`")[:2] == ["31", "0"]


def test_cli_writes_a_standalone_html_report(ran: dict, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "longest.html"
    result = CliRunner().invoke(
        main, ["report", "longest", "--pipeline", str(ran["yaml"]), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    images = png_images(html)
    assert images and all(png_size(png)[0] > 0 for png in images)
    pool = output_words(ran)
    assert f'<td class="num">{int(pool.size)}</td>' in html
    assert re.search(r"<th>budget</th><td>5</td>", html)

    md_out = tmp_path / "random_few.md"
    result = CliRunner().invoke(
        main,
        ["report", "random_few", "--db", str(ran["db"]), "--format", "md", "--out", str(md_out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert md_out.read_text(encoding="utf-8").startswith("## Selection `random_few`")


def test_cli_unknown_selection_lists_the_known_ones(ran: dict, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", "nope", "--db", str(ran["db"]), "--out", str(tmp_path / "x.html")])
    assert result.exit_code != 0
    assert "no selection named 'nope'" in result.output
    assert "known: longest, none_kept, random_few, shortest_of_random, top_half" in result.output
    assert not (tmp_path / "x.html").exists()
    assert "lengths" not in result.output.split("known:")[1]  # stages are not selections


def test_a_failing_report_logs_a_warning_and_the_selection_still_succeeds(tmp_path: Path, monkeypatch) -> None:
    import curation_assets.reports as reports

    def broken(con, selection):
        raise RuntimeError("plotting exploded")

    monkeypatch.setattr(reports, "selection_report_markdown", broken)
    result, instance = materialize(write_pipeline(tmp_path))
    assert result.success
    metadata = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert "report" not in metadata["longest"] and metadata["longest"]["dagster/row_count"].value == 5
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == 30]  # logging.WARNING
    assert any("longest: no selection report (RuntimeError: plotting exploded)" in w for w in warnings)
