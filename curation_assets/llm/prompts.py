"""Prompt files: package data under llm/prompts/, overridable per stage from the YAML.

Placeholders are `{name}`; they are filled in one pass, so text coming from a sample (which
may itself contain `{response}` or instructions to the judge) is never expanded again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


@cache
def _packaged(name: str) -> str:
    path = PROMPTS_DIR / f"{name}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.txt")))
        raise FileNotFoundError(f"no packaged prompt {name!r} (known: {known})")
    return path.read_text(encoding="utf-8").rstrip("\n")


def load_prompt(name: str, overrides: Mapping[str, str] | None = None, base_dir: Path | None = None) -> str:
    """The packaged prompt `name`, or the file the YAML's `prompts: {name: path}` points at."""
    override = (overrides or {}).get(name)
    if override is None:
        return _packaged(name)
    path = Path(override).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise FileNotFoundError(f"prompt override {name!r}: file not found: {path}")
    return path.read_text(encoding="utf-8").rstrip("\n")


def placeholders(template: str) -> set[str]:
    return set(re.findall(r"\{([a-z_]+)\}", template))


def render(template: str, **values: object) -> str:
    """Fill `{name}` placeholders in one pass; unknown names stay as they are."""
    return re.sub(r"\{([a-z_]+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)
