"""Re-curation through the real daemon, the whole chain: `dagster-daemon run` with a temporary
DAGSTER_HOME (the project's dagster.yaml) over a small eager pipeline. After one materialisation,
1% new records are appended to the source file; the observation schedule records the new data
version, the automation sensor launches the stale assets, and each stage computes exactly the
new samples while every selection is recomputed (asserted from `stage_runs`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import SENSOR_NAME_TAG

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.sources.fingerprint import file_fingerprint
from curation_assets.store import DuckDBStore
from tests.dagster_dev import DagsterDaemon, write_workspace
from tests.support.pipelines import pipeline_document

pytestmark = pytest.mark.e2e

POOL, NEW = 200, 2  # 1% new records
STAGES = ("lengths", "embed")
SELECTIONS = ("some", "longest")
CHAIN_TIMEOUT_S = 300  # observation (<= 60 s, cron every minute) + sensor (5 s) + one run
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def records(start: int, stop: int) -> str:
    return "".join(
        json.dumps(
            {
                "instruction": f"question {i} about topic {i % 7}",
                "input": "",
                "output": " ".join(["answer"] * (1 + i % 13)) + f" {i}",
            }
        )
        + "\n"
        for i in range(start, stop)
    )


def append_atomically(path: Path, text: str) -> None:
    """Append by writing the grown file next to it and renaming, so no observation reads half of it."""
    grown = path.with_suffix(".tmp")
    grown.write_text(path.read_text() + text)
    os.replace(grown, path)


def eager_pipeline(folder: Path, sentence_model: Path) -> Path:
    document = pipeline_document(
        "auto",
        stages=[
            {"name": "lengths", "kind": "text_stats"},
            {"name": "embed", "kind": "embedding", "model": str(sentence_model)},
        ],
        selections=[
            {"name": "some", "kind": "random", "fraction": 0.1, "seed": 0},
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 10},
        ],
        # eager is the default; sources are fingerprinted every minute instead of every 15, and the
        # sensor evaluates every 5 s instead of 30
        automation={"condition": "eager", "observe_sources_cron": "* * * * *", "sensor_interval_seconds": 5},
    )
    path = folder / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def automation_ticks(instance: dg.DagsterInstance, sensor: str) -> int:
    states = [s for s in instance.all_instigator_state() if s.name == sensor]
    return sum(len(instance.get_ticks(s.instigator_origin_id, s.selector_id)) for s in states)


def latest_observed_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    records = instance.fetch_observations(key, limit=1).records
    return records[0].asset_observation.data_version if records else None


def test_appended_records_flow_through_daemon_observation_automation_and_runs(
    tmp_path: Path, monkeypatch, tiny_sentence_model: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    pool = project / "pool.jsonl"
    pool.write_text(records(0, POOL))
    # runs in one process each: the chain, not Dagster's per-step process start-up, is under test
    workspace = write_workspace(eager_pipeline(project, tiny_sentence_model), in_process=True)
    component = load_pipeline_file(project / "defs.yaml")
    defs = pipeline_definitions(component)
    raw = dg.AssetKey(["auto", "raw", "pool"])
    targets = [dg.AssetKey(["auto", n]) for n in ("pool", *STAGES, *SELECTIONS)]

    monkeypatch.setenv("DAGSTER_HOME", str(workspace.home))  # the project's dagster.yaml reads it
    with dg.DagsterInstance.get() as instance:
        # the first curation, in this process, recorded in the instance the daemon will use
        assert defs.resolve_job_def("auto_observe_sources").execute_in_process(instance=instance).success
        dg.materialize(list(defs.assets), instance=instance, raise_on_error=True)
        first_version = latest_observed_version(instance, raw)
        assert first_version == file_fingerprint(pool)

        with DagsterDaemon(workspace) as daemon:
            # the sensor must have evaluated the settled state once, else a change is its baseline
            deadline = time.monotonic() + 120
            while automation_ticks(instance, "auto_automation") == 0:
                daemon.check_alive()
                assert time.monotonic() < deadline, f"no automation tick in 120 s\n{daemon.log_tail()}"
                time.sleep(1)
            assert not instance.get_runs(RunsFilter(tags={SENSOR_NAME_TAG: "auto_automation"}))

            append_atomically(pool, records(POOL, POOL + NEW))
            new_version = file_fingerprint(pool)
            started = time.monotonic()
            observed_after = None
            while True:
                daemon.check_alive()
                elapsed = time.monotonic() - started
                if observed_after is None and latest_observed_version(instance, raw) == new_version:
                    observed_after = elapsed
                runs = instance.get_runs(RunsFilter(tags={SENSOR_NAME_TAG: "auto_automation"}))
                failed = [r for r in runs if r.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)]
                assert not failed, f"automation run {failed[0].run_id} {failed[0].status}\n{daemon.log_tail()}"
                run_ids = {r.run_id for r in runs}
                latest = {key: instance.get_latest_materialization_event(key) for key in targets}
                if (
                    runs
                    and all(r.status in FINISHED for r in runs)
                    and all(e is not None and e.run_id in run_ids for e in latest.values())
                ):
                    break
                assert elapsed < CHAIN_TIMEOUT_S, (
                    f"chain incomplete after {CHAIN_TIMEOUT_S} s: observed new version: {observed_after}, "
                    f"automation runs: {[(r.run_id[:8], r.status.value) for r in runs]}, re-materialised: "
                    f"{[k.to_user_string() for k, e in latest.items() if e and e.run_id in run_ids]}\n"
                    f"{daemon.log_tail()}"
                )
                time.sleep(1)
            chain_s = time.monotonic() - started
            assert observed_after is not None
            # read-only, retried while a run holds the file for writing
            with DuckDBStore(project / "auto.duckdb").reader(read_only=True) as con:
                runs_by_stage: dict[str, list[tuple]] = {}
                for stage, rows_in, rows_out, run_id, config_hash in con.execute(
                    "SELECT stage, rows_in, rows_out, dagster_run_id, config_hash FROM stage_runs ORDER BY started_at"
                ).fetchall():
                    runs_by_stage.setdefault(stage, []).append((rows_in, rows_out, run_id, config_hash))
                active = con.execute("SELECT count(*) FROM samples WHERE active").fetchone()[0]
                embedded = con.execute("SELECT count(*) FROM embeddings WHERE stage = 'embed'").fetchone()[0]
                members = dict(con.execute("SELECT selection, count(*) FROM selections GROUP BY ALL").fetchall())
    assert active == embedded == POOL + NEW
    assert [r[:2] for r in runs_by_stage["pool"]] == [(POOL, POOL), (POOL + NEW, NEW)]  # records read, new
    for stage in STAGES:  # only the new samples are computed
        assert [r[:2] for r in runs_by_stage[stage]] == [(POOL, POOL), (NEW, NEW)], stage
    for selection in SELECTIONS:  # recomputed over the whole pool, same config
        first, second = runs_by_stage[selection]
        assert (first[0], second[0]) == (POOL, POOL + NEW), selection  # rows_in: the pool it chose from
        assert second[2] != first[2] and second[3] == first[3]
    assert runs_by_stage["some"][1][1] == members["some"] == round(0.1 * (POOL + NEW))
    assert members["longest"] == 10
    automated = {r[-1][2] for name, r in runs_by_stage.items()}
    assert automated <= run_ids, "the second materialisations come from the automation sensor's runs"
    print(
        f"new data observed after {observed_after:.0f} s; chain complete after {chain_s:.0f} s; "
        f"automation runs: {len(run_ids)}"
    )
