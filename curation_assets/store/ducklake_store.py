"""The `ducklake` store kind: a DuckLake many workers write at once (issue #22).

The catalog lives in PostgreSQL, the rows as Parquet files under `data_path`; each process opens
an in-memory DuckDB, LOADs the two packaged extensions from their wheels by path (autoinstall and
autoload off, an empty extension directory: nothing is downloaded), ATTACHes the lake and `USE`s
it, so the SQL of sql/ runs unchanged apart from the DDL's PRIMARY KEY/UNIQUE clauses, which
DuckLake does not support (`ducklake_ddl`). Two transactions that touch the same table's rows
(both replace one selection) conflict at COMMIT; `transaction()` then replays the block's
statements in a fresh transaction, with jittered backoff, until it commits or `lock_timeout_s`
passes. Measurements and the decision behind it: docs/deployment.md, "Shared store (DuckLake)".
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import duckdb

from curation_assets.store.config import DUCKLAKE_DUCKDB, INSTALL_HINT, StoreUnavailableError, ducklake_missing
from curation_assets.store.object_storage import s3_secret

if TYPE_CHECKING:
    from curation_assets.store.ducklake_maintenance import MaintenanceReport
from curation_assets.store.sql_files import core_schema_files, read_sql, static_view_files

_log = logging.getLogger(__name__)

ALIAS = "lake"
"""The name the lake is attached under; `USE lake` makes it the default catalog of every connection."""

# wheel package -> the extension's own name (LOAD derives the init symbol from the file name, and the
# postgres wheel ships `postgres.duckdb_extension` for the extension `postgres_scanner`)
_EXTENSIONS = {"duckdb_extension_ducklake": "ducklake", "duckdb_extension_postgres": "postgres_scanner"}
_HTTPFS_PACKAGE = "duckdb_extension_httpfs"
_CONFLICT = re.compile(r"conflict", re.IGNORECASE)
WRITE_LOCK = ".locks/ducklake-writes.lock"
"""Under `work_dir`: held by every transaction that does more than append (see `is_append`)."""
_READ_WORDS = re.compile(r"\b(JOIN|EXISTS|UNION|INTERSECT|EXCEPT|CONFLICT)\b", re.IGNORECASE)
_SOURCE = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)\s*(\()?", re.IGNORECASE)
_STAGED_READERS = {"read_parquet", "parquet_scan", "read_json", "read_json_auto", "read_csv", "read_csv_auto"}


class StoreConflictError(RuntimeError):
    """A write kept conflicting with other writers' commits for longer than `lock_timeout_s`."""


# -- DDL for DuckLake -------------------------------------------------------------------------------

_TABLE_KEY = re.compile(r",\s*(PRIMARY\s+KEY|UNIQUE)\s*\(([^()]*)\)", re.IGNORECASE)
_COLUMN_PK = re.compile(r"[ \t]+PRIMARY\s+KEY\b(?!\s*\()", re.IGNORECASE)
_COLUMN_UNIQUE = re.compile(r"[ \t]+UNIQUE\b(?!\s*\()", re.IGNORECASE)
_FIXED_ARRAY = re.compile(
    r"\b(FLOAT|DOUBLE|REAL|DECIMAL\(\d+,\s*\d+\)|U?(?:TINY|SMALL|BIG|HUGE)?INT(?:EGER)?|VARCHAR|BOOLEAN)((?:\[\d+\])+)",
    re.IGNORECASE,
)
_LINE_COMMENT = re.compile(r"--[^\n]*")
_NOT_NULL = re.compile(r"\bNOT\s+NULL\b", re.IGNORECASE)


def ducklake_ddl(text: str) -> str:
    """A table DDL file as DuckLake takes it: PRIMARY KEY / UNIQUE clauses (table and column level)
    removed, with the NOT NULL a primary key implies kept on its columns, and fixed-size ARRAY column
    types (`FLOAT[384]`) as lists (`FLOAT[]`). Comments go first, so a comment naming a key or an array
    is never half-edited; the schema files' string literals hold neither, and each column is on a line
    of its own. Only for sql/schema: views keep their `::FLOAT[384]` casts (query-time ARRAYs work)."""
    text = _LINE_COMMENT.sub("", text)
    key_columns: set[str] = set()

    def table_key(match: re.Match[str]) -> str:
        if match.group(1).upper().startswith("PRIMARY"):
            key_columns.update(c.strip().strip('"').lower() for c in match.group(2).split(","))
        return ""

    text = _TABLE_KEY.sub(table_key, text)
    lines = []
    for line in text.split("\n"):
        has_pk = _COLUMN_PK.search(line) is not None
        line = _COLUMN_UNIQUE.sub("", _COLUMN_PK.sub("", line))
        words = line.split()
        name = words[0].strip('"').lower() if words else ""
        if (has_pk or name in key_columns) and len(words) > 1 and not _NOT_NULL.search(line):
            body, comma, rest = (
                line.rstrip().rpartition(",") if line.rstrip().endswith(",") else (line.rstrip(), "", "")
            )
            line = f"{body} NOT NULL{comma}{rest}"
        lines.append(line)
    return _FIXED_ARRAY.sub(lambda m: m.group(1) + "[]" * m.group(2).count("["), "\n".join(lines))


