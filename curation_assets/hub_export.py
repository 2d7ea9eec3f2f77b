"""A selection as a Hugging Face Hub dataset folder: the layout `push_to_hub` uploads.

    README.md                               dataset card: YAML front matter (`configs:`, `dataset_info:`)
                                            + pipeline, sources with revisions, every stage's config and hash,
                                            the selection's counts and report
    data/<split>-00000-of-0000N.parquet     shards of one schema
    images/scores-<n>.png                   the report's histograms

Every shard has one schema even when the source rows mix formats (a `format: auto` source,
LIFT's generated children): `messages` (the normalised conversation, list of {role, content}),
`sample_id`, `source`, `rank`, `score`, then the original fields: one column per field when every
member's original record is a JSON object with the same keys (none named like the columns before),
else one column `original_record` holding the record as JSON text (null for generated samples).

`export.export_selection(..., fmt="hub")` writes the folder with the export safety rules
(temporary folder, rename, manifest); `push_folder` uploads it with `HfApi.upload_folder`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curation_assets.redact import redact_config
from curation_assets.store.sql_files import read_sql

FIXED_COLUMNS = ("messages", "sample_id", "source", "rank", "score")
ORIGINAL_JSON_COLUMN = "original_record"
SHARD_BYTES = 256 << 20  # uncompressed Arrow bytes per shard (the Hub's viewer reads shards of this order)
BATCH_ROWS = 5_000
SPLIT = "train"
TOKEN_VARIABLE = "HF_TOKEN"


class HubExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class DataSizes:
    rows: int
    arrow_bytes: int  # what `datasets` calls num_bytes / dataset_size
    file_bytes: int  # the Parquet shards: download_size


@dataclass(frozen=True)
class StageRun:
    """The latest recorded run of one stage (or source) of the pipeline."""

    stage: str
    kind: str
    config: dict[str, Any]
    config_hash: str
    code_version: str
    finished_at: datetime
    rows_in: int
    rows_out: int
    stats: dict[str, Any]


def write_hub_folder(
    con: duckdb.DuckDBPyConnection,
    selection: str,
    export_sql: str,
    params: dict[str, Any],
    folder: Path,
    *,
    database: Path,
    shard_bytes: int | None = None,
) -> int:
    """Write the Hub layout of `selection` (rows from `export_sql`) into the new folder `folder`;
    returns the number of samples written. Shards hold about `shard_bytes` (default SHARD_BYTES)."""
    folder.mkdir()
    runs, pipeline = stage_runs(con, selection)
    report_md = _report_markdown(con, selection, folder / "images") if selection != "samples" else None
    inner = export_sql.strip().rstrip(";")
    original = _original_columns(con, inner, params)
    query = read_sql("reads/export_hub.sql").format(export=inner, original=original)
    reader = con.sql(query, params=params or None).to_arrow_reader(BATCH_ROWS)
    count, nbytes, schema, shards = _write_shards(reader, folder / "data", shard_bytes or SHARD_BYTES)
    sizes = DataSizes(count, nbytes, sum((folder / "data" / name).stat().st_size for name in shards))
    card = render_card(
        selection=selection,
        pipeline=pipeline,
        runs=runs,
        sizes=sizes,
        schema=schema,
        shards=shards,
        report_md=report_md,
        database=database,
        original_as_json=original.endswith(ORIGINAL_JSON_COLUMN),
    )
    (folder / "README.md").write_text(card, encoding="utf-8")
    return count


def _original_columns(con: duckdb.DuckDBPyConnection, inner: str, params: dict[str, Any]) -> str:
    """The SELECT items of the original fields: one per field when all records share their keys."""
    not_objects, key_sets, structure = con.execute(
        read_sql("reads/export_hub_structure.sql").format(export=inner), params or None
    ).fetchall()[0]
    fields = list(json.loads(structure)) if structure else []
    uniform = (
        not_objects == 0
        and key_sets == 1
        and fields
        and not set(fields) & set(FIXED_COLUMNS)
        and ORIGINAL_JSON_COLUMN not in fields
    )
    if not uniform:
        return f"raw_record AS {ORIGINAL_JSON_COLUMN}"
    # A field null (or an empty list) in every record has no type: store it as text.
    typed = structure.replace('"NULL"', '"VARCHAR"').replace("'", "''")
    return f"unnest(json_transform(raw_record, '{typed}'))"


def _write_shards(reader: pa.RecordBatchReader, data: Path, shard_bytes: int) -> tuple[int, int, pa.Schema, list[str]]:
    """Batches into shards of about `shard_bytes`, named `<split>-<i>-of-<n>.parquet` once n is known;
    returns (rows, Arrow bytes, schema, shard names)."""
    data.mkdir()
    staged: list[Path] = []
    writer: pq.ParquetWriter | None = None
    count = in_shard = nbytes = 0
    schema = reader.schema
    try:
        for batch in reader:
            if writer is None or in_shard >= shard_bytes:
                if writer is not None:
                    writer.close()
                staged.append(data / f".shard-{len(staged)}.parquet")
                writer, in_shard = pq.ParquetWriter(staged[-1], schema), 0
            writer.write_batch(batch)
            in_shard += batch.nbytes
            nbytes += batch.nbytes
            count += batch.num_rows
        if writer is None:  # an empty selection is still a dataset with its columns
            staged.append(data / ".shard-0.parquet")
            pq.write_table(schema.empty_table(), staged[-1])
    finally:
        if writer is not None:
            writer.close()
    names = [f"{SPLIT}-{i:05d}-of-{len(staged):05d}.parquet" for i in range(len(staged))]
    for path, name in zip(staged, names):
        path.rename(data / name)
    return count, nbytes, schema, names


def stage_runs(con: duckdb.DuckDBPyConnection, selection: str) -> tuple[list[StageRun], str | None]:
    """The latest run of every stage of the selection's pipeline (sources first), and that pipeline."""
    rows = con.execute(read_sql("reads/hub_card_stage_runs.sql"), {"selection": selection}).fetchall()
    runs = [
        StageRun(
            stage,
            kind,
            json.loads(config),
            config_hash,
            code_version,
            finished_at,
            rows_in,
            rows_out,
            json.loads(stats),
        )
        for (_, stage, kind, config, config_hash, code_version, finished_at, rows_in, rows_out, stats) in rows
    ]
    pipelines = sorted({row[0] for row in rows})
    return runs, ", ".join(pipelines) or None


