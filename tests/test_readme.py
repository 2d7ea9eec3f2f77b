"""The README documents every YAML key and every stage kind, and starts with the two commands."""

import re
from pathlib import Path

from curation_assets.components.spec import AutomationSpec, ExportSpec, PipelineSpecBase
from curation_assets.evaluation.spec import EvaluationSpec, FinetuneSettings, GeneralHeldoutSpec
from curation_assets.sources.spec import FieldMappingSpec, SourceSpec
from curation_assets.stages.registry import all_kinds

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_first_commands_are_demo_then_test():
    commands = re.findall(r"^make (\w+)", README, flags=re.MULTILINE)
    assert commands[:2] == ["demo", "test"]


def test_every_kind_and_key_is_documented():
    missing = []
    for kind in all_kinds().values():
        if f"**`{kind.kind}`**" not in README:
            missing.append(f"kind {kind.kind}")
        for field in kind.spec.model_fields:
            if f"`{field}`" not in README:
                missing.append(f"{kind.kind}.{field}")
    for model in (PipelineSpecBase, SourceSpec, FieldMappingSpec, ExportSpec, AutomationSpec, EvaluationSpec,
                  FinetuneSettings, GeneralHeldoutSpec):
        missing += [f"{model.__name__}.{f}" for f in model.model_fields if f"`{f}`" not in README]
    assert not missing, f"README lacks: {missing}"
