"""The files one run keeps in the store's work folder (`Store.work_dir`: `<db>.artifacts` beside a
DuckDB file, the shared `work_path` of a DuckLake): its lock and its staging folder.

Two runs of the same stage and config (the CLI while the daemon runs, two pods on one
volume) must not both compute it: each takes that stage's lock first. A lock is an OS file
lock (`filelock`: flock), which the kernel drops when its holder dies, so a run killed with
SIGKILL never blocks the next one. DuckDB's own lock only covers each short write; it cannot
stop two runs from computing the same rows.

Staging folders (the pending-samples Parquet, staged rows, memory-mapped matrices) live
under `<work_dir>/.staging`, each next to a lock its run holds: a SIGKILL skips every
`finally`, and the next run removes the folders whose lock nobody holds.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

WAIT_LOG_EVERY_S = 60.0
_LOCKS, _STAGING = ".locks", ".staging"


def _file_lock(path: Path) -> FileLock:
    # one lock object per use; thread_local=False: acquired and released by the same code path
    return FileLock(str(path), thread_local=False)


def stage_lock_path(work_dir: Path, stage: str, config_hash: str, shard: tuple[int, int] | None = None) -> Path:
    """The lock of one stage, config and shard."""
    suffix = "" if shard is None else f"-shard-{shard[0]}-of-{shard[1]}"
    return work_dir / _LOCKS / f"{stage}-{config_hash}{suffix}.lock"


def ingest_lock_path(work_dir: Path, source: str) -> Path:
    """The lock of one source's ingest (any config: they all write that source's rows)."""
    return work_dir / _LOCKS / f"ingest-{source}.lock"


@contextlib.contextmanager
def exclusive_run(
    lock_path: Path, what: str, committed_runs: Callable[[], Any] | None, log: Any = None
) -> Iterator[bool]:
    """Hold `lock_path` for the block. Yields True when another run held it and committed while
    this one waited (`committed_runs()` changed), i.e. there is nothing left to compute; always
    False without `committed_runs`.

    The uncontended case costs one flock; `committed_runs` is only called when another run
    holds the lock."""
    log = log if log is not None else logging.getLogger("curation_assets")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = _file_lock(lock_path)
    try:
        lock.acquire(timeout=0)
        done_meanwhile = False
    except Timeout:
        before = committed_runs() if committed_runs is not None else None
        log.info(f"{what}: another run holds {lock_path}; waiting for it to finish")
        waited = time.monotonic()
        while True:
            try:
                lock.acquire(timeout=WAIT_LOG_EVERY_S, poll_interval=0.2)
                break
            except Timeout:
                log.info(f"{what}: still waiting for {lock_path} ({time.monotonic() - waited:.0f} s)")
        done_meanwhile = committed_runs is not None and committed_runs() != before
        log.info(
            f"{what}: got the lock after {time.monotonic() - waited:.1f} s"
            + ("; the other run committed it, nothing to compute" if done_meanwhile else "")
        )
    try:
        yield done_meanwhile
    finally:
        lock.release()


@contextlib.contextmanager
def staging_folder(work_dir: Path, name: str) -> Iterator[Path]:
    """A fresh folder under `<work_dir>/.staging` (`Store.work_dir`), removed afterwards; folders that killed
    runs left there are removed first."""
    root = work_dir / _STAGING
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(root)
    folder = root / f"{name}-{uuid.uuid4().hex[:12]}"
    lock = _file_lock(folder.with_name(folder.name + ".lock"))
    lock.acquire(timeout=0)  # a fresh name: nobody else holds it. Held before the folder exists,
    try:  # so a cleaner never sees a folder without a held lock
        folder.mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)


def remove_abandoned_staging(root: Path) -> list[Path]:
    """Remove staging folders (and lock files) whose run is gone: nobody holds their lock."""
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.suffix == ".lock":
            lock_path, folder = entry, entry.with_name(entry.name[: -len(".lock")])
        elif entry.is_dir() and not entry.with_name(entry.name + ".lock").exists():
            lock_path, folder = None, entry  # its lock file was removed: its cleaner died half way
        else:
            continue
        if lock_path is not None:
            lock = _file_lock(lock_path)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # a live run's folder
            try:
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                lock.release()
                lock_path.unlink(missing_ok=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
