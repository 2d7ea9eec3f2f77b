"""Fixtures shared by the component tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.dg import REPO, bare_env, run_cli


@pytest.fixture(scope="session")
def shipped_dg_check() -> subprocess.CompletedProcess:
    """`dg check defs` on the shipped project from a fresh shell (no DAGSTER_* variable), run once for
    every test that reads its output: the same command on the same unchanged project (~6 s a run).
    Unset DAGSTER_HOME is the stricter case; the instance under a set DAGSTER_HOME is still loaded by
    `dagster definitions validate` (test_dg_cli.py), the same validation `dg check defs` ends with."""
    return run_cli(["dg", "check", "defs"], REPO)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """A fresh shell's environment (tests/support/dg.py) with DAGSTER_HOME set to a folder holding the
    project's dagster.yaml, which also turns telemetry (and its banner) off."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return {**bare_env(), "DAGSTER_HOME": str(home)}