def _report_markdown(con: duckdb.DuckDBPyConnection, selection: str, images: Path) -> str | None:
    """The selection report's Markdown with its histograms as PNG files under `images/`."""
    from curation_assets.reports import MARKDOWN_MAX_PANELS, ReportError, gather_report
    from curation_assets.reports.markdown import render_markdown
    from curation_assets.reports.plots import histogram_pngs, plotted_columns

    try:
        report = gather_report(con, selection)
    except ReportError:
        return None
    pngs = histogram_pngs(report.scores, max_panels=MARKDOWN_MAX_PANELS)
    links = []
    if pngs:
        images.mkdir()
    for number, png in enumerate(pngs, start=1):
        (images / f"scores-{number}.png").write_bytes(png)
        links.append(f"images/scores-{number}.png")
    return render_markdown(
        report, pngs, plotted=len(plotted_columns(report.scores, MARKDOWN_MAX_PANELS)), image_urls=links
    )


# ---- the dataset card ----------------------------------------------------------------------------


def front_matter(schema: pa.Schema, sizes: DataSizes, pretty_name: str) -> dict[str, Any]:
    """The card's YAML metadata: the `configs:` the Hub and `load_dataset(DIR)` read, and `dataset_info`."""
    import datasets

    features = datasets.Features.from_arrow_schema(schema)
    info = datasets.DatasetInfo(
        features=features,
        splits=datasets.SplitDict(
            {SPLIT: datasets.SplitInfo(SPLIT, num_bytes=sizes.arrow_bytes, num_examples=sizes.rows)}
        ),
        download_size=sizes.file_bytes,
        dataset_size=sizes.arrow_bytes,
    )
    return {
        "pretty_name": pretty_name,
        "tags": ["curation_assets", "instruction-tuning"],
        "configs": [{"config_name": "default", "data_files": [{"split": SPLIT, "path": f"data/{SPLIT}-*"}]}],
        "dataset_info": info._to_yaml_dict(),
    }


