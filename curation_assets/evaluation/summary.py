"""The short result tables of the README and docs/evaluation.md, cut from the evaluation report
(`bench/results/eval.md`, written by `report.markdown`) so that they cannot drift from it."""

from __future__ import annotations

from collections.abc import Sequence

REPORT = "bench/results/eval.md"
README_COLUMNS = (
    "method",
    "pool",
    "target loss",
    "Δ target vs random [95% CI]",
    "beats all random seeds?",
    "Δ target vs token-matched random [95% CI]",
)
DOCS_COLUMNS = (*README_COLUMNS, "Δ general vs random [95% CI]", "incl. upstream s")
RIGHT_ALIGNED_FROM = 2  # columns after method and pool are numbers


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def report_rows(report: str) -> list[dict[str, str]]:
    """The rows of the report's main table (the first whose header starts with `method | pool`)."""
    lines = report.splitlines()
    for i, line in enumerate(lines):
        header = _cells(line) if line.startswith("|") else []
        if header[:2] == ["method", "pool"]:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, _cells(row), strict=True)))
            return rows
    raise ValueError(f"{REPORT} has no table whose header starts with '| method | pool |'")


def summary_rows(report: str) -> list[dict[str, str]]:
    """References, random bands and methods; the single random seeds stay in the report."""
    kept = []
    for row in report_rows(report):
        label = row["method"]
        if label.startswith("**random band"):
            row = {**row, "method": label.replace("**", "")}
        elif label.startswith("**"):
            row = {**row, "method": f"`{label.strip('*')}`"}
        elif not label.startswith(("base model", "full pool")):
            continue  # one random seed
        kept.append(row)
    return kept


def summary_table(report: str, columns: Sequence[str]) -> list[str]:
    """Markdown lines of the summary table with these report columns."""
    rows = summary_rows(report)
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{REPORT}'s table lacks the columns {missing}")
    align = ["---" if i < RIGHT_ALIGNED_FROM else "---:" for i in range(len(columns))]
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(row[c] for c in columns) + " |" for row in rows),
    ]
