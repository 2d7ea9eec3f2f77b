"""PNG figures of a selection report: pool vs selected score histograms (matplotlib, Agg).

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display, no global
figure state), small and at a low DPI so a report fits in Dagster metadata.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from curation_assets.reports.data import ScoreComparison

PANELS_PER_FIGURE = 6
COLUMNS_PER_FIGURE = 3
PANEL_INCHES = (3.0, 2.2)
DPI = 72
POOL_COLOR = "#9aa5b1"
SELECTED_COLOR = "#d9480f"


def histogram_pngs(
    scores: Sequence[ScoreComparison],
    *,
    max_panels: int = PANELS_PER_FIGURE,
    panels_per_figure: int = PANELS_PER_FIGURE,
) -> list[bytes]:
    """PNG images of up to `max_panels` histograms (pool vs selected, densities), `panels_per_figure` each."""
    panels = [s for s in scores if s.plottable][:max_panels]
    return [_figure_png(panels[i : i + panels_per_figure]) for i in range(0, len(panels), panels_per_figure)]


def plotted_columns(scores: Sequence[ScoreComparison], max_panels: int = PANELS_PER_FIGURE) -> list[str]:
    """Which scores `histogram_pngs` draws with the same `max_panels`."""
    return [s.column for s in scores if s.plottable][:max_panels]


def _figure_png(panels: Sequence[ScoreComparison]) -> bytes:
    n_cols = min(COLUMNS_PER_FIGURE, len(panels))
    n_rows = -(-len(panels) // n_cols)
    figure = Figure(figsize=(PANEL_INCHES[0] * n_cols, PANEL_INCHES[1] * n_rows), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for ax, score in zip(axes.flat, panels):
        _draw(ax, score)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    legend = [Patch(color=POOL_COLOR, alpha=0.6, label="pool"), Line2D([], [], color=SELECTED_COLOR, label="selected")]
    figure.legend(handles=legend, loc="upper right", fontsize=8, frameon=False, ncols=2)
    figure.suptitle("score densities, pool vs selected", x=0.01, ha="left", fontsize=9)
    height = PANEL_INCHES[1] * n_rows  # fixed margins in inches: tight_layout costs more than drawing
    figure.subplots_adjust(
        left=0.03,
        right=0.98,
        bottom=0.3 / height,
        top=1 - 0.55 / height,
        hspace=0.55 / (PANEL_INCHES[1] - 0.55),
        wspace=0.12,
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _draw(ax, score: ScoreComparison) -> None:
    widths = np.diff(score.edges)
    if not score.is_selection_score:  # the selection's own score exists only for its members
        ax.stairs(
            _density(score.pool_counts, widths), score.edges, fill=True, color=POOL_COLOR, alpha=0.6, label="pool"
        )
    if score.selected_counts.sum():
        density = _density(score.selected_counts, widths)
        ax.stairs(density, score.edges, fill=True, color=SELECTED_COLOR, alpha=0.15)
        ax.stairs(density, score.edges, color=SELECTED_COLOR, linewidth=1.6, label="selected")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_title(score.label, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_yticks([])


def _density(counts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / (total * widths) if total else np.zeros_like(widths)
