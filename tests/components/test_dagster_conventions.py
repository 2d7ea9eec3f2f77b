"""Dagster's own tools on this project with nothing exported: `dg check defs` and `dg dev` without
DAGSTER_HOME, `make ui` on `dg dev`, and `dg scaffold defs curation_assets.CurationPipeline NAME`
writing a starter pipeline that loads and materialises."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.llm.local_server import free_port
from curation_assets.store import DuckDBStore
from tests.support.dg import BIN, REPO, bare_env, run_cli, write_dg_project


def test_dg_check_defs_without_dagster_home(shipped_dg_check: subprocess.CompletedProcess) -> None:
    """dagster.yaml is read from the project folder when DAGSTER_HOME is unset: it must not need it.
    The run (tests/components/conftest.py) has no DAGSTER_* variable in its environment."""
    result = shipped_dg_check
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "All definitions loaded successfully" in output
    assert "DAGSTER_HOME" not in output and "Traceback" not in output


def test_dg_dev_serves_without_dagster_home(tmp_path: Path) -> None:
    """`dg dev` (what `make ui` runs) from the project folder, nothing exported: the webserver answers
    /server_info and the code location loads; the process group is killed afterwards."""
    port = free_port()
    log = (tmp_path / "dg_dev.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=bare_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        info = _wait_json(f"http://127.0.0.1:{port}/server_info", process, tmp_path / "dg_dev.log")
        assert info["dagster_version"] == dg.__version__
        locations = _graphql(
            port,
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename } } } } }",
            process,
            tmp_path / "dg_dev.log",
        )
        assert locations and all(e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in locations)
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        log.close()


def _wait_json(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-4000:]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer\n{log.read_text(errors='replace')[-4000:]}")


def _graphql(port: int, query: str, process: subprocess.Popen, log: Path, timeout_s: float = 240) -> list:
    """Location entries once every location has loaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-4000:]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            entries = json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            return entries
        time.sleep(1)
    raise TimeoutError(f"code locations did not load\n{log.read_text(errors='replace')[-4000:]}")


def test_make_ui_runs_dg_dev() -> None:
    result = subprocess.run(["make", "-n", "ui"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "/dg dev --host 127.0.0.1 --port 3000" in result.stdout
    assert "dagster dev" not in result.stdout


def test_scaffolded_pipeline_checks_and_materialises(tmp_path: Path) -> None:
    package = write_dg_project(tmp_path, "newproj").parent
    scaffold = run_cli(["dg", "scaffold", "defs", "curation_assets.CurationPipeline", "My-Pool"], tmp_path)
    assert scaffold.returncode == 0, scaffold.stdout + scaffold.stderr
    yaml_file = package / "defs" / "My-Pool" / "defs.yaml"
    assert "name: my_pool" in yaml_file.read_text()

    definitions = pipeline_definitions(load_pipeline_file(yaml_file))
    dg.materialize([*definitions.assets, *(definitions.asset_checks or [])], raise_on_error=True)
    with DuckDBStore(tmp_path / ".curation" / "my_pool.duckdb").reader(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM selections WHERE selection = 'longest_answers'").fetchone()[0] == 2
    exported = (yaml_file.parent / "longest_answers.jsonl").read_text().splitlines()
    assert len(exported) == 2 and "Start with a short example" in exported[0]  # the longest answer first

    with_source = run_cli(
        [
            "dg",
            "scaffold",
            "defs",
            "curation_assets.CurationPipeline",
            "other",
            "--json-params",
            json.dumps({"source": "../My-Pool/records.jsonl"}),
        ],
        tmp_path,
    )
    assert with_source.returncode == 0, with_source.stdout + with_source.stderr
    assert not (package / "defs" / "other" / "records.jsonl").exists()
    # one `dg check defs` over both scaffolded pipelines (~5 s a run): it loads my_pool as well
    check = run_cli(["dg", "check", "defs"], tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
