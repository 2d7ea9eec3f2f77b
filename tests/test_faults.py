"""Real process faults: `curation run` in a subprocess is killed with SIGKILL during the ingest,
during a stage's chunk writes, during an LLM stage and during an export; `curation run` again
(the same command, in the test's process) completes and its tables equal an uninterrupted
run's (row counts and a content hash, vectors within 1e-4), no temporary file is left behind
and no request is answered twice beyond the answers of the last cache flush. And two `curation
run` of one stage started at once (two subprocesses): one computes, the other waits; the rows
equal a single run's.

The LLM stage is judged by the packaged SmolLM2 served by llama.cpp (the session's
`llm_server`), behind a proxy that counts the requests the server answered.
"""

from pathlib import Path

import pytest

from bench.fault_bench import (
    FaultPipeline,
    compare,
    inject,
    phases,
    reference_run,
    run_twice_at_once,
    table_digests,
)
from curation_assets.llm.cache import LLMCache
from tests.support.runs import curation_in_process

pytestmark = pytest.mark.e2e

MAX_CONCURRENCY = 2  # the pipeline's llm.max_concurrency (bench/fault_bench.py)


def run_in_process(folder: Path, log_name: str) -> int:
    """`curation run defs.yaml` in this process as fault_bench's subprocess runs it (TMPDIR `folder/tmp`,
    one torch thread, no DAGSTER_HOME), output appended to `folder/log_name`; its exit code."""
    (folder / "tmp").mkdir(exist_ok=True)
    code, output = curation_in_process(["run", str(folder / "defs.yaml"), "--log-level", "INFO"], folder / "tmp")
    with (folder / log_name).open("a", encoding="utf-8") as log:
        log.write(output)
    return code


@pytest.fixture(scope="module")
def settings(tiny_lm) -> FaultPipeline:
    # 20,000 records: the ingest lasts long enough to be killed in; JVP on 600 samples: 3 parts;
    # 15 judged samples (~0.25 s each on 2 cores, every full run pays them): the kill lands after
    # 5 answers, 10 still to come. The session's tiny Llama (tests/conftest.py; the JVP stage only
    # reads it), not a second build.
    return FaultPipeline(records=20_000, jvp_samples=600, llm_samples=15, jvp_model=tiny_lm)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, settings, llm_server):
    folder = tmp_path_factory.mktemp("reference")
    # In this process: the uninterrupted tables are what is compared, not a process start.
    contents, export, answered = reference_run(folder, settings, llm_server.base_url, run_in_process)
    assert answered == settings.llm_samples  # one request per (single-turn) sample
    return contents, export


@pytest.mark.parametrize(
    "phase_name",
    ["during ingest", "during a stage's chunk writes (JVP parts)", "during an LLM stage", "during an export"],
)
def test_sigkill_then_run_again_gives_the_uninterrupted_tables(phase_name, tmp_path, settings, reference, llm_server):
    reference_contents, reference_export = reference
    phase = {p.name: p for p in phases(settings)}[phase_name]
    # The killed `curation run` is a subprocess (a real SIGKILL); the rerun that recovers runs the
    # same command in this process (run_in_process), sparing an interpreter start and torch import.
    outcome = inject(
        tmp_path / "run", settings, phase, llm_server.base_url, reference_contents, reference_export, run_in_process
    )

    assert outcome.killed_in_phase, f"the SIGKILL did not land {phase.name}"
    assert outcome.recovered, (tmp_path / "run" / "recovery.log").read_text()[-3000:]
    assert outcome.contents is not None  # the recovered tables, read once after the recovery
    assert table_digests(outcome.contents) == table_digests(reference_contents)
    comparison = compare(reference_contents, outcome.contents)
    assert comparison.equal, comparison  # JVP vectors too
    assert outcome.export_equal
    assert outcome.temporaries == []
    if phase.name == "during an LLM stage":
        # paid twice: the answers not yet written when killed (the last flush interval, plus the
        # batch being written) and the requests in flight
        flush_every = LLMCache.__init__.__kwdefaults__["flush_every"]
        assert outcome.answers_lost <= 2 * flush_every
        assert outcome.paid_twice <= outcome.answers_lost + MAX_CONCURRENCY
    else:
        assert outcome.paid_twice == 0


def test_two_runs_of_one_stage_at_once_compute_it_once(tmp_path, settings, llm_server):
    single = FaultPipeline(
        records=2_000, jvp_samples=0, llm_samples=10, jvp_model=settings.jvp_model, stages=("judge",), export=False
    )
    result = run_twice_at_once(tmp_path / "run", single, llm_server.base_url)
    assert result["exit_codes"] == [0, 0], (tmp_path / "run" / "second.log").read_text()[-3000:]
    assert result["second_waited"]  # it reached the stage while the first held the lock
    assert result["rows"] == result["distinct_rows"] == 10  # a single run's rows, none twice
    assert result["requests_answered"] == result["requests_cached"] == 10  # no request paid twice
    assert sorted(result["judge_rows_in"]) == [0, 10]  # the waiting run found nothing left to compute
    assert result["temporaries"] == []
