"""A selection report as Markdown, for Dagster metadata (`MetadataValue.md`).

The Dagster UI renders metadata Markdown with react-markdown + GFM tables and
rehype-sanitize whose `src` protocols include `data` (ui-core `MarkdownWithPlugins.tsx`),
so histograms are embedded as base64 `data:image/png` URIs and need no file next to the
report. Sample text is escaped: it renders literally, never as Markdown or HTML.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from curation_assets.reports.data import Example, SelectionReport
from curation_assets.reports.formatting import (
    COMPARISON_HEADER,
    clip,
    comparison_rows,
    escape_markdown,
    example_sections,
    format_number,
    overview_rows,
)


def render_markdown(
    report: SelectionReport, images: Sequence[bytes], *, plotted: int, image_urls: Sequence[str] | None = None
) -> str:
    """Markdown of `report` with `images` (PNG bytes) embedded; `plotted` = histograms drawn.
    `image_urls` links the images instead (files beside a dataset card: the Hub does not show `data:`)."""
    lines = [f"## Selection `{report.selection}`", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {escape_markdown(value)} |" for label, value in overview_rows(report)]
    lines += ["", "### Scores: pool vs selected", ""]
    if report.scores:
        for number, image in enumerate(images, start=1):
            url = (
                image_urls[number - 1]
                if image_urls is not None
                else f"data:image/png;base64,{base64.b64encode(image).decode()}"
            )
            lines += [f"![score histograms {number}]({url})", ""]
        hidden = sum(1 for s in report.scores if s.plottable) - plotted
        if hidden > 0:
            lines += [
                f"{hidden} more scores are in the table only (`curation report {report.selection}` plots them all).",
                "",
            ]
        lines += ["| " + " | ".join(COMPARISON_HEADER) + " |", "|" + "---|" + "---:|" * (len(COMPARISON_HEADER) - 1)]
        lines += ["| " + " | ".join([f"`{row[0]}`", *row[1:]]) + " |" for row in comparison_rows(report)]
    else:
        lines.append("No numeric score for this selection's pool.")
    for title, examples in example_sections(report):
        lines += ["", *_examples(title, examples, report.preview_chars)]
    return "\n".join(lines) + "\n"


def _examples(title: str, examples: Sequence[Example], preview_chars: int) -> list[str]:
    lines = [f"### {title}", ""]
    if not examples:
        return [*lines, "No members."]
    for example in examples:
        lines.append(f"- **rank {example.rank}**, score {format_number(example.score)}, `{example.sample_id}`")
        for label, text in (
            ("instruction", example.instruction),
            ("input", example.input),
            ("response", example.output),
        ):
            if text:
                lines.append(f"    - *{label}:* {escape_markdown(clip(text, preview_chars))}")
    return lines
