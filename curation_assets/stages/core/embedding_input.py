"""`EmbeddingInput`: the `embedding` key of selections that read an embedding stage's vectors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from curation_assets.stages.core.registry import StageKind, StageSpec, stage_reference_problems


class EmbeddingInput(StageSpec):
    # stage kinds whose table has an `embedding` vector column this selection can read
    EMBEDDING_KINDS: ClassVar[tuple[str, ...]] = ("embedding", "lm_embedding")

    embedding: str = Field(description="Name of the `embedding` (or `lm_embedding`) stage whose vectors are used.")
    seed: int = Field(0, description="Random seed.")

    def references(self) -> dict[str, str]:
        return {**super().references(), "embedding": self.embedding}

    def check_references(
        self, stage_kinds: Mapping[str, StageKind], selection_names: set[str]
    ) -> list[tuple[str, str]]:
        return [
            *super().check_references(stage_kinds, selection_names),
            *stage_reference_problems(
                "embedding", self.embedding, self.EMBEDDING_KINDS, stage_kinds, selection_names, what="embedding"
            ),
        ]
