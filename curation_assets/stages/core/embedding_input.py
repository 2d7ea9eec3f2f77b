"""`EmbeddingInput`: the `embedding` key of selections that read an embedding stage's vectors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from curation_assets.stages.core.registry import StageKind, StageSpec


class EmbeddingInput(StageSpec):
    # stage kinds whose table has an `embedding` vector column this selection can read
    EMBEDDING_KINDS: ClassVar[tuple[str, ...]] = ("embedding", "lm_embedding")

    embedding: str = Field(description="Name of the `embedding` (or `lm_embedding`) stage whose vectors are used.")
    seed: int = Field(0, description="Random seed.")

    def references(self) -> dict[str, str]:
        return {**super().references(), "embedding": self.embedding}

    def check_references(self, stage_kinds: Mapping[str, StageKind], selection_names: set[str]
                         ) -> list[tuple[str, str]]:
        problems = super().check_references(stage_kinds, selection_names)
        kind = stage_kinds.get(self.embedding)
        if kind is not None and kind.kind not in self.EMBEDDING_KINDS:
            problems.append(("embedding", f"{self.embedding!r} is a {kind.kind} stage, not an embedding stage "
                                          f"({' or '.join(self.EMBEDDING_KINDS)})"))
        if kind is None and self.embedding in selection_names:
            problems.append(("embedding", f"{self.embedding!r} is a selection, not an embedding stage"))
        return problems
