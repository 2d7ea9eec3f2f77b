"""A light regression head (ridge) on sentence embeddings: the fast CPU backend of the trained
scorers (DEITA complexity / quality, the reward head fitted to an LLM judge's scores).

Features: the embedding of one text, or the concatenation of the embeddings of a pair of
texts (instruction, response), so the head sees both sides of a quality judgement even when
a joint text would be cut at the encoder's maximum length. Embeddings come from the same
sentence-transformers layer as the `embedding` stage, L2-normalised.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation_assets.methods.ridge import RidgeHead
from curation_assets.models.embeddings import SentenceEmbedder
from curation_assets.models.scorer_artifacts import hash_files


def text_features(
    embedder: SentenceEmbedder, rows: Sequence[Sequence[str]], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(n, k·d) features of n rows of k texts each, and whether a row's text was cut at the
    encoder's maximum length; every distinct text is encoded once."""
    if not rows:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=bool)
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError("every row needs the same number of texts")
    distinct = sorted({text for row in rows for text in row})
    index = {text: i for i, text in enumerate(distinct)}
    encoded = embedder.encode(distinct, batch_size=batch_size, normalize=True)
    positions = [np.array([index[row[k]] for row in rows]) for k in range(width)]
    features = np.concatenate([encoded.vectors[p] for p in positions], axis=1)
    truncated = np.logical_or.reduce([encoded.truncated[p] for p in positions])
    return features, truncated


@dataclass(frozen=True)
class EmbeddingHead:
    embedding_model: str
    n_texts: int  # 1: one text; 2: (instruction, response)
    ridge: RidgeHead

    def predict(
        self, embedder: SentenceEmbedder, rows: Sequence[Sequence[str]], batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted scores of `rows` (NaN where not finite) and their truncation flags."""
        if not rows:
            return np.zeros(0), np.zeros(0, dtype=bool)
        if any(len(r) != self.n_texts for r in rows):
            raise ValueError(f"this head scores rows of {self.n_texts} texts")
        features, truncated = text_features(embedder, rows, batch_size)
        scores = self.ridge.predict(features)
        return np.where(np.isfinite(scores), scores, np.nan), truncated

    def save(self, folder: Path) -> dict[str, str]:
        """head.npz (weights, bias) + head.json (settings); returns file name -> SHA-256."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "head.npz", weights=self.ridge.weights, bias=np.array(self.ridge.bias))
        (folder / "head.json").write_text(
            json.dumps(
                {
                    "embedding_model": self.embedding_model,
                    "n_texts": self.n_texts,
                    "alpha": self.ridge.alpha,
                    "loo_mse": self.ridge.loo_mse,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return hash_files(folder)

    @classmethod
    def load(cls, folder: Path) -> EmbeddingHead:
        meta = json.loads((folder / "head.json").read_text())
        with np.load(folder / "head.npz", allow_pickle=False) as arrays:
            ridge = RidgeHead(
                arrays["weights"].astype(np.float64),
                float(arrays["bias"]),
                float(meta["alpha"]),
                float(meta["loo_mse"]),
            )
        return cls(meta["embedding_model"], int(meta["n_texts"]), ridge)
