"""The `evaluation:` block of a pipeline YAML (plain pydantic, no Dagster)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from curation_assets.models.causal_lm import PACKAGED_SMOLLM2
from curation_assets.models.chat_format import Turns
from curation_assets.models.lora import LoraSettings
from curation_assets.sources.spec import SourceSpec
from curation_assets.specs import Identifier, SpecModel
from curation_assets.stages.core.targets import TargetSpec

EVALUATION_VERSION = "1"  # bump when the fine-tune or the loss changes: it enters every cache key
EVAL_LORA = LoraSettings(epochs=2)


class FinetuneSettings(SpecModel):
    """The one recipe every selection is fine-tuned with (YAML block `finetune:`)."""

    model: str = Field(
        default=PACKAGED_SMOLLM2,
        description=(
            "Causal LM fine-tuned on each selection: the packaged SmolLM2-135M-Instruct (default), a Hugging Face "
            "name, a local folder or a .gguf file."
        ),
    )
    max_length: int = Field(default=512, gt=8, description="Tokens per sample in training and evaluation.")
    chat_template: str | None = Field(default=None, description="Jinja chat template for tokenizers that lack one.")
    turns: Turns = Field(
        default="all",
        description=("Assistant turns trained on and scored in the held-out loss: all (Tulu-style SFT) or last."),
    )
    lora: LoraSettings = Field(
        default=EVAL_LORA, description="LoRA and optimiser settings (default: the `lora:` defaults with 2 epochs)."
    )
    seed: int = Field(
        default=0, description="Adapter initialisation and batch order seed (the same for every selection)."
    )
    batch_size: int = Field(
        default=8, gt=0, description="Samples per evaluation forward pass (does not change results)."
    )

    def hashed(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"batch_size"})


class GeneralHeldoutSpec(SourceSpec):
    """A general held-out set: records read like a source, minus every sample already in the
    pipeline's `samples` table (so it lies outside the pool), then a seeded draw of `size`."""

    size: int = Field(200, gt=0, description="Conversations in the general held-out set.")
    seed: int = Field(0, description="Seed of the draw among the records outside the pool.")


class EvaluationSpec(SpecModel):
    """Fine-tune on every listed selection, measure held-out target and general losses."""

    name: Identifier = Field("evaluation", description="Asset name (`<pipeline>/<name>`) and results key.")
    selections: list[str] = Field(min_length=1, description="Selections to evaluate (the methods).")
    baselines: list[str] = Field(
        min_length=2,
        description=(
            "Selections forming the baseline band (random selections with different seeds, 5 or more): mean ± std."
        ),
    )
    target: TargetSpec = Field(
        description=(
            "The target task; its held-out part (the records after `validation_size`, split with `split_seed` as "
            "target-aware selections split them) is evaluated. Use the same split as the selections' targets."
        )
    )
    target_heldout_size: int | None = Field(
        200,
        gt=0,
        description=("Evaluate the first N held-out target samples (of the seeded split order); null: all of them."),
    )
    general: GeneralHeldoutSpec = Field(description="The general held-out set (e.g. ShareGPT outside the pool).")
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings, description="The fine-tuning recipe.")
    output_dir: str | None = Field(
        None,
        description=(
            "Folder for eval.md and eval.png (relative to the YAML file); null: only the DuckDB table and metadata."
        ),
    )
    training_seeds: int = Field(
        2,
        ge=1,
        description=("Fine-tunes per training set, with seeds finetune.seed, +1, ...; a sample's loss is their mean."),
    )
    token_matched_draws: int = Field(
        1, ge=0, description=("Random subsets per method holding as many response tokens as its selection (0: none).")
    )
    token_matched_seed: int = Field(0, description="Seed of the first token-matched draw (draw i: seed + i).")
    full_pool: bool = Field(True, description="Also fine-tune on every active sample (a reference row).")
    bootstrap_resamples: int = Field(2000, ge=100, description="Resamples of the paired bootstrap intervals.")
    bootstrap_seed: int = Field(0, description="Seed of the paired bootstrap.")

    @model_validator(mode="after")
    def _distinct(self) -> EvaluationSpec:
        both = sorted(set(self.selections) & set(self.baselines))
        if both:
            raise ValueError(f"{both} listed both in `selections` and in `baselines`")
        for key in ("selections", "baselines"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"`{key}` lists a selection twice: {names}")
        return self

    def evaluated(self) -> list[str]:
        return [*self.baselines, *self.selections]

    def config_hash(self) -> str:
        """Code version of the asset: everything that changes results (not where files go)."""
        payload = json.dumps(
            {"version": EVALUATION_VERSION, **self.model_dump(mode="json", exclude={"output_dir", "name"})},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def check(self, selection_names: set[str], stage_names: set[str], base_dir: Path) -> list[tuple[str, str]]:
        """(YAML key, message) problems: unknown selections, missing files."""
        problems = []
        if self.name in selection_names | stage_names:
            problems.append(("name", f"{self.name!r} is already a stage or selection name; choose another"))
        for key in ("selections", "baselines"):
            for name in getattr(self, key):
                if name in stage_names:
                    problems.append((key, f"{name!r} is a stage, not a selection"))
                elif name not in selection_names:
                    known = ", ".join(sorted(selection_names)) or "none"
                    problems.append((key, f"no selection named {name!r} (known: {known})"))
        for key, source in (("target", self.target), ("general", self.general)):
            if source.path and not (base_dir / Path(source.path).expanduser()).exists():
                problems.append((key, f"file not found: {base_dir / Path(source.path).expanduser()}"))
        return problems

    def with_base_dir(self, base_dir: Path) -> EvaluationSpec:
        def absolute(source: Any) -> Any:
            if not source.path:
                return source
            return source.model_copy(update={"path": str(base_dir / Path(source.path).expanduser())})

        update: dict[str, Any] = {"target": absolute(self.target), "general": absolute(self.general)}
        if self.output_dir:
            update["output_dir"] = str(base_dir / Path(self.output_dir).expanduser())
        return self.model_copy(update=update)
