"""Staging query results as Parquet: one batch in memory at a time."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_batches(reader: pa.RecordBatchReader, path: Path) -> int:
    """Write every batch of `reader` (e.g. a DuckDB `fetch_record_batch`) to the Parquet file `path`;
    returns the row count."""
    count = 0
    with pq.ParquetWriter(path, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            count += batch.num_rows
    return count
