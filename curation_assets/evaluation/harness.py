"""Run an evaluation: every baseline and selection fine-tuned with one recipe, measured on the
held-out target and general sets, compared with the baselines' band (issue #9).

Statistics that can fail (issue #19): each training set is fine-tuned under `training_seeds`
seeds and a held-out sample's loss is their mean; each row's Δ against the baselines' mean
comes with a paired bootstrap 95% interval over held-out samples, and whether it beats every
baseline; each method is also compared with random subsets of the pool holding as many
response tokens as its selection (token-matched); the un-tuned model and a full-pool
fine-tune are the two reference rows. A method in a sub-pool band (`pools:`) uses that
sub-pool's baselines and draws its token-matched subsets from the sub-pool's samples.

Dagster-free, so the asset, the CLI and the tests share it: reads members and timings from
the store, fine-tunes through the on-disk cache, writes `evaluation_results` in one short
transaction and, with `output_dir`, eval.md and eval.png.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation_assets.evaluation.finetune import FinetuneRunner, Measured
from curation_assets.evaluation.finetune_cache import FinetuneCache, finetune_key, members_hash
from curation_assets.evaluation.heldout import HeldoutSet, check_no_leak, general_heldout, target_heldout
from curation_assets.evaluation.spec import WHOLE_POOL, EvaluationSpec, SubPoolBand
from curation_assets.methods.evaluation_stats import (
    PairedDelta,
    paired_bootstrap,
    paired_differences,
    token_matched_subset,
)
from curation_assets.stages.core.registry import StageSpec
from curation_assets.store import Store
from curation_assets.store.sql_files import execute_sql_file, read_sql
from curation_assets.store.writes import utc_now

BASE_MODEL = "base_model"
FULL_POOL = "full_pool"
RESULT_SCHEMA = pa.schema(
    [
        ("evaluation", pa.string()),
        ("selection", pa.string()),
        ("kind", pa.string()),
        ("role", pa.string()),
        ("k", pa.int32()),
        ("members_hash", pa.string()),
        ("finetune_key", pa.string()),
        ("target_loss", pa.float64()),
        ("general_loss", pa.float64()),
        ("target_delta", pa.float64()),
        ("general_delta", pa.float64()),
        ("selection_seconds", pa.float64()),
        ("upstream_seconds", pa.float64()),
        ("finetune_seconds", pa.float64()),
        ("eval_seconds", pa.float64()),
        ("computed_now", pa.bool_()),
        ("training_steps", pa.int32()),
        ("final_training_loss", pa.float64()),
        ("config_hash", pa.string()),
        ("evaluated_at", pa.timestamp("us")),
        ("training_seeds", pa.int32()),
        ("response_tokens", pa.int64()),
        ("target_ci_low", pa.float64()),
        ("target_ci_high", pa.float64()),
        ("general_ci_low", pa.float64()),
        ("general_ci_high", pa.float64()),
        ("beats_all_random", pa.bool_()),
        ("token_matched_delta", pa.float64()),
        ("token_matched_ci_low", pa.float64()),
        ("token_matched_ci_high", pa.float64()),
        ("matched_to", pa.string()),
        ("pool", pa.string()),
    ]
)
LOSSES_SCHEMA = pa.schema(
    [
        ("evaluation", pa.string()),
        ("selection", pa.string()),
        ("training_seed", pa.int32()),
        ("heldout_set", pa.string()),
        ("position", pa.int32()),
        ("loss", pa.float64()),
    ]
)

SAMPLES_SCHEMA = pa.schema(
    [
        ("evaluation", pa.string()),
        ("heldout_set", pa.string()),
        ("position", pa.int32()),
        ("sample_id", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ]
)


@dataclass
class ResultRow:
    selection: str  # a selection, `base_model`, `full_pool` or `token_matched:<method>:<draw>`
    kind: str
    role: str  # method | baseline | base_model | full_pool | token_matched
    k: int
    measured: Measured  # the training seeds together: per-sample losses are their mean
    members_hash: str | None = None
    target_loss: float = float("nan")
    general_loss: float = float("nan")
    target_delta: float | None = None
    general_delta: float | None = None
    selection_seconds: float | None = None
    upstream_seconds: float | None = None
    runs: list[tuple[int, Measured]] = field(default_factory=list)  # (training seed, its fine-tune)
    response_tokens: int | None = None  # trained (label) tokens of the training set
    target_ci: tuple[float, float] | None = None  # paired bootstrap interval of target_delta
    general_ci: tuple[float, float] | None = None
    beats_all_random: bool | None = None  # target loss below every baseline's (methods and references)
    random_beaten: int | None = None  # baselines whose target loss is above this row's
    token_matched: PairedDelta | None = None  # target loss - the token-matched random subsets' (methods)
    matched_to: str | None = None  # token_matched rows: the method whose tokens they match
    pool: str = WHOLE_POOL  # the band it is compared with: `all` or a sub-pool's name (`pools:`)


@dataclass
class Band:
    """Mean and sample standard deviation (ddof = 1) of the baselines' losses."""

    target_mean: float
    target_std: float
    general_mean: float
    general_std: float
    n: int
    pool: str = WHOLE_POOL  # `all` or the sub-pool's name
    pool_size: int = 0  # active samples the band's baselines were drawn from


