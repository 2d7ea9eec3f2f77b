"""Dagster metadata for an asset's DuckDB table: row count, table name, schema, column lineage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import duckdb

from curation_assets.store import DuckDBStore, Store

_TYPE_NAMES = {
    "VARCHAR": "string",
    "INTEGER": "int",
    "BIGINT": "int",
    "DOUBLE": "float",
    "FLOAT": "float",
    "BOOLEAN": "bool",
    "TIMESTAMP": "timestamp",
    "JSON": "json",
}


def table_schema(con: duckdb.DuckDBPyConnection, table: str) -> dg.TableSchema:
    rows = con.execute(f"DESCRIBE {table}").fetchall()  # table names come from the kind registry
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=_TYPE_NAMES.get(type_name) or type_name.lower(),
                constraints=dg.TableColumnConstraints(nullable=null == "YES"),
            )
            for name, type_name, null, *_ in rows
        ]
    )


def column_lineage(lineage: Mapping[str, Sequence[tuple[dg.AssetKey, str]]]) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=key, column_name=name) for key, name in deps]
            for column, deps in lineage.items()
            if deps
        }
    )


def lineage_markdown(lineage: Mapping[str, Sequence[tuple[dg.AssetKey, str]]]) -> str:
    """Column lineage as a Markdown table (column | from). The open-source Dagster UI shows
    `dagster/column_lineage` only in run logs (its asset-page view is a Dagster+ feature), so the
    asset page gets this readable copy under `column_lineage`."""
    rows = [
        f"| `{column}` | {', '.join(f'{key.to_user_string()}.{name}' for key, name in deps)} |"
        for column, deps in lineage.items()
        if deps
    ]
    return "\n".join(["| column | from |", "|---|---|", *rows])


def store_metadata(store: Store) -> dict[str, Any]:
    """Where the asset's rows live: `store` (its description, never a secret) and, for a DuckDB file,
    `duckdb_path` (a path the UI links)."""
    metadata: dict[str, Any] = {"store": dg.MetadataValue.text(store.describe())}
    if isinstance(store, DuckDBStore):
        metadata["duckdb_path"] = dg.MetadataValue.path(str(store.path))
    return metadata


def table_metadata(
    con: duckdb.DuckDBPyConnection,
    *,
    table: str,
    row_count: int,
    lineage: Mapping[str, Sequence[tuple[dg.AssetKey, str]]],
    store: Store,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(row_count),
        "dagster/table_name": dg.MetadataValue.text(table),
        "dagster/column_schema": table_schema(con, table),
        **store_metadata(store),
    }
    if lineage:
        metadata["dagster/column_lineage"] = column_lineage(lineage)
        metadata["column_lineage"] = dg.MetadataValue.md(lineage_markdown(lineage))
    return metadata


def plain_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Kind-specific values as Dagster metadata (numbers stay numbers, dicts become JSON)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, bool) or value is None:
            out[key] = dg.MetadataValue.text(str(value))
        elif isinstance(value, (int, float, str)):
            out[key] = value
        elif isinstance(value, (dict, list)):
            out[key] = dg.MetadataValue.json(value)
        else:
            out[key] = dg.MetadataValue.text(str(value))
    return out
