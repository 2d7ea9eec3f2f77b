"""What a stage's run function gets (StageContext) and gives back (StageOutput).

A run function reads its inputs through the context, computes in batches, and stages
its rows as a Parquet file; the runner writes them in one transaction afterwards.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from curation_assets.arrow_compute import pc
from curation_assets.store import Store
from curation_assets.store.parquet import write_batches
from curation_assets.store.sql_files import read_sql

T = TypeVar("T")
PART_TEMP_SUFFIX = ".tmp"

MEMBERS_SCHEMA = pa.schema([("sample_id", pa.string()), ("rank", pa.int32()), ("score", pa.float64())])
DETAILS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("role", pa.string()),
        ("cluster", pa.int32()),
        ("related_id", pa.string()),
        ("value", pa.float64()),
    ]
)


@dataclass
class StageOutput:
    """Result of a run function: staged rows plus counts and metadata for Dagster and `stage_runs`."""

    rows_file: Path  # stage: sample_id + the kind's columns; selection: MEMBERS_SCHEMA
    rows_in: int
    stats: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # plain values: numbers, strings, markdown
    details_file: Path | None = None  # selections: DETAILS_SCHEMA rows for `selection_details`
    generated_samples_file: Path | None = None  # sample-generating kinds: new samples (see llm_judges/lift_expand.py)
    extra: dict[str, Any] = field(default_factory=dict)  # anything a kind's `write_extra` stores


@dataclass
class StageContext:
    store: Store
    pipeline: str
    stage: str
    config_hash: str
    staging_dir: Path
    stage_hashes: Mapping[str, str]  # every stage/selection name in the pipeline -> current config_hash
    stage_tables: Mapping[str, str]  # every stage name -> its table
    log: logging.Logger | Any = field(default_factory=lambda: logging.getLogger("curation_assets"))
    input_selection: str | None = None  # when set, every read is limited to this selection's members
    originals_only: bool = False  # sample-generating stages work on original (not generated) samples
    stage_specs: Mapping[str, Any] = field(default_factory=dict)  # name -> spec of every stage/selection
    shard: tuple[int, int] | None = None  # (index, count): compute only this shard's samples
    _checked_parts: list[Path] | None = field(default=None, init=False, repr=False)

    @property
    def artifacts_dir(self) -> Path:
        """Where this stage keeps files worth keeping (LoRA checkpoints): in the store's work folder
        (`<db>.artifacts` beside a DuckDB file), per stage and config_hash."""
        return self.store.work_dir / self.stage / self.config_hash

    @property
    def partial_dir(self) -> Path:
        """Rows a resumable stage has computed but not yet committed (see `resumable_rows_writer`)."""
        if self.shard is None:
            return self.artifacts_dir / "partial"
        return self.artifacts_dir / f"partial-{self.shard[0]}-of-{self.shard[1]}"

    def _query(self, name: str, params: dict[str, Any], **parts: str) -> tuple[str, dict[str, Any]]:
        """SQL file `name` with its {placeholders} filled and the input_selection filter applied."""
        return restricted_sql(name, self.input_selection, params, originals_only=self.originals_only, **parts)

    # ---- reading inputs -------------------------------------------------------------------
    def pending_samples(self, table: str, columns: Sequence[str]) -> tuple[Path, int]:
        """Stage to Parquet the active samples lacking a row in `table` for this stage's config."""
        sql, params = self._query(
            "reads/pending_samples.sql",
            {"stage": self.stage, "config_hash": self.config_hash},
            table=table,
            columns=_column_list(columns, "s"),
        )
        if self.shard is not None:
            sql = read_sql("reads/pending_in_shard.sql").format(pending=sql.rstrip().rstrip(";"))
            params = {**params, "shard_index": self.shard[0], "shard_count": self.shard[1]}
        path = self.staging_dir / f"{self.stage}.pending.parquet"
        parts = self.usable_parts()
        with self.store.reader() as con:
            if parts:  # rows computed by an interrupted run of this config are not computed again
                sql = read_sql("reads/pending_minus_partial.sql").format(pending=sql.rstrip().rstrip(";"))
                params = {**params, "partial_files": [str(p) for p in parts]}
            reader = con.sql(sql, params=params).to_arrow_reader(10_000)
            count = write_batches(reader, path)
        if parts:
            self.log.info(f"{self.stage}: resuming; {len(parts)} part files of an interrupted run are kept")
        return path, count

    def stage_rows(self, stage_name: str, columns: Sequence[str]) -> pa.Table:
        """An upstream stage's rows at its current config, for active samples, sorted by sample_id."""
        if stage_name not in self.stage_tables:
            raise KeyError(f"{stage_name!r} is not a stage of pipeline {self.pipeline!r}")
        sql, params = self._query(
            "reads/stage_rows.sql",
            {"stage": stage_name, "config_hash": self.stage_hashes[stage_name]},
            table=self.stage_tables[stage_name],
            columns=_column_list(columns, "t"),
        )
        with self.store.reader() as con:
            return con.sql(sql, params=params).to_arrow_table()

    def stage_matrix(self, stage_name: str, column: str, checkpoint: int | None = None) -> tuple[list[str], np.ndarray]:
        """An upstream stage's vector column for active samples as (sample_ids, float32 matrix);
        `checkpoint` picks one checkpoint's rows of a per-checkpoint stage (grad_features).

        Streamed from DuckDB into a memory-mapped .npy in the staging folder, so memory
        holds one batch at a time, not the matrix.
        """
        if stage_name not in self.stage_tables:
            raise KeyError(f"{stage_name!r} is not a stage of pipeline {self.pipeline!r}")
        params: dict[str, Any] = {"stage": stage_name, "config_hash": self.stage_hashes[stage_name]}
        if checkpoint is not None:
            params["checkpoint"] = checkpoint
        sql, params = self._query(
            "reads/stage_rows.sql" if checkpoint is None else "reads/stage_rows_at_checkpoint.sql",
            params,
            table=self.stage_tables[stage_name],
            columns=_column_list([column], "t"),
        )
        count_sql = f"SELECT count(*) FROM ({sql.rstrip().rstrip(';')})"
        sample_ids: list[str] = []
        with self.store.reader() as con:
            n = con.execute(count_sql, params).fetchall()[0][0]
            if n == 0:
                raise ValueError(f"stage {stage_name!r} has no rows for its current config: materialise it first")
            matrix: np.ndarray | None = None
            for batch in con.sql(sql, params=params).to_arrow_reader(10_000):
                vectors = batch.column(column)
                width = len(vectors[0]) if len(vectors) else 0
                values = pc.list_flatten(vectors).to_numpy(zero_copy_only=False).astype(np.float32)
                if matrix is None:
                    suffix = "" if checkpoint is None else f".{checkpoint}"
                    matrix = np.lib.format.open_memmap(
                        self.staging_dir / f"{stage_name}.{column}{suffix}.npy",
                        mode="w+",
                        dtype=np.float32,
                        shape=(n, width),
                    )
                start = len(sample_ids)
                matrix[start : start + batch.num_rows] = values.reshape(batch.num_rows, width)
                sample_ids.extend(batch.column("sample_id").to_pylist())
        assert matrix is not None
        return sample_ids, matrix

    def active_samples(self, columns: Sequence[str] = ()) -> pa.Table:
        sql, params = self._query("reads/active_samples.sql", {}, columns=_column_list(columns, "s"))
        with self.store.reader() as con:
            return con.sql(sql, params=params or None).to_arrow_table()

    def iter_active_samples(self, columns: Sequence[str], batch_size: int) -> Iterator[pa.RecordBatch]:
        """The active samples (as `active_samples`, sorted by sample_id) `batch_size` rows at a time:
        memory holds one batch, not the pool."""
        sql, params = self._query("reads/active_samples.sql", {}, columns=_column_list(columns, "s"))
        with self.store.reader() as con:
            yield from con.sql(sql, params=params or None).to_arrow_reader(batch_size)

    def ingest_order(self) -> tuple[list[str], np.ndarray]:
        """Active sample_ids (sorted) and each one's position in the order samples arrived: earliest
        `first_seen`, then record number in the first source's file, then sample_id (generated
        samples after the read ones of their ingest)."""
        sql, params = self._query("reads/ingest_order.sql", {})
        with self.store.reader() as con:
            table = con.sql(sql, params=params or None).to_arrow_table()
        n = table.num_rows
        record = pc.fill_null(table.column("first_record_no"), np.iinfo(np.int64).max).to_numpy()
        first_seen = table.column("first_seen").cast(pa.int64()).to_numpy(zero_copy_only=False)
        order = np.lexsort((np.arange(n), record, first_seen))
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        return table.column("sample_id").to_pylist(), position

    def selection_members(self, selection: str) -> pa.Table:
        with self.store.reader() as con:
            return con.sql(read_sql("reads/selection_members.sql"), params={"selection": selection}).to_arrow_table()

    # ---- writing outputs ------------------------------------------------------------------
    def rows_writer(self, schema: pa.Schema, suffix: str = "rows") -> StagedRowsWriter:
        return StagedRowsWriter(self.staging_dir / f"{self.stage}.{suffix}.parquet", schema)

    def resumable_rows_writer(self, table: str, schema: pa.Schema) -> ResumableRowsWriter:
        """A writer whose every `write` is a committed Parquet part under `partial_dir`: a run that
        stops half way keeps its parts, and the next run of the same config computes only the
        samples they lack. Parts left by a run whose rows were committed are removed here."""
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        with self.store.reader() as con:
            for part in self.usable_parts():
                committed = con.execute(
                    read_sql("reads/partial_part_committed.sql").format(table=table),
                    {"stage": self.stage, "config_hash": self.config_hash, "part": str(part)},
                ).fetchall()[0][0]
                if committed:
                    part.unlink()
        return ResumableRowsWriter(self.partial_dir, schema)

    def usable_parts(self) -> list[Path]:
        """The part files of an interrupted run of this config that read back whole. A zero-byte,
        truncated or corrupt part (a crash between write and disk) is moved to `set_aside/` with a
        warning and its samples are computed again; temporary files of killed writers are removed.
        Runs of one stage, config and shard hold its lock (run_guard), so nobody writes here meanwhile."""
        if self._checked_parts is not None:
            return [p for p in self._checked_parts if p.exists()]
        usable = []
        if self.partial_dir.exists():
            for leftover in self.partial_dir.glob(f"*{PART_TEMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)
            for part in sorted(self.partial_dir.glob("part-*.parquet")):
                problem = part_problem(part)
                if problem is None:
                    usable.append(part)
                    continue
                aside = self.artifacts_dir / "set_aside" / f"{self.partial_dir.name}-{part.name}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                part.replace(aside)
                self.log.warning(
                    f"{self.stage}: part {part} is unreadable ({problem}); moved to {aside}, "
                    "its samples are computed again"
                )
        self._checked_parts = usable
        return list(usable)

    def write_members(self, sample_ids: Sequence[str], scores: Sequence[float | None] | None = None) -> Path:
        """Stage a selection's members in rank order (rank 1 first)."""
        path = self.staging_dir / f"{self.stage}.members.parquet"
        table = pa.table(
            {
                "sample_id": pa.array(list(sample_ids), pa.string()),
                "rank": pa.array(range(1, len(sample_ids) + 1), pa.int32()),
                "score": pa.array(list(scores) if scores is not None else [None] * len(sample_ids), pa.float64()),
            }
        )
        pq.write_table(table, path)
        return path

    def write_details(self, rows: dict[str, Sequence[Any]]) -> Path:
        """Stage `selection_details` rows: columns sample_id, role, cluster, related_id, value."""
        path = self.staging_dir / f"{self.stage}.details.parquet"
        pq.write_table(
            pa.table(
                {
                    name: pa.array(list(rows.get(name, [None] * len(rows["sample_id"]))), type=f.type)
                    for name, f in zip(DETAILS_SCHEMA.names, DETAILS_SCHEMA)
                }
            ),
            path,
        )
        return path

    # ---- feedback -------------------------------------------------------------------------
    def progress(self, iterable: Iterable[T], total: int, desc: str) -> Iterator[T]:
        """tqdm in the terminal and a log line every 10% (seen in the Dagster run logs)."""
        step = max(1, total // 10)
        done = 0
        for item in tqdm(iterable, total=total, desc=f"{self.stage}: {desc}", leave=False):
            yield item
            done += 1
            if done % step == 0 or done == total:
                self.log.info(f"{self.stage}: {desc} {done}/{total}")


class StagedRowsWriter:
    """Append record batches to a Parquet file; always leaves a (maybe empty) file behind."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.rows = 0
        self._writer = pq.ParquetWriter(path, schema)

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        self.rows += table.num_rows
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self._writer.write_table(table)

    def close(self) -> Path:
        self._writer.close()
        return self.path

    def __enter__(self) -> StagedRowsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResumableRowsWriter:
    """Each `write` becomes its own Parquet part: written under a unique temporary name, fsynced,
    then given its part name, so a part file that exists is complete even after a power cut."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder, self.schema = folder, schema
        self.rows = 0

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        temporary = self.folder / f".part.{os.getpid()}-{uuid.uuid4().hex[:12]}{PART_TEMP_SUFFIX}"
        try:
            with open(temporary, "wb") as handle:
                pq.write_table(table.cast(self.schema), handle, write_page_checksum=True)
                handle.flush()
                os.fsync(handle.fileno())
            _publish(temporary, self.folder, len(list(self.folder.glob("part-*.parquet"))))
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_folder(self.folder)  # the new name itself survives a power cut
        self.rows += table.num_rows

    def close(self) -> Path:
        """A glob over every part (what the runner inserts); an empty part when there is none."""
        if not any(self.folder.glob("part-*.parquet")):
            pq.write_table(self.schema.empty_table(), self.folder / "part-000000.parquet")
        return self.folder / "part-*.parquet"


def part_problem(path: Path) -> str | None:
    """Why a part file cannot be used (None when it reads back whole, page checksums verified)."""
    if path.stat().st_size == 0:
        return "zero bytes"
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        if "sample_id" not in parquet.schema_arrow.names:
            return "no sample_id column"
        for _ in parquet.iter_batches(batch_size=4096):  # decodes every page: catches corrupt data too
            pass
    except (OSError, pa.ArrowException) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _publish(temporary: Path, folder: Path, index: int) -> Path:
    """Give a finished part the first free `part-NNNNNN.parquet` name; a hard link never replaces
    a part another writer published under that name meanwhile."""
    while True:
        final = folder / f"part-{index:06d}.parquet"
        try:
            os.link(temporary, final)
            return final
        except FileExistsError:
            index += 1
        except OSError:  # a filesystem without hard links: rename (one writer per folder holds the lock)
            if final.exists():
                index += 1
                continue
            temporary.replace(final)
            return final


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory descriptors
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def restricted_sql(
    name: str, input_selection: str | None, params: dict[str, Any], *, originals_only: bool = False, **parts: str
) -> tuple[str, dict[str, Any]]:
    """Fill an SQL template's {placeholders}; {restrict} limits it to an input selection's members
    (and, for sample-generating stages, to original samples)."""
    restrict = _without_comments(read_sql("reads/restrict_to_selection.sql")) if input_selection else ""
    if originals_only:
        restrict += _without_comments(read_sql("reads/restrict_to_originals.sql"))
    params = {**params, "input_selection": input_selection} if input_selection else dict(params)
    return read_sql(name).format(restrict=restrict.rstrip("\n"), **parts), params


def _without_comments(sql: str) -> str:
    return "\n" + "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def iter_parquet_batches(path: Path, batch_size: int, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)


def _column_list(columns: Sequence[str], alias: str) -> str:
    for column in columns:
        if not column.replace("_", "").isalnum():
            raise ValueError(f"not a column name: {column!r}")
    return "".join(f", {alias}.{column}" for column in columns)