def is_append(query: str, registered: Iterable[str] = ()) -> bool:
    """Whether a statement only appends rows or reads staged files: an INSERT, SELECT or DESCRIBE
    whose sources are all staged files (`read_parquet(...)`), registered Arrow tables or VALUES, with
    no join, subquery or ON CONFLICT. Such statements never depend on the lake's rows, so appends of
    different writers commit side by side; anything else takes the store's write lock (see
    `DuckLakeStore.transaction`). Conservative: a statement it cannot vouch for is not an append."""
    text = _LINE_COMMENT.sub("", query).strip()
    head = text.split(None, 1)[0].upper() if text else ""
    if head not in ("INSERT", "SELECT", "DESCRIBE") or _READ_WORDS.search(text):
        return False
    if text.upper().count("SELECT") > 1:
        return False
    names = {name.lower() for name in registered}
    for match in _SOURCE.finditer(text):
        name, call = match.group(1).lower(), match.group(2)
        if not (name in _STAGED_READERS if call else name in names):
            return False
    return True


# -- extensions -------------------------------------------------------------------------------------


def extension_file(package: str) -> Path | None:
    """The `.duckdb_extension` file an installed `duckdb-extension-*` wheel ships for this DuckDB."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "extensions" / f"v{duckdb.__version__}"
    found = sorted(folder.glob("*.duckdb_extension"))
    return found[0] if found else None


_instances_lock = threading.Lock()
_instances: dict[tuple[str, str, str | None, bool], tuple[int, duckdb.DuckDBPyConnection]] = {}
_links_lock = threading.Lock()
_links_dir: list[Path] = []


def _extension_links(packages: Iterable[str]) -> list[Path]:
    """Each wheel's file linked under its extension's name in a private folder of this process
    (mkdtemp, 0700, removed at exit): local to the machine, since the wheels' paths differ between
    workers, and never a shared or guessable folder another user could plant a file in."""
    with _links_lock:
        if not _links_dir:
            folder = Path(tempfile.mkdtemp(prefix="curation-duckdb-ext-"))
            (folder / "empty").mkdir()
            atexit.register(shutil.rmtree, folder, True)
            _links_dir.append(folder)
        folder = _links_dir[0]
        links = []
        for package in packages:
            source = extension_file(package)
            if source is None:
                raise StoreUnavailableError(
                    f"{INSTALL_HINT}; missing here: the extension file of {package} for duckdb {duckdb.__version__}"
                )
            name = _EXTENSIONS.get(package, source.stem)
            link = folder / f"{name}.duckdb_extension"
            if not link.exists():
                link.symlink_to(source)
            links.append(link)
        return links


def _empty_extension_dir() -> Path:
    _extension_links(())
    return _links_dir[0] / "empty"


# -- the store --------------------------------------------------------------------------------------


class DuckLakeStore:
    """A DuckLake (catalog in PostgreSQL, Parquet data files): the `ducklake` kind of the `Store` protocol."""

    kind = "ducklake"

    def __init__(
        self,
        *,
        catalog: str,
        data_path: str | Path,
        work_path: str | Path,
        password_env: str | None = None,
        lock_timeout_s: float = 120.0,
    ) -> None:
        missing = ducklake_missing()
        if missing:
            raise StoreUnavailableError(f"{INSTALL_HINT}; missing here: {missing}")
        self.catalog = catalog
        data = str(data_path)
        self.data_path = data if data.endswith("/") else data + "/"
        self.work_path = Path(work_path)
        self.password_env = password_env
        self.lock_timeout_s = lock_timeout_s
        self.retried_commits = 0
        """How many commits of this object's transactions conflicted and were replayed (tests, metrics)."""

    # -- what it is ------------------------------------------------------------------------------
    @property
    def remote_data(self) -> bool:
        return "://" in self.data_path and not self.data_path.startswith("file://")

    def describe(self) -> str:
        # the catalog string holds no password (DuckLakeStoreConfig refuses one)
        return f"ducklake:{self.catalog} data {self.data_path}"

    @property
    def work_dir(self) -> Path:
        return self.work_path

    def protected_paths(self) -> list[Path]:
        local = [] if self.remote_data else [Path(self.data_path.removeprefix("file://"))]
        return [*local, self.work_dir]

    # -- connections -----------------------------------------------------------------------------
    def _password(self) -> str | None:
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if not value:
            raise StoreUnavailableError(
                f"the ducklake store's password_env names {self.password_env}, which is not set in this "
                "process's environment: export it (the catalog database's password) before running"
            )
        return value

    def _redact(self, err: BaseException, *secrets: str | None) -> str:
        text = " ".join(str(err).split())
        for secret in secrets:
            text = text.replace(secret, "***") if secret else text
        return text

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection with the lake attached and `USE`d; read_only: attached READ_ONLY, and a lake
        nobody has written yet is a FileNotFoundError. Connections are cursors of one DuckDB instance
        per process and mode (LOADing the two extensions costs ~0.5 s; a cursor is free), each with
        its own transactions; closing one leaves the instance open for the next."""
        key = (self.catalog, self.data_path, self.password_env, read_only)
        with _instances_lock:
            pid, base = _instances.get(key, (None, None))
            if base is None or pid != os.getpid():  # a forked child must not share its parent's sockets
                base = self.open_instance(read_only=read_only)
                _instances[key] = (os.getpid(), base)
            con = base.cursor()
        con.execute(f"USE {ALIAS}")
        return con

    def open_instance(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A new in-memory DuckDB with the extensions LOADed and the lake attached and `USE`d (the
        caller closes it). `curation query` takes one of its own: its sandbox settings are instance-wide."""
        if duckdb.__version__ != DUCKLAKE_DUCKDB:
            raise StoreUnavailableError(f"{INSTALL_HINT}; this environment has duckdb {duckdb.__version__}")
        packages = list(_EXTENSIONS)
        if self.remote_data:
            if importlib.util.find_spec(_HTTPFS_PACKAGE) is None:
                raise StoreUnavailableError(
                    f"data_path {self.data_path} is an object-storage URL: install the httpfs extension wheel "
                    f"into this environment (pip install duckdb-extension-httpfs=={DUCKLAKE_DUCKDB}); storage "
                    "credentials come from the environment (e.g. AWS_ACCESS_KEY_ID) through a DuckDB secret"
                )
            packages.append(_HTTPFS_PACKAGE)
        links = _extension_links(packages)
        secret = s3_secret(self.data_path) if self.remote_data else None  # before connecting: a clear error
        con = duckdb.connect(
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "extension_directory": str(_empty_extension_dir()),
            }
        )
        password = self._password()
        try:
            for link in links:
                con.execute(f"LOAD '{link}'")
            if secret is not None:
                # credentials from the standard AWS environment variables only, never the YAML
                con.execute(secret.sql)
            if password is not None:
                # libpq takes the password from this (in-memory) postgres secret; the ATTACH string has none
                con.execute(f"CREATE SECRET (TYPE postgres, PASSWORD '{_quote(password)}')")
            if not read_only and not self.remote_data:
                Path(self.data_path.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
            options = [f"DATA_PATH '{_quote(self.data_path)}'"]
            if read_only:
                options.append("READ_ONLY")
            self._attach(con, f"ATTACH 'ducklake:{_quote(self.catalog)}' AS {ALIAS} ({', '.join(options)})")
            con.execute(f"USE {ALIAS}")
        except duckdb.Error as err:
            con.close()
            message = self._redact(err, password, *(secret.hidden if secret is not None else ()))
            if read_only and _never_written(message):
                raise FileNotFoundError(f"no DuckLake at {self.describe()}: run the pipeline first") from None
            # from None: the original exception's text could hold what was redacted here
            raise type(err)(f"could not open the DuckLake {self.describe()}: {message}") from None
        return con

    def _attach(self, con: duckdb.DuckDBPyConnection, attach: str) -> None:
        """ATTACH; on a fresh catalog every worker's first ATTACH creates DuckLake's tables, and all but
        one of those creations fail in PostgreSQL (measured: "duplicate key value violates unique
        constraint pg_type_typname_nsp_index"). The winner's creation is one transaction, so the
        others attach again, after a short jittered wait, to the catalog it made."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con.execute(attach)
                return
            except duckdb.Error as err:
                if "Failed to initialize DuckLake" not in str(err) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    @contextlib.contextmanager
    def reader(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for a `with` block. read_only: every query of the block reads one committed
        snapshot (one read transaction), whatever writers commit meanwhile."""
        con = self.connect(read_only=read_only)
        try:
            if read_only:
                con.begin()
            yield con
        finally:
            with contextlib.suppress(duckdb.Error):
                if read_only:
                    con.rollback()
            con.close()

    def exists(self) -> bool:
        try:
            con = self.connect(read_only=True)
        except FileNotFoundError:
            return False
        con.close()
        return True

    def query_connection(self) -> duckdb.DuckDBPyConnection:
        # attached before the sandbox disables external access (attaching is refused afterwards); an
        # instance of its own, since the sandbox's settings (no external access, locked) are instance-wide
        # The lake's rows are Parquet files under data_path, which the sandbox's
        # `enable_external_access = false` would refuse: that folder (only) stays allowed, and must be
        # set before the sandbox's settings (DuckDB refuses to widen it afterwards). The sandbox refuses
        # COPY/EXPORT on a lake, so nothing can write there.
        if not self.exists():
            raise FileNotFoundError(f"no DuckLake at {self.describe()}: run the pipeline first")
        con = self.open_instance(read_only=True)
        data = self.data_path.removeprefix("file://")
        con.execute(f"SET allowed_directories = ['{_quote(data)}']")
        return con

    # -- writes ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction, committed when the block ends, rolled back on any error.

        DuckLake transactions are snapshot-isolated and check conflicts at COMMIT only for rows both
        changed, so two writers that read the lake and then write (replace a selection nobody has yet,
        insert the samples an ANTI JOIN found new) would both commit: a lost update or a duplicate.
        A transaction therefore runs lock-free only while its statements are appends (`is_append`:
        a shard's rows from its staged file, its stage_runs row); at its first other statement it
        takes the store's write lock (a file lock under `work_dir`, which every worker shares and
        the kernel drops when its holder dies), rolls back and replays what it ran so far in a
        fresh transaction begun under the lock, and holds the lock until it commits. A commit that
        still conflicts is replayed with jittered backoff until `lock_timeout_s`, then
        StoreConflictError. Replays re-run the block's statements (execute/register/unregister, in
        order); values the block read and used in later statements come from their first run."""
        con = self.connect()
        recorder = _Recorder(con, self._take_write_lock)
        try:
            con.begin()
            try:
                yield cast(duckdb.DuckDBPyConnection, recorder)
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.rollback()
                raise
            recorder.closed = True
            self._commit_with_retry(con, recorder.replay)
        finally:
            recorder.release()
            con.close()

    def maintain(self, *, older_than: timedelta, merge: bool = False, dry_run: bool = False) -> MaintenanceReport:
        """Expire old snapshots and delete their files and orphaned files, all older than the grace
        period `older_than` (curation_assets/store/ducklake_maintenance.py); `merge` compacts first."""
        from curation_assets.store.ducklake_maintenance import maintain

        return maintain(self, older_than=older_than, merge=merge, dry_run=dry_run)

    def take_write_lock(self) -> Any:
        """The store's write lock, held (call `.release()`): what non-append transactions hold."""
        return self._take_write_lock()

    def _take_write_lock(self) -> Any:
        """Acquire the store's write lock (waiting up to lock_timeout_s); returns the held lock."""
        from filelock import FileLock, Timeout

        path = self.work_dir / WRITE_LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), thread_local=False)
        try:
            lock.acquire(timeout=self.lock_timeout_s)
        except Timeout as err:
            raise StoreConflictError(
                f"another writer held the DuckLake write lock {path} for more than {self.lock_timeout_s:.0f} s "
                "(a long write, or raise the store's lock_timeout_s)"
            ) from err
        return lock

    def _commit_with_retry(self, con: duckdb.DuckDBPyConnection, replay: Callable[[Any], None]) -> None:
        deadline = time.monotonic() + self.lock_timeout_s
        delay, attempts = 0.05, 1
        while True:
            try:
                con.commit()
                return
            except duckdb.TransactionException as err:
                self._after_conflict(con, err, attempts, deadline)
            while True:  # back off, then replay the block in a fresh transaction
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                attempts += 1
                try:
                    con.begin()
                    replay(con)
                    break
                except duckdb.TransactionException as err:  # a conflict surfacing in a replayed statement
                    self._after_conflict(con, err, attempts, deadline)

    def _after_conflict(
        self, con: duckdb.DuckDBPyConnection, err: duckdb.TransactionException, attempts: int, deadline: float
    ) -> None:
        """Roll back after a conflict; re-raise anything else, and give up once the deadline is near."""
        if not _CONFLICT.search(str(err)):
            raise err
        with contextlib.suppress(duckdb.Error):
            con.rollback()
        self.retried_commits += 1
        _log.info("DuckLake commit conflicted with another writer's (attempt %d); replaying the transaction", attempts)
        if time.monotonic() >= deadline:
            raise StoreConflictError(
                f"a write to the DuckLake {self.describe()} conflicted with other writers' commits "
                f"{attempts} times over {self.lock_timeout_s:.0f} s (raise the store's lock_timeout_s, or "
                f"write less often to the same table): {' '.join(str(err).split())[:300]}"
            ) from err

    def ensure_schema(self, extra_schema_files: Iterable[str] = ()) -> None:
        """The core DDL, each stage kind's DDL and the static views, keys stripped (`ducklake_ddl`);
        every statement is IF NOT EXISTS / OR REPLACE, and concurrent callers' conflicts are retried."""
        files = [*core_schema_files(), *extra_schema_files, *static_view_files()]
        key = (self.catalog, tuple(files))
        if key in _schema_applied:  # ~1.5 s of catalog round trips and a new snapshot per call otherwise
            return
        views = set(static_view_files())
        with self.transaction() as con:
            for relative in files:
                text = read_sql(relative)
                for statement in duckdb.extract_statements(text if relative in views else ducklake_ddl(text)):
                    con.execute(statement)
        _schema_applied.add(key)


