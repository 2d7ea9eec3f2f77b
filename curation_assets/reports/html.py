"""A selection report as one standalone HTML page (`curation report`): inline CSS, PNG
histograms as data URIs, every piece of sample and config text HTML-escaped."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

from curation_assets.reports.data import Example, SelectionReport
from curation_assets.reports.formatting import (
    COMPARISON_HEADER,
    clip,
    comparison_rows,
    example_sections,
    format_number,
    overview_rows,
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; color: #1f2328; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5rem 0; }
.example { border-left: 3px solid #d9480f; padding: 0.2rem 0.8rem; margin: 0.8rem 0; }
.example .text { white-space: pre-wrap; margin: 0.2rem 0; }
.muted { color: #656d76; }
code { background: #f6f8fa; padding: 0 0.2rem; }
"""


def render_html(report: SelectionReport, images: Sequence[bytes], *, source: str = "") -> str:
    """The report as an HTML document; `source` (e.g. the DuckDB path) is shown under the title."""
    title = f"Selection {report.selection}"
    parts = [
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>',
        f"<style>{_STYLE}</style>\n</head>\n<body>",
        f"<h1>Selection <code>{escape(report.selection)}</code></h1>",
    ]
    if source:
        parts.append(f'<p class="muted">{escape(source)}</p>')
    parts.append(
        "<table>"
        + "".join(
            f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in overview_rows(report)
        )
        + "</table>"
    )
    parts.append("<h2>Scores: pool vs selected</h2>")
    if report.scores:
        parts += [
            f'<img alt="score histograms {n}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            for n, png in enumerate(images, start=1)
        ]
        header = "".join(f"<th>{escape(h)}</th>" for h in COMPARISON_HEADER)
        body = "".join(
            "<tr><td><code>"
            + escape(row[0])
            + "</code></td>"
            + "".join(f'<td class="num">{escape(cell)}</td>' for cell in row[1:])
            + "</tr>"
            for row in comparison_rows(report)
        )
        parts.append(f"<table><tr>{header}</tr>{body}</table>")
    else:
        parts.append("<p>No numeric score for this selection's pool.</p>")
    for title, examples in example_sections(report):
        parts += _examples(title, examples, report.preview_chars)
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def _examples(title: str, examples: Sequence[Example], preview_chars: int) -> list[str]:
    parts = [f"<h2>{escape(title)}</h2>"]
    if not examples:
        return [*parts, "<p>No members.</p>"]
    for example in examples:
        texts = "".join(
            f'<div class="text"><em>{label}:</em> {escape(clip(text, preview_chars))}</div>'
            for label, text in (
                ("instruction", example.instruction),
                ("input", example.input),
                ("response", example.output),
            )
            if text
        )
        parts.append(
            f'<div class="example"><strong>rank {example.rank}</strong>, score '
            f"{escape(format_number(example.score))}, <code>{escape(example.sample_id)}</code>{texts}</div>"
        )
    return parts
