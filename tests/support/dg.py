"""Dagster's own CLIs (`dg`, `dagster`) from this venv, run as a fresh shell would run them, and the
smallest dg project to run them in (a pyproject.toml, a package whose definitions load its defs folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: dg and dagster live next to python


def bare_env() -> dict[str, str]:
    """The environment of a fresh shell: no DAGSTER_* variable, the venv's bin on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(BIN.parent), NO_COLOR="1", HF_HUB_OFFLINE="1"
    )
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`args[0]` (a command of the venv's bin) with the rest as arguments; never raises on its exit code."""
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=env or bare_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def cli_output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def write_dg_project(root: Path, module: str) -> Path:
    """A dg project in `root` whose root module `module` loads its defs folder; returns that folder
    (with its __init__.py) for the test to fill."""
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [project]
        name = "{module}"
        version = "0.0.0"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "{module}"
        """)
    )
    package = root / module
    (package / "defs").mkdir(parents=True)
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
    return package / "defs"
