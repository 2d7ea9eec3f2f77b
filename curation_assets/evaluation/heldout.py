"""The two held-out sets of an evaluation: the target's held-out part and a general set
drawn from records outside the pool."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from curation_assets.arrow_compute import pc
from curation_assets.evaluation.finetune_cache import set_hash
from curation_assets.evaluation.spec import GeneralHeldoutSpec
from curation_assets.sources.ingest import stage_source
from curation_assets.stages.core.targets import TargetSpec, read_target
from curation_assets.store import Store
from curation_assets.store.sql_files import read_sql


@dataclass(frozen=True)
class HeldoutSet:
    name: str
    sample_ids: list[str]
    messages: list[Any]

    @property
    def hash(self) -> str:
        return set_hash(self.sample_ids)


class LeakError(ValueError):
    pass


def target_heldout(target: TargetSpec, size: int | None, staging: Path) -> HeldoutSet:
    """The first `size` held-out samples of the target, in its seeded split order."""
    table = read_target(target, staging / f"target-{target.name}")
    heldout = table.filter(pc.equal(table.column("split"), "heldout"))
    if heldout.num_rows == 0:
        raise ValueError(
            f"evaluation target {target.name!r} has no held-out samples: its "
            f"{table.num_rows} records all fall in validation_size={target.validation_size}"
        )
    if size is not None:
        heldout = heldout.slice(0, size)
    return HeldoutSet(
        f"target:{target.name}", heldout.column("sample_id").to_pylist(), heldout.column("messages").to_pylist()
    )


def general_heldout(spec: GeneralHeldoutSpec, store: Store, staging: Path) -> HeldoutSet:
    """`spec.size` samples of the records `spec` reads that the pipeline never ingested (seeded draw)."""
    folder = staging / f"general-{spec.name}"
    folder.mkdir(parents=True, exist_ok=True)
    result = stage_source(spec, Path("/"), folder)
    samples = pq.read_table(result.samples_file, columns=["sample_id", "messages"])
    with store.reader() as con:
        known = {row[0] for row in con.execute(read_sql("reads/evaluation_known_samples.sql")).fetchall()}
    ids = samples.column("sample_id").to_pylist()
    outside = sorted(i for i, sid in enumerate(ids) if sid not in known)
    if len(outside) < spec.size:
        raise ValueError(
            f"evaluation `general` ({spec.name}): only {len(outside)} of its {len(ids)} samples lie "
            f"outside the pool, {spec.size} needed; raise its `limit` (records read) or lower `size`"
        )
    chosen = sorted(np.random.default_rng(spec.seed).choice(outside, size=spec.size, replace=False).tolist())
    messages = samples.column("messages").to_pylist()
    return HeldoutSet(f"general:{spec.name}", [ids[i] for i in chosen], [messages[i] for i in chosen])


def check_no_leak(store: Store, heldout: HeldoutSet, selections: list[str]) -> None:
    """Fail when one of `selections` chose its samples with target samples this evaluation holds out."""
    with store.reader() as con:
        leaks = con.execute(
            read_sql("reads/evaluation_target_leaks.sql"), {"sample_ids": heldout.sample_ids, "selections": selections}
        ).fetchall()
    if leaks:
        listed = ", ".join(f"{selection} ({target}: {n} samples)" for selection, target, n in leaks)
        raise LeakError(
            f"the evaluation's held-out target samples were used for selection by {listed}: give "
            "`evaluation.target` the same `validation_size` and `split_seed` as those selections' "
            "targets"
        )
