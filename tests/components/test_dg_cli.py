"""Dagster's own CLIs on the shipped project and on a broken pipeline in a throw-away dg project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: dg and dagster live next to python


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # also turns telemetry (and its banner) off
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        DAGSTER_HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(BIN.parent),
        HF_HUB_OFFLINE="1",
        NO_COLOR="1",
    )
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_dg_check_defs_passes_on_shipped_project(shipped_dg_check: subprocess.CompletedProcess) -> None:
    result = shipped_dg_check  # one `dg check defs` run per session (tests/components/conftest.py)
    assert result.returncode == 0, _output(result)
    assert "All component YAML validated successfully" in _output(result)
    assert "All definitions loaded successfully" in _output(result)


def test_dagster_definitions_validate_workspace(cli_env) -> None:
    result = _run(["dagster", "definitions", "validate", "-w", "workspace.yaml"], REPO, cli_env)
    assert result.returncode == 0, _output(result)
    assert "Validation successful for code location curation_assets" in _output(result)


def test_dg_lists_the_component_type(cli_env) -> None:
    """The `dagster_dg_cli.registry_modules` entry point makes the component discoverable."""
    result = _run(["dg", "list", "components", "--json"], REPO, cli_env)
    assert result.returncode == 0, _output(result)
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
    (root / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [project]
        name = "badproj"
        version = "0.0.0"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "badproj"
        """)
    )
    package = root / "badproj"
    (package / "defs" / "bad").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(
        textwrap.dedent("""\
        from pathlib import Path

        import dagster as dg


        @dg.definitions
        def defs() -> dg.Definitions:
            return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
        """)
    )
    (package / "defs" / "bad" / "records.jsonl").write_text(
        '{"instruction": "Say hi.", "input": "", "output": "Hi."}\n'
    )
    yaml_file = package / "defs" / "bad" / "defs.yaml"
    yaml_file.write_text(pipeline)
    return yaml_file


def test_bad_project_with_valid_pipeline_passes(tmp_path: Path, cli_env) -> None:
    """Control for the failures below: the scaffolding itself is a loadable dg project."""
    _bad_project(tmp_path, PIPELINE_HEAD + "      kind: text_stats\n")
    result = _run(["dg", "check", "defs"], tmp_path, cli_env)
    assert result.returncode == 0, _output(result)
    assert "All definitions loaded successfully" in _output(result)


def test_dg_check_defs_fails_with_yaml_line_for_unknown_kind(tmp_path: Path, cli_env) -> None:
    yaml_file = _bad_project(tmp_path, PIPELINE_HEAD + "      kind: no_such_kind\n")
    result = _run(["dg", "check", "defs"], tmp_path, cli_env)
    output = _output(result)
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
    result = _run(["dg", "check", "defs"], tmp_path, cli_env)
    output = _output(result)
    assert result.returncode != 0, output
    assert f"{yaml_file}:15" in output
    assert "stage 'lengths' (text_stats) has no column 'answer_words'" in output
