"""Text helpers shared by the Markdown and HTML renderers: numbers, clipped previews, escaping."""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curation_assets.reports.data import Example, SelectionReport

_WHITESPACE_WITH_NEWLINE = re.compile(r"\s*[\r\n]\s*")
# Punctuation that means something in the middle of a CommonMark/GFM line (code, emphasis, links,
# table cells, strikethrough); a backslash makes each literal. Line breaks are gone before this
# (see `clip`), so line-start syntax (`#`, `-`, `1.`) cannot occur. `<`, `>` and `&` become
# character references, so no HTML tag or entity survives.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
NO_VALUE = "—"


def format_number(value: Any) -> str:
    """Integers as they are, other numbers with 4 significant digits, None/NaN as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.4g}"


def format_share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else NO_VALUE


def clip(text: str, chars: int) -> str:
    """A one-line preview: line breaks shown as ↵, cut at `chars` characters with an ellipsis."""
    flat = _WHITESPACE_WITH_NEWLINE.sub(" ↵ ", text.strip())
    return flat if len(flat) <= chars else flat[:chars].rstrip() + "…"


def escape_markdown(text: str) -> str:
    """One line of text that Markdown renders literally: no emphasis, links, table cells or raw HTML."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def config_items(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings worth showing (not name, kind or description), values as compact text."""
    items = []
    for key, value in config.items():
        if key in ("name", "kind", "description") or value is None:
            continue
        if isinstance(value, str):
            text = value
        elif isinstance(value, (int, float)):
            text = format_number(value)
        else:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        items.append((key, text))
    return items


def overview_rows(report: SelectionReport) -> list[tuple[str, str]]:
    """(label, plain text) rows of a report's overview table; renderers escape them."""
    if report.input_selection:
        pool = f"{report.pool_size} active members of {report.input_selection}"
    else:
        pool = f"{report.pool_size} active samples"
    rows = [
        ("kind", report.kind or "unknown (no run recorded)"),
        ("config hash", report.config_hash or NO_VALUE),
        ("size", str(report.size)),
        ("pool", pool),
        ("share of pool", format_share(report.size, report.pool_size)),
    ]
    if report.budget is not None or report.fraction is not None:
        budget = format_number(report.budget)
        if report.fraction is not None:
            budget += f" (fraction {format_number(report.fraction)} of the pool)"
        rows.append(("budget", budget))
    rows.append(("distinct conversations", f"{report.distinct_conversations} of {report.size}"))
    rows.append(("distinct first user turns", f"{report.distinct_first_turns} of {report.size}"))
    near = report.near_duplicates
    rows.append(
        (
            "near-duplicate clusters",
            "not counted: the pipeline has no embedding stage"
            if near is None
            else f"{near.clusters} of {near.embedded} members embedded by `{near.stage}` "
            f"(cosine > {format_number(near.threshold)} is one cluster)",
        )
    )
    if report.candidates is not None:
        rows.append(("candidates read by the run", str(report.candidates)))
    rows.append(("members with a score", f"{report.scored_members} of {report.size}"))
    if report.seconds is not None:
        rows.append(("run seconds", format_number(report.seconds)))
    if report.selected_at is not None:
        rows.append(("selected at", f"{report.selected_at:%Y-%m-%d %H:%M:%S} UTC"))
    settings = ", ".join(f"{key}={value}" for key, value in config_items(report.config))
    if settings:
        rows.append(("settings", settings))
    return rows


COMPARISON_HEADER = ("score", "pool n", "selected n", "pool mean", "selected mean", "pool median", "selected median")


def comparison_rows(report: SelectionReport) -> list[tuple[str, ...]]:
    """One row per score: counts, means and medians over the pool and over the selection."""
    rows = []
    for score in report.scores:
        own = score.is_selection_score  # exists only for members: no pool figures
        rows.append(
            (
                score.label,
                NO_VALUE if own else str(score.pool_n),
                str(score.selected_n),
                NO_VALUE if own else format_number(score.pool_mean),
                format_number(score.selected_mean),
                NO_VALUE if own else format_number(score.pool_median),
                format_number(score.selected_median),
            )
        )
    return rows


def example_sections(report: SelectionReport) -> list[tuple[str, list[Example]]]:
    """(title, members) of the example lists: best and worst by score, or every member of a small
    selection; selections without scores go by rank."""
    scored = report.scored_members > 0
    if not report.lowest:
        order = "highest score first" if scored else "by rank"
        return [(f"All {len(report.highest)} selected, {order}", report.highest)]
    if scored:
        return [
            (f"Highest-scoring {len(report.highest)} selected", report.highest),
            (f"Lowest-scoring {len(report.lowest)} selected", report.lowest),
        ]
    return [
        (f"First {len(report.highest)} selected by rank", report.highest),
        (f"Last {len(report.lowest)} selected by rank", report.lowest),
    ]
