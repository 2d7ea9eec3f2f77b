"""The generated reference pages are what the code gives now, and `--check` catches a stale one."""

import re
import shutil
from pathlib import Path

from curation_assets import docs
from curation_assets.evaluation.summary import README_COLUMNS, summary_rows, summary_table
from curation_assets.stages.core.registry import all_kinds

ROOT = Path(__file__).resolve().parents[1]


def test_generated_pages_are_fresh():
    assert docs.stale_pages() == [], "run `python -m curation_assets.docs` and commit docs/reference/"


def test_kind_pages_list_every_key_and_output_column():
    for name, kind in all_kinds().items():
        page = (ROOT / "docs" / "reference" / "kinds" / f"{name}.md").read_text()
        keys = set(re.findall(r"^\| `(\w+)` \|", page, flags=re.MULTILINE))
        assert set(kind.spec.model_fields) - {"kind"} <= keys, name
        if kind.table:
            ddl = (ROOT / "sql" / kind.schema_file).read_text()
            body = re.search(rf"CREATE TABLE IF NOT EXISTS {kind.table}\s*\((.*?)\n\);", ddl, re.S).group(1)
            columns = {
                line.split()[0]
                for line in body.splitlines()
                if line.strip() and not line.strip().startswith(("PRIMARY", "--"))
            }
            assert columns <= keys, (name, columns - keys)
        for field in kind.spec.model_fields.values():
            if field.description:
                assert " ".join(field.description.split()).replace("|", "\\|") in page, name


def test_check_names_stale_missing_and_stray_pages(tmp_path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    report = tmp_path / "bench" / "results" / "eval.md"
    shutil.copy(ROOT / "bench" / "results" / "eval.md", report)
    assert docs.stale_pages(tmp_path) == []
    kinds_dir = tmp_path / "docs" / "reference" / "kinds"
    (kinds_dir / "lm_loss.md").write_text((kinds_dir / "lm_loss.md").read_text().replace("1024", "2048"))
    (kinds_dir / "random.md").unlink()
    (kinds_dir / "gone_kind.md").write_text("# gone\n")
    readme = tmp_path / "README.md"
    readme.write_text(re.sub(r"^\| \[`top_score`\].*\n", "", readme.read_text(), flags=re.MULTILINE))
    report.write_text(
        report.read_text().replace("| **less** | sub500 (500) | less | 100 |", "| **less** | all | less | 100 |")
    )
    stale = docs.stale_pages(tmp_path)
    assert set(stale) == {
        "docs/reference/kinds/lm_loss.md",
        "docs/reference/kinds/random.md",
        "docs/reference/kinds/gone_kind.md (no such kind)",
        "README.md (kinds table)",
        "README.md (evaluation table)",
        "docs/evaluation.md (evaluation table)",
    }
    docs.write_pages(tmp_path)
    assert docs.stale_pages(tmp_path) == []
    assert not (kinds_dir / "gone_kind.md").exists()


def test_evaluation_summary_keeps_the_reports_references_bands_and_methods():
    """The README's evaluation table is the report's main table less the single random seeds."""
    report = (ROOT / "bench" / "results" / "eval.md").read_text()
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method | pool |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append(dict(zip(header, [c.strip() for c in line.strip("|").split("|")])))
    seeds = [r for r in body if not r["method"].startswith(("**", "base model", "full pool"))]
    summary = summary_rows(report)
    assert len(summary) == len(body) - len(seeds) and seeds
    for row in summary:
        source = next(r for r in body if r["method"].replace("**", "").strip("`") in row["method"].strip("`"))
        assert all(row[c] == source[c] for c in header if c != "method")
    table = summary_table(report, README_COLUMNS)
    assert table[0] == "| " + " | ".join(README_COLUMNS) + " |" and len(table) == 2 + len(summary)
