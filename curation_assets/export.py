"""Export a selection (or every active sample) as JSON Lines, Parquet or a datasets folder.

jsonl writes each sample's original record exactly as it was read (generated samples,
which have none, as {"messages": [...]}); parquet and hf write the normalised columns with
the original record as JSON text, plus rank and score. Files are written to a temporary
name and renamed, so a failed export never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from curation_assets.store import DuckDBStore
from curation_assets.store.sql_files import fetch_row, read_sql

ExportFormat = Literal["jsonl", "parquet", "hf"]
BATCH_ROWS = 5_000


class ExportError(RuntimeError):
    pass


def export_selection(store: DuckDBStore, selection: str, fmt: ExportFormat, out: Path,
                     *, read_only: bool = False) -> int:
    """Write `selection` (or `samples`) to `out`; returns the number of samples written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with store.reader(read_only=read_only) as con:
        if selection == "samples":
            reader = con.sql(read_sql("reads/export_samples.sql")).to_arrow_reader(BATCH_ROWS)
        else:
            known = fetch_row(con, "SELECT count(*) FROM selections WHERE selection = $s", {"s": selection})
            if known[0] == 0:
                names = [r[0] for r in con.execute("SELECT DISTINCT selection FROM selections ORDER BY 1").fetchall()]
                raise ExportError(f"no selection named {selection!r} in {store.path} "
                                  f"(known: samples{''.join(', ' + n for n in names)})")
            reader = con.sql(read_sql("reads/export_selection.sql"),
                             params={"selection": selection}).to_arrow_reader(BATCH_ROWS)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
            if fmt == "jsonl":
                staged = Path(tmp) / out.name
                count = _write_jsonl(reader, staged)
            else:
                staged_parquet = Path(tmp) / "export.parquet"
                count = _write_parquet(reader, staged_parquet)
                staged = staged_parquet
                if fmt == "hf":
                    staged = Path(tmp) / "hf"
                    _write_hf(staged_parquet, staged)
            _replace(staged, out)
    return count


def _write_jsonl(reader, path: Path) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for batch in reader:
            raws = batch.column("raw_record").to_pylist()
            messages = batch.column("messages").to_pylist()
            for raw, conversation in zip(raws, messages):
                handle.write(raw if raw is not None else json.dumps({"messages": conversation}, ensure_ascii=False))
                handle.write("\n")
            count += batch.num_rows
    return count


def _write_parquet(reader, path: Path) -> int:
    count = 0
    with pq.ParquetWriter(path, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            count += batch.num_rows
    return count


def _write_hf(parquet_file: Path, folder: Path) -> None:
    import datasets

    with tempfile.TemporaryDirectory() as cache_dir:
        dataset = datasets.Dataset.from_parquet(str(parquet_file), cache_dir=cache_dir)
        dataset.save_to_disk(str(folder))


def _replace(staged: Path, out: Path) -> None:
    if out.is_dir() and not staged.is_dir():
        raise ExportError(f"{out} is a folder; give a file path for this format")
    if out.is_dir():
        backup = out.with_name(out.name + ".old")
        os.replace(out, backup)
        os.replace(staged, out)
        shutil.rmtree(backup)
    else:
        if out.exists() and staged.is_dir():
            out.unlink()
        os.replace(staged, out)
