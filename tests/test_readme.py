"""The README starts with the two commands, lists every kind, and every relative link in it
and in docs/ points at a file that exists."""

import re
from pathlib import Path

import yaml

from curation_assets.docs import METHOD_PAGES
from curation_assets.stages.core.registry import all_kinds

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_first_commands_are_demo_then_test():
    commands = re.findall(r"^make (\w+)", README, flags=re.MULTILINE)
    assert commands[:2] == ["demo", "test"]


def test_readme_is_short():
    assert len(README.splitlines()) <= 200


def test_every_kind_is_in_the_readme_table():
    rows = set(re.findall(r"^\| \[`(\w+)`\]\(docs/reference/kinds/\1\.md\) \|", README, flags=re.MULTILINE))
    assert set(all_kinds()) - rows == set(), "kinds missing from README's table"


def test_every_relative_link_resolves():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, f"broken links: {broken}"


def test_every_kind_has_its_method_notes():
    missing = []
    for name in all_kinds():
        page = METHOD_PAGES.get(name)
        if page is None or f"`{name}`" not in (ROOT / "docs" / page).read_text():
            missing.append(name)
    assert not missing, f"kinds without a methods page that describes them: {missing}"


def test_demo_output_shows_every_asset_of_the_demo():
    """The printed summary under `make demo` has one row per source, stage and selection of the
    shipped demo, with its kind, and the store it wrote."""
    demo = yaml.safe_load((ROOT / "curation_assets" / "defs" / "demo" / "defs.yaml").read_text())["attributes"]
    block = re.search(r"and prints[^`]*```\n(.*?)```", README, flags=re.S)
    assert block, "README lacks the demo's printed output after 'and prints'"
    rows = {
        cells[0]: cells[1]
        for line in block.group(1).splitlines()
        if (cells := [c.strip() for c in line.split("|")]) and len(cells) == 5 and cells[0] != "stage"
    }
    expected = {s["name"]: "source" for s in demo["sources"]}
    expected |= {s["name"]: s["kind"] for s in [*demo["stages"], *demo["selections"]]}
    assert rows == expected
    assert re.search(r"^DuckDB: \S*\.curation/demo\.duckdb", block.group(1), flags=re.MULTILINE)
