"""Which pipeline a `curation` command uses when none is named (no demo fallback), and `--set` overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from curation_assets.cli import DEMO_PIPELINE, main
from curation_assets.components.standalone import load_pipeline_file
from tests.support.files import valid_pipeline_yaml, write_pipeline

PROJECT = Path(__file__).resolve().parents[1]
N_RECORDS = 12
SETS = ["--set", "stages.lengths.batch_size=7", "--set", "selections.longest.budget=3"]


def invoke(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _ephemeral_instance(monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    """`curation run --set ... --set ...` with no PIPELINE, inside the pipeline's folder."""
    root = tmp_path_factory.mktemp("choice")
    yaml_file = write_pipeline(root / "pipe", valid_pipeline_yaml(budget=5), records=N_RECORDS)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        mp.chdir(yaml_file.parent)
        result = CliRunner().invoke(main, ["run", *SETS], catch_exceptions=False)
    return {"yaml": yaml_file, "db": yaml_file.parent / "tiny.duckdb", "result": result, "root": root}


def query_json(db: Path, sql: str) -> list[dict]:
    result = invoke("query", sql, "--db", db, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _file_state(path: Path) -> tuple | None:
    return (path.stat().st_size, path.stat().st_mtime_ns) if path.exists() else None


# ---- no pipeline named: the one in the current folder, else an error ------------------------------


def test_run_without_pipeline_uses_the_one_in_the_folder(ran: dict) -> None:
    result = ran["result"]
    assert result.exit_code == 0, result.output
    assert f"pipeline: {ran['yaml']}" in result.output
    assert f"DuckDB: {ran['db']}" in result.output and ran["db"].is_file()


@pytest.mark.parametrize(
    "command",
    [
        ["query", "SELECT count(*) AS n FROM samples"],
        ["export", "longest", "--out", "out.jsonl"],
        ["report", "longest", "--out", "report.html"],
    ],
)
def test_no_pipeline_in_the_folder_is_an_error_and_leaves_the_demo_alone(
    tmp_path: Path, monkeypatch, command: list[str]
) -> None:
    demo_db = load_pipeline_file(DEMO_PIPELINE).store.path
    before = [_file_state(demo_db), _file_state(Path(f"{demo_db}.wal"))]
    (tmp_path / "notes.yaml").write_text("type: something.Else\nattributes: {}\n")  # not a pipeline
    monkeypatch.chdir(tmp_path)
    result = invoke(*command)
    assert result.exit_code != 0
    assert f"no pipeline given, and {tmp_path} holds none" in result.output
    assert "--pipeline" in result.output and "--db" in result.output
    assert "Traceback" not in result.output
    assert [_file_state(demo_db), _file_state(Path(f"{demo_db}.wal"))] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.yaml"]


@pytest.mark.parametrize("command", ["run", "check"])
def test_run_and_check_without_pipeline_in_an_empty_folder_fail(tmp_path: Path, monkeypatch, command: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(command)
    assert result.exit_code != 0
    assert f"no pipeline given, and {tmp_path} holds none" in result.output and "PIPELINE" in result.output
    assert list(tmp_path.iterdir()) == []


def test_query_export_report_use_the_folder_pipeline(ran: dict, monkeypatch) -> None:
    monkeypatch.chdir(ran["yaml"].parent)
    result = invoke("query", "SELECT count(*) AS n FROM selections WHERE selection = 'longest'", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"n": 3}]
    assert f"pipeline: {ran['yaml']}" in result.stderr  # said, on stderr: stdout stays the data
    exported = ran["root"] / "exported.jsonl"
    assert invoke("export", "longest", "--out", exported).exit_code == 0
    assert len(exported.read_text().splitlines()) == 3
    report = ran["root"] / "longest.md"
    assert invoke("report", "longest", "--format", "md", "--out", report).exit_code == 0
    assert "longest" in report.read_text()


def test_two_pipelines_in_the_folder_are_listed(tmp_path: Path, monkeypatch) -> None:
    yaml_file = write_pipeline(tmp_path, valid_pipeline_yaml())
    (tmp_path / "other.yml").write_text(yaml_file.read_text().replace("name: tiny", "name: other"))
    (tmp_path / "notes.yaml").write_text("# not a pipeline\ntype: some.OtherComponent\n")
    monkeypatch.chdir(tmp_path)
    for command in (["query", "SELECT 1"], ["check"], ["report", "longest"]):
        result = invoke(*command)
        assert result.exit_code != 0
        assert f"no pipeline given, and {tmp_path} holds 2:\n  defs.yaml\n  other.yml\n" in result.output
        assert "notes.yaml" not in result.output
    (tmp_path / "other.yml").unlink()
    result = invoke("check")
    assert result.exit_code == 0, result.output
    assert "ok: pipeline 'tiny'" in result.output


def _dg_project(root: Path, pipelines: list[str]) -> None:
    (root / "pyproject.toml").write_text(
        '[project]\nname = "myproj"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "myproj"\n'
    )
    for name in pipelines:
        write_pipeline(root / "myproj" / "defs" / name, valid_pipeline_yaml(name=name), records=3)
    (root / "myproj" / "defs" / "other").mkdir(parents=True)
    (root / "myproj" / "defs" / "other" / "defs.yaml").write_text("type: dagster.DefsFolderComponent\n")


def test_dg_project_root_with_one_pipeline_uses_it(tmp_path: Path, monkeypatch) -> None:
    _dg_project(tmp_path, ["alpha"])
    monkeypatch.chdir(tmp_path)
    result = invoke("check")
    assert result.exit_code == 0, result.output
    assert (
        f"ok: pipeline 'alpha': 1 sources, 1 stages, 2 selections, 0 exports; "
        f"DuckDB {tmp_path / 'myproj' / 'defs' / 'alpha' / 'tiny.duckdb'}" in result.output
    )


def test_dg_project_root_with_two_pipelines_lists_them(tmp_path: Path, monkeypatch) -> None:
    _dg_project(tmp_path, ["alpha", "beta"])
    monkeypatch.chdir(tmp_path)
    result = invoke("export", "longest", "--out", tmp_path / "x.jsonl")
    assert result.exit_code != 0
    assert "holds 2:\n  myproj/defs/alpha/defs.yaml\n  myproj/defs/beta/defs.yaml\n" in result.output
    assert not (tmp_path / "x.jsonl").exists()


def test_this_project_root_lists_its_shipped_pipelines(monkeypatch) -> None:
    monkeypatch.chdir(PROJECT)
    result = invoke("query", "SELECT 1")
    assert result.exit_code != 0
    shipped = sorted(str(p.relative_to(PROJECT)) for p in (PROJECT / "curation_assets" / "defs").rglob("defs.yaml"))
    assert len(shipped) >= 2 and "curation_assets/defs/demo/defs.yaml" in shipped
    assert f"holds {len(shipped)}:\n" + "".join(f"  {p}\n" for p in shipped) in result.output


# ---- --set ---------------------------------------------------------------------------------------


def test_set_values_reach_stage_runs(ran: dict) -> None:
    rows = {r["stage"]: r for r in query_json(ran["db"], "SELECT stage, config, config_hash FROM stage_runs")}
    assert json.loads(rows["lengths"]["config"])["batch_size"] == 7
    assert json.loads(rows["longest"]["config"])["budget"] == 3
    members = query_json(ran["db"], "SELECT count(*) AS n FROM selections WHERE selection = 'longest'")
    assert members == [{"n": 3}]


def test_set_changes_config_hashes_like_the_same_yaml_edit(ran: dict, tmp_path: Path) -> None:
    from curation_assets.components.overrides import load_pipeline_with_overrides

    text = ran["yaml"].read_text()
    edited_text = text.replace("budget: 5", "budget: 3").replace(
        "kind: text_stats", "kind: text_stats\n      batch_size: 7"
    )
    assert edited_text.count("budget: 3") == 1 and "batch_size: 7" in edited_text
    edited = load_pipeline_file(write_pipeline(tmp_path / "edited", edited_text, records=N_RECORDS))
    plain = load_pipeline_file(ran["yaml"])
    overridden = load_pipeline_with_overrides(ran["yaml"], [a for a in SETS if a != "--set"])
    assert overridden.spec.model_dump() == edited.spec.model_dump()
    assert overridden.stage_hashes == edited.stage_hashes
    assert overridden.stage_hashes["longest"] != plain.stage_hashes["longest"]
    assert overridden.stage_hashes["lengths"] == plain.stage_hashes["lengths"]  # batch_size: not a result
    stored = {r["stage"]: r["config_hash"] for r in query_json(ran["db"], "SELECT stage, config_hash FROM stage_runs")}
    assert stored["longest"] == edited.stage_hashes["longest"]


def test_set_values_are_yaml(tmp_path: Path) -> None:
    from curation_assets.components.overrides import load_pipeline_with_overrides

    yaml_file = write_pipeline(tmp_path, valid_pipeline_yaml(), records=3)
    component = load_pipeline_with_overrides(
        yaml_file,
        [
            "sources.alpaca.limit=2",
            "automation.condition=none",
            "automation.observe_sources_cron=null",
            "selections.0.seed=11",
            "gpu_op_tags={a: [1, true]}",
            "description=two words",
        ],
    )
    spec = component.spec
    assert spec.sources[0].limit == 2 and spec.selections[0].seed == 11
    assert spec.automation.condition == "none" and spec.automation.observe_sources_cron is None
    assert spec.gpu_op_tags == {"a": [1, True]} and spec.description == "two words"


SET_ERRORS = {  # --set argument, what the error must also say
    "unknown_key": (
        "stages.lengths.batch_sise=64",
        "stages.lengths.batch_sise: unknown key 'batch_sise' (known: batch_size, description,",
    ),
    "bad_value": ("selections.longest.budget=many", "selections.longest.budget: Input should be a valid integer"),
    "out_of_range": ("sources.alpaca.limit=0", "sources.alpaca.limit: Input should be greater than 0"),
    "unknown_entry": ("stages.lenghts.batch_size=64", "no stage named 'lenghts' under `stages` (known: lengths)"),
    "unknown_block_key": ("automation.conditio=none", "unknown key 'conditio' (known: condition, cron,"),
    "bad_reference": ("selections.longest.stage=nowhere", "no stage or selection named 'nowhere'"),
    "not_a_block": ("name.first=x", "`name` is str 'tiny', not a mapping"),
    "no_equals": ("selections.longest.budget", "expected KEY.PATH=VALUE"),
    "bad_yaml": ("selections.longest.budget=[1,", "the value is not valid YAML"),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", list(SET_ERRORS))
def test_bad_set_names_the_argument(tmp_path: Path, command: str, case: str) -> None:
    argument, needle = SET_ERRORS[case]
    yaml_file = write_pipeline(tmp_path / "pipe", valid_pipeline_yaml(), records=3)
    result = invoke(command, yaml_file, "--set", "selections.random_few.budget=2", "--set", argument)
    assert result.exit_code != 0
    assert f"--set {argument}" in result.output and needle in result.output, result.output
    assert "--set selections.random_few.budget=2" not in result.output  # the good one is not blamed
    assert "Traceback" not in result.output
    assert not (tmp_path / "pipe" / "tiny.duckdb").exists()


def test_set_hides_a_secret_looking_value(tmp_path: Path) -> None:
    secret = "sk-" + "Ab3" * 12
    yaml_file = write_pipeline(tmp_path, valid_pipeline_yaml(), records=3)
    result = invoke("check", yaml_file, "--set", f"stages.lengths.batch_size={secret}")
    assert result.exit_code != 0
    assert "--set stages.lengths.batch_size=[hidden]" in result.output and secret not in result.output


def test_yaml_errors_keep_their_lines_with_set(tmp_path: Path) -> None:
    text = valid_pipeline_yaml().replace("budget: 4", "budget: four")
    yaml_file = write_pipeline(tmp_path, text, records=3)
    result = invoke("check", yaml_file, "--set", "selections.longest.budget=2")
    assert result.exit_code != 0
    assert f"invalid pipeline {yaml_file}" in result.output and f"{yaml_file}:" in result.output
    assert "--set" not in result.output


def test_set_with_db_is_a_usage_error(ran: dict) -> None:
    result = invoke("query", "SELECT 1", "--db", ran["db"], "--set", "selections.longest.budget=2")
    assert result.exit_code == 2
    assert "--set" in result.output and "--pipeline" in result.output


def test_check_with_set_reports_ok(ran: dict) -> None:
    result = invoke("check", ran["yaml"], "--set", "duckdb_path=other.duckdb")
    assert result.exit_code == 0, result.output
    assert f"DuckDB {ran['yaml'].parent / 'other.duckdb'}" in result.output


def test_query_pipeline_with_set_reads_the_overridden_db(ran: dict, tmp_path: Path) -> None:
    result = invoke("query", "SELECT 1", "--pipeline", ran["yaml"], "--set", f"duckdb_path={tmp_path / 'none.duckdb'}")
    assert result.exit_code != 0 and str(tmp_path / "none.duckdb") in result.output
    assert not (tmp_path / "none.duckdb").exists()


@pytest.mark.parametrize(
    "shipped", sorted((PROJECT / "curation_assets" / "defs").rglob("defs.yaml")), ids=lambda p: p.parent.name
)
def test_a_no_op_set_keeps_the_shipped_pipelines_as_they_are(shipped: Path) -> None:
    """The overrides edit the loaded spec: setting a value to itself changes nothing, hashes included."""
    from curation_assets.components.overrides import load_pipeline_with_overrides

    plain = load_pipeline_file(shipped)
    same = load_pipeline_with_overrides(shipped, [f"name={plain.spec.name}"])
    assert same.spec == plain.spec and same.stage_hashes == plain.stage_hashes
    assert same.store.path == plain.store.path
