"""The generated reference pages are what the code gives now, and `--check` catches a stale one."""

import re
import shutil
from pathlib import Path

from curation_assets import docs
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
    assert docs.stale_pages(tmp_path) == []
    kinds_dir = tmp_path / "docs" / "reference" / "kinds"
    (kinds_dir / "lm_loss.md").write_text((kinds_dir / "lm_loss.md").read_text().replace("1024", "2048"))
    (kinds_dir / "random.md").unlink()
    (kinds_dir / "gone_kind.md").write_text("# gone\n")
    readme = tmp_path / "README.md"
    readme.write_text(re.sub(r"^\| \[`top_score`\].*\n", "", readme.read_text(), flags=re.MULTILINE))
    stale = docs.stale_pages(tmp_path)
    assert set(stale) == {
        "docs/reference/kinds/lm_loss.md",
        "docs/reference/kinds/random.md",
        "docs/reference/kinds/gone_kind.md (no such kind)",
        "README.md (kinds table)",
    }
    docs.write_pages(tmp_path)
    assert docs.stale_pages(tmp_path) == []
    assert not (kinds_dir / "gone_kind.md").exists()
