"""The `evaluation:` block of a pipeline YAML (plain pydantic, no Dagster)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
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
WHOLE_POOL = "all"  # the `pool` of rows compared with the top-level `baselines` (and the references)


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


class SubPoolBand(SpecModel):
    """A seeded sub-pool with its own random band (issue #19): methods whose stages cannot run on the
    whole pool select from `selection`'s members and are compared with random selections drawn from
    those same members, never with the whole pool's band."""

    name: Identifier = Field(description="Shown in the report's and `evaluation_results`' `pool` column.")
    selection: str = Field(
        description="The sub-pool: a selection of the pool (e.g. `random` with a seed) that the methods and baselines read."
    )
    baselines: list[str] = Field(
        min_length=2,
        description=(
            "Random selections with `input_selection` set to `selection` (5 or more seeds), the band of this "
            "sub-pool's methods."
        ),
    )
    selections: list[str] = Field(
        min_length=1,
        description=(
            "Methods (listed in the evaluation's `selections`) compared with this band; their members must lie in "
            "the sub-pool, and their token-matched random subsets are drawn from it."
        ),
    )


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
    baseline_training_seeds: int | None = Field(
        None,
        ge=1,
        description=(
            "Fine-tunes per random baseline and token-matched subset (null: `training_seeds`); a band of 5 seeds "
            "already spans training noise, so 1 here halves their cost while each method keeps `training_seeds`."
        ),
    )
    token_matched_draws: int = Field(
        1, ge=0, description=("Random subsets per method holding as many response tokens as its selection (0: none).")
    )
    token_matched_seed: int = Field(0, description="Seed of the first token-matched draw (draw i: seed + i).")
    full_pool: bool = Field(True, description="Also fine-tune on every active sample (a reference row).")
    bootstrap_resamples: int = Field(2000, ge=100, description="Resamples of the paired bootstrap intervals.")
    bootstrap_seed: int = Field(0, description="Seed of the paired bootstrap.")
    pools: list[SubPoolBand] = Field(
        default_factory=list,
        description=(
            "Sub-pool bands for methods whose stages run on a seeded sub-pool only (`name`, `selection`: the "
            "sub-pool, `baselines`: random selections of it, `selections`: its methods); every other method is "
            "compared with the whole pool's `baselines`."
        ),
    )

    @model_validator(mode="after")
    def _distinct(self) -> EvaluationSpec:
        both = sorted(set(self.selections) & set(self.baselines))
        if both:
            raise ValueError(f"{both} listed both in `selections` and in `baselines`")
        for key in ("selections", "baselines"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"`{key}` lists a selection twice: {names}")
        self._check_pools()
        return self

    def _check_pools(self) -> None:
        """Names only (what the selections read is `check`'s): each band its own baselines, each method
        in at most one pool and listed in `selections`."""
        seen_names: set[str] = {WHOLE_POOL}
        pool_of: dict[str, str] = {}
        baselines_of: dict[str, str] = dict.fromkeys(self.baselines, "baselines")
        for i, band in enumerate(self.pools):
            key = f"pools.{i}"
            if band.name in seen_names:
                raise ValueError(f"`{key}.name`: {band.name!r} is taken ('all' is the whole pool); name each pool once")
            seen_names.add(band.name)
            for name in band.baselines:
                if name in baselines_of:
                    raise ValueError(f"`{key}.baselines`: {name!r} is already a baseline in `{baselines_of[name]}`")
                if name in self.selections:
                    raise ValueError(f"`{key}.baselines`: {name!r} is also in `selections` (a method)")
                baselines_of[name] = f"{key}.baselines"
            for name in band.selections:
                if name not in self.selections:
                    raise ValueError(
                        f"`{key}.selections`: {name!r} is not in the evaluation's `selections`; list it there too"
                    )
                if name in pool_of:
                    raise ValueError(f"`{key}.selections`: {name!r} is already in pool {pool_of[name]!r}")
                pool_of[name] = band.name
            if band.selection in (*self.selections, *baselines_of):
                raise ValueError(
                    f"`{key}.selection`: the sub-pool {band.selection!r} is itself evaluated; use a selection of its own"
                )

    def evaluated(self) -> list[str]:
        """Every selection fine-tuned: the baselines (whole pool, then each sub-pool's) and the methods."""
        return [*self.baselines, *(name for band in self.pools for name in band.baselines), *self.selections]

    def seeds_of(self, role: str) -> int:
        """Training seeds of a row's role: baselines and token-matched subsets may use fewer."""
        if role in ("baseline", "token_matched") and self.baseline_training_seeds is not None:
            return self.baseline_training_seeds
        return self.training_seeds

    def pool_of(self, selection: str) -> SubPoolBand | None:
        """The sub-pool band `selection` (a method or a baseline) belongs to; None: the whole pool."""
        return next((b for b in self.pools if selection in b.selections or selection in b.baselines), None)

    def config_hash(self) -> str:
        """Code version of the asset: everything that changes results (not where files go)."""
        excluded = {"output_dir", "name"}
        # unset options hash as before they existed, so older evaluations stay current
        excluded |= {"pools"} if not self.pools else set()
        excluded |= {"baseline_training_seeds"} if self.baseline_training_seeds is None else set()
        payload = json.dumps(
            {"version": EVALUATION_VERSION, **self.model_dump(mode="json", exclude=excluded)},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def check(
        self,
        selection_names: set[str],
        stage_names: set[str],
        base_dir: Path,
        input_selections: Mapping[str, str | None] | None = None,
    ) -> list[tuple[str, str]]:
        """(YAML key, message) problems: unknown selections, missing files, and (with `input_selections`:
        selection -> its `input_selection`) sub-pool baselines that do not draw from their sub-pool."""
        problems = []
        if self.name in selection_names | stage_names:
            problems.append(("name", f"{self.name!r} is already a stage or selection name; choose another"))
        named = [("selections", self.selections), ("baselines", self.baselines)]
        named += [(f"pools.{i}.baselines", band.baselines) for i, band in enumerate(self.pools)]
        named += [(f"pools.{i}.selection", [band.selection]) for i, band in enumerate(self.pools)]
        for key, names in named:
            for name in names:
                if name in stage_names:
                    problems.append((key, f"{name!r} is a stage, not a selection"))
                elif name not in selection_names:
                    known = ", ".join(sorted(selection_names)) or "none"
                    problems.append((key, f"no selection named {name!r} (known: {known})"))
        for i, band in enumerate(self.pools if input_selections is not None else []):
            for name in band.baselines if band.selection in selection_names else []:
                drawn_from = (input_selections or {}).get(name)
                if name in selection_names and drawn_from != band.selection:
                    problems.append(
                        (
                            f"pools.{i}.baselines",
                            f"{name!r} draws from {drawn_from or 'the whole pool'}, not from the sub-pool "
                            f"{band.selection!r}: give it `input_selection: {band.selection}`",
                        )
                    )
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
