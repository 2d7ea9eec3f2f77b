"""Trained scorers as stage outputs: training an embedding head with a held-out split, and
recording / finding the scorer files (`trained_scorers`, SHA-256 per file) of a training
stage at its config. Shared by `deita_scorer_train` and `reward_scores`; the chunk loop of
the scoring stages `deita_scores` and `reward_scores` too."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from pydantic import AfterValidator

from curation_assets.methods.rank_correlation import spearman
from curation_assets.methods.ridge import fit_ridge
from curation_assets.models.embedding_heads import EmbeddingHead, text_features
from curation_assets.models.embeddings import SentenceEmbedder
from curation_assets.models.scorer_artifacts import verify_files
from curation_assets.stages.core.context import StageContext, StageOutput, iter_parquet_batches
from curation_assets.store.sql_files import execute_sql_file, read_sql
from curation_assets.store.writes import utc_now

CHUNK_SAMPLES = 256  # samples scored together


def _positive(alphas: list[float]) -> list[float]:
    if min(alphas) <= 0:
        raise ValueError("every ridge penalty in `alphas` must be > 0")
    return alphas


# the `alphas` key of an embedding head: ridge penalties, each > 0
RidgeAlphas = Annotated[list[float], AfterValidator(_positive)]


@dataclass
class TrainedScorer:
    scorer: str  # complexity | quality | reward
    backend: str  # embedding_head | causal_lm
    path: str
    files: dict[str, str]  # file name -> SHA-256
    n_train: int
    n_heldout: int
    heldout_spearman: float | None
    heldout_mae: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def folder(self, owner: str) -> Path:
        """The scorer's folder, after checking every recorded file is there unchanged."""
        folder = Path(self.path)
        verify_files(folder, self.files, owner)
        return folder

    def summary(self) -> dict[str, Any]:
        return {
            f"{self.scorer}_n_train": self.n_train,
            f"{self.scorer}_n_heldout": self.n_heldout,
            f"{self.scorer}_heldout_spearman": self.heldout_spearman,
            f"{self.scorer}_heldout_mae": self.heldout_mae,
            **{f"{self.scorer}_{k}": v for k, v in self.details.items() if isinstance(v, (int, float, str))},
        }


@dataclass(frozen=True)
class HeldoutFit:
    n_train: int
    n_heldout: int
    spearman: float | None
    mae: float | None


def heldout_fit(predicted: np.ndarray, labels: np.ndarray, heldout: np.ndarray) -> HeldoutFit:
    """Spearman and mean absolute error of the finite predictions on the held-out rows."""
    scored = heldout & np.isfinite(predicted)
    p, y = predicted[scored], labels[scored]
    return HeldoutFit(
        int((~heldout).sum()),
        int(heldout.sum()),
        spearman(p, y) if len(y) else None,
        float(np.mean(np.abs(p - y))) if len(y) else None,
    )


def train_embedding_head(
    scorer: str,
    rows: Sequence[Sequence[str]],
    labels: np.ndarray,
    heldout: np.ndarray,
    *,
    embedder: SentenceEmbedder,
    embedding_model: str,
    alphas: Sequence[float],
    batch_size: int,
    folder: Path,
) -> TrainedScorer:
    """Ridge head on the embeddings of `rows` (1 or 2 texts each), fitted on the rows not held
    out, evaluated on the held-out ones, saved under `folder`."""
    features, _ = text_features(embedder, rows, batch_size)
    ridge = fit_ridge(features[~heldout], labels[~heldout], alphas)
    head = EmbeddingHead(embedding_model, len(rows[0]), ridge)
    fit = heldout_fit(ridge.predict(features), labels, heldout)
    files = head.save(folder)
    return TrainedScorer(
        scorer,
        "embedding_head",
        str(folder),
        files,
        fit.n_train,
        fit.n_heldout,
        fit.spearman,
        fit.mae,
        {"alpha": ridge.alpha, "loo_mse": ridge.loo_mse, "features": int(features.shape[1])},
    )


def stored_scorers(ctx: StageContext, stage: str, config_hash: str) -> dict[str, TrainedScorer]:
    """Scorer name -> record, for a training stage at a config (empty before it trained)."""
    with ctx.store.reader() as con:
        rows = con.execute(
            read_sql("reads/trained_scorers.sql"), {"stage": stage, "config_hash": config_hash}
        ).fetchall()
    return {r[0]: TrainedScorer(r[0], r[1], r[2], _json(r[3]), r[4], r[5], r[6], r[7], _json(r[8]) or {}) for r in rows}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def write_trained_scorers(con: Any, stage: str, config_hash: str, output: StageOutput) -> None:
    """`write_extra` of the training stages: record the scorers trained by this run."""
    for record in output.extra.get("trained_scorers", []):
        execute_sql_file(
            con,
            "writes/trained_scorer_insert.sql",
            {
                "stage": stage,
                "config_hash": config_hash,
                "scorer": record["scorer"],
                "backend": record["backend"],
                "path": record["path"],
                "files": json.dumps(record["files"], sort_keys=True),
                "n_train": record["n_train"],
                "n_heldout": record["n_heldout"],
                "heldout_spearman": record["heldout_spearman"],
                "heldout_mae": record["heldout_mae"],
                "details": json.dumps(record["details"], sort_keys=True, default=str),
                "now": utc_now(),
            },
        )


def as_records(scorers: Sequence[TrainedScorer]) -> list[dict[str, Any]]:
    return [asdict(s) for s in scorers]


def score_digit_prompts(
    model: Any,
    prompts: Sequence[Any],
    digit_ids: Sequence[int],
    pad_token_id: int,
    *,
    batch_size: int,
    device: str,
    stats: dict[str, Any],
) -> np.ndarray:
    """DEITA digit-expectation scores of encoded prompts (ScorerPrompt), longest first in batches
    (one forward each, halved on out-of-memory); NaN where the logits were not finite."""
    import torch

    from curation_assets.models.digit_scorer import digit_scores
    from curation_assets.stages.core.causal_lm import run_batches_with_oom_backoff

    scores = np.full(len(prompts), np.nan)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].input_ids))

    def run(batch: list[int]) -> None:
        with torch.inference_mode():
            values = digit_scores(model, [prompts[i].input_ids for i in batch], digit_ids, pad_token_id, device)
        scores[batch] = values.cpu().numpy()

    if prompts:
        run_batches_with_oom_backoff(run, order, batch_size, stats)
    return scores


def write_scored_chunks(
    ctx: StageContext,
    pending: Path,
    count: int,
    writer: Any,
    schema: pa.Schema,
    score_rows: Callable[[list[dict[str, Any]]], dict[str, list[Any]]],
    stats: dict[str, Any],
    desc: str,
) -> None:
    """Score the `count` pending samples a chunk at a time: `score_rows` gives a chunk's columns
    (with `status` and `truncated`), written to `writer`; `stats` gains the status and truncated
    counts and samples_per_second."""
    started = time.perf_counter()
    statuses: dict[str, int] = {}
    chunks = iter_parquet_batches(pending, CHUNK_SAMPLES)
    for chunk in ctx.progress(chunks, total=-(-count // CHUNK_SAMPLES), desc=desc):
        out = score_rows(chunk.to_pylist())
        for status in out["status"]:
            statuses[status] = statuses.get(status, 0) + 1
        stats["truncated"] = stats.get("truncated", 0) + sum(out["truncated"])
        writer.write(pa.table(out, schema=schema))
    seconds = time.perf_counter() - started
    stats.update({f"status_{k}": v for k, v in statuses.items()})
    stats["samples_per_second"] = round(count / seconds, 2) if seconds else None
