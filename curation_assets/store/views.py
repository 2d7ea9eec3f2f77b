"""Views that make the DuckDB file pleasant to query: one per stage (its current rows, named
after the stage) and `sample_scores` (every scalar score and selection flag per sample).

They depend on the pipeline (stage names, current config hashes), so they are filled in
from templates in sql/views/ and rebuilt before each asset writes. Only identifiers checked
by the YAML schema and hex config hashes are interpolated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from curation_assets.store.sql_files import read_sql

_SAFE = re.compile(r"^[a-z][a-z0-9_]*$")
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class StageView:
    name: str
    table: str
    config_hash: str
    one_row_per_sample: bool = True  # else only its own view, not a `sample_scores` column


def refresh_views(con: duckdb.DuckDBPyConnection, stages: Sequence[StageView], selections: Sequence[str]) -> None:
    columns: list[str] = []
    joins: list[str] = []
    for stage in stages:
        if not (_SAFE.match(stage.name) and _SAFE.match(stage.table) and _HEX.match(stage.config_hash)):
            raise ValueError(f"unsafe identifier for a view: {stage}")
        con.execute(
            read_sql("views/stage_current.sql").format(
                view=stage.name, table=stage.table, stage=stage.name, config_hash=stage.config_hash
            )
        )
        if not stage.one_row_per_sample:
            continue
        scalars = [
            name
            for name, type_name, *_ in con.execute(f'DESCRIBE "{stage.name}"').fetchall()
            if name != "sample_id" and not type_name.endswith("]")
        ]
        joins.append(f'LEFT JOIN "{stage.name}" AS "v_{stage.name}" USING (sample_id)')
        columns += [f'"v_{stage.name}"."{column}" AS "{stage.name}__{column}"' for column in scalars]
    for selection in selections:
        if not _SAFE.match(selection):
            raise ValueError(f"unsafe identifier for a view: {selection!r}")
        columns.append(
            f"s.sample_id IN (SELECT sample_id FROM selections WHERE selection = '{selection}') AS \"in_{selection}\""
        )
    con.execute(
        read_sql("views/sample_scores.sql").format(
            columns="".join(f",\n       {c}" for c in columns), joins="\n".join(joins)
        )
    )
