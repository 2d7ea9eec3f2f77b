"""A throw-away PostgreSQL server from Debian's binaries, for the DuckLake store's catalog.

    from tests.support.postgres import postgres_server

    with postgres_server() as pg:
        pg.catalog        # "postgres:dbname=lake host=127.0.0.1 port=54xxx user=nobody" (no secret in it)
        pg.password_env   # name of the environment variable that holds the password
        pg.env            # os.environ plus {pg.password_env: password}: pass to child processes
        pg.password       # the random password itself (for monkeypatch.setenv in this process)
        pg.new_catalog("t1")  # another empty database on the same server, as a catalog string

`initdb` runs in a fresh folder of the system temp dir (not pytest's tmp_path: that is private
to root, and PostgreSQL refuses to run as root, so the server runs as `nobody` there), the
server listens on 127.0.0.1 only, on a free port, with scram-sha-256 and a random password that
lives only in the returned object and the environments it is given to. The server is stopped and
its folder removed when the block exits, also on failure. `postgres_missing()` says what is
missing (binaries, runuser) so a test can skip naming it; `bench/ducklake_probe.py` uses the same
server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

UNPRIVILEGED = "nobody"  # PostgreSQL refuses to run as root
PASSWORD_ENV = "CURATION_TEST_PGPASSWORD"


def postgres_bin() -> Path | None:
    """Folder of Debian's server binaries (initdb, pg_ctl), the newest major version installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def postgres_missing() -> str | None:
    """Why a server cannot be started here (a sentence naming what to install), or None."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (util-linux) to start PostgreSQL as an unprivileged user"
    return None


def skip_without_ducklake(tests: str, *also_missing: str | None) -> None:
    """Skip the calling module (`tests`, e.g. "DuckLake store tests") where the DuckLake extension,
    PostgreSQL or anything in `also_missing` (a sentence naming it, or None) is missing; under
    CURATION_REQUIRE_DUCKLAKE=1 (make test-ducklake, CI) that is an error instead."""
    import pytest  # here: bench/ imports this module without pytest

    from curation_assets.store.config import ducklake_missing

    missing = ", ".join(filter(None, [ducklake_missing(), postgres_missing(), *also_missing]))
    if missing:
        if os.environ.get("CURATION_REQUIRE_DUCKLAKE") == "1":
            raise RuntimeError(f"CURATION_REQUIRE_DUCKLAKE=1 but this environment lacks: {missing}")
        pytest.skip(f"{tests}: this environment lacks {missing} (make test-ducklake)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PostgresServer:
    """A running server: where it listens, who it is, and the name of the variable holding its password."""

    host: str
    port: int
    user: str
    dbname: str
    root: Path
    password_env: str
    password: str = field(repr=False)

    def catalog_for(self, dbname: str) -> str:
        return f"postgres:dbname={dbname} host={self.host} port={self.port} user={self.user}"

    @property
    def catalog(self) -> str:
        """The `store: catalog:` string of the default database (DuckLake prefixes `ducklake:`)."""
        return self.catalog_for(self.dbname)

    @property
    def env(self) -> dict[str, str]:
        """This process's environment plus the password variable: for subprocesses that open the store."""
        return {**os.environ, self.password_env: self.password}

    def new_catalog(self, dbname: str) -> str:
        """Create another empty database on this server (one per test keeps tests apart) and return its catalog."""
        bindir = postgres_bin()
        assert bindir is not None
        subprocess.run(
            [str(bindir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, dbname],
            check=True,
            capture_output=True,
            env={**os.environ, "PGPASSWORD": self.password},
        )
        return self.catalog_for(dbname)


def _run(cmd: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:] if log is not None and log.exists() else ""
        raise RuntimeError(f"PostgreSQL {what} failed ({done.returncode}): {done.stderr[-1500:]}{tail}")


@contextlib.contextmanager
def postgres_server(
    *, dbname: str = "lake", password_env: str = PASSWORD_ENV, fsync: bool = False
) -> Iterator[PostgresServer]:
    """Start a server (initdb + pg_ctl as an unprivileged user, 127.0.0.1, free port), yield it, stop it.

    fsync=False (tests): a crash of the machine is not what these tests exercise; benchmarks pass True.
    """
    missing = postgres_missing()
    if missing:
        raise RuntimeError(missing)
    bindir = postgres_bin()
    assert bindir is not None
    as_root = os.geteuid() == 0
    user = UNPRIVILEGED if as_root else pwd.getpwuid(os.geteuid()).pw_name
    prefix = ["runuser", "-u", user, "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="curation_pg_"))
    data, pwfile, log = root / "pgdata", root / "pwfile", root / "log"
    password = secrets.token_urlsafe(24)
    started = False
    try:
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        if as_root:
            shutil.chown(root, user)
            shutil.chown(pwfile, user)
        root.chmod(0o700)
        _run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            "initdb",
        )
        pwfile.unlink()
        # A port taken between free_port() and the server's bind only fails the start: try a few.
        for attempt in range(5):
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
                f"-c fsync={'on' if fsync else 'off'} -c max_connections=200"
            )
            try:
                _run(
                    [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"],
                    "start",
                    log,
                )
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        started = True
        server = PostgresServer("127.0.0.1", port, user, dbname, root, password_env, password)
        server.new_catalog(dbname)
        yield server
    finally:
        if started:
            _stop(prefix, bindir, data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(prefix: list[str], bindir: Path, data: Path) -> None:
    """pg_ctl stop; if the server does not go in time, SIGKILL the postmaster so nothing lingers."""
    done = subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-t", "30", "-w", "stop"],
        check=False,
        capture_output=True,
    )
    pid_file = data / "postmaster.pid"
    if done.returncode != 0 and pid_file.exists():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            time.sleep(0.5)
