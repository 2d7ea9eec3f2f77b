"""`--set key.path=value` overrides of a pipeline YAML's `attributes` (for `curation run/check/...`).

A path is dotted keys into `attributes`; entries of the named lists (sources, stages, selections,
exports) are addressed by their `name` (an index works too), e.g. `stages.embed.batch_size=64`,
`sources.sharegpt.limit=500`, `evaluation.finetune.lora.epochs=2`. Values are YAML
(`64` -> int, `true`, `[a, b]`, `null`; taken literally: no `{{ }}` templates). The YAML file
must be valid on its own (its errors keep their line numbers); the overridden attributes are then
validated and checked exactly like YAML attributes, and an error caused by an override names the
`--set` argument. Overrides change the
spec, hence the config hashes, exactly as the same edit of the YAML would.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from curation_assets.redact import looks_like_secret, redact_text

NAMED_LISTS = {"sources": "source", "stages": "stage", "selections": "selection", "exports": "export"}
Location = tuple[str | int, ...]


class OverrideError(ValueError):
    """A `--set` argument that is malformed, points nowhere, or makes the pipeline invalid."""


@dataclass(frozen=True)
class Override:
    text: str  # the argument as given, shown in errors (a secret-looking value hidden)
    keys: tuple[str, ...]
    value: Any


def shown(text: str) -> str:
    """`--set KEY=VALUE` for messages; a value that looks like a key or holds a URL credential is hidden."""
    key, equals, value = text.partition("=")
    if not equals:
        return f"--set {text}"
    if looks_like_secret(value) or redact_text(value) != value:
        value = "[hidden]"
    return f"--set {key}={value}"


def parse_override(text: str) -> Override:
    """`a.b.c=VALUE` -> keys (a, b, c) and VALUE parsed as YAML."""
    key, equals, raw = text.partition("=")
    keys = tuple(key.strip().split("."))
    if not equals or not all(keys):
        raise OverrideError(f"{shown(text)}: expected KEY.PATH=VALUE, e.g. --set stages.embed.batch_size=64")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise OverrideError(f"{shown(text)}: the value is not valid YAML: {problem}") from err
    return Override(text, keys, value)


def apply_override(attributes: dict[str, Any], override: Override) -> Location:
    """Set the override's value in `attributes` (in place); returns its location (list entries as indexes)."""
    node: Any = attributes
    location: list[str | int] = []
    created: Location | None = None  # the first block the override adds: errors inside it are the override's
    for depth, key in enumerate(override.keys):
        last = depth == len(override.keys) - 1
        where = ".".join(override.keys[:depth]) or "attributes"
        if isinstance(node, list):
            index = _entry_index(node, key, location, override)
            location.append(index)
            if last:
                node[index] = override.value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise OverrideError(
                f"{shown(override.text)}: `{where}` is {type(node).__name__} {node!r}, not a mapping with a `{key}` key"
            )
        location.append(key)
        if last:
            node[key] = override.value
        else:
            if node.get(key) is None:  # a block the YAML leaves out (evaluation.finetune, ...)
                node[key] = {}
                created = created or tuple(location)
            node = node[key]
    return created or tuple(location)


def _entry_index(entries: list[Any], key: str, location: list[str | int], override: Override) -> int:
    """The index of the entry named `key` (or `key` itself when it is an in-range index)."""
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in entries]
    if key in names:
        return names.index(key)
    if key.isdigit() and int(key) < len(entries):
        return int(key)
    section = location[-1] if location else ""
    what = NAMED_LISTS.get(str(section), "entry")
    known = ", ".join(str(n) for n in names if n is not None) or f"indexes 0-{len(entries) - 1}"
    raise OverrideError(
        f"{shown(override.text)}: no {what} named {key!r} under `{'.'.join(map(str, location))}` (known: {known})"
    )


