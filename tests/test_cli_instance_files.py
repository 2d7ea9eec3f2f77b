"""`curation run` without DAGSTER_HOME keeps its ephemeral Dagster instance in the pipeline's
staging folder: a run killed with SIGKILL leaves nothing in the system temp folder, and the
next run removes what it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.files import valid_pipeline_yaml, write_pipeline
from tests.support.runs import curation_in_process


def _run(yaml_file: Path, tmpdir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(TMPDIR=str(tmpdir), HF_HUB_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "curation_assets.cli", "run", str(yaml_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_run_leaves_no_instance_files_behind(tmp_path: Path) -> None:
    yaml_file = write_pipeline(tmp_path / "pipe", valid_pipeline_yaml(), records=200)
    staging = tmp_path / "pipe" / "tiny.artifacts" / ".staging"
    tmpdir = tmp_path / "system_tmp"
    tmpdir.mkdir()
    process = _run(yaml_file, tmpdir)
    deadline = time.monotonic() + 120
    while not any(staging.glob("ingest-*/*")) and process.poll() is None:  # mid-run: ingest staged
        assert time.monotonic() < deadline, "the run never staged its ingest"
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [p.name for p in staging.iterdir() if p.name.startswith("dagster-instance-")]  # left by the kill
    assert list(tmpdir.iterdir()) == []

    # the next run: the same command in this process (TMPDIR and no DAGSTER_HOME as above); the
    # kill, not a second interpreter start, is what this test needs a subprocess for
    code, output = curation_in_process(["run", str(yaml_file)], tmpdir)
    assert code == 0, output
    assert [p.name for p in staging.iterdir()] == []
    assert list(tmpdir.iterdir()) == []