@dataclass
class EvaluationResult:
    spec: EvaluationSpec
    rows: list[ResultRow]
    band: Band  # the whole pool's
    target: HeldoutSet
    general: HeldoutSet
    pool_size: int
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    machine: str = ""
    stage_timings: list[tuple[str, str, float]] = field(default_factory=list)  # (name, kind, seconds)
    bands: dict[str, Band] = field(default_factory=dict)  # pool name (`all` first) -> its band

    def row(self, selection: str) -> ResultRow:
        return next(r for r in self.rows if r.selection == selection)


def machine_description() -> str:
    from curation_assets.models.device import compute_device

    return f"{platform.machine()}, {os.cpu_count()} cores, torch device {compute_device().describe()}"


def selection_members(store: Store, selection: str, current_hash: str) -> list[str]:
    with store.reader() as con:
        rows = con.execute(read_sql("reads/evaluation_members.sql"), {"selection": selection}).fetchall()
    if not rows:
        raise ValueError(f"evaluation: selection {selection!r} has no members: materialise it first")
    stale = {config for _, config in rows if config != current_hash}
    if stale:
        raise ValueError(
            f"evaluation: selection {selection!r} was selected under config {sorted(stale)}, not its "
            f"current config {current_hash}: materialise it again"
        )
    return [sid for sid, _ in rows]


def member_messages(store: Store, sample_ids: list[str]) -> list[Any]:
    """Conversations of `sample_ids`, in sample_id order."""
    with store.reader() as con:
        rows = con.execute(read_sql("reads/sample_messages.sql"), {"sample_ids": sample_ids}).fetchall()
    return [messages for _, messages in rows]


def upstream_names(name: str, specs: Mapping[str, StageSpec]) -> list[str]:
    """Every stage and selection `name` reads, directly or through others (sources excluded)."""
    seen: list[str] = []
    stack = list(specs[name].references().values())
    while stack:
        ref = stack.pop()
        if ref in specs and ref not in seen:
            seen.append(ref)
            stack.extend(specs[ref].references().values())
    return seen


def stage_seconds(store: Store, pipeline: str, name: str, config_hash: str, role: str) -> float:
    """A stage: every run of its current config (incremental); a selection: its latest run."""
    with store.reader() as con:
        if role == "stage":
            return float(
                con.execute(
                    read_sql("reads/evaluation_stage_seconds.sql"),
                    {"pipeline": pipeline, "stage": name, "config_hash": config_hash},
                ).fetchall()[0][0]
            )
        rows = con.execute(
            read_sql("reads/evaluation_selection_seconds.sql"),
            {"pipeline": pipeline, "stage": name, "config_hash": config_hash},
        ).fetchall()
    return float(rows[0][0]) if rows else 0.0


def pool_samples(store: Store) -> tuple[list[str], list[Any]]:
    """Every active sample (sample_id order): ids and conversations."""
    with store.reader() as con:
        rows = con.execute(read_sql("reads/evaluation_pool.sql")).fetchall()
    return [sid for sid, _ in rows], [messages for _, messages in rows]


def finetuned_over_seeds(
    runner: FinetuneRunner,
    spec: EvaluationSpec,
    sample_ids: list[str],
    messages: list[Any],
    log: Any,
    label: str,
    role: str = "method",
) -> tuple[str, Measured, list[tuple[int, Measured]]]:
    """(members hash, the seeds' mean, each seed's fine-tune) of one training set: `spec.seeds_of(role)`
    fine-tunes with seeds finetune.seed, +1, ..., each cached under its own key."""
    training_set = members_hash(sample_ids)
    base = spec.finetune
    runs = []
    for offset in range(spec.seeds_of(role)):
        settings = base.model_copy(update={"seed": base.seed + offset})
        if log is not None:
            log.info(f"evaluation: {label} ({len(sample_ids)} samples, training seed {settings.seed})")
        runner.settings = settings  # the runner fine-tunes with runner.settings.seed
        runs.append((settings.seed, runner.finetuned(finetune_key(training_set, settings), messages)))
    runner.settings = base
    return training_set, seed_mean(runs), runs


