"""The numbers of a selection report, read from the pipeline's DuckDB file.

One gathering feeds both renderers (Markdown for Dagster metadata, HTML for `curation
report`). Everything is read through SQL files under sql/reads/report_*.sql; score
statistics and histograms are computed by DuckDB, so memory does not grow with the pool.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from curation_assets.arrow_compute import pc
from curation_assets.store.sql_files import fetch_row, read_sql

SELECTION_SCORE = "selection_score"  # the selection's own score, next to the `<stage>__<column>` scores
DEFAULT_BINS = 30
DEFAULT_EXAMPLES = 5
DEFAULT_PREVIEW_CHARS = 280
NEAR_DUPLICATE_COSINE = 0.95  # members above this cosine are one cluster (the near_duplicate filter's default)

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
_NUMERIC_TYPES = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
        "FLOAT",
        "DOUBLE",
    }
)


class ReportError(LookupError):
    """The report cannot be made: unknown selection, or a DuckDB file without the pipeline's views."""


@dataclass(frozen=True)
class ScoreComparison:
    """One numeric score over the pool and over the selected samples, with a shared-bin histogram."""

    column: str  # `<stage>__<column>` of `sample_scores`, or SELECTION_SCORE
    pool_n: int
    pool_mean: float | None
    pool_median: float | None
    selected_n: int
    selected_mean: float | None
    selected_median: float | None
    edges: np.ndarray  # n_bins + 1 bin edges
    pool_counts: np.ndarray  # n_bins counts
    selected_counts: np.ndarray

    @property
    def is_selection_score(self) -> bool:
        return self.column == SELECTION_SCORE

    @property
    def label(self) -> str:
        """`stage.column`, or "selection score"."""
        return "selection score" if self.is_selection_score else self.column.replace("__", ".", 1)

    @property
    def plottable(self) -> bool:
        """Values in at least two bins: a histogram says something."""
        return int((self.pool_counts > 0).sum()) > 1


@dataclass(frozen=True)
class Example:
    """A selected sample with clipped text."""

    rank: int
    score: float | None
    sample_id: str
    instruction: str
    input: str
    output: str


@dataclass(frozen=True)
class NearDuplicateCount:
    """Near-duplicate clusters among the members: a greedy walk down the ranking keeps a member
    unless its cosine similarity to a kept one exceeds `threshold`; clusters = members kept."""

    stage: str  # the embedding stage whose vectors were compared
    threshold: float
    embedded: int  # members with a vector in that stage
    clusters: int


@dataclass
class SelectionReport:
    """Everything a selection report shows."""

    selection: str
    kind: str | None
    config: dict[str, Any]
    config_hash: str | None
    size: int
    pool_size: int
    input_selection: str | None
    budget: int | None  # the count the run aimed at (stage_runs stats), when the kind has one
    fraction: float | None
    candidates: int | None  # rows the run considered (stage_runs.rows_in)
    seconds: float | None
    selected_at: datetime | None
    scored_members: int
    scores: list[ScoreComparison] = field(default_factory=list)
    highest: list[Example] = field(default_factory=list)
    lowest: list[Example] = field(default_factory=list)
    preview_chars: int = DEFAULT_PREVIEW_CHARS
    distinct_conversations: int = 0  # source conversations among the members (ShareGPT parts are one)
    distinct_first_turns: int = 0  # distinct first user turns among the members
    near_duplicates: NearDuplicateCount | None = None  # None: the pipeline has no embedding stage

    @property
    def score_sources(self) -> list[str]:
        """`sample_scores` columns the selection ranks by (its `stage` and `column` keys)."""
        stage, column = self.config.get("stage"), self.config.get("column")
        if isinstance(stage, str) and isinstance(column, str):
            return [f"{stage}__{column}"]
        return []


