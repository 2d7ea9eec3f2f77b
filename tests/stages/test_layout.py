"""The layout of `curation_assets/stages/` (#20): kind modules live in family packages, one kind
per module named after it, and import only the framework (`stages.core`), never another kind."""

import ast
from pathlib import Path

from curation_assets.stages.registry import all_kinds

STAGES = Path(__file__).resolve().parents[2] / "curation_assets" / "stages"
FAMILIES = ("generic", "diversity", "llm_judges", "lm_signals", "trained_scorers", "influence")


def kind_modules() -> list[Path]:
    return sorted(p for family in FAMILIES for p in (STAGES / family).glob("*.py") if p.name != "__init__.py")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports (top level or inside functions), `from X import Y` as X and X.Y."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_kind_module_imports_another_kind_module():
    stage_packages = {f"curation_assets.stages.{family}" for family in FAMILIES}
    offending = {}
    for path in kind_modules():
        own = f"curation_assets.stages.{path.parent.name}.{path.stem}"
        bad = sorted(
            name
            for name in imported_modules(path)
            if name != own and any(name == p or name.startswith(p + ".") for p in stage_packages)
        )
        if bad:
            offending[str(path.relative_to(STAGES))] = bad
    assert kind_modules() and not offending, offending


def test_the_framework_imports_no_kind_module():
    for path in sorted((STAGES / "core").glob("*.py")):
        bad = [
            name
            for name in imported_modules(path)
            if any(name.startswith(f"curation_assets.stages.{family}") for family in FAMILIES)
        ]
        assert not bad, f"{path.name} imports {bad}"


def test_each_built_in_kind_has_its_own_module_named_after_it():
    built_in = {
        name: kind for name, kind in all_kinds().items() if kind.spec.__module__.startswith("curation_assets.stages.")
    }
    modules = {name: kind.spec.__module__ for name, kind in built_in.items()}
    assert {m.rsplit(".", 1)[1] for m in modules.values()} == set(modules), modules
    assert all(m.split(".")[2] in FAMILIES for m in modules.values()), modules
    assert {p.stem for p in kind_modules()} == set(modules)
