"""A Dagster cluster on this machine, for the distributed tests: Redis as the Celery broker, Celery
workers as separate processes in their own working directories, and the run's orchestrator
(`dagster job execute` on `curation_assets.deploy.location` with the celery executor).

Nothing is shared between the processes but what a real cluster shares: the PostgreSQL server
(Dagster's run/event storage in one database, the DuckLake catalog in another), the broker, and the
shared folder (DuckLake data files, the store's work folder, Dagster's artefact storage). Each
process has its own DAGSTER_HOME and its own copy of the pipeline YAML (`CURATION_PIPELINE`).

    with redis_server(tmp) as broker:
        cluster = Cluster(root, broker, pg, python=Path(sys.executable))
        cluster.start_worker("w0"); cluster.start_worker("w1")
        result = cluster.execute(document)
        cluster.stop()
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.postgres import PostgresServer, free_port

ROOT = Path(__file__).resolve().parents[2]
CELERY_RUN_CONFIG = ROOT / "curation_assets" / "deploy" / "executor-celery.yaml"  # broker from CELERY_BROKER_URL
CELERY_PACKAGES = ("dagster_celery", "dagster_postgres", "celery", "redis", "psycopg2")


def cluster_missing() -> str | None:
    """What this environment lacks for the distributed run (a sentence naming it), or None."""
    missing = [name for name in CELERY_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"the Python packages {', '.join(missing)} (the distributed environment: `make setup-distributed` "
            "adds dagster-celery[redis] and dagster-postgres to .venv-ducklake)"
        )
    if shutil.which("redis-server") is None:
        return "no redis-server (the Celery broker): apt-get install redis-server"
    return None


def worker_config_module(run_config: dict[str, Any], broker: str) -> str:
    """What `dagster-celery worker start -y <run config>` writes as its worker's `dagster_celery_config`
    module: the broker the executor submits to and every `config_source` setting (acks_late,
    the broker's visibility timeout: they act in the worker), from the same run config block."""
    config = run_config["execution"]["config"]
    lines = [f"broker_url = {broker!r}", f"result_backend = {broker!r}"]
    lines += [f"{key} = {value!r}" for key, value in (config.get("config_source") or {}).items()]
    return "\n".join(lines) + "\n"


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """Debian's redis-server on 127.0.0.1 and a free port, nothing persisted; yields the broker URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with (folder / "redis.log").open("w") as log:
        server = subprocess.Popen([*command, "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _ping(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(folder / 'redis.log').read_text()[-1000:]}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def process_group_members(pgid: int) -> list[int]:
    """The pids of a process group (a worker started in its own session: Celery's main process and
    its pool children)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            if int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (a stage's lock file: its holder is computing that stage)."""
    target = str(path)
    with contextlib.suppress(OSError):
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return True
    return False


class Cluster:
    """Workers and runs over one broker and one PostgreSQL server; `root` holds every process's folder."""

    def __init__(
        self, root: Path, broker: str, pg: PostgresServer, python: Path, shared: Path, run_config: dict | None = None
    ) -> None:
        self.root, self.broker, self.pg, self.python, self.shared = root, broker, pg, python, shared
        # the executor's run config (deploy/executor-celery.yaml unless given); the workers' Celery
        # settings come from the same block, as `dagster-celery worker start -y` takes them
        self.run_config = run_config if run_config is not None else yaml.safe_load(CELERY_RUN_CONFIG.read_text())
        self.instance_db = f"dagster_{secrets.token_hex(4)}"  # one per cluster: tests share the server
        pg.new_catalog(self.instance_db)  # Dagster's run/event/schedule storage
        self.workers: dict[str, subprocess.Popen] = {}
        self.document: dict[str, Any] | None = None
        self._runs = 0

    # -- the files each process has of its own ----------------------------------------------------
    def instance_yaml(self) -> dict[str, Any]:
        """Dagster's instance: Postgres storage (password from the environment), artefacts in the shared
        folder, no compute-log capture (it would write into the orchestrator's DAGSTER_HOME)."""
        return {
            "telemetry": {"enabled": False},
            "storage": {
                "postgres": {
                    "postgres_db": {
                        "hostname": self.pg.host,
                        "port": self.pg.port,
                        "username": self.pg.user,
                        "password": {"env": self.pg.password_env},
                        "db_name": self.instance_db,
                        # SQLAlchemy 2.1 maps plain `postgresql` to psycopg 3; dagster-postgres installs psycopg2
                        "scheme": "postgresql+psycopg2",
                    }
                }
            },
            "local_artifact_storage": {
                "module": "dagster._core.storage.root",
                "class": "LocalArtifactStorage",
                "config": {"base_dir": str(self.shared / "dagster_storage")},
            },
            "compute_logs": {
                "module": "dagster._core.storage.noop_compute_log_manager",
                "class": "NoOpComputeLogManager",
            },
        }

    def process_folder(self, name: str) -> Path:
        """`root/<name>`: the process's working directory, its DAGSTER_HOME and its copy of the pipeline."""
        assert self.document is not None, "set cluster.document (the pipeline YAML) first"
        folder = self.root / name
        (folder / "dagster_home").mkdir(parents=True, exist_ok=True)
        (folder / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump(self.instance_yaml()))
        (folder / "defs.yaml").write_text(yaml.safe_dump(self.document))
        (folder / "dagster_celery_config.py").write_text(worker_config_module(self.run_config, self.broker))
        (folder / "run_config.yaml").write_text(yaml.safe_dump(self.run_config))
        return folder

    def env(self, folder: Path) -> dict[str, str]:
        return {
            **self.pg.env,
            "PATH": f"{self.python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DAGSTER_HOME": str(folder / "dagster_home"),
            "CURATION_PIPELINE": str(folder / "defs.yaml"),
            "CURATION_EXECUTOR": "celery",
            "CELERY_BROKER_URL": self.broker,
            "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}",
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }

    # -- workers -----------------------------------------------------------------------------------
    def start_worker(self, name: str) -> subprocess.Popen:
        """A Celery worker of the cluster's app (dagster-celery's, with `RenewUnacked`: deploy/celery_worker.py;
        one task at a time) in its own folder and session."""
        folder = self.process_folder(name)
        command = [
            str(self.python), "-m", "celery", "-A", "curation_assets.deploy.celery_worker", "worker",
            "--prefetch-multiplier=1",
            "--concurrency=1", "-Q", "dagster", "-n", f"{name}@%h", "--loglevel=INFO",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        with (folder / "worker.log").open("a") as log:
            worker = subprocess.Popen(
                command, cwd=folder, env=self.env(folder), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.workers[name] = worker
        return worker

    def worker_holding(self, path: Path) -> str | None:
        """The worker one of whose processes has `path` open, if any."""
        for name, worker in self.workers.items():
            if worker.poll() is None and any(holds_open(pid, path) for pid in process_group_members(worker.pid)):
                return name
        return None

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (Celery's main process and its pool child)."""
        worker = self.workers.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def kill_holder(self, name: str, path: Path) -> int | None:
        """SIGKILL the process of worker `name` that has `path` open (the pool child running a step),
        not the worker's main process; its pid, or None when none holds it now."""
        worker = self.workers[name]
        for pid in process_group_members(worker.pid):
            if pid != worker.pid and holds_open(pid, path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return pid
        return None

    def worker_log(self, name: str) -> str:
        return (self.root / name / "worker.log").read_text(errors="replace")

    # -- runs --------------------------------------------------------------------------------------
    def _run_command(self) -> tuple[list[str], Path]:
        self._runs += 1
        folder = self.process_folder(f"run{self._runs}")
        command = [
            str(self.python), "-m", "dagster", "job", "execute", "-m", "curation_assets.deploy.location",
            "-j", "everything", "-c", str(folder / "run_config.yaml"),
        ]  # fmt: skip
        return command, folder

    def execute(self, timeout: float = 900) -> subprocess.CompletedProcess:
        """Materialise every asset of `document` through the workers; waits for the run."""
        command, folder = self._run_command()
        return subprocess.run(
            command, check=False, cwd=folder, env=self.env(folder), capture_output=True, text=True, timeout=timeout
        )

    def submit(self) -> tuple[subprocess.Popen, Path]:
        """Start a run in the background (its own session); returns it and the file its output goes to."""
        command, folder = self._run_command()
        log_path = folder / "run.log"
        with log_path.open("w") as log:
            run = subprocess.Popen(
                command, cwd=folder, env=self.env(folder), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return run, log_path

    def stop(self) -> None:
        for name in list(self.workers):
            self.kill_worker(name)