def known_selections(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the selections recorded in the file (members in `selections`, or a run that kept none)."""
    return [name for (name,) in con.execute(read_sql("reads/report_known_selections.sql")).fetchall()]


def gather_report(
    con: duckdb.DuckDBPyConnection,
    selection: str,
    *,
    bins: int = DEFAULT_BINS,
    examples: int = DEFAULT_EXAMPLES,
    preview_chars: int = DEFAULT_PREVIEW_CHARS,
) -> SelectionReport:
    """Read the numbers of `selection`'s report from an open connection (read-only is enough)."""
    known = known_selections(con)
    if selection not in known:
        raise ReportError(
            f"no selection named {selection!r} (known: {', '.join(known) if known else 'none; run the pipeline first'})"
        )
    run = con.execute(read_sql("reads/report_selection_run.sql"), {"selection": selection}).fetchall()
    kind, config_json, run_hash, rows_in, seconds, stats_json = run[0] if run else (None, "{}", None, None, None, "{}")
    config = json.loads(config_json or "{}")
    stats = json.loads(stats_json or "{}")
    input_selection = config.get("input_selection")
    params = {"selection": selection, "input_selection": input_selection}
    size, pool_size, stored_hash, selected_at, scored = fetch_row(con, read_sql("reads/report_membership.sql"), params)
    budget = stats.get("budget", config.get("budget"))
    report = SelectionReport(
        selection=selection,
        kind=kind,
        config=config,
        config_hash=stored_hash or run_hash,
        size=int(size),
        pool_size=int(pool_size),
        input_selection=input_selection,
        budget=int(budget) if isinstance(budget, (int, float)) else None,
        fraction=config.get("fraction"),
        candidates=rows_in,
        seconds=seconds,
        selected_at=selected_at,
        scored_members=int(scored),
        preview_chars=preview_chars,
    )
    report.distinct_conversations, report.distinct_first_turns = _distinct_counts(con, selection)
    report.near_duplicates = near_duplicate_count(con, selection, config.get("embedding"))
    report.scores = _score_comparisons(con, params, bins, priority=report.score_sources)
    if report.size <= 2 * examples:  # small selections: every member once, best first
        report.highest = _examples(con, selection, report.size, preview_chars, highest_first=True)
    else:
        report.highest = _examples(con, selection, examples, preview_chars, highest_first=True)
        report.lowest = _examples(con, selection, examples, preview_chars, highest_first=False)
    return report


def _distinct_counts(con: duckdb.DuckDBPyConnection, selection: str) -> tuple[int, int]:
    _, conversations, first_turns = fetch_row(con, read_sql("reads/selection_distinct.sql"), {"selection": selection})
    return int(conversations), int(first_turns)


def near_duplicate_count(
    con: duckdb.DuckDBPyConnection,
    selection: str,
    preferred: object = None,
    *,
    threshold: float = NEAR_DUPLICATE_COSINE,
) -> NearDuplicateCount | None:
    """Near-duplicate clusters among `selection`'s members, from the embedding stage its config
    names, else its pipeline's latest; None when the pipeline has none. Memory: members x dim."""
    from curation_assets.methods.diversity_filter import similarity_filter  # faiss: only when counting

    found = con.execute(
        read_sql("reads/report_embedding_stage.sql"),
        {"selection": selection, "preferred": preferred if isinstance(preferred, str) else None},
    ).fetchall()
    if not found:
        return None
    stage, config_hash = found[0]
    vectors = (
        con.sql(
            read_sql("reads/report_member_embeddings.sql"),
            params={"selection": selection, "stage": stage, "config_hash": config_hash},
        )
        .to_arrow_table()
        .column("embedding")
    )
    if len(vectors) == 0:
        return NearDuplicateCount(stage=stage, threshold=threshold, embedded=0, clusters=0)
    x = pc.list_flatten(vectors).to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(vectors), -1)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    kept = similarity_filter(x, threshold).kept
    return NearDuplicateCount(stage=stage, threshold=threshold, embedded=len(vectors), clusters=int(kept.size))


def score_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Numeric stage score columns of `sample_scores` (`<stage>__<column>`), in view order."""
    try:
        described = con.execute("DESCRIBE sample_scores").fetchall()
    except duckdb.CatalogException as err:
        raise ReportError("this DuckDB file has no `sample_scores` view: run the pipeline first") from err
    return [
        name
        for name, type_name, *_ in described
        if "__" in name and _IDENTIFIER.match(name) and (type_name in _NUMERIC_TYPES or type_name.startswith("DECIMAL"))
    ]


def _score_comparisons(
    con: duckdb.DuckDBPyConnection, params: dict[str, Any], bins: int, priority: list[str]
) -> list[ScoreComparison]:
    columns = score_columns(con)
    fragment = _template(
        "reads/report_score_values.sql", columns="".join(f', CAST(v."{c}" AS DOUBLE) AS "{c}"' for c in columns)
    )
    stats = {
        row[0]: row[1:]
        for row in con.execute(_template("reads/report_score_stats.sql", score_values=fragment), params).fetchall()
    }
    histograms: dict[str, list[tuple]] = {}
    for row in con.execute(
        _template("reads/report_score_histograms.sql", score_values=fragment), {**params, "bins": bins}
    ).fetchall():
        histograms.setdefault(row[0], []).append(row[1:])
    order = [SELECTION_SCORE, *[c for c in priority if c in columns], *[c for c in columns if c not in priority]]
    comparisons = []
    for column in order:
        if column not in stats:  # no finite value in the pool
            continue
        pool_n, pool_mean, pool_median, selected_n, selected_mean, selected_median, _lo, _hi = stats[column]
        edges, pool_counts, selected_counts = _histogram(histograms[column])
        comparisons.append(
            ScoreComparison(
                column=column,
                pool_n=int(pool_n),
                pool_mean=pool_mean,
                pool_median=pool_median,
                selected_n=int(selected_n),
                selected_mean=selected_mean,
                selected_median=selected_median,
                edges=edges,
                pool_counts=pool_counts,
                selected_counts=selected_counts,
            )
        )
    return comparisons


def _template(name: str, **parts: str) -> str:
    """An SQL template with its comment lines dropped (they name the placeholders), then filled in."""
    text = "\n".join(line for line in read_sql(name).splitlines() if not line.lstrip().startswith("--"))
    return text.format(**parts)


def _histogram(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin edges and dense counts from (lo_edge, hi_edge, n_bins, bin, pool_count, selected_count) rows."""
    lo_edge, hi_edge, n_bins = rows[0][0], rows[0][1], int(rows[0][2])
    edges = np.linspace(lo_edge, hi_edge, n_bins + 1)
    pool_counts = np.zeros(n_bins, dtype=np.int64)
    selected_counts = np.zeros_like(pool_counts)
    for _lo, _hi, _n, bin_index, pool_count, selected_count in rows:
        pool_counts[bin_index] = pool_count
        selected_counts[bin_index] = selected_count
    return edges, pool_counts, selected_counts


def _examples(
    con: duckdb.DuckDBPyConnection, selection: str, limit: int, chars: int, *, highest_first: bool
) -> list[Example]:
    rows = con.execute(
        read_sql("reads/report_examples.sql"),
        {"selection": selection, "limit": limit, "chars": chars, "highest_first": highest_first},
    ).fetchall()
    return [
        Example(
            rank=int(rank),
            score=score,
            sample_id=sample_id,
            instruction=instruction or "",
            input=input_ or "",
            output=output or "",
        )
        for rank, score, sample_id, instruction, input_, output in rows
    ]