def _known_keys(model: type[BaseModel], location: Location, attributes: dict[str, Any]) -> list[str]:
    """The field names of the YAML block at `location` (empty when it is not a block of known fields)."""
    from curation_assets.stages.core.registry import get_kind

    node: Any = attributes
    current: Any = model
    for step in location:
        node = node[step] if _has(node, step) else None
        if isinstance(step, int):  # a list entry: the list's item model; a stage/selection: its kind's spec
            kind = node.get("kind") if isinstance(node, dict) else None
            try:
                current = get_kind(kind).spec if isinstance(kind, str) else _block_model(get_args(current)[0])
            except (KeyError, IndexError):
                return []
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or step not in fields:
            return []
        current = _block_model(fields[step].annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _has(node: Any, step: str | int) -> bool:
    if isinstance(node, dict):
        return step in node
    return isinstance(node, list) and isinstance(step, int) and step < len(node)


def _block_model(annotation: Any) -> Any:
    """The pydantic model or list type inside an annotation (`X | None`, `Annotated[X, ...]`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is list:
        return annotation
    for argument in get_args(annotation):
        found = _block_model(argument)
        if found is not None:
            return found
    return None


def _named(location: Location, attributes: dict[str, Any]) -> str:
    """`stages.embed.batch_size` for (stages, 3, batch_size): list entries by their name where they have one."""
    node: Any = attributes
    parts = []
    for step in location:
        node = node[step] if _has(node, step) else None
        name = node.get("name") if isinstance(step, int) and isinstance(node, dict) else None
        parts.append(name if isinstance(name, str) else str(step))
    return ".".join(parts)


def _overlaps(a: Location, b: Location) -> bool:
    return a[: len(b)] == b[: len(a)]


def _problem_lines(
    problems: list[tuple[Location, str]],
    located: dict[Location, Override],
    model: type[BaseModel],
    attributes: dict[str, Any],
) -> list[str]:
    lines = []
    every = ", ".join(shown(o.text) for o in located.values())
    for location, message in problems:
        causes = [o for at, o in located.items() if _overlaps(at, location)]
        where = _named(location, attributes)
        if message.startswith("Extra inputs are not permitted") and location:
            known = _known_keys(model, location[:-1], attributes)
            message = f"unknown key {location[-1]!r}" + (f" (known: {', '.join(known)})" if known else "")
        label = ", ".join(shown(o.text) for o in causes) if causes else f"with {every}"
        lines.append(f"{label}: {where}: {message}" if where else f"{label}: {message}")
    return lines


def load_pipeline_with_overrides(path: Path, texts: list[str] | tuple[str, ...] = ()) -> Any:
    """The pipeline of `path` with `--set` overrides applied, validated and checked like the YAML.

    The YAML is loaded first, exactly as without overrides (its errors keep their line numbers;
    templates rendered, resources applied); the overrides then edit that resolved spec, which is
    validated and checked again, so an error found now is an override's.
    """
    from curation_assets.components.spec import check_pipeline, pipeline_spec_model, with_base_dir
    from curation_assets.components.standalone import load_pipeline_file

    component = load_pipeline_file(path)
    if not texts:
        return component
    overrides = [parse_override(text) for text in texts]
    attributes = component.spec.model_dump(mode="json", exclude_unset=True)
    located = {apply_override(attributes, override): override for override in overrides}
    model = pipeline_spec_model()
    try:
        spec = model.model_validate(attributes)
    except ValidationError as err:
        problems = [(tuple(e["loc"]), e["msg"]) for e in err.errors()]
        raise OverrideError(_invalid(path, _problem_lines(problems, located, model, attributes))) from None
    checked = [(tuple(where), message) for where, message in check_pipeline(spec, component.base_dir)]
    if checked:
        raise OverrideError(_invalid(path, _problem_lines(checked, located, model, attributes)))
    overridden = copy.copy(component)  # whatever else the loader bound (resources, ...) stays
    overridden.spec = with_base_dir(spec, component.base_dir)
    return overridden


def _invalid(path: Path, lines: list[str]) -> str:
    return f"invalid pipeline {Path(path).resolve()} with --set:\n" + "\n".join(lines)
