"""Pipeline YAML: errors name the problem and the YAML line; a valid pipeline builds the expected assets.

Every error case is loaded two ways: through Dagster's own component loading (a defs
folder sandbox, as `dg check defs` does) and through `load_pipeline_file` (the CLI).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.core.component_tree import ComponentTreeException
from dagster.components.testing import create_defs_folder_sandbox

from curation_assets.components.pipeline import CurationPipeline
from curation_assets.components.standalone import PipelineFileError, load_pipeline_file, pipeline_definitions
from curation_assets.sources.ingest import resolve_source_location
from tests.support.files import alpaca_records, line_of, valid_pipeline_yaml, write_jsonl, write_pipeline

K = dg.AssetKey
BASE = valid_pipeline_yaml()


# ---- error cases ------------------------------------------------------------------------------
# Each case: (function making the YAML text, (needle, occurrence) of the line the error must point at, message fragments).


def _replace(old: str, new: str) -> Callable[[], str]:
    def make() -> str:
        assert old in BASE, old
        return BASE.replace(old, new, 1)

    return make


ERROR_CASES = {
    "source_path_missing": (
        _replace("path: data/alpaca.jsonl", "path: data/missing.jsonl"),
        ("path: data/missing.jsonl", 1),
        ["sources.0.path", "source file not found", "missing.jsonl"],
    ),
    "top_score_unknown_stage": (
        _replace("stage: lengths", "stage: lenghts"),
        ("stage: lenghts", 1),
        ["selections.1.stage", "no stage or selection named 'lenghts'", "known: lengths, longest, random_few"],
    ),
    "top_score_stage_is_selection": (
        _replace("stage: lengths", "stage: random_few"),
        ("stage: random_few", 1),
        ["selections.1.stage", "'random_few' must be a stage"],
    ),
    "top_score_unknown_column": (
        _replace("column: output_words", "column: output_tokens"),
        ("column: output_tokens", 1),
        ["selections.1.column", "has no column 'output_tokens'", "output_words"],
    ),
    "duplicate_name": (
        _replace("name: random_few", "name: lengths"),
        ("name: lengths", 2),
        ["selections.0.name", "name 'lengths' is already used at stages.0.name"],
    ),
    "reserved_name": (
        _replace("name: random_few", "name: samples"),
        ("name: samples", 1),
        ["selections.0.name", "'samples' is a reserved table name"],
    ),
    "source_path_and_package": (
        _replace("format: alpaca", "format: alpaca\n      package: sharegpt"),
        ("- name: alpaca", 1),
        ["sources.0", "give exactly one of path, package, hf_dataset", "'path', 'package'"],
    ),
    "custom_format_without_fields": (
        _replace("format: alpaca", "format: custom"),
        ("- name: alpaca", 1),
        ["sources.0", "format 'custom' needs `fields`"],
    ),
    "export_unknown_selection": (
        lambda: valid_pipeline_yaml(exports="- selection: best_ones\n  path: out.jsonl\n"),
        ("selection: best_ones", 1),
        ["exports.0.selection", "no selection named 'best_ones'", "known: samples, longest, random_few"],
    ),
    "prompt_file_missing": (
        _replace(
            "      kind: text_stats\n",
            "      kind: text_stats\n    - name: judge\n      kind: alpagasus\n"
            "      prompts:\n        alpagasus_user: prompts/nope.txt\n",
        ),
        ("prompts:", 1),
        ["stages.1.prompts", "prompt file not found", "nope.txt"],
    ),
    "prompt_name_unknown": (
        _replace(
            "      kind: text_stats\n",
            "      kind: text_stats\n    - name: judge\n      kind: alpagasus\n"
            "      prompts:\n        lift_quality_user: x.txt\n",
        ),
        ("prompts:", 1),
        ["stages.1.prompts", "alpagasus has no prompt 'lift_quality_user'", "alpagasus_system, alpagasus_user"],
    ),
    "lift_expand_reads_a_selection": (
        _replace(
            "      kind: text_stats\n",
            "      kind: text_stats\n    - name: grow\n      kind: lift_expand\n      input_selection: random_few\n",
        ),
        ("input_selection: random_few", 1),
        ["stages.1.input_selection", "cannot read another stage or selection"],
    ),
    "influence_distillation_reads_wrong_stages": (
        _replace(
            "      budget: 4\n",
            "      budget: 4\n    - name: infl\n      kind: influence_distillation\n"
            "      jvp: lengths\n      warmup: lengths\n      budget: 2\n"
            "      targets: [{name: t, path: data/alpaca.jsonl}]\n",
        ),
        ("jvp: lengths", 1),
        [
            "selections.1.jvp",
            "'lengths' is not a jvp_embeddings stage",
            "selections.1.warmup",
            "'lengths' is not a lora_warmup stage",
        ],
    ),
    "missing_required_key": (
        _replace("  duckdb_path: tiny.duckdb\n", ""),
        ("attributes:", 1),
        ["duckdb_path", "set `duckdb_path` (a DuckDB file) or `store: {resource: NAME}`"],
    ),
}

# Errors inside a stage or selection: each section is a union of kind specs, and the error
# must still point at the offending key's line, not the entry's first line.
UNION_ERROR_CASES = {
    "wrong_type_budget": (
        _replace("budget: 5", "budget: many"),
        ("budget: many", 1),
        ["selections.1.budget", "many", "integer"],
    ),
    "unknown_key_in_selection": (
        _replace("column: output_words", "column: output_words\n      budgett: 3"),
        ("budgett", 1),
        ["selections.1", "budgett", "Extra inputs are not permitted"],
    ),
    "unknown_key_in_stage": (
        _replace("kind: text_stats", "kind: text_stats\n      colour: blue"),
        ("colour: blue", 1),
        ["stages.0", "colour", "Extra inputs are not permitted"],
    ),
    "unknown_stage_kind": (
        _replace("kind: text_stats", "kind: text_statz"),
        ("kind: text_statz", 1),
        ["stages.0", "text_statz", "text_stats"],
    ),
    "unknown_selection_kind": (
        _replace("kind: random", "kind: shuffled"),
        ("kind: shuffled", 1),
        ["selections.0", "shuffled", "random", "top_score"],
    ),
    "api_key_given_instead_of_variable_name": (
        _replace(
            "      kind: text_stats\n",
            "      kind: text_stats\n    - name: judge\n      kind: alpagasus\n"
            "      llm:\n        api_key_env: sk-abc123\n",
        ),
        ("api_key_env", 1),
        ["stages.1.llm.api_key_env", "looks like an API key"],
    ),
    "wrong_type_seed": (_replace("seed: 0", "seed: [1, 2]"), ("seed: [1, 2]", 1), ["selections.0.seed", "integer"]),
}


def _params(cases: dict) -> list:
    return [pytest.param(*case, id=name) for name, case in cases.items()]


ALL_ERROR_PARAMS = _params(ERROR_CASES) + _params(UNION_ERROR_CASES)


def _assert_located(message: str, text: str, line: tuple[str, int], fragments: list[str]) -> None:
    expected = line_of(text, *line)
    assert re.search(rf"defs\.yaml:{expected}\b", message), f"expected defs.yaml:{expected} in:\n{message}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def _dagster_load_error(sandbox, text: str) -> BaseException:
    write_pipeline(sandbox.defs_folder_path / "pipe", text)
    with pytest.raises(ComponentTreeException) as info:
        with sandbox.build_component_tree() as tree:
            tree.build_defs()
    cause = info.value.__cause__
    assert cause is not None, "ComponentTreeException should chain the load error"
    assert "pipe" in str(info.value)  # the tree names the failing component
    return cause


@pytest.mark.parametrize(("make_text", "line", "fragments"), ALL_ERROR_PARAMS)
def test_error_through_dagster_loading(make_text, line, fragments) -> None:
    text = make_text()
    with create_defs_folder_sandbox() as sandbox:
        cause = _dagster_load_error(sandbox, text)
        message = str(cause)
        assert str(sandbox.defs_folder_path / "pipe" / "defs.yaml") in message
    _assert_located(message, text, line, fragments)


@pytest.mark.parametrize(("make_text", "line", "fragments"), ALL_ERROR_PARAMS)
def test_error_through_standalone_loader(tmp_path: Path, make_text, line, fragments) -> None:
    text = make_text()
    yaml_file = write_pipeline(tmp_path / "pipe", text)
    with pytest.raises(Exception) as info:
        load_pipeline_file(yaml_file)
    assert type(info.value).__name__ in ("ValidationError", "ResolutionException")
    message = str(info.value)
    assert str(yaml_file) in message
    _assert_located(message, text, line, fragments)


@pytest.mark.parametrize("loader", ["dagster", "standalone"])
@pytest.mark.parametrize(("make_text", "line", "fragments"), _params(UNION_ERROR_CASES))
def test_entry_errors_name_the_problem_and_the_entry(tmp_path: Path, loader, make_text, line, fragments) -> None:
    """The reported line lies within the offending entry, at or before the offending key."""
    text = make_text()
    if loader == "dagster":
        with create_defs_folder_sandbox() as sandbox:
            message = str(_dagster_load_error(sandbox, text))
    else:
        with pytest.raises(Exception) as info:
            load_pipeline_file(write_pipeline(tmp_path / "pipe", text))
        message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    reported = int(re.search(r"defs\.yaml:(\d+)", message).group(1))
    section, index = fragments[0].split(".")[:2]
    first_item = {"stages": 2, "selections": 3}[section]  # `- name:` lines: sources.0, stages.0, selections
    item_line = line_of(text, "- name:", occurrence=first_item + int(index))
    assert item_line <= reported <= line_of(text, *line)


def test_several_problems_are_all_reported_with_their_lines(tmp_path: Path) -> None:
    text = BASE.replace("stage: lengths", "stage: nowhere").replace("name: random_few", "name: samples")
    yaml_file = write_pipeline(tmp_path / "pipe", text)
    with pytest.raises(Exception) as info:
        load_pipeline_file(yaml_file)
    message = str(info.value)
    assert f"defs.yaml:{line_of(text, 'stage: nowhere')} " in message
    assert f"defs.yaml:{line_of(text, 'name: samples')} " in message
    assert "'nowhere'" in message and "reserved" in message


def test_standalone_rejects_missing_file_and_other_component_types(tmp_path: Path) -> None:
    with pytest.raises(PipelineFileError, match="pipeline file not found"):
        load_pipeline_file(tmp_path / "nope.yaml")
    other = tmp_path / "other.yaml"
    other.write_text("type: dagster.DefinitionsComponent\nattributes: {}\n")
    with pytest.raises(PipelineFileError, match="expected `type: curation_assets.CurationPipeline`"):
        load_pipeline_file(other)
    no_attributes = tmp_path / "bare.yaml"
    no_attributes.write_text("type: curation_assets.CurationPipeline\n")
    with pytest.raises(PipelineFileError, match="no `attributes:` block"):
        load_pipeline_file(no_attributes)


# ---- valid pipelines ---------------------------------------------------------------------------

VALID_TEXT = valid_pipeline_yaml(exports="- selection: longest\n  path: exports/longest.jsonl\n")
EXPECTED_MATERIALIZABLE = {K(["tiny", n]) for n in ("alpaca", "lengths", "random_few", "longest", "export_longest")}
RAW_KEY = K(["tiny", "raw", "alpaca"])


def _specs(defs: dg.Definitions) -> dict[dg.AssetKey, dg.AssetSpec]:
    return {spec.key: spec for spec in defs.resolve_all_asset_specs()}


@pytest.fixture(params=["dagster", "standalone"])
def loaded(request, tmp_path: Path) -> tuple[CurationPipeline, dg.Definitions, Path]:
    """(component, definitions, YAML folder) for VALID_TEXT, loaded either way."""
    if request.param == "standalone":
        yaml_file = write_pipeline(tmp_path / "tiny", VALID_TEXT)
        component = load_pipeline_file(yaml_file)
        yield component, pipeline_definitions(component), yaml_file.parent
        return
    with create_defs_folder_sandbox() as sandbox:
        yaml_file = write_pipeline(sandbox.defs_folder_path / "tiny", VALID_TEXT)
        with sandbox.build_component_tree() as tree:
            defs = tree.build_defs()
            [component] = tree.get_all_components(of_type=CurationPipeline)
            yield component, defs, yaml_file.parent


def test_valid_pipeline_asset_keys_and_group(loaded) -> None:
    component, defs, _ = loaded
    graph = defs.resolve_asset_graph()
    materializable = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    assert materializable == EXPECTED_MATERIALIZABLE
    assert RAW_KEY in graph.get_all_asset_keys()
    specs = _specs(defs)
    assert {specs[k].group_name for k in EXPECTED_MATERIALIZABLE} == {"tiny"}
    assert component.spec.name == "tiny"


def test_raw_source_asset_is_observable_in_pipeline_group(loaded) -> None:
    _, defs, folder = loaded
    graph = defs.resolve_asset_graph()
    assert K("observe_source") not in graph.get_all_asset_keys()
    raw = graph.get(RAW_KEY)
    assert raw.is_observable
    assert raw.group_name == "tiny"
    assert raw.metadata["location"] == str((folder / "data" / "alpaca.jsonl").resolve())


def test_valid_pipeline_kinds(loaded) -> None:
    _, defs, _ = loaded
    specs = _specs(defs)
    assert specs[K(["tiny", "alpaca"])].kinds == {"duckdb", "python"}
    assert specs[K(["tiny", "lengths"])].kinds == {"duckdb", "python", "pyarrow"}
    assert specs[K(["tiny", "random_few"])].kinds == {"duckdb", "python", "numpy"}
    assert specs[K(["tiny", "longest"])].kinds == {"duckdb", "python", "numpy"}
    assert specs[K(["tiny", "export_longest"])].kinds == {"duckdb", "jsonl"}


def test_valid_pipeline_deps(loaded) -> None:
    _, defs, _ = loaded
    deps = {key: {d.asset_key for d in spec.deps} for key, spec in _specs(defs).items()}
    source = K(["tiny", "alpaca"])
    assert deps[source] == {RAW_KEY}
    assert deps[K(["tiny", "lengths"])] == {source}
    assert deps[K(["tiny", "random_few"])] == {source}
    assert deps[K(["tiny", "longest"])] == {source, K(["tiny", "lengths"])}
    assert deps[K(["tiny", "export_longest"])] == {K(["tiny", "longest"])}


def test_valid_pipeline_checks(loaded) -> None:
    _, defs, _ = loaded
    checks = {(c.asset_key, c.name) for c in defs.resolve_asset_graph().asset_check_keys}
    assert (K(["tiny", "alpaca"]), "counts_balance") in checks
    assert (K(["tiny", "alpaca"]), "sample_ids_unique") in checks
    assert (K(["tiny", "lengths"]), "covers_active_samples") in checks
    assert (K(["tiny", "longest"]), "members_are_active") in checks


def test_relative_paths_resolve_against_the_yaml_folder(loaded, tmp_path: Path, monkeypatch) -> None:
    component, _, folder = loaded
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    assert component.base_dir == folder.resolve()
    assert component.store.path == folder.resolve() / "tiny.duckdb"
    location = resolve_source_location(component.spec.sources[0], component.base_dir)
    assert Path(location) == (folder / "data" / "alpaca.jsonl").resolve()


def test_relative_source_path_is_not_resolved_against_cwd(tmp_path: Path, monkeypatch) -> None:
    # The source exists relative to the working directory but not to the YAML file.
    write_jsonl(tmp_path / "data" / "alpaca.jsonl", alpaca_records(3))
    monkeypatch.chdir(tmp_path)
    yaml_file = tmp_path / "nested" / "defs.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(BASE)
    with pytest.raises(Exception, match="source file not found") as info:
        load_pipeline_file(yaml_file)
    assert str(tmp_path / "nested" / "data" / "alpaca.jsonl") in str(info.value)


def _code_versions(tmp_path: Path, name: str, text: str) -> dict[str, str]:
    component = load_pipeline_file(write_pipeline(tmp_path / name, text))
    return {
        spec.key.path[-1]: spec.code_version
        for spec in _specs(pipeline_definitions(component)).values()
        if spec.key.path[0] == "tiny" and len(spec.key.path) == 2
    }


def test_code_versions_follow_stage_config_not_description(tmp_path: Path) -> None:
    base = _code_versions(tmp_path, "base", valid_pipeline_yaml())
    assert all(base.get(n) for n in ("alpaca", "lengths", "random_few", "longest")), base

    budget = _code_versions(tmp_path, "budget", valid_pipeline_yaml(budget=6))
    assert budget["longest"] != base["longest"]
    assert {k: v for k, v in budget.items() if k != "longest"} == {k: v for k, v in base.items() if k != "longest"}

    seed = _code_versions(tmp_path, "seed", valid_pipeline_yaml(seed=7))
    assert seed["random_few"] != base["random_few"]
    assert seed["longest"] == base["longest"]

    described = _code_versions(tmp_path, "described", valid_pipeline_yaml(top_description="Longest answers first."))
    assert described == base

    # text_stats' batch_size does not change its numbers, so not its code version either
    batched = _code_versions(
        tmp_path, "batched", BASE.replace("kind: text_stats", "kind: text_stats\n      batch_size: 7")
    )
    assert batched == base


def test_code_versions_match_between_loaders(tmp_path: Path) -> None:
    standalone = _code_versions(tmp_path, "a", VALID_TEXT)
    with create_defs_folder_sandbox() as sandbox:
        write_pipeline(sandbox.defs_folder_path / "tiny", VALID_TEXT)
        with sandbox.build_all_defs() as defs:
            dagster = {
                s.key.path[-1]: s.code_version
                for s in defs.resolve_all_asset_specs()
                if s.key.path[0] == "tiny" and len(s.key.path) == 2
            }
    assert dagster == standalone


def test_description_reaches_the_asset(tmp_path: Path) -> None:
    component = load_pipeline_file(write_pipeline(tmp_path / "p", valid_pipeline_yaml(top_description="Best first.")))
    specs = _specs(pipeline_definitions(component))
    assert specs[K(["tiny", "longest"])].description == "Best first."
    assert specs[K(["tiny", "lengths"])].description  # the kind's summary by default


ENV_TEXT = BASE.replace(
    "duckdb_path: tiny.duckdb", 'duckdb_path: "{{ env.CURATION_TEST_DIR }}/db/tiny.duckdb"'
).replace("path: data/alpaca.jsonl", 'path: "{{ env.CURATION_TEST_DIR }}/src.jsonl"')


def test_env_templates_render_standalone(tmp_path: Path, monkeypatch) -> None:
    env_dir = tmp_path / "from_env"
    write_jsonl(env_dir / "src.jsonl", alpaca_records(3))
    monkeypatch.setenv("CURATION_TEST_DIR", str(env_dir))
    component = load_pipeline_file(write_pipeline(tmp_path / "p", ENV_TEXT))
    assert component.spec.duckdb_path == f"{env_dir}/db/tiny.duckdb"
    assert component.spec.sources[0].path == f"{env_dir}/src.jsonl"
    assert component.store.path == env_dir / "db" / "tiny.duckdb"


def test_env_templates_render_under_dagster(tmp_path: Path, monkeypatch) -> None:
    env_dir = tmp_path / "from_env"
    write_jsonl(env_dir / "src.jsonl", alpaca_records(3))
    monkeypatch.setenv("CURATION_TEST_DIR", str(env_dir))
    with create_defs_folder_sandbox() as sandbox:
        write_pipeline(sandbox.defs_folder_path / "p", ENV_TEXT)
        with sandbox.build_component_tree() as tree:
            tree.build_defs()
            [component] = tree.get_all_components(of_type=CurationPipeline)
    assert component.store.path == env_dir / "db" / "tiny.duckdb"
    assert component.spec.sources[0].path == f"{env_dir}/src.jsonl"


def test_env_template_for_missing_source_reports_rendered_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CURATION_TEST_DIR", str(tmp_path / "empty"))
    text = ENV_TEXT
    with pytest.raises(Exception) as info:
        load_pipeline_file(write_pipeline(tmp_path / "p", text))
    message = str(info.value)
    assert f"source file not found: {tmp_path / 'empty' / 'src.jsonl'}" in message
    assert f"defs.yaml:{line_of(text, 'src.jsonl')}" in message


def test_context_project_root_template(tmp_path: Path) -> None:
    text = BASE.replace("duckdb_path: tiny.duckdb", 'duckdb_path: "{{ context.project_root }}/.curation/tiny.duckdb"')
    # standalone: the nearest folder above the YAML holding a pyproject.toml
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    component = load_pipeline_file(write_pipeline(tmp_path / "defs" / "p", text))
    assert component.store.path == tmp_path / ".curation" / "tiny.duckdb"
    # under Dagster: the project root of the code location
    with create_defs_folder_sandbox() as sandbox:
        write_pipeline(sandbox.defs_folder_path / "p", text)
        with sandbox.build_component_tree() as tree:
            tree.build_defs()
            [component] = tree.get_all_components(of_type=CurationPipeline)
        assert component.store.path == sandbox.project_root / ".curation" / "tiny.duckdb"


def test_two_pipelines_in_one_project_keep_apart(tmp_path: Path) -> None:
    with create_defs_folder_sandbox() as sandbox:
        write_pipeline(sandbox.defs_folder_path / "one", VALID_TEXT)
        write_pipeline(sandbox.defs_folder_path / "two", VALID_TEXT.replace("name: tiny", "name: other"))
        with sandbox.build_all_defs() as defs:
            specs = _specs(defs)
    groups = {
        spec.group_name
        for key, spec in specs.items()
        if key.path[0] in ("tiny", "other") and spec.group_name != "default"
    }
    assert groups == {"tiny", "other"}
    assert K(["other", "longest"]) in specs and K(["tiny", "longest"]) in specs


def test_shipped_demo_pipeline_loads() -> None:
    demo = Path(__file__).resolve().parents[2] / "curation_assets" / "defs" / "demo" / "defs.yaml"
    component = load_pipeline_file(demo)
    keys = set(_specs(pipeline_definitions(component)))
    assert {
        K(["demo", n]) for n in ("sharegpt", "lengths", "random_5pct", "longest_answers", "export_random_5pct")
    } <= keys
    assert component.store.path == demo.parents[3] / ".curation" / "demo.duckdb"


def test_shipped_less_example_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "curation_assets" / "defs" / "less_gsm8k" / "defs.yaml"
    component = load_pipeline_file(path)
    specs = _specs(pipeline_definitions(component))
    assert {K(["less_gsm8k", n]) for n in ("sharegpt", "pool", "warmup", "grads", "less_gsm8k_10pct")} <= set(specs)
    grads_deps = {dep.asset_key for dep in specs[K(["less_gsm8k", "grads"])].deps}
    less_deps = {dep.asset_key for dep in specs[K(["less_gsm8k", "less_gsm8k_10pct"])].deps}
    assert K(["less_gsm8k", "warmup"]) in grads_deps and K(["less_gsm8k", "grads"]) in less_deps
    influence_deps = {dep.asset_key for dep in specs[K(["less_gsm8k", "influence_gsm8k_10pct"])].deps}
    assert {K(["less_gsm8k", "jvp"]), K(["less_gsm8k", "warmup"]), K(["less_gsm8k", "pool"])} <= influence_deps
