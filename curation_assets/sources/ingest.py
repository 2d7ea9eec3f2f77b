"""Read a source, normalise every record, and stage the results as Parquet files.

Nothing touches DuckDB here: the staged files are merged into the store in one short
transaction by `curation_assets.store.writes.write_ingest`. Memory stays bounded by a
batch of samples plus one id per distinct sample (for exact-duplicate counting).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation_assets.sources.fingerprint import content_hash
from curation_assets.sources.hub import hub_offline, local_dataset_dir, resolve_revision
from curation_assets.sources.normalise import RejectRecord, normalise_record
from curation_assets.sources.packaged import PACKAGED, packaged_file
from curation_assets.sources.records import (
    REJECTED_PREFIX_BYTES,
    RawRecord,
    SourceReadError,
    read_hub_dataset,
    read_records,
    too_large_reason,
)
from curation_assets.sources.spec import SourceSpec

BATCH_ROWS = 2_000

STAGED_SAMPLE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("format", pa.string()),
        ("instruction", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("n_turns", pa.int32()),
        ("raw_record", pa.string()),
        ("first_record_no", pa.int64()),
    ]
)
STAGED_COUNT_SCHEMA = pa.schema([("sample_id", pa.string()), ("n_records", pa.int32())])
STAGED_REJECT_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("record_no", pa.int64()),
        ("location", pa.string()),
        ("reason", pa.string()),
        ("raw_record", pa.string()),
    ]
)


class IngestError(RuntimeError):
    """The source cannot be ingested as a whole; nothing was written."""


@dataclass
class IngestResult:
    source: str
    source_file: str
    records_read: int = 0
    samples: int = 0  # distinct samples kept from this source
    duplicates: int = 0  # records that repeat an earlier record of this source exactly
    rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    samples_file: Path | None = None
    counts_file: Path | None = None
    rejected_file: Path | None = None
    fingerprint: str | None = None  # content hash of the file, equal before and after reading it
    revision: str | None = None  # the commit of a Hub dataset that was read
    max_deactivated_fraction: float = 1.0  # the source's shrink guard (see check_shrink)
    accept_shrink: str | None = None

    @property
    def balanced(self) -> bool:
        return self.records_read == self.samples + self.duplicates + self.rejected

    def check_shrink(self, active: int, deactivated: int) -> None:
        """Refuse a merge that would deactivate more than `max_deactivated_fraction` of the source's
        `active` samples (a truncated file, a file caught while rewritten), unless `accept_shrink`
        names this exact content. Called by the merge before it writes anything."""
        if active == 0 or deactivated / active <= self.max_deactivated_fraction:
            return
        if self.accept_shrink is not None and self.accept_shrink == self.fingerprint:
            return
        accept = (
            f"set `accept_shrink: {self.fingerprint}` on source {self.source!r} (accepts this exact file content only)"
            if self.fingerprint
            else f"raise `max_deactivated_fraction` of source {self.source!r}"
        )
        raise IngestError(
            f"source {self.source!r}: ingesting {self.source_file} would deactivate {deactivated} of the source's "
            f"{active} active samples ({deactivated / active:.0%} > max_deactivated_fraction "
            f"{self.max_deactivated_fraction:.0%}); the file now yields {self.samples} samples from "
            f"{self.records_read} records. Nothing was written. If the file is truncated or still being "
            f"written, restore it or wait and run again; if the shrink is intended, {accept}."
        )

    def stats(self) -> dict[str, Any]:
        return {
            "source_file": self.source_file,
            "records_read": self.records_read,
            "samples": self.samples,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "reject_reasons": self.reject_reasons,
            **({"source_fingerprint": self.fingerprint} if self.fingerprint else {}),
            **({"source_revision": self.revision} if self.revision else {}),
        }


def resolve_source_location(spec: SourceSpec, base_dir: Path) -> str:
    """The file, folder or hub name a source reads, as a display string."""
    if spec.package:
        return str(packaged_file(spec.package))
    if spec.hf_dataset:
        local = local_dataset_dir(spec, base_dir)
        return f"hf://{local or spec.hf_dataset}" + (f"/{spec.config}" if spec.config else "") + f":{spec.split}"
    path = Path(spec.path or "").expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def iter_source_records(spec: SourceSpec, base_dir: Path, revision: str | None = None) -> Iterator[RawRecord]:
    """The records of a source; `revision` (a resolved commit) overrides an `hf_dataset`'s `revision`."""
    if spec.hf_dataset:
        local = local_dataset_dir(spec, base_dir)
        records = read_hub_dataset(
            str(local or spec.hf_dataset),
            spec.split,
            config=spec.config,
            revision=revision or spec.revision,
            data_files=spec.data_files,
            streaming=spec.streaming,
        )
    else:
        records = read_records(
            Path(resolve_source_location(spec, base_dir)), split=spec.split, max_record_bytes=spec.max_record_bytes
        )
    for count, record in enumerate(records, start=1):
        yield record
        if spec.limit is not None and count >= spec.limit:
            return


