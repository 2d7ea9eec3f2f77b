"""Fixtures shared by the component tests."""

from __future__ import annotations

import subprocess

import pytest

from tests.components.test_dagster_conventions import REPO, run


@pytest.fixture(scope="session")
def shipped_dg_check() -> subprocess.CompletedProcess:
    """`dg check defs` on the shipped project from a fresh shell (no DAGSTER_* variable), run once for
    every test that reads its output: the same command on the same unchanged project (~6 s a run).
    Unset DAGSTER_HOME is the stricter case; the instance under a set DAGSTER_HOME is still loaded by
    `dagster definitions validate` (test_dg_cli.py), the same validation `dg check defs` ends with."""
    return run(["dg", "check", "defs"], REPO)
