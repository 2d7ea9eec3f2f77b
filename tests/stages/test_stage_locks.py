"""Runs of one stage, config and shard take turns (run_guard.py): a second run waits while
another holds the stage's lock, a holder killed with SIGKILL never blocks the next run, and
the staging folders a killed run left are removed by the next one."""

import signal
import subprocess
import sys
import threading
from pathlib import Path

from curation_assets.components.standalone import load_pipeline_file
from curation_assets.stages.registry import get_kind
from curation_assets.stages.run_guard import artifacts_root, stage_lock_path
from curation_assets.stages.runner import run_ingest, run_stage
from tests.pipeline_files import valid_pipeline_yaml, write_pipeline

HOLD_LOCK = """
import sys, time
from pathlib import Path
from curation_assets.stages.run_guard import exclusive_run
with exclusive_run(Path(sys.argv[1]), "another run", None):
    print("held", flush=True)
    time.sleep(600)
"""

IN_STAGING = """
import sys, time
from pathlib import Path
from curation_assets.stages.run_guard import staging_folder
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


def run_lengths(component, store):
    (spec,) = [s for s in component.spec.stages if s.name == "lengths"]
    return run_stage(get_kind(spec.kind), spec, pipeline=component.spec.name, store=store,
                     stage_hashes=component.stage_hashes, stage_tables=component.stage_tables)


def lengths_rows(store) -> int:
    with store.reader() as con:
        return con.execute("SELECT count(*) FROM text_stats WHERE stage = 'lengths'").fetchall()[0][0]


def test_a_run_waits_for_the_stage_lock_and_a_holder_killed_by_sigkill_releases_it(tmp_path):
    component, store = ingested(tmp_path)
    lock = stage_lock_path(store.path, "lengths", component.stage_hashes["lengths"])
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    summaries = []
    waiting = threading.Thread(target=lambda: summaries.append(run_lengths(component, store)))
    waiting.start()
    waiting.join(timeout=4)
    assert waiting.is_alive() and lengths_rows(store) == 0  # waits while the other run holds the lock

    holder.send_signal(signal.SIGKILL)  # no finally runs: the kernel drops the lock
    holder.wait()
    waiting.join(timeout=120)
    assert not waiting.is_alive() and summaries[0].rows_out == 30 and lengths_rows(store) == 30

    again = run_lengths(component, store)  # uncontended, nothing pending
    assert (again.rows_in, again.rows_out, lengths_rows(store)) == (0, 0, 30)


def test_staging_folders_of_a_killed_run_are_removed_by_the_next_run(tmp_path):
    component, store = ingested(tmp_path)
    killed = subprocess.Popen([sys.executable, "-c", IN_STAGING, str(store.path)], stdout=subprocess.PIPE, text=True)
    left = Path(killed.stdout.readline().strip())
    live = subprocess.Popen([sys.executable, "-c", IN_STAGING, str(store.path)], stdout=subprocess.PIPE, text=True)
    kept = Path(live.stdout.readline().strip())
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert left.is_dir() and kept.is_dir()
    try:
        assert run_lengths(component, store).rows_out == 30
        staging = artifacts_root(store.path) / ".staging"
        assert not left.exists() and not Path(f"{left}.lock").exists()  # the killed run's folder is gone
        assert kept.is_dir()  # a live run's folder is not touched
        assert sorted(p.name for p in staging.iterdir()) == sorted([kept.name, f"{kept.name}.lock"])
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
