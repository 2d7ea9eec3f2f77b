"""`SentenceEmbeddingInput`: the keys of a sentence-transformers embedding (model, template,
normalisation) and the template rendering, shared by the `embedding` stage and the selections
that embed other texts the same way (`target_similarity`)."""

from __future__ import annotations

import string
from typing import ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from curation_assets.models.embeddings import PACKAGED_MINILM
from curation_assets.stages.core.registry import StageSpec

TEMPLATE_FIELDS = ("instruction", "input", "output", "conversation", "system")


class SentenceEmbeddingInput(StageSpec):
    """Embed the text made from `template` with a sentence-transformers model."""

    model: str = Field(
        PACKAGED_MINILM,
        description=(
            "sentence-transformers model: the packaged all-MiniLM-L6-v2 (default, offline), a Hugging Face name "
            "or a local folder."
        ),
    )
    template: str = Field(
        "{instruction}\n{input}",
        description=(
            "Text to embed, a Python format string over {instruction}, {input}, {output}, {system} and "
            "{conversation} (every turn as 'role: content')."
        ),
    )
    normalize: bool = Field(True, description="L2-normalise the vectors.")
    max_seq_length: int | None = Field(None, gt=0, description="Override the model's maximum tokens.")
    batch_size: int = Field(64, gt=0, description="Texts per forward pass (does not change results).")

    @field_validator("template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = names - set(TEMPLATE_FIELDS)
        if unknown or not names:
            raise ValueError(f"template fields must be among {', '.join(TEMPLATE_FIELDS)}; got {sorted(names)}")
        return template

    UNHASHED: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # does not change results


def render_texts(batch: pa.RecordBatch, template: str) -> list[str]:
    """The template filled in for every sample of a batch (conversation = 'role: content' lines)."""
    columns = {name: batch.column(name).to_pylist() for name in ("instruction", "input", "output")}
    conversations = batch.column("messages").to_pylist()
    texts = []
    for i, turns in enumerate(conversations):
        values = {name: columns[name][i] for name in columns}
        values["system"] = next((t["content"] for t in turns if t["role"] == "system"), "")
        if "{conversation}" in template:
            values["conversation"] = "\n".join(f"{t['role']}: {t['content']}" for t in turns)
        texts.append(template.format_map(_Defaults(values)).strip())
    return texts


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return ""
