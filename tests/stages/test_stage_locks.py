"""Runs of one stage, config and shard take turns (run_guard.py): a second run waits while
another holds the stage's lock, a holder killed with SIGKILL never blocks the next run, and
the staging folders a killed run left are removed by the next one."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from curation_assets.components.standalone import load_pipeline_file
from curation_assets.stages.core.registry import get_kind
from curation_assets.stages.core.run_guard import stage_lock_path
from curation_assets.stages.core.runner import run_ingest, run_stage
from tests.support.files import valid_pipeline_yaml, write_pipeline

HOLD_LOCK = """
import sys, time
from pathlib import Path
from curation_assets.stages.core.run_guard import exclusive_run
with exclusive_run(Path(sys.argv[1]), "another run", None):
    print("held", flush=True)
    time.sleep(600)
"""

IN_STAGING = """
import sys, time
from pathlib import Path
from curation_assets.stages.core.run_guard import staging_folder
with staging_folder(Path(sys.argv[1]), "lengths") as folder:
    (folder / "lengths.pending.parquet").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    time.sleep(600)
"""


def ingested(tmp_path: Path):
    component = load_pipeline_file(write_pipeline(tmp_path, valid_pipeline_yaml(), records=30))
    store = component.prepared_store()
    for source in component.spec.sources:
        run_ingest(source, pipeline=component.spec.name, base_dir=component.base_dir, store=store)
    return component, store


def run_spec(component, store, spec, log=None):
    """`spec` (a stage or selection of `component`) through runner.run_stage, as its asset runs it."""
    return run_stage(
        get_kind(spec.kind),
        spec,
        pipeline=component.spec.name,
        store=store,
        stage_hashes=component.stage_hashes,
        stage_tables=component.stage_tables,
        log=log,
    )


def run_lengths(component, store):
    (spec,) = [s for s in component.spec.stages if s.name == "lengths"]
    return run_spec(component, store, spec)


def lengths_rows(store) -> int:
    with store.reader() as con:
        return con.execute("SELECT count(*) FROM text_stats WHERE stage = 'lengths'").fetchall()[0][0]


def test_a_run_waits_for_the_stage_lock_and_a_holder_killed_by_sigkill_releases_it(tmp_path):
    component, store = ingested(tmp_path)
    lock = stage_lock_path(store.work_dir, "lengths", component.stage_hashes["lengths"])
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    (spec,) = [s for s in component.spec.stages if s.name == "lengths"]
    waiting, summaries = start_waiting_run(lambda log: run_spec(component, store, spec, log))
    assert waiting.is_alive(), "the run did not wait for the lock"  # it logged that it waits ...
    waiting.join(timeout=1)  # ... and still waits 5 lock polls later, nothing written
    assert waiting.is_alive() and lengths_rows(store) == 0  # waits while the other run holds the lock

    holder.send_signal(signal.SIGKILL)  # no finally runs: the kernel drops the lock
    holder.wait()
    waiting.join(timeout=120)
    assert not waiting.is_alive() and summaries[0].rows_out == 30 and lengths_rows(store) == 30

    again = run_lengths(component, store)  # uncontended, nothing pending
    assert (again.rows_in, again.rows_out, lengths_rows(store)) == (0, 0, 30)


def test_staging_folders_of_a_killed_run_are_removed_by_the_next_run(tmp_path):
    component, store = ingested(tmp_path)
    killed = subprocess.Popen(
        [sys.executable, "-c", IN_STAGING, str(store.work_dir)], stdout=subprocess.PIPE, text=True
    )
    left = Path(killed.stdout.readline().strip())
    live = subprocess.Popen([sys.executable, "-c", IN_STAGING, str(store.work_dir)], stdout=subprocess.PIPE, text=True)
    kept = Path(live.stdout.readline().strip())
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert left.is_dir() and kept.is_dir()
    try:
        assert run_lengths(component, store).rows_out == 30
        staging = store.work_dir / ".staging"
        assert not left.exists() and not Path(f"{left}.lock").exists()  # the killed run's folder is gone
        assert kept.is_dir()  # a live run's folder is not touched
        assert sorted(p.name for p in staging.iterdir()) == sorted([kept.name, f"{kept.name}.lock"])
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()


INGEST_HOLDING_THE_LOCK = """
import sys
from pathlib import Path
from curation_assets.components.standalone import load_pipeline_file
from curation_assets.stages.core import runner
from curation_assets.stages.core.run_guard import exclusive_run, ingest_lock_path
component = load_pipeline_file(Path(sys.argv[1]))
store = component.prepared_store()
(source,) = component.spec.sources
with exclusive_run(ingest_lock_path(store.work_dir, source.name), "the other run", None):
    print("held", flush=True)
    sys.stdin.readline()
    # what run_ingest does once it holds the lock
    runner._run_ingest(source, runner.source_config_hash(source),
                       runner.resolve_source_location(source, component.base_dir), pipeline=component.spec.name,
                       base_dir=component.base_dir, store=store, dagster_run_id=None, log=None)
    print("ingested", flush=True)
    sys.stdin.readline()