_schema_applied: set[tuple[str, tuple[str, ...]]] = set()


class _Recorder:
    """The connection a `transaction()` block sees: forwards everything, records the calls that shape
    the transaction (execute, register, unregister) so it can be replayed, and takes the write lock
    (rollback, lock, replay) before the first statement that is not an append."""

    def __init__(self, con: duckdb.DuckDBPyConnection, take_lock: Callable[[], Any]) -> None:
        self._con = con
        self._take_lock = take_lock
        self._lock: Any = None
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._registered: set[str] = set()
        self.closed = False

    def _record(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            raise RuntimeError("this DuckLake transaction is finished; open a new one with store.transaction()")
        if name in ("execute", "executemany") and self._lock is None and args:
            query = args[0] if isinstance(args[0], str) else getattr(args[0], "query", "")
            statements = (
                [query] if not isinstance(args[0], str) else [s.query for s in duckdb.extract_statements(query)]
            )
            if not all(is_append(q, self._registered) for q in statements):
                self._lock = self._take_lock()
                self._con.rollback()  # a snapshot taken before the lock could miss a lock holder's commit
                self._con.begin()
                self.replay(self._con)
        if name == "register" and args:
            self._registered.add(str(args[0]))
        self._calls.append((name, args, kwargs))
        return getattr(self._con, name)(*args, **kwargs)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("execute", *args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("executemany", *args, **kwargs)

    def register(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("register", *args, **kwargs)

    def unregister(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("unregister", *args, **kwargs)

    def sql(self, *args: Any, **kwargs: Any) -> Any:
        # a relation is lazy and may read the lake: under the write lock, so what it reads is current
        if self._lock is None:
            self._lock = self._take_lock()
            self._con.rollback()
            self._con.begin()
            self.replay(self._con)
        return self._con.sql(*args, **kwargs)

    def begin(self) -> Any:
        raise RuntimeError("store.transaction() owns BEGIN/COMMIT; do not begin or commit inside its block")

    commit = rollback = begin

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def replay(self, con: duckdb.DuckDBPyConnection) -> None:
        for name, args, kwargs in self._calls:
            result = getattr(con, name)(*args, **kwargs)
            if name in ("execute", "executemany"):
                with contextlib.suppress(duckdb.Error):
                    result.fetchall()  # consume results, as the block did or would have


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _never_written(message: str) -> bool:
    return any(
        marker in message.lower()
        for marker in ("not initialized", "does not exist", "no such table", "ducklake_metadata", "read-only mode")
    )
