"""Dagster's own CLIs on the shipped project and on a broken pipeline in a throw-away dg project."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.dg import REPO, cli_output, run_cli, write_dg_project


def test_dg_check_defs_passes_on_shipped_project(shipped_dg_check: subprocess.CompletedProcess) -> None:
    result = shipped_dg_check  # one `dg check defs` run per session (tests/components/conftest.py)
    assert result.returncode == 0, cli_output(result)
    assert "All component YAML validated successfully" in cli_output(result)
    assert "All definitions loaded successfully" in cli_output(result)


def test_dagster_definitions_validate_workspace(cli_env) -> None:
    result = run_cli(["dagster", "definitions", "validate", "-w", "workspace.yaml"], REPO, cli_env)
    assert result.returncode == 0, cli_output(result)
    assert "Validation successful for code location curation_assets" in cli_output(result)


def test_dg_lists_the_component_type(cli_env) -> None:
    """The `dagster_dg_cli.registry_modules` entry point makes the component discoverable."""
    result = run_cli(["dg", "list", "components", "--json"], REPO, cli_env)
    assert result.returncode == 0, cli_output(result)
    assert '"curation_assets.CurationPipeline"' in result.stdout


# ---- a broken pipeline in a minimal dg project ---------------------------------------------------

PIPELINE_HEAD = """\
type: curation_assets.CurationPipeline
attributes:
  name: bad
  duckdb_path: bad.duckdb
  sources:
    - name: records
      path: records.jsonl
  stages:
    - name: lengths
"""


def _bad_project(root: Path, pipeline: str) -> Path:
    package = write_dg_project(root, "badproj").parent
    (package / "defs" / "bad").mkdir()
    (package / "defs" / "bad" / "records.jsonl").write_text(
        '{"instruction": "Say hi.", "input": "", "output": "Hi."}\n'
    )
    yaml_file = package / "defs" / "bad" / "defs.yaml"
    yaml_file.write_text(pipeline)
    return yaml_file


def test_bad_project_with_valid_pipeline_passes(tmp_path: Path, cli_env) -> None:
    """Control for the failures below: the scaffolding itself is a loadable dg project."""
    _bad_project(tmp_path, PIPELINE_HEAD + "      kind: text_stats\n")
    result = run_cli(["dg", "check", "defs"], tmp_path, cli_env)
    assert result.returncode == 0, cli_output(result)
    assert "All definitions loaded successfully" in cli_output(result)


def test_dg_check_defs_fails_with_yaml_line_for_unknown_kind(tmp_path: Path, cli_env) -> None:
    yaml_file = _bad_project(tmp_path, PIPELINE_HEAD + "      kind: no_such_kind\n")
    result = run_cli(["dg", "check", "defs"], tmp_path, cli_env)
    output = cli_output(result)
    assert result.returncode != 0, output
    # dg's schema check reports the entry (`- name: lengths`, line 9) when several stage kinds make
    # `stages` a oneOf, or the key itself (`kind: no_such_kind`, line 10) when there is one kind.
    reported = {int(n) for n in re.findall(rf"{re.escape(str(yaml_file))}:(\d+)", output)}
    assert reported and reported <= {9, 10}, output
    assert "attributes.stages.0" in output
    assert "no_such_kind" in output


def test_dg_check_defs_fails_with_yaml_line_for_bad_reference(tmp_path: Path, cli_env) -> None:
    """A cross-field problem passes the schema check and is reported by the component's load."""
    pipeline = PIPELINE_HEAD + (
        "      kind: text_stats\n"
        "  selections:\n"
        "    - name: top\n"
        "      kind: top_score\n"
        "      stage: lengths\n"
        "      column: answer_words\n"
        "      budget: 5\n"
    )
    yaml_file = _bad_project(tmp_path, pipeline)
    assert pipeline.splitlines()[15 - 1].strip() == "column: answer_words"
    result = run_cli(["dg", "check", "defs"], tmp_path, cli_env)
    output = cli_output(result)
    assert result.returncode != 0, output
    assert f"{yaml_file}:15" in output
    assert "stage 'lengths' (text_stats) has no column 'answer_words'" in output