def stage_source(
    spec: SourceSpec, base_dir: Path, staging_dir: Path, progress: Callable[[int], None] | None = None
) -> IngestResult:
    """Read and normalise `spec`'s records into Parquet files under `staging_dir`.

    A local file is hashed before and after it is read: if the two differ (the file was being
    written) the ingest fails and nothing is staged from a half-written file."""
    fmt = spec.effective_format
    mapping = spec.fields.to_mapping() if spec.fields else None
    if spec.package and spec.format == "auto" and spec.fields is None:
        fmt, mapping = PACKAGED[spec.package].format, PACKAGED[spec.package].mapping
    result = IngestResult(
        spec.name,
        resolve_source_location(spec, base_dir),
        max_deactivated_fraction=spec.max_deactivated_fraction,
        accept_shrink=spec.accept_shrink,
    )
    result.samples_file = staging_dir / f"{spec.name}.samples.parquet"
    result.counts_file = staging_dir / f"{spec.name}.counts.parquet"
    result.rejected_file = staging_dir / f"{spec.name}.rejected.parquet"
    record_counts: dict[str, int] = {}
    samples = _BatchWriter(result.samples_file, STAGED_SAMPLE_SCHEMA)
    rejects = _BatchWriter(result.rejected_file, STAGED_REJECT_SCHEMA)

    def reject(record: RawRecord, reason: str, raw_text: str) -> None:
        result.rejected += 1
        key = reason.split(":")[0]
        result.reject_reasons[key] = result.reject_reasons.get(key, 0) + 1
        rejects.add(
            {
                "source_file": result.source_file,
                "record_no": record.record_no,
                "location": record.location,
                "reason": reason,
                "raw_record": raw_text,
            }
        )

    local = local_dataset_dir(spec, base_dir)
    location = local if local is not None else Path(result.source_file)
    load_revision = None
    try:
        if local is not None or (not spec.hf_dataset and location.exists()):
            result.fingerprint = content_hash(location)
        elif spec.hf_dataset:
            # the commit recorded is the commit read: online it is also the one loaded, even if the branch moves
            result.revision = resolve_revision(spec.hf_dataset, spec.revision)
            load_revision = None if hub_offline() else result.revision
        for record in iter_source_records(spec, base_dir, load_revision):
            result.records_read += 1
            if progress is not None:
                progress(1)
            if record.error is not None:
                reject(record, record.error, record.raw_text or "")
                continue
            raw_json = json.dumps(record.value, ensure_ascii=False, default=str)
            size = len(raw_json.encode("utf-8"))
            if size > spec.max_record_bytes:
                prefix = raw_json.encode("utf-8")[:REJECTED_PREFIX_BYTES]
                reject(
                    record,
                    too_large_reason(size, spec.max_record_bytes, len(prefix)),
                    prefix.decode("utf-8", errors="ignore"),
                )
                continue
            try:
                sample = normalise_record(record.value, fmt, mapping)
            except RejectRecord as err:
                reject(record, str(err), raw_json)
                continue
            seen = record_counts.get(sample.sample_id)
            if seen is not None:
                record_counts[sample.sample_id] = seen + 1
                result.duplicates += 1
                continue
            record_counts[sample.sample_id] = 1
            samples.add(
                {
                    "sample_id": sample.sample_id,
                    "format": sample.format,
                    "instruction": sample.instruction,
                    "input": sample.input,
                    "output": sample.output,
                    "messages": sample.messages,
                    "n_turns": sample.n_turns,
                    "raw_record": raw_json,
                    "first_record_no": record.record_no,
                }
            )
    except SourceReadError as err:
        raise IngestError(f"source {spec.name!r}: {err}") from err
    finally:
        samples.close()
        rejects.close()
    if result.fingerprint is not None and content_hash(location) != result.fingerprint:
        raise IngestError(
            f"source {spec.name!r}: {result.source_file} changed while it was read (it is probably being "
            "written); nothing was written. Run the ingest again once the file is complete."
        )
    result.samples = len(record_counts)
    pq.write_table(
        pa.table(
            {"sample_id": list(record_counts), "n_records": list(record_counts.values())}, schema=STAGED_COUNT_SCHEMA
        ),
        result.counts_file,
    )
    _check_rejections(spec, result)
    return result


def _check_rejections(spec: SourceSpec, result: IngestResult) -> None:
    if result.records_read == 0:
        raise IngestError(f"source {spec.name!r}: {result.source_file} has no records")
    fraction = result.rejected / result.records_read
    if fraction > spec.max_rejected_fraction:
        top = sorted(result.reject_reasons.items(), key=lambda kv: -kv[1])[:3]
        reasons = "; ".join(f"{count}x {reason}" for reason, count in top)
        first = pq.read_table(result.rejected_file).slice(0, 1).to_pylist() if result.rejected_file else []
        example = f" First: {first[0]['location']}: {first[0]['reason']}." if first else ""
        raise IngestError(
            f"source {spec.name!r}: {result.rejected} of {result.records_read} records rejected "
            f"({fraction:.0%} > max_rejected_fraction {spec.max_rejected_fraction:.0%}) in "
            f"{result.source_file}. Reasons: {reasons}.{example} Check `format`/`fields`; nothing was written."
        )


class _BatchWriter:
    """Append dict rows to a Parquet file in batches (an empty file if no rows)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.rows: list[dict[str, Any]] = []
        self.writer = pq.ParquetWriter(path, schema)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