def seed_mean(runs: list[tuple[int, Measured]]) -> Measured:
    """One Measured for several training seeds: per-sample losses averaged, seconds summed."""
    first = runs[0][1]
    if len(runs) == 1:
        return first
    measured = [m for _, m in runs]
    return Measured(
        first.key,
        {name: np.mean([m.losses[name] for m in measured], axis=0) for name in first.losses},
        finetune_seconds=sum(m.finetune_seconds for m in measured),
        eval_seconds=sum(m.eval_seconds for m in measured),
        computed_now=any(m.computed_now for m in measured),
        training_steps=first.training_steps,
        final_training_loss=_nanmean([m.final_training_loss for m in measured]),
    )


def run_evaluation(
    spec: EvaluationSpec,
    *,
    store: Store,
    pipeline: str,
    specs: Mapping[str, StageSpec],
    selection_names: set[str],
    stage_hashes: Mapping[str, str],
    cache_dir: Path,
    log: Any = None,
) -> EvaluationResult:
    """Fine-tune and measure every listed selection (cached), write `evaluation_results` and the files."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="curation-evaluation-") as staging:
        target = target_heldout(spec.target, spec.target_heldout_size, Path(staging))
        general = general_heldout(spec.general, store, Path(staging))
    check_no_leak(store, target, sorted(selection_names))
    runner = FinetuneRunner(spec.finetune, FinetuneCache(cache_dir), [target, general], log)
    pool_ids, pool_messages = pool_samples(store)
    # response tokens the fine-tune trains on, per pool sample (the recipe's template, length and turns)
    pool_tokens = np.array([e.n_response_tokens for e in runner.encode(pool_messages)], dtype=np.int64)
    tokens_of = dict(zip(pool_ids, pool_tokens.tolist()))
    # every member list read and checked before the first fine-tune
    sub_pools = {band.name: sub_pool_positions(store, band, stage_hashes, pool_ids) for band in spec.pools}
    sub_baselines = [name for band in spec.pools for name in band.baselines]
    planned = []
    for role, names in (("baseline", [*spec.baselines, *sub_baselines]), ("method", spec.selections)):
        for name in names:
            members = selection_members(store, name, stage_hashes[name])
            missing = [sid for sid in members if sid not in tokens_of]
            if missing:
                raise ValueError(
                    f"evaluation: selection {name!r} holds {len(missing)} inactive samples "
                    f"(e.g. {missing[0]}): materialise it again"
                )
            sub_band = spec.pool_of(name)
            if sub_band is not None:
                if role == "baseline" and specs[name].input_selection != sub_band.selection:  # also checked at load
                    raise ValueError(
                        f"evaluation: baseline {name!r} of pool {sub_band.name!r} must draw from the sub-pool: "
                        f"give it `input_selection: {sub_band.selection}`"
                    )
                check_in_sub_pool(name, members, sub_band, {pool_ids[i] for i in sub_pools[sub_band.name]})
            planned.append((role, name, members, WHOLE_POOL if sub_band is None else sub_band.name))
    base = runner.base_model()
    rows = [ResultRow(BASE_MODEL, "none", "base_model", 0, base, runs=[(-1, base)], response_tokens=0)]
    for role, name, members, pool in planned:
        training_set, measured, runs = finetuned_over_seeds(
            runner, spec, members, member_messages(store, members), log, name, role
        )
        row = ResultRow(
            name,
            specs[name].kind,
            role,
            len(members),
            measured,
            training_set,
            runs=runs,
            response_tokens=int(sum(tokens_of[sid] for sid in members)),
            pool=pool,
        )
        row.selection_seconds = stage_seconds(store, pipeline, name, stage_hashes[name], "selection")
        row.upstream_seconds = row.selection_seconds + sum(
            stage_seconds(store, pipeline, ref, stage_hashes[ref], "selection" if ref in selection_names else "stage")
            for ref in upstream_names(name, specs)
        )
        rows.append(row)
    if spec.full_pool:
        training_set, measured, runs = finetuned_over_seeds(runner, spec, pool_ids, pool_messages, log, FULL_POOL)
        rows.append(
            ResultRow(
                FULL_POOL,
                "all active samples",
                "full_pool",
                len(pool_ids),
                measured,
                training_set,
                runs=runs,
                response_tokens=int(pool_tokens.sum()),
            )
        )
    by_id = dict(zip(pool_ids, pool_messages))
    everything = np.arange(len(pool_ids))
    for method in [r for r in rows if r.role == "method"]:
        # drawn from the samples the method's band was drawn from: the whole pool or its sub-pool
        candidates = everything if method.pool == WHOLE_POOL else sub_pools[method.pool]
        for draw in range(spec.token_matched_draws):
            picked = token_matched_subset(
                pool_tokens[candidates], method.response_tokens or 0, spec.token_matched_seed + draw
            )
            chosen = candidates[picked]
            members = sorted(pool_ids[i] for i in chosen)
            name = f"token_matched:{method.selection}:{draw}"
            training_set, measured, runs = finetuned_over_seeds(
                runner, spec, members, [by_id[m] for m in members], log, name, "token_matched"
            )
            rows.append(
                ResultRow(
                    name,
                    "random (token-matched)",
                    "token_matched",
                    len(members),
                    measured,
                    training_set,
                    runs=runs,
                    response_tokens=int(pool_tokens[chosen].sum()),
                    matched_to=method.selection,
                    pool=method.pool,
                )
            )
    for row in rows:
        row.target_loss = row.measured.mean(target.name)
        row.general_loss = row.measured.mean(general.name)
    bands = {
        pool: band_of([r for r in rows if r.role == "baseline" and r.pool == pool], pool, size)
        for pool, size in [(WHOLE_POOL, len(pool_ids)), *((b.name, sub_pools[b.name].size) for b in spec.pools)]
    }
    band = bands[WHOLE_POOL]
    compare(rows, spec, target.name, general.name)
    timings = [
        (
            name,
            stage.kind,
            stage_seconds(
                store, pipeline, name, stage_hashes[name], "selection" if name in selection_names else "stage"
            ),
        )
        for name, stage in specs.items()
    ]
    result = EvaluationResult(
        spec,
        rows,
        band,
        target,
        general,
        len(pool_ids),
        time.perf_counter() - started,
        dict(runner.stats),
        machine_description(),
        timings,
        bands,
    )
    write_results(store, result)
    if spec.output_dir:
        from curation_assets.evaluation.report import write_report_files

        write_report_files(result, Path(spec.output_dir))
    return result


def compare(rows: list[ResultRow], spec: EvaluationSpec, target: str, general: str) -> None:
    """Δ of every row against its pool's baselines' per-sample mean loss (the references: the whole
    pool's), with a paired bootstrap interval; for the methods and the references whether they beat
    every baseline of that band, and for each method its Δ against its token-matched random subsets
    (their per-sample mean)."""
    settings = {"resamples": spec.bootstrap_resamples, "seed": spec.bootstrap_seed}
    by_pool: dict[str, list[ResultRow]] = {}
    for row in rows:
        if row.role == "baseline":
            by_pool.setdefault(row.pool, []).append(row)
    random_means = {
        pool: {name: np.mean([r.measured.losses[name] for r in baselines], axis=0) for name in (target, general)}
        for pool, baselines in by_pool.items()
    }
    for row in rows:
        baselines, random_mean = by_pool[row.pool], random_means[row.pool]
        on_target = paired_bootstrap(row.measured.losses[target], random_mean[target], **settings)
        on_general = paired_bootstrap(row.measured.losses[general], random_mean[general], **settings)
        row.target_delta, row.target_ci = on_target.delta, (on_target.low, on_target.high)
        row.general_delta, row.general_ci = on_general.delta, (on_general.low, on_general.high)
        if row.role in ("method", "base_model", "full_pool"):
            row.random_beaten = sum(
                bool(paired_differences(row.measured.losses[target], b.measured.losses[target]).mean() < 0)
                for b in baselines
            )
            row.beats_all_random = row.random_beaten == len(baselines)
        if row.role == "method":
            matched = [r for r in rows if r.role == "token_matched" and r.matched_to == row.selection]
            if matched:
                row.token_matched = paired_bootstrap(
                    row.measured.losses[target],
                    np.mean([r.measured.losses[target] for r in matched], axis=0),
                    **settings,
                )


def sub_pool_positions(
    store: Store, band: SubPoolBand, stage_hashes: Mapping[str, str], pool_ids: list[str]
) -> np.ndarray:
    """Positions in `pool_ids` (sample_id order) of the sub-pool selection's members."""
    members = set(selection_members(store, band.selection, stage_hashes[band.selection]))
    positions = np.array([i for i, sid in enumerate(pool_ids) if sid in members], dtype=np.int64)
    if positions.size < len(members):
        raise ValueError(
            f"evaluation: sub-pool {band.selection!r} (pool {band.name!r}) holds {len(members) - positions.size} "
            "inactive samples: materialise it again"
        )
    return positions


def check_in_sub_pool(name: str, members: list[str], band: SubPoolBand, sub_pool: set[str]) -> None:
    """A sub-pool band only means something when its methods chose among its samples."""
    outside = [sid for sid in members if sid not in sub_pool]
    if outside:
        raise ValueError(
            f"evaluation: {name!r} (pool {band.name!r}) selected {len(outside)} samples outside the sub-pool "
            f"{band.selection!r} (e.g. {outside[0]}): give it, or the stages it reads, "
            f"`input_selection: {band.selection}`"
        )


def band_of(baselines: list[ResultRow], pool: str, pool_size: int) -> Band:
    """Mean ± std (ddof 1) of the baselines' target and general losses."""
    return Band(
        *_mean_std([r.target_loss for r in baselines]),
        *_mean_std([r.general_loss for r in baselines]),
        len(baselines),
        pool,
        pool_size,
    )


def _nanmean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else float("nan")


def write_results(store: Store, result: EvaluationResult) -> None:
    now = utc_now()
    records = [
        {
            "evaluation": result.spec.name,
            "selection": r.selection,
            "kind": r.kind,
            "role": r.role,
            "k": r.k,
            "members_hash": r.members_hash,
            "finetune_key": r.measured.key,
            "target_loss": _finite(r.target_loss),
            "general_loss": _finite(r.general_loss),
            "target_delta": _finite(r.target_delta),
            "general_delta": _finite(r.general_delta),
            "selection_seconds": r.selection_seconds,
            "upstream_seconds": r.upstream_seconds,
            "finetune_seconds": r.measured.finetune_seconds,
            "eval_seconds": r.measured.eval_seconds,
            "computed_now": r.measured.computed_now,
            "training_steps": r.measured.training_steps,
            "final_training_loss": r.measured.final_training_loss,
            "config_hash": result.spec.config_hash(),
            "evaluated_at": now,
            "training_seeds": len(r.runs),
            "response_tokens": r.response_tokens,
            "target_ci_low": _finite(r.target_ci[0]) if r.target_ci else None,
            "target_ci_high": _finite(r.target_ci[1]) if r.target_ci else None,
            "general_ci_low": _finite(r.general_ci[0]) if r.general_ci else None,
            "general_ci_high": _finite(r.general_ci[1]) if r.general_ci else None,
            "beats_all_random": r.beats_all_random,
            "token_matched_delta": _finite(r.token_matched.delta) if r.token_matched else None,
            "token_matched_ci_low": _finite(r.token_matched.low) if r.token_matched else None,
            "token_matched_ci_high": _finite(r.token_matched.high) if r.token_matched else None,
            "matched_to": r.matched_to,
            "pool": r.pool,
        }
        for r in result.rows
    ]
    losses = [
        {
            "evaluation": result.spec.name,
            "selection": r.selection,
            "training_seed": seed,
            "heldout_set": held.name,
            "position": i,
            "loss": _finite(v),
        }
        for r in result.rows
        for seed, measured in r.runs
        for held in (result.target, result.general)
        for i, v in enumerate(measured.losses[held.name].tolist())
    ]
    heldout = [
        {
            "evaluation": result.spec.name,
            "heldout_set": held.name,
            "position": i,
            "sample_id": sid,
            "messages": messages,
        }
        for held in (result.target, result.general)
        for i, (sid, messages) in enumerate(zip(held.sample_ids, held.messages))
    ]
    with tempfile.TemporaryDirectory(prefix="curation-evaluation-") as staging:
        path, samples_path = Path(staging) / "results.parquet", Path(staging) / "samples.parquet"
        losses_path = Path(staging) / "losses.parquet"
        pq.write_table(pa.Table.from_pylist(records, schema=RESULT_SCHEMA), path)
        pq.write_table(pa.Table.from_pylist(heldout, schema=SAMPLES_SCHEMA), samples_path)
        pq.write_table(pa.Table.from_pylist(losses, schema=LOSSES_SCHEMA), losses_path)
        with store.transaction() as con:
            execute_sql_file(
                con,
                "writes/evaluation_replace.sql",
                {
                    "evaluation": result.spec.name,
                    "results_file": str(path),
                    "samples_file": str(samples_path),
                    "losses_file": str(losses_path),
                },
            )


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
