"""Dagster's own processes for end-to-end tests: a throw-away workspace over one pipeline YAML,
a temporary DAGSTER_HOME with the project's dagster.yaml, and `dagster dev` / `dagster-daemon run`
started in their own process group on 127.0.0.1 and killed as a group afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation_assets.llm.local_server import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dagster and dagster-daemon live next to python

DEFS_MODULE = '''"""Definitions of one pipeline YAML (written by tests/dagster_dev.py)."""
from pathlib import Path

import dagster as dg

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions

defs = pipeline_definitions(load_pipeline_file(Path(__file__).with_name("{yaml_name}")))
if {in_process}:  # one process per run instead of one per step
    defs = dg.Definitions.merge(defs, dg.Definitions(executor=dg.in_process_executor))
'''


@dataclass
class Workspace:
    folder: Path
    workspace_file: Path
    home: Path
    location: str

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
        env.update(
            DAGSTER_HOME=str(self.home),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            VIRTUAL_ENV=str(BIN.parent),
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            NO_COLOR="1",
            PYTHONUNBUFFERED="1",
        )
        return env


def write_workspace(pipeline_yaml: Path, location: str = "curation_e2e", in_process: bool = False) -> Workspace:
    """workspace.yaml + a defs module next to `pipeline_yaml`, and a DAGSTER_HOME beside them
    holding the project's dagster.yaml (SQLite storage, the `duckdb_writer` pool, no telemetry).
    `in_process`: runs execute their steps in one process (Dagster's default starts a Python
    process per step, ~10 s each on 2 busy cores)."""
    folder = pipeline_yaml.parent
    (folder / "pipeline_defs.py").write_text(DEFS_MODULE.format(yaml_name=pipeline_yaml.name, in_process=in_process))
    workspace_file = folder / "workspace.yaml"
    workspace_file.write_text(
        "load_from:\n  - python_file:\n      relative_path: pipeline_defs.py\n"
        f"      working_directory: .\n      location_name: {location}\n"
    )
    home = folder / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return Workspace(folder, workspace_file, home, location)


class DagsterProcess:
    """A Dagster CLI process in its own session (process group), output to a log file."""

    def __init__(self, args: list[str], workspace: Workspace, log_name: str) -> None:
        self.workspace = workspace
        self.log_path = workspace.folder / log_name
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            cwd=workspace.folder,
            env=workspace.env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.log_path.name}: exited with {self.process.returncode}\n{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGINT (Dagster's graceful shutdown) to the whole group (webserver, daemon, code servers,
        run workers), then SIGKILL to whatever is left of it: `dagster dev` may ignore SIGTERM."""
        pgid = self.process.pid  # start_new_session: the group is named after its leader, alive or not
        _signal_group(pgid, signal.SIGINT)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(pgid, signal.SIGKILL)  # also the children that outlived their parent
        self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> DagsterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class DagsterDev(DagsterProcess):
    """`dagster dev` (webserver + daemon) on 127.0.0.1 and a free port."""

    def __init__(self, workspace: Workspace) -> None:
        self.port = free_port()
        super().__init__(
            ["dagster", "dev", "-w", str(workspace.workspace_file), "-h", "127.0.0.1", "-p", str(self.port)],
            workspace,
            "dagster_dev.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def wait_until_loaded(self, timeout_s: float = 180.0) -> None:
        """Until the webserver answers and the code location has loaded (its errors are raised)."""
        query = (
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            try:
                entries = self.graphql(query)["workspaceOrError"]["locationEntries"]
            except (urllib.error.URLError, ConnectionError, TimeoutError, RuntimeError):
                entries = []
            entry = next((e for e in entries if e["name"] == self.workspace.location), None)
            if entry and entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"]
                if loaded and loaded["__typename"] == "PythonError":
                    raise RuntimeError(f"code location failed to load: {loaded['message']}")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster dev not ready after {timeout_s:.0f} s\n{self.log_tail()}")
            time.sleep(1.0)


class DagsterDaemon(DagsterProcess):
    """`dagster-daemon run` alone (scheduler, sensors, automation, run queue), no webserver."""

    def __init__(self, workspace: Workspace) -> None:
        super().__init__(
            ["dagster-daemon", "run", "-w", str(workspace.workspace_file)], workspace, "dagster_daemon.log"
        )
