"""Reclaiming a DuckLake's data files (issue #22): `curation maintain` and `DuckLakeStore.maintain`.

Two kinds of files stay in `data_path` for ever otherwise: files of snapshots nobody reads any
more (DuckLake keeps every snapshot for time travel; a selection replaced ten times keeps ten
files), and orphans a writer wrote but never committed (SIGKILLed mid-transaction: DuckLake
writes a transaction's Parquet files before its COMMIT). Everything is done by DuckLake's own
functions, in this order, all with one cutoff `now - older_than` (the grace period):

1. optionally `ducklake_merge_adjacent_files` (small files of many commits into fewer; the
   replaced files are scheduled for deletion, not deleted), under the store's write lock;
2. `ducklake_expire_snapshots(older_than => cutoff)`: snapshots older than the grace period go
   (never the latest); files only they referenced are scheduled for deletion, not deleted;
3. `ducklake_cleanup_old_files(older_than => cutoff)`: deletes the files scheduled for deletion
   more than the grace period ago, so a reader still on an expired snapshot keeps its files for
   one more grace period (a file scheduled by step 1 or 2 of this run goes at the next run);
4. `ducklake_delete_orphaned_files(older_than => cutoff)`: deletes files under `data_path` that no
   snapshot, delete file or deletion schedule lists, and whose modification time is older than
   the grace period, so a running writer's not-yet-committed files are kept as long as its
   transaction is shorter than the grace period.

Before step 4 deletes anything, its dry-run list is checked against every file the catalog
lists for the current snapshot; any overlap (a data_path spelled differently from the catalog's,
say) stops the run before a file is deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from curation_assets.store.ducklake_store import DuckLakeStore

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class MaintenanceRefusedError(RuntimeError):
    """A safety check failed: nothing was deleted."""


def parse_duration(text: str) -> timedelta:
    """`7d`, `12h`, `30m`, `45s`, `2w` as a timedelta; a clear error otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: give a number and a unit, e.g. 7d, 12h, 30m, 45s or 2w")
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2).lower()])


@dataclass
class MaintenanceReport:
    """What a run did (or, with dry_run, would do); paths as the catalog spells them."""

    cutoff: datetime
    dry_run: bool
    merged_tables: list[str] = field(default_factory=list)
    expired_snapshots: list[int] = field(default_factory=list)
    deleted_old_files: list[str] = field(default_factory=list)
    deleted_orphans: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        merged = f"merged adjacent files of {len(self.merged_tables)} table(s)" + (
            f": {', '.join(self.merged_tables)}" if self.merged_tables else ""
        )
        if self.dry_run:
            merged = "no merge in a dry run (DuckLake's merge has none)"
        return [
            f"grace period: files and snapshots older than {self.cutoff.isoformat(timespec='seconds')}",
            merged,
            f"{'would expire' if self.dry_run else 'expired'} {len(self.expired_snapshots)} snapshot(s)",
            f"{verb} {len(self.deleted_old_files)} file(s) of expired snapshots or merges",
            f"{verb} {len(self.deleted_orphans)} orphaned file(s)",
            *[f"  {path}" for path in [*self.deleted_old_files, *self.deleted_orphans]],
        ]


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.astimezone(timezone.utc).isoformat(sep=' ')}'"


def _referenced_files(con: duckdb.DuckDBPyConnection, alias: str) -> set[str]:
    """Every data and delete file the current snapshot lists, over all tables of the lake."""
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = $alias", {"alias": alias}
    ).fetchall()
    files: set[str] = set()
    for schema, table in tables:
        rows = con.execute(
            "SELECT data_file, delete_file FROM ducklake_list_files($alias, $table, schema => $schema)",
            {"alias": alias, "table": table, "schema": schema},
        ).fetchall()
        files.update(path for row in rows for path in row if path)
    return files


def maintain(
    store: DuckLakeStore, *, older_than: timedelta, merge: bool = False, dry_run: bool = False
) -> MaintenanceReport:
    """Merge (optional), expire, clean up and delete orphans with one grace period (module docstring)."""
    from curation_assets.store.ducklake_store import ALIAS

    if older_than <= timedelta(0):
        raise ValueError("the grace period must be positive: files younger than it may belong to a running writer")
    cutoff = datetime.now(timezone.utc) - older_than
    report = MaintenanceReport(cutoff=cutoff, dry_run=dry_run)
    since = _timestamp(cutoff)
    con = store.connect()
    try:
        if merge and not dry_run:  # DuckLake's merge has no dry run
            lock = store.take_write_lock()
            try:
                rows = con.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}')").fetchall()
            finally:
                lock.release()
            report.merged_tables = sorted({f"{row[0]}.{row[1]}" for row in rows})
        flag = "true" if dry_run else "false"
        lock = store.take_write_lock()  # expiring under the lock: no lock-holding writer is mid-transaction
        try:
            rows = con.execute(
                f"CALL ducklake_expire_snapshots('{ALIAS}', dry_run => {flag}, older_than => {since})"
            ).fetchall()
        finally:
            lock.release()
        report.expired_snapshots = sorted(int(row[0]) for row in rows)
        report.deleted_old_files = sorted(
            row[0]
            for row in con.execute(
                f"CALL ducklake_cleanup_old_files('{ALIAS}', dry_run => {flag}, older_than => {since})"
            ).fetchall()
        )
        candidates = sorted(
            row[0]
            for row in con.execute(
                f"CALL ducklake_delete_orphaned_files('{ALIAS}', dry_run => true, older_than => {since})"
            ).fetchall()
        )
        live = set(candidates) & _referenced_files(con, ALIAS)
        if live:
            raise MaintenanceRefusedError(
                f"ducklake_delete_orphaned_files would delete {len(live)} file(s) the current snapshot lists "
                f"(e.g. {sorted(live)[0]}); nothing deleted. Is data_path {store.data_path} spelled as the "
                "catalog records it (ducklake_settings)?"
            )
        if candidates and not dry_run:
            deleted = con.execute(f"CALL ducklake_delete_orphaned_files('{ALIAS}', older_than => {since})").fetchall()
            report.deleted_orphans = sorted(row[0] for row in deleted)
        else:
            report.deleted_orphans = candidates
    finally:
        con.close()
    return report
