"""Selection reports: size, budget, pool-vs-selected score histograms and example members.

`data.gather_report` reads the numbers once from the DuckDB file; `markdown` renders them
for Dagster metadata (the selection assets attach it as `report`), `html` as the page
`curation report SELECTION` writes.
"""

from __future__ import annotations

import duckdb

from curation_assets.reports.data import ReportError, SelectionReport, gather_report, known_selections
from curation_assets.reports.html import render_html
from curation_assets.reports.markdown import render_markdown
from curation_assets.reports.plots import PANELS_PER_FIGURE, histogram_pngs, plotted_columns

MARKDOWN_MAX_PANELS = PANELS_PER_FIGURE  # one small figure keeps Dagster metadata small
HTML_MAX_PANELS = 36

__all__ = [
    "ReportError",
    "SelectionReport",
    "gather_report",
    "known_selections",
    "selection_report_html",
    "selection_report_markdown",
]


def selection_report_markdown(con: duckdb.DuckDBPyConnection, selection: str) -> str:
    """The Markdown report of `selection` (one figure of at most 6 histograms)."""
    report = gather_report(con, selection)
    images = histogram_pngs(report.scores, max_panels=MARKDOWN_MAX_PANELS)
    return render_markdown(report, images, plotted=len(plotted_columns(report.scores, MARKDOWN_MAX_PANELS)))


def selection_report_html(con: duckdb.DuckDBPyConnection, selection: str, *, source: str = "") -> str:
    """The standalone HTML report of `selection` (histograms of every score, 6 per figure)."""
    report = gather_report(con, selection)
    return render_html(report, histogram_pngs(report.scores, max_panels=HTML_MAX_PANELS), source=source)