"""


class Messages:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    warning = info


def start_lock_holder(script: str, defs: Path) -> subprocess.Popen:
    """`script` in another process on the pipeline `defs`; returns once it holds the lock and waits
    for a line on its stdin."""
    other = subprocess.Popen(
        [sys.executable, "-c", script, str(defs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout.readline().strip() == "held"
    return other


def start_waiting_run(run) -> tuple[threading.Thread, list]:
    """`run(log)` in a thread, returned (with the list its result is appended to) once the run has
    logged that it waits for the other run's lock, or after 60 s."""
    log, outcome = Messages(), []
    waiting = threading.Thread(target=lambda: outcome.append(run(log)))
    waiting.start()
    deadline = time.monotonic() + 60
    while not any("waiting for it to finish" in m for m in log.lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    return waiting, outcome


@pytest.mark.parametrize("file_changed", [False, True], ids=["same_file", "file_changed_meanwhile"])
def test_an_ingest_that_waited_reuses_the_other_runs_ingest_of_the_same_file(tmp_path, file_changed):
    defs = write_pipeline(tmp_path, valid_pipeline_yaml(), records=30)
    component = load_pipeline_file(defs)
    store = component.prepared_store()
    (source,) = component.spec.sources
    other = start_lock_holder(INGEST_HOLDING_THE_LOCK, defs)
    waiting, outcome = start_waiting_run(
        lambda log: run_ingest(source, pipeline=component.spec.name, base_dir=component.base_dir, store=store, log=log)
    )
    other.stdin.write("go\n")
    other.stdin.flush()
    assert other.stdout.readline().strip() == "ingested"
    if file_changed:  # a record added after the other run read the file
        with (tmp_path / "data" / "alpaca.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"instruction": "A new one.", "input": "", "output": "Yes."}) + "\n")
    other.stdin.write("release\n")
    other.stdin.flush()
    assert other.wait(timeout=60) == 0
    waiting.join(timeout=120)
    summary, result = outcome[0]
    with store.reader() as con:
        ingests = con.execute(
            "SELECT rows_in, rows_out FROM stage_runs WHERE stage = 'alpaca' ORDER BY finished_at"
        ).fetchall()
        samples = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
    assert result.balanced
    if file_changed:  # read again: the other run's ingest is stale
        assert "skipped" not in summary.stats and ingests == [(30, 30), (31, 1)] and samples == 31
    else:
        assert summary.stats["skipped"] == "ingested by a concurrent run"
        assert (result.records_read, result.samples) == (30, 30) and ingests == [(30, 30)] and samples == 30


SELECTION_HOLDING_THE_LOCK = """
import sys
from pathlib import Path
from curation_assets.components.standalone import load_pipeline_file
from curation_assets.stages.core import runner
from curation_assets.stages.core.registry import get_kind
from curation_assets.stages.core.run_guard import exclusive_run, stage_lock_path
component = load_pipeline_file(Path(sys.argv[1]))
store = component.prepared_store()
(spec,) = [s for s in component.spec.selections if s.name == "longest"]
hashes = component.stage_hashes
with exclusive_run(stage_lock_path(store.work_dir, spec.name, hashes[spec.name]), "the other run", None):
    print("held", flush=True)
    sys.stdin.readline()
    # what run_stage does once it holds the lock
    runner._run_stage(get_kind(spec.kind), spec, hashes[spec.name], pipeline=component.spec.name, store=store,
                      stage_hashes=hashes, stage_tables=component.stage_tables, dagster_run_id=None, log=None,
                      device="cpu", stage_specs=None, shard=None)
"""


def test_a_selection_that_waited_is_not_computed_again(tmp_path):
    component, store = ingested(tmp_path)
    defs = tmp_path / "defs.yaml"
    assert run_lengths(component, store).rows_out == 30
    (spec,) = [s for s in component.spec.selections if s.name == "longest"]
    other = start_lock_holder(SELECTION_HOLDING_THE_LOCK, defs)
    waiting, outcome = start_waiting_run(lambda log: run_spec(component, store, spec, log))
    other.stdin.write("go\n")
    other.stdin.flush()
    assert other.wait(timeout=120) == 0
    waiting.join(timeout=120)
    assert outcome[0].stats == {"skipped": "committed by a concurrent run"}
    with store.reader() as con:
        runs = con.execute("SELECT count(*) FROM stage_runs WHERE stage = 'longest'").fetchall()[0][0]
        members = con.execute("SELECT count(*) FROM selections WHERE selection = 'longest'").fetchall()[0][0]
    assert (runs, members) == (1, 5)  # computed once, by the run that held the lock
