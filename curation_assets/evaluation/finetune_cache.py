"""On-disk cache of evaluation fine-tunes, keyed by (training set, hyperparameters).

A fine-tune's folder holds its LoRA adapter, `meta.json` (steps, losses, seconds) and one
`losses-<set hash>.json` per evaluation set it was measured on. Everything is written to a
temporary name and renamed, so an interrupted evaluation leaves whole entries only, and the
next run fine-tunes and measures only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curation_assets.evaluation.spec import EVALUATION_VERSION, FinetuneSettings

ADAPTER = "adapter"


def digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def members_hash(sample_ids: Sequence[str]) -> str:
    """A training set's identity: the sorted sample ids (rank order does not change the fine-tune,
    which trains on the set in sample_id order, shuffled by the seed)."""
    return digest(sorted(sample_ids))[:32]


def finetune_key(members: str, settings: FinetuneSettings) -> str:
    return digest({"version": EVALUATION_VERSION, "members": members, "finetune": settings.hashed()})[:32]


def base_model_key(settings: FinetuneSettings) -> str:
    """The un-tuned model's entry: its losses depend on the model, template, max_length and turns only."""
    return (
        "base-"
        + digest(
            {
                "version": EVALUATION_VERSION,
                "model": settings.model,
                "max_length": settings.max_length,
                "chat_template": settings.chat_template,
                "turns": settings.turns,
            }
        )[:26]
    )


def set_hash(sample_ids: Sequence[str]) -> str:
    """An evaluation set's identity: its sample ids in order."""
    return digest(list(sample_ids))[:16]


class FinetuneCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, key: str) -> Path:
        return self.root / key

    def adapter_dir(self, key: str) -> Path | None:
        path = self.folder(key) / ADAPTER
        return path if (path / "adapter_config.json").exists() else None

    def save_adapter(self, key: str, model: Any, meta: dict[str, Any]) -> Path:
        """Save a peft model's adapter and its training facts (atomically, adapter last)."""
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "meta.json", meta)
        staged = Path(tempfile.mkdtemp(prefix=".adapter-", dir=folder))
        model.save_pretrained(staged)
        target = folder / ADAPTER
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
        return target

    def meta(self, key: str) -> dict[str, Any]:
        path = self.folder(key) / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def losses(self, key: str, eval_set: str) -> np.ndarray | None:
        path = self.folder(key) / f"losses-{eval_set}.json"
        if not path.exists():
            return None
        return np.array(json.loads(path.read_text())["losses"], dtype=np.float64)

    def save_losses(self, key: str, eval_set: str, losses: np.ndarray, seconds: float) -> None:
        self.folder(key).mkdir(parents=True, exist_ok=True)
        _write_json(
            self.folder(key) / f"losses-{eval_set}.json",
            {"losses": [None if np.isnan(v) else float(v) for v in losses], "seconds": seconds},
        )

    def loss_seconds(self, key: str, eval_set: str) -> float:
        path = self.folder(key) / f"losses-{eval_set}.json"
        return float(json.loads(path.read_text()).get("seconds", 0.0)) if path.exists() else 0.0


def _write_json(path: Path, payload: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(temporary, path)
