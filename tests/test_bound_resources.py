"""A run whose bound Dagster resources differ from those the pipeline YAML was loaded with stops before
writing anything (its config hashes and store were derived from the loaded resources): real
`dg.materialize` runs of a pipeline whose store and judge come from a `resources.py` defs module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from curation_assets.components.resources import (
    CurationStore,
    LLMEndpoint,
    ResourceMismatch,
    check_bound_resources,
    resource_summary,
)
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.store import DuckDBStore
from tests.components.test_resources import RECORDS, pipeline, resources_module, write

DEAD = "http://127.0.0.1:9/v1"  # nothing listens: a request sent would fail, not be answered


def _errors(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    """(class name, message) of every step failure and its causes."""
    found = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            found.append((error.cls_name, error.message))
            error = error.cause
    return found


def _materialize(definitions: dg.Definitions, resources: dict[str, Any]) -> dg.ExecuteInProcessResult:
    assets = [*(definitions.assets or []), *(definitions.asset_checks or [])]
    return dg.materialize(assets, resources=resources, raise_on_error=False)


def test_a_store_resource_other_than_the_loaded_one_stops_the_run_before_writing(tmp_path) -> None:
    document = pipeline([{"name": "lengths", "kind": "text_stats"}])
    del document["attributes"]["llm"]
    path = write(tmp_path, document, resources_module(store_path="db/{pipeline}.duckdb"))
    definitions = pipeline_definitions(load_pipeline_file(path))

    result = _materialize(definitions, {"curation_store": CurationStore(path="elsewhere/{pipeline}.duckdb")})
    assert not result.success
    [(name, message)] = [e for e in _errors(result) if e[0] == "ResourceMismatch"]
    assert "'curation_store'" in message and "shared__pool" in message
    assert (
        str(tmp_path / "db" / "shared.duckdb") in message and str(tmp_path / "elsewhere" / "shared.duckdb") in message
    )
    assert not (tmp_path / "db").exists() and not (tmp_path / "elsewhere").exists()  # nothing written anywhere

    result = _materialize(definitions, dict(definitions.resources))  # the loaded resources: the run goes through
    assert result.success
    with DuckDBStore(tmp_path / "db" / "shared.duckdb").reader(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM lengths").fetchone()[0] == len(RECORDS)


def test_an_endpoint_with_another_model_stops_the_llm_stage_before_any_request(tmp_path) -> None:
    stage = {"name": "judge", "kind": "alpagasus", "parse_retries": 0, "llm": {"max_retries": 0}}
    path = write(tmp_path, pipeline([stage]), resources_module(base_url=DEAD, api_key="None"))
    definitions = pipeline_definitions(load_pipeline_file(path))
    other = LLMEndpoint(base_url=DEAD, model="another-model")  # the config hash holds the loaded model

    result = _materialize(definitions, {**definitions.resources, "judge_llm": other})
    assert not result.success
    [(name, message)] = [e for e in _errors(result) if e[0] == "ResourceMismatch"]
    assert "'judge_llm' (model 'smollm2-135m-instruct' -> 'another-model')" in message and "shared__judge" in message
    assert result.asset_materializations_for_node("shared__pool")  # the ingest (same store) ran
    with DuckDBStore(tmp_path / ".curation" / "shared.duckdb").reader(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == len(RECORDS)
        assert con.execute("SELECT count(*) FROM stage_runs WHERE stage = 'judge'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM llm_cache").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM llm_failures").fetchone()[0] == 0  # nothing was sent


def test_the_message_masks_credentials_in_a_bound_url() -> None:
    loaded = LLMEndpoint(base_url=DEAD, model="m")
    bound = LLMEndpoint(base_url="http://user:hunter2-password@127.0.0.1:9/v1", model="m")
    summary = {"judge_llm": resource_summary(loaded, "p", Path("."))}
    with pytest.raises(
        ResourceMismatch, match=r"base_url 'http://127.0.0.1:9/v1' -> 'http://\*\*\*@127.0.0.1:9/v1'"
    ) as err:
        check_bound_resources({"judge_llm": bound}, summary, "p", Path("."), "p__judge")
    assert "hunter2" not in str(err.value)
