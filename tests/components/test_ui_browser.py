"""The Dagster UI in a real browser: `dagster dev` on 127.0.0.1 with a temporary DAGSTER_HOME,
headless Chromium clicks "Materialize all" on a small copy of the demo pipeline, waits for the run
to succeed, and reads row count, column schema and column lineage off an asset page. Screenshots
are saved under the test's tmp_path, in `screenshots/`."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.browser import body_text, buttons_named, chromium, click_button, click_text, dismiss_dialogs, wait_for
from tests.dagster_dev import DagsterDev, write_workspace

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[2] / "curation_assets" / "defs" / "demo" / "defs.yaml"
# the demo's light stages and selections; the LM and LLM-judged ones take minutes on a CPU
STAGES = ("lengths", "embed")
SELECTIONS = ("random_5pct", "longest_answers")
LIMIT = 50
RUN_TIMEOUT_S = 300


def small_demo(folder: Path, sentence_model: Path) -> Path:
    """The shipped demo on LIMIT records with a tiny sentence model, no automation (nothing runs
    unless the browser asks), its DuckDB file in `folder`."""
    attributes = yaml.safe_load(DEMO.read_text())["attributes"]
    stages = {s["name"]: s for s in attributes["stages"]}
    selections = {s["name"]: s for s in attributes["selections"]}
    missing = [n for n in STAGES if n not in stages] + [n for n in SELECTIONS if n not in selections]
    assert not missing, f"{DEMO}: the browser test expects stages/selections {missing}"
    for name in STAGES:
        if stages[name]["kind"] == "embedding":
            stages[name]["model"] = str(sentence_model)
    attributes.update(
        duckdb_path="demo.duckdb",
        exports=[],
        automation={"condition": "none", "observe_sources_cron": None},
        stages=[stages[n] for n in STAGES],
        selections=[selections[n] for n in SELECTIONS],
    )
    attributes["sources"][0]["limit"] = LIMIT
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "defs.yaml"
    path.write_text(yaml.safe_dump({"type": "curation_assets.CurationPipeline", "attributes": attributes}))
    return path


def run_status(dev: DagsterDev, run_id_prefix: str) -> tuple[str, str] | None:
    runs = dev.graphql("{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
    return next(((r["runId"], r["status"]) for r in runs if r["runId"].startswith(run_id_prefix)), None)


def test_materialize_all_in_chromium_then_asset_page_shows_rows_schema_lineage(
    tmp_path: Path, tiny_sentence_model: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    workspace = write_workspace(small_demo(tmp_path / "project", tiny_sentence_model))
    driver = chromium()  # fails here, before Dagster starts, when Chromium is not installed

    def shot(name: str) -> None:
        driver.save_screenshot(str(shots / f"{name}.png"))

    dev = None
    try:
        dev = DagsterDev(workspace)
        dev.wait_until_loaded()
        driver.get(f"{dev.url}/locations/{workspace.location}/asset-groups/demo")
        wait_for(lambda: buttons_named(driver, "Materialize all"), 60, "the Materialize all button")
        wait_for(
            lambda: all(name in body_text(driver) for name in (*STAGES, *SELECTIONS)),
            30,
            f"the asset graph showing {STAGES + SELECTIONS}",
        )
        dismiss_dialogs(driver)
        shot("01_asset_graph")

        click_button(driver, "Materialize all")
        launched = wait_for(
            lambda: re.search(r"Launched run ([0-9a-f]{8})", body_text(driver)), 30, "the 'Launched run' notice"
        )
        shot("02_run_launched")
        run_id, status = wait_for(lambda: run_status(dev, launched.group(1)), 30, "the launched run")

        def finished() -> str | None:
            _, state = run_status(dev, run_id)
            return state if state in ("SUCCESS", "FAILURE", "CANCELED") else None

        status = wait_for(finished, RUN_TIMEOUT_S, f"run {run_id}", poll_s=2.0)
        driver.get(f"{dev.url}/runs/{run_id}")
        wait_for(lambda: "Success" in body_text(driver) or "Failure" in body_text(driver), 60, "the run page")
        try:  # the event log loads after the header; the screenshot is nicer with it
            wait_for(lambda: "Loading run logs" not in body_text(driver), 20, "the run's event log")
        except TimeoutError:
            pass
        shot("03_run_page")
        assert status == "SUCCESS", f"run {run_id} ended {status}\n{dev.log_tail()}"
        assert "Success" in body_text(driver)

        with duckdb.connect(str(workspace.folder / "demo.duckdb"), read_only=True) as con:
            samples = con.execute("SELECT count(*) FROM samples WHERE active").fetchone()[0]
            lengths_rows = con.execute("SELECT count(*) FROM text_stats WHERE stage = 'lengths'").fetchone()[0]
            columns = [row[0] for row in con.execute("DESCRIBE text_stats").fetchall()]
        assert lengths_rows == samples > 0

        driver.get(f"{dev.url}/assets/demo/lengths")
        text = wait_for(
            lambda: (t := body_text(driver)) and "Row count" in t and "Columns" in t and "column_lineage" in t and t,
            60,
            "the asset page of demo/lengths",
        )
        shot("04_asset_page")
        row_count = re.search(r"Row count\s+([\d,]+)", text)
        assert row_count and int(row_count.group(1).replace(",", "")) == samples
        columns_part = text[text.index("Columns") :]
        assert all(column in columns_part for column in columns), (columns, columns_part[:2000])
        assert "non-nullable" in columns_part and "int" in columns_part

        if "[Show Markdown]" in text[text.index("column_lineage") :][:200]:
            click_text(driver, "[Show Markdown]")
        lineage = wait_for(
            lambda: "demo/sharegpt.output" in body_text(driver) and body_text(driver), 30, "the column lineage table"
        )
        driver.execute_script(
            "arguments[0].scrollIntoView({block: 'center'});",
            driver.find_element("xpath", "//*[normalize-space(text())='column_lineage']"),
        )
        shot("05_column_lineage")
        assert re.search(r"output_words\s*\|?\s*demo/sharegpt\.output", lineage), lineage[-3000:]
        print(f"screenshots: {shots}")
    finally:
        driver.quit()
        if dev is not None:
            dev.stop()
