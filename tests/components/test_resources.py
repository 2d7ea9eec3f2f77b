"""`CurationStore` / `LLMEndpoint` resources: defined once in a `resources.py` defs module, named by
pipeline YAMLs (`store: {resource: ...}`, `llm: {resource: ...}`), per-stage `llm:` keys override;
loaded by `dg check defs` in a dg project and by `curation run`'s loader, materialised with
`dg.materialize`; the API key only ever as an `EnvVar` name."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

from curation_assets.components.resources import CurationStore
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.llm.endpoint import LLMEndpointSpec
from curation_assets.stages.core.registry import pipeline_config_hashes
from curation_assets.store import DuckDBStore
from tests.support.dg import bare_env, cli_output, run_cli, write_dg_project
from tests.support.pipelines import pipeline_document

RECORDS = [
    {"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{i} plus {i} is {2 * i}."} for i in range(4)
]


def resources_module(
    store_path: str = ".curation/{pipeline}.duckdb",
    base_url: str = "http://127.0.0.1:8765/v1",
    api_key: str = 'dg.EnvVar("JUDGE_API_KEY")',
) -> str:
    return textwrap.dedent(f"""\
        import dagster as dg

        from curation_assets.components import CurationStore, LLMEndpoint


        @dg.definitions
        def resources() -> dg.Definitions:
            return dg.Definitions(resources={{
                "curation_store": CurationStore(path={store_path!r}),
                "judge_llm": LLMEndpoint(base_url={base_url!r}, model="smollm2-135m-instruct", api_key={api_key}),
            }})
        """)


def pipeline(stages: list[dict], **attributes) -> dict:
    return pipeline_document(
        "shared", stages, store={"resource": "curation_store"}, llm={"resource": "judge_llm"}, **attributes
    )


def write(folder: Path, document: dict, resources: str | None = None) -> Path:
    """A project folder (pyproject.toml marks the root) with the pipeline in pipelines/shared/."""
    (folder / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    pipeline_dir = folder / "pipelines" / "shared"
    pipeline_dir.mkdir(parents=True, exist_ok=True)
    if resources is not None:
        (folder / "pipelines" / "resources.py").write_text(resources)
    (pipeline_dir / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    path = pipeline_dir / "defs.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


JUDGE = {"name": "judge", "kind": "alpagasus"}


def test_resources_give_the_store_path_and_the_endpoint(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JUDGE_API_KEY", "sk-test-not-a-real-key-1234567890")
    component = load_pipeline_file(write(tmp_path, pipeline([dict(JUDGE)]), resources_module()))
    assert component.spec.duckdb_path == str(tmp_path / ".curation" / "shared.duckdb")
    endpoint = component.spec.stages[0].llm
    assert (endpoint.base_url, endpoint.model, endpoint.api_key_env, endpoint.resource) == (
        "http://127.0.0.1:8765/v1",
        "smollm2-135m-instruct",
        "JUDGE_API_KEY",
        "judge_llm",
    )
    assert endpoint.api_key("judge") == "sk-test-not-a-real-key-1234567890"  # read at run time only

    definitions = pipeline_definitions(component)
    assert isinstance(definitions.resources["curation_store"], CurationStore)
    by_key = {a.key.to_user_string(): a for a in definitions.assets if isinstance(a, dg.AssetsDefinition)}
    assert by_key["shared/judge"].required_resource_keys - {"io_manager"} == {"curation_store", "judge_llm"}
    assert by_key["shared/pool"].required_resource_keys - {"io_manager"} == {"curation_store"}


def test_stage_keys_override_the_resource_and_hashes_follow_the_model(tmp_path) -> None:
    stages = [
        dict(JUDGE),
        {"name": "judge_fast", "kind": "alpagasus", "llm": {"max_concurrency": 9}},
        {"name": "judge_big", "kind": "alpagasus", "llm": {"resource": "judge_llm", "model": "big-model"}},
        {"name": "judge_elsewhere", "kind": "alpagasus", "llm": {"base_url": "https://other.example/v1"}},
    ]
    component = load_pipeline_file(write(tmp_path, pipeline(stages), resources_module()))
    judge, fast, big, elsewhere = component.spec.stages
    assert fast.llm.max_concurrency == 9 and fast.llm.model == judge.llm.model
    assert big.llm.model == "big-model" and big.llm.api_key_env == "JUDGE_API_KEY"
    # another server never gets the resource's key
    assert elsewhere.llm.base_url == "https://other.example/v1" and elsewhere.llm.api_key_env is None

    hashes = component.stage_hashes
    explicit = judge.model_copy(update={"llm": LLMEndpointSpec(model="smollm2-135m-instruct")})
    assert hashes["judge"] == pipeline_config_hashes([explicit])["judge"]  # where the model came from: no matter
    assert hashes["judge_fast"] == pipeline_config_hashes([fast.model_copy(update={"name": "judge"})])["judge"]
    assert (
        hashes["judge_big"]
        != pipeline_config_hashes([big.model_copy(update={"llm": LLMEndpointSpec(model="smollm2-135m-instruct")})])[
            "judge_big"
        ]
    )


def test_literal_api_key_is_refused_without_repeating_it(tmp_path) -> None:
    key = "sk-proj-AbCdEf0123456789GhIjKl"
    path = write(tmp_path, pipeline([dict(JUDGE)]), resources_module(api_key=repr(key)))
    with pytest.raises(Exception) as err:
        load_pipeline_file(path)
    message = str(err.value)
    assert "dg.EnvVar" in message and f"{path}:" in message
    assert key not in message


def test_unknown_resource_and_missing_store_are_reported_at_their_yaml_line(tmp_path) -> None:
    document = pipeline([dict(JUDGE)])
    document["attributes"]["store"] = {"resource": "no_such_store"}
    path = write(tmp_path, document, resources_module())
    with pytest.raises(Exception) as err:
        load_pipeline_file(path)
    line = yaml.safe_dump(document, sort_keys=False).splitlines().index("    resource: no_such_store") + 1
    assert f"{path}:{line}" in str(err.value)
    assert "no CurationStore resource named 'no_such_store'" in str(err.value)
    assert "known: curation_store" in str(err.value)

    document["attributes"].pop("store")
    with pytest.raises(Exception, match="set `duckdb_path`"):
        load_pipeline_file(write(tmp_path, document, resources_module()))


def test_duckdb_path_overrides_the_store_resource(tmp_path) -> None:
    document = pipeline([{"name": "lengths", "kind": "text_stats"}], duckdb_path="own.duckdb")
    component = load_pipeline_file(write(tmp_path, document, resources_module()))
    assert component.store.path == tmp_path / "pipelines" / "shared" / "own.duckdb"
    assert component.resource_keys_used() == set()  # nothing left to bind


def test_resources_materialize_through_dagster(tmp_path) -> None:
    """Text statistics with the store from the resource: dg.materialize with the definitions'
    resources writes the DuckDB file the CurationStore names (one per pipeline)."""
    document = pipeline([{"name": "lengths", "kind": "text_stats"}])
    del document["attributes"]["llm"]
    component = load_pipeline_file(write(tmp_path, document, resources_module(store_path="db/{pipeline}.duckdb")))
    definitions = pipeline_definitions(component)
    result = dg.materialize(
        [*definitions.assets, *(definitions.asset_checks or [])], resources=definitions.resources, raise_on_error=True
    )
    assert all(c.passed for c in result.get_asset_check_evaluations())
    with DuckDBStore(tmp_path / "db" / "shared.duckdb").reader(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM lengths").fetchone()[0] == len(RECORDS)


def test_dg_check_defs_loads_resources_of_a_dg_project(tmp_path) -> None:
    """In a dg project the resources come from a `resources.py` defs module that dg itself loads."""
    defs = write_dg_project(tmp_path, "resproj")
    (defs / "shared").mkdir()
    (defs / "resources.py").write_text(resources_module())
    (defs / "shared" / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    document = pipeline([dict(JUDGE), {"name": "judge_big", "kind": "alpagasus", "llm": {"model": "big-model"}}])
    (defs / "shared" / "defs.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    env = bare_env()
    env.pop("JUDGE_API_KEY", None)  # loading needs only the variable's name
    check = run_cli(["dg", "check", "defs"], tmp_path, env)
    assert check.returncode == 0, cli_output(check)
    assert "All definitions loaded successfully" in cli_output(check)

    listing = run_cli(["dg", "list", "defs", "--json"], tmp_path, env)
    assert listing.returncode == 0, cli_output(listing)
    listed = json.loads(listing.stdout)
    assert {"curation_store", "judge_llm"} <= {r["name"] for r in listed.get("resources", [])}


@pytest.mark.e2e
def test_judge_through_a_resource_reports_openai_usage_and_never_stores_the_key(
    tmp_path, llm_server, monkeypatch
) -> None:
    key = "sk-test-secret-value-0123456789abcdef"
    monkeypatch.setenv("JUDGE_API_KEY", key)  # llama.cpp ignores it; loopback http may carry it
    stage = {
        "name": "judge",
        "kind": "alpagasus",
        "max_tokens": 16,
        "parse_retries": 0,
        "structured_output": "llama_cpp",
        "llm": {"max_concurrency": 2},
    }
    path = write(tmp_path, pipeline([stage]), resources_module(base_url=llm_server.base_url))
    component = load_pipeline_file(path)
    definitions = pipeline_definitions(component)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [*definitions.assets, *(definitions.asset_checks or [])],
        resources=definitions.resources,
        instance=instance,
        raise_on_error=True,
    )
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("shared__judge")[0].metadata.items()}
    with DuckDBStore(tmp_path / ".curation" / "shared.duckdb").reader(read_only=True) as con:
        stats = json.loads(con.execute("SELECT stats FROM stage_runs WHERE stage = 'judge'").fetchone()[0])
        sent = con.execute("SELECT count(*) FROM llm_cache").fetchone()[0]
        stored = json.dumps(con.execute("SELECT * FROM stage_runs").fetchall(), default=str)
    model = "smollm2-135m-instruct"
    # Dagster's OpenAI integration's keys (dagster_openai.with_usage_metadata)
    assert metadata[f"openai.{model}.calls"] == stats[f"openai.{model}.calls"] == sent > 0
    assert metadata[f"openai.{model}.prompt_tokens"] > 0 and metadata[f"openai.{model}.completion_tokens"] > 0
    assert metadata[f"openai.{model}.total_tokens"] == (
        metadata[f"openai.{model}.prompt_tokens"] + metadata[f"openai.{model}.completion_tokens"]
    )
    assert "llm_prompt_tokens" not in metadata
    # the key is nowhere: not in metadata, stage_runs, the run's config or its event log
    logs = json.dumps([str(e) for e in instance.all_logs(result.run_id)])
    run = instance.get_run_by_id(result.run_id)
    for text in (str(metadata), stored, logs, json.dumps(run.run_config, default=str)):
        assert key not in text