def render_card(
    *,
    selection: str,
    pipeline: str | None,
    runs: Sequence[StageRun],
    sizes: DataSizes,
    schema: pa.Schema,
    shards: Sequence[str],
    report_md: str | None,
    database: Path,
    original_as_json: bool,
) -> str:
    """README.md of the exported folder (a Hugging Face dataset card)."""
    meta = yaml.safe_dump(
        front_matter(schema, sizes, f"{selection} ({pipeline or 'curation_assets'})"),
        sort_keys=False,
        allow_unicode=True,
    )
    count = sizes.rows
    selected = next((run for run in runs if run.stage == selection), None)
    what = (
        "every active sample"
        if selection == "samples"
        else f"selection `{selection}`"
        + (f" ({selected.kind}, config hash `{selected.config_hash}`)" if selected else "")
    )
    lines = [
        "---",
        meta.rstrip(),
        "---",
        "",
        f"# {selection}",
        "",
        f"{count} samples: {what} of pipeline `{pipeline or 'unknown'}`, curated with "
        "curation_assets and exported "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from `{database.name}` "
        f"in {len(shards)} Parquet shard{'s' if len(shards) != 1 else ''}.",
        "",
        "## Columns",
        "",
        "- `messages`: the normalised conversation, a list of `{role, content}` (roles `system`, `user`, `assistant`)",
        "- `sample_id`: SHA-256 (128 bits) of the canonical JSON of `messages`",
        "- `source`: the pipeline source that first produced the sample",
        "- `rank`: 1 = chosen first / best; `score`: the value that ranked it (null when none)",
    ]
    if original_as_json:
        lines.append(
            f"- `{ORIGINAL_JSON_COLUMN}`: the record as read, JSON text (the members' records do not "
            "share one set of fields; null for generated samples)"
        )
    else:
        originals = [name for name in schema.names if name not in FIXED_COLUMNS]
        lines.append("- the original record's fields: " + ", ".join(f"`{name}`" for name in originals))
    lines += [
        "",
        "## Sources",
        "",
        "| source | dataset / file | revision or content hash | records read | samples | duplicates | rejected |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for run in (r for r in runs if r.kind == "source"):
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{run.stage}`",
                    _source_location(run.config),
                    f"`{run.stats.get('source_revision') or run.stats.get('source_fingerprint') or '-'}`",
                    *(str(run.stats.get(key, "")) for key in ("records_read", "samples", "duplicates", "rejected")),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "## Stages",
        "",
        "The latest run of every stage of the pipeline; a config hash names the config and code that "
        "computed the stage's rows (secrets are never stored; URLs are shown without credentials).",
        "",
    ]
    for run in runs:
        config = {k: v for k, v in redact_config(run.config).items() if k != "name"}
        lines += [
            f"### `{run.stage}` ({run.kind})",
            "",
            f"config hash `{run.config_hash}`, code version `{run.code_version}`, "
            f"{run.rows_in} rows in, {run.rows_out} out, finished {run.finished_at:%Y-%m-%d %H:%M} UTC",
            "",
            "```yaml",
            yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(),
            "```",
            "",
        ]
    if report_md:
        lines += ["## Selection report", "", report_md.replace("## Selection", "### Selection", 1)]
    return "\n".join(lines).rstrip() + "\n"


def _source_location(config: dict[str, Any]) -> str:
    """Where a source reads, without local directories (a card is public)."""
    if config.get("hf_dataset"):
        name = str(config["hf_dataset"])
        if name.startswith(("/", "~", ".")):  # a local folder given by its path: its name only
            name = Path(name).name
        parts = [f"`{redact_config(name)}`"]
        parts += [f"{key} `{config[key]}`" for key in ("config", "revision") if config.get(key)]
        parts.append(f"split `{config.get('split', 'train')}`")
        return ", ".join(parts)
    if config.get("package"):
        return f"package `{config['package']}`"
    return f"`{Path(str(config.get('path', ''))).name}`"


# ---- pushing ---------------------------------------------------------------------------------------


def hub_token() -> str:
    """The token from HF_TOKEN; HubExportError (naming what to do, nothing sent) when there is none."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise HubExportError(
            f"--push needs a Hugging Face write token in the {TOKEN_VARIABLE} environment variable "
            "(create one at https://huggingface.co/settings/tokens); nothing was written or sent"
        )
    from curation_assets.sources.hub import hub_offline

    if hub_offline():
        raise HubExportError("--push cannot reach the Hub while HF_HUB_OFFLINE is set; nothing was written or sent")
    return token


def push_folder(folder: Path, repo_id: str, token: str, *, message: str) -> str:
    """Upload `folder` to the dataset repository `repo_id` (created if missing) in one commit that also
    removes shards and images a previous, larger push left; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=message,
            delete_patterns=["data/*", "images/*"],
        )
    except Exception as err:  # huggingface_hub raises many types; its message never holds the token
        raise HubExportError(f"pushing {folder} to dataset {repo_id!r} failed: {err}") from err
    return str(commit)
