"""A distributed run (issue #22): a sharded pipeline on a DuckLake store, materialised by Dagster's
celery executor through two Celery workers that are separate processes in separate working
directories (sharing only PostgreSQL, the Redis broker and the data folder), equals the same
pipeline run in-process on one DuckDB file; a worker SIGKILLed mid-step does not stop the run: its
task goes back to the queue (acks_late, the broker's visibility timeout), the surviving worker runs
it, and every row is written once (docs/deployment.md, "A worker killed mid-step").

Runs in the distributed environment (`make setup-distributed`: .venv-ducklake plus dagster-celery and
dagster-postgres) with Debian's postgresql and redis-server; elsewhere it skips naming what is missing
(CURATION_REQUIRE_DUCKLAKE=1, as `make test-distributed` sets, fails instead)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from curation_assets.llm.local_server import answers
from curation_assets.methods.sharding import shard_of
from curation_assets.store.config import ducklake_missing, open_store
from tests.support.cluster import CELERY_RUN_CONFIG, ROOT, Cluster, cluster_missing, redis_server
from tests.support.files import write_jsonl
from tests.support.pipelines import LORA, lora_warmup_stage, pipeline_document, target_block
from tests.support.postgres import free_port, postgres_missing, postgres_server
from tests.support.runs import materialize_document

pytestmark = pytest.mark.e2e

# The killed-worker test's visibility timeout: shorter than its longest steps (~4-7 s: a source's
# ingest, an embedding shard), which `RenewUnacked` keeps from being redelivered while they run
VISIBILITY_TIMEOUT_S = 3.0


def _missing() -> str | None:
    lake = ducklake_missing()
    return (f"the DuckLake environment ({lake}): make setup-distributed" if lake else None) or (
        cluster_missing() or postgres_missing()
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """PostgreSQL (Dagster's storage + DuckLake catalogs) and the Redis broker, for the module."""
    missing = _missing()
    if missing:
        if os.environ.get("CURATION_REQUIRE_DUCKLAKE") == "1":
            pytest.fail(f"distributed test cannot run: {missing}")
        pytest.skip(f"distributed test needs {missing}")
    with postgres_server() as pg, redis_server(tmp_path_factory.mktemp("redis")) as broker:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(pg.password_env, pg.password)  # this process reads the lake too
            yield pg, broker


def write_pool(path: Path, n: int) -> None:
    words = ["alpha", "beta", "gamma", "delta", "omega", "theta", "kappa", "sigma", "zeta", "lambda"]
    rng = np.random.default_rng(7)
    lines = []
    for i in range(n):
        text = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
        answer = " ".join(rng.choice(words, size=int(rng.integers(1, 30))))
        lines.append(f'{{"instruction": "Task {i}: {text}", "input": "", "output": "{answer} {i}"}}')
    path.write_text("\n".join(lines) + "\n")


def document(model: Path, pool: Path, store: dict[str, Any], shards: int, budget: int = 12) -> dict:
    return pipeline_document(
        "dist",
        stages=[
            {"name": "embed", "kind": "embedding", "model": str(model), "batch_size": 8, "shards": shards},
            {"name": "lengths", "kind": "text_stats", "shards": shards},
        ],
        selections=[
            {"name": "kcenter", "kind": "kcenter_greedy", "embedding": "embed", "budget": budget},
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 5},
        ],
        source_path=str(pool),
        source_format="alpaca",
        store=store,
    )


def lake_block(pg, shared: Path, name: str) -> dict[str, Any]:
    return {
        "kind": "ducklake",
        "catalog": pg.new_catalog(name),
        "password_env": pg.password_env,
        "data_path": str(shared / "lake"),
        "work_path": str(shared / "work"),
    }


def tables(store_block: dict[str, Any]) -> dict[str, Any]:
    """Rows, selections and stage_runs of a store (a DuckDB file or a DuckLake), in a comparable form."""
    with open_store(store_block).reader(read_only=True) as con:
        return {
            "embed": con.execute("SELECT sample_id, embedding FROM embeddings ORDER BY sample_id").fetchall(),
            "lengths": con.execute(
                "SELECT sample_id, output_words, instruction_words FROM text_stats ORDER BY sample_id"
            ).fetchall(),
            "selections": con.execute(
                "SELECT selection, sample_id, rank FROM selections ORDER BY selection, rank"
            ).fetchall(),
            "runs": con.execute(
                "SELECT stage, kind, config_hash, rows_in, rows_out, coalesce(json_extract_string(stats, '$.shard'), '') "
                "FROM stage_runs ORDER BY stage, started_at"
            ).fetchall(),
        }


def assert_same_rows(expected: dict[str, Any], got: dict[str, Any]) -> None:
    assert got["lengths"] == expected["lengths"]
    assert got["selections"] == expected["selections"]
    assert [sid for sid, _ in got["embed"]] == [sid for sid, _ in expected["embed"]]  # one row each, no duplicate
    np.testing.assert_allclose(
        np.array([v for _, v in got["embed"]]), np.array([v for _, v in expected["embed"]]), rtol=1e-5, atol=1e-6
    )


def reference(tmp_path: Path, model: Path, pool: Path, shards: int) -> dict[str, Any]:
    """The same pipeline in this process (Dagster's in-process executor) on one DuckDB file."""
    folder = tmp_path / "single_file"
    folder.mkdir()
    block = {"kind": "duckdb", "path": str(folder / "single.duckdb")}
    materialize_document(folder, document(model, pool, block, shards))
    return tables(block)


def test_two_celery_workers_on_a_ducklake_equal_the_single_file_run(services, tmp_path, tiny_sentence_model):
    pg, broker = services
    shared = tmp_path / "shared"
    shared.mkdir()
    pool = shared / "pool.jsonl"
    write_pool(pool, 60)
    expected = reference(tmp_path, tiny_sentence_model, pool, shards=4)

    block = lake_block(pg, shared, "lake_equal")
    cluster = Cluster(tmp_path / "cluster", broker, pg, Path(sys.executable), shared)
    cluster.document = document(tiny_sentence_model, pool, block, shards=4)
    try:
        cluster.start_worker("w0")
        cluster.start_worker("w1")
        result = cluster.execute()
        logs = {name: cluster.worker_log(name) for name in ("w0", "w1")}
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    output = result.stdout + result.stderr
    assert (
        "RUN_SUCCESS" in output and 'Submitting celery task for step "dist__embed.dist__embed__shard_3_of_4"' in output
    )
    # both workers executed steps (Celery's log line per finished task)
    assert all("succeeded in" in log for log in logs.values()), {k: v[-2000:] for k, v in logs.items()}
    assert not (shared / "dist.duckdb").exists() and not list(cluster.root.rglob("*.duckdb"))  # no local DuckDB

    got = tables(block)
    assert_same_rows(expected, got)
    assert Counter(got["runs"]) == Counter(expected["runs"])  # same stage_runs: stage, config, rows per shard


def _lock_holder(cluster: Cluster, work: Path, stage: str, shards: int) -> tuple[str, int] | None:
    for lock in (work / ".locks").glob(f"{stage}-*-shard-*-of-{shards}.lock"):
        holder = cluster.worker_holding(lock)
        if holder is not None:
            return holder, int(lock.name.split("-shard-")[1].split("-of-")[0])
    return None


def killed_worker_run_config(visibility_timeout_s: float) -> dict[str, Any]:
    """deploy/executor-celery.yaml with a visibility timeout a test can wait for (the file's is hours)
    and the workers looking for unacknowledged tasks every second."""
    run_config = yaml.safe_load(CELERY_RUN_CONFIG.read_text())
    options = run_config["execution"]["config"]["config_source"]["broker_transport_options"]
    options.update(visibility_timeout=visibility_timeout_s, unacked_restore_interval=1, unacked_restore_throttle=1)
    return run_config


def _task_ids(log: str, event: str) -> list[str]:
    """The ids of Celery's `Task execute_plan[<id>] <event>` log lines, in order."""
    return re.findall(r"Task execute_plan\[([0-9a-f-]+)\] " + event, log)


def test_a_worker_killed_mid_step_is_redelivered_and_the_run_completes(services, tmp_path, tiny_sentence_model):
    """SIGKILL the worker computing an embedding shard, and nothing else: its task, unacknowledged,
    goes back to the queue after the visibility timeout, the surviving worker runs it, and the run
    succeeds with one row per sample, each written once; no step of a live worker is run twice."""
    pg, broker = services
    shared = tmp_path / "shared"
    shared.mkdir()
    pool = shared / "pool.jsonl"
    n, shards = 1500, 2  # enough rows that a shard's embedding runs for a few seconds
    write_pool(pool, n)
    block = lake_block(pg, shared, "lake_kill")
    visibility_s = VISIBILITY_TIMEOUT_S
    cluster = Cluster(
        tmp_path / "cluster", broker, pg, Path(sys.executable), shared, killed_worker_run_config(visibility_s)
    )
    cluster.document = document(tiny_sentence_model, pool, block, shards=shards)
    work = shared / "work"
    try:
        cluster.start_worker("w0")
        cluster.start_worker("w1")
        run, run_log = cluster.submit()
        deadline, victim = time.monotonic() + 600, None
        while victim is None:  # the first worker seen computing an embedding shard (holding its lock)
            assert run.poll() is None, "the run ended before a shard could be killed: " + run_log.read_text()[-3000:]
            assert time.monotonic() < deadline, run_log.read_text()[-3000:]
            victim = _lock_holder(cluster, work, "embed", shards)
            time.sleep(0.02)
        killed_worker, killed_shard = victim
        cluster.kill_worker(killed_worker)  # SIGKILL of its whole process group, mid-shard
        survivor = "w1" if killed_worker == "w0" else "w0"
        # The survivor takes the lost task (after the visibility timeout). While it computes the shard,
        # SIGKILL its pool process only: the worker sees it lost (task_reject_on_worker_lost) and puts
        # the task back in the queue at once, where it takes it again.
        (lock,) = (work / ".locks").glob(f"embed-*-shard-{killed_shard}-of-{shards}.lock")
        while cluster.kill_holder(survivor, lock) is None:
            assert run.poll() is None, (
                "the run ended before the survivor took the lost task: " + run_log.read_text()[-3000:]
            )
            assert time.monotonic() < deadline, run_log.read_text()[-3000:]
            time.sleep(0.02)
        try:
            returncode = run.wait(timeout=300)  # nobody restarts the worker or the run
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
            pytest.fail("the run hung after the worker was killed: " + run_log.read_text()[-3000:])
        killed_log, survivor_log = cluster.worker_log(killed_worker), cluster.worker_log(survivor)
    finally:
        cluster.stop()
    output = run_log.read_text()
    assert returncode == 0 and "RUN_SUCCESS" in output, output[-4000:]
    # the killed worker's last task (the shard it was computing; prefetch 1 reserves no other) never
    # finished there; the survivor received it, lost its pool process, received it again and ran it
    (lost,) = set(_task_ids(killed_log, "received")) - set(_task_ids(killed_log, "succeeded"))
    assert _task_ids(survivor_log, "received").count(lost) == 2 and lost in _task_ids(survivor_log, "succeeded")
    assert "WorkerLostError" in survivor_log
    # and no other task ran twice (none was redelivered while its worker lived)
    received = Counter(_task_ids(killed_log, "received") + _task_ids(survivor_log, "received"))
    assert {task: count for task, count in received.items() if count > 1} == {lost: 3}, received

    got = tables(block)
    per_shard = Counter(shard_of(sid, shards) for sid, _ in got["embed"])
    for stage in ("embed", "lengths"):
        for k in range(shards):
            runs = [r for r in got["runs"] if r[0] == stage and r[5] == f"{k}/{shards}"]
            # each shard's samples written once over every execution of its step (the killed one
            # committed nothing: a shard commits in one transaction at its end)
            assert sum(r[4] for r in runs) == per_shard[k] and runs[-1][3:5] == (per_shard[k], per_shard[k]), runs
    killed = [r for r in got["runs"] if r[0] == "embed" and r[5] == f"{killed_shard}/{shards}"]
    assert len(killed) == 1, killed  # the killed shard: committed once, by the survivor
    # one row per sample, no duplicate; every row was written exactly once
    assert len(got["embed"]) == len({sid for sid, _ in got["embed"]}) == n
    assert sum(r[4] for r in got["runs"] if r[0] == "embed") == n
    assert len(got["lengths"]) == n == sum(r[4] for r in got["runs"] if r[0] == "lengths")
    assert len(got["selections"]) == 12 + 5


def test_renewed_unacknowledged_tasks_are_not_redelivered_while_their_worker_lives(services):
    """`RenewUnacked`'s re-stamping, on a real Redis through kombu: a task held unacknowledged past
    the visibility timeout stays with its holder while it is renewed; once renewals stop (its worker
    died), another consumer's sweep puts it back in the queue."""
    from kombu import Connection

    from curation_assets.deploy.celery_worker import renew_unacked

    _, broker = services
    options = {"visibility_timeout": 1}
    with (
        Connection(broker, transport_options=options) as holder,
        Connection(broker, transport_options=options) as other,
    ):
        queue = holder.SimpleQueue("renew-test")
        queue.put({"step": "embed shard 0"})
        message = queue.get(timeout=5)  # delivered, not acknowledged: in kombu's unacked index
        channel, sweeper = queue.consumer.channel, other.default_channel
        waiting = lambda: sweeper.client.llen("renew-test")  # noqa: E731 - messages in the queue's Redis list

        renewed_until = time.monotonic() + 2.5  # 2.5 visibility timeouts
        while time.monotonic() < renewed_until:
            assert renew_unacked(channel) == 1
            time.sleep(0.25)
            sweeper.qos.restore_visible(num=10, interval=1)  # a live worker's periodic sweep
            assert waiting() == 0  # still held, not redelivered

        time.sleep(1.5)  # no renewal: the holder is dead as far as the broker can tell
        sweeper.qos.restore_visible(num=10, interval=1)
        assert waiting() == 1  # back in the queue for another worker
        message.ack()
        queue.get(timeout=5).ack()
        queue.close()


# -- model stages: an LLM judge and LESS gradient features, sharded over the workers ----------------


@pytest.fixture(scope="module")
def judge(services, tmp_path_factory):
    """The packaged SmolLM2 judge (llama.cpp) started from the main environment, which has the judge
    extra (.venv, `make setup`); the DuckLake environment does not compile llama.cpp a second time.
    A separate server process, as a cluster's judge endpoint is."""
    python = ROOT / ".venv" / "bin" / "python"
    check = "import llama_cpp\nfrom curation_assets.models.causal_lm import packaged_gguf\npackaged_gguf()"
    probe = subprocess.run([str(python), "-c", check], check=False, capture_output=True)
    if probe.returncode != 0:
        message = "the judge server needs the main environment with the judge extra (.venv: make setup)"
        if os.environ.get("CURATION_REQUIRE_DUCKLAKE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log_path = tmp_path_factory.mktemp("judge") / "llm_server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(python), "-m", "curation_assets.cli", "llm-server", "--port", str(port), "--n-ctx", "2048"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while not answers(base_url):
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.5)
        yield base_url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def model_document(lm: Path, pool: Path, targets: Path, base_url: str, store: dict[str, Any]) -> dict:
    llm = {"base_url": base_url, "model": "smollm2-135m-instruct", "max_concurrency": 2, "backoff_s": 0.05,
           "backoff_max_s": 0.2}  # fmt: skip
    grads = {"name": "grads", "kind": "grad_features", "warmup": "warmup", "projection": "dense", "dim": 64,
             "batch_size": 4, "shards": 2}  # fmt: skip
    task = [target_block(path=str(targets))]
    # parse_retries 0: a re-ask samples at retry_temperature, so two runs would differ; first answers are at 0
    return pipeline_document(
        "models",
        stages=[
            {"name": "judge", "kind": "alpagasus", "max_tokens": 24, "parse_retries": 0, "llm": llm, "shards": 2},
            lora_warmup_stage(lm),
            grads,
        ],
        selections=[
            {"name": "accurate", "kind": "alpagasus_threshold", "stage": "judge", "threshold": 0},
            {"name": "less_top", "kind": "less", "features": "grads", "fraction": 0.25, "targets": task},
        ],
        source_path=str(pool),
        source_format="alpaca",
        store=store,
    )


def model_tables(store_block: dict[str, Any]) -> dict[str, Any]:
    with open_store(store_block).reader(read_only=True) as con:
        return {
            "judge": con.execute(
                "SELECT sample_id, score, turn_scores, answers, status FROM alpagasus ORDER BY sample_id"
            ).fetchall(),
            "grads": con.execute(
                "SELECT sample_id, checkpoint, features FROM grad_features ORDER BY sample_id, checkpoint"
            ).fetchall(),
            "selections": con.execute(
                "SELECT selection, sample_id, rank, score FROM selections ORDER BY selection, rank"
            ).fetchall(),
            "runs": con.execute(
                "SELECT stage, kind, config_hash, rows_in, rows_out, coalesce(json_extract_string(stats, '$.shard'), '') "
                "FROM stage_runs ORDER BY stage, started_at"
            ).fetchall(),
        }


def test_llm_judge_and_gradient_features_on_the_workers_equal_the_single_file_run(services, judge, tmp_path, tiny_lm):
    pg, broker = services
    shared = tmp_path / "shared"
    shared.mkdir()
    pool, targets = shared / "pool.jsonl", shared / "targets.jsonl"
    write_jsonl(pool, [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{i} plus {i} is {2 * i}."}
                       for i in range(12)])  # fmt: skip
    words = "the a of to is and in it you that for on with as are this".split()
    write_jsonl(targets, [{"instruction": f"t{i} {' '.join(words[i % 5 : i % 5 + 3])}", "input": "",
                           "output": " ".join(words[i % 7 : i % 7 + 2]), "cat": "alpha" if i % 2 else "beta"}
                          for i in range(10)])  # fmt: skip

    folder = tmp_path / "single_file"
    folder.mkdir()
    file_block = {"kind": "duckdb", "path": str(folder / "single.duckdb")}
    materialize_document(folder, model_document(tiny_lm, pool, targets, judge, file_block))
    expected = model_tables(file_block)

    block = lake_block(pg, shared, "lake_models")
    cluster = Cluster(tmp_path / "cluster", broker, pg, Path(sys.executable), shared)
    cluster.document = model_document(tiny_lm, pool, targets, judge, block)
    try:
        cluster.start_worker("w0")
        cluster.start_worker("w1")
        result = cluster.execute()
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    got = model_tables(block)

    assert got["judge"] == expected["judge"] and len(got["judge"]) == 12
    assert [r[:2] for r in got["grads"]] == [r[:2] for r in expected["grads"]] and len(got["grads"]) == 2 * 12
    np.testing.assert_allclose(
        np.array([r[2] for r in got["grads"]]), np.array([r[2] for r in expected["grads"]]), rtol=1e-4, atol=1e-6
    )
    assert [r[:3] for r in got["selections"] if r[0] == "accurate"] == [
        r[:3] for r in expected["selections"] if r[0] == "accurate"
    ]
    # LESS ranks by scores computed from gradients that agree to ~1e-4 (another process, other thread
    # counts, summation order), so two near-tied samples may swap; the score at every rank must agree
    less_got = [r for r in got["selections"] if r[0] == "less_top"]
    less_expected = [r for r in expected["selections"] if r[0] == "less_top"]
    assert less_got and [r[2] for r in less_got] == [r[2] for r in less_expected]
    np.testing.assert_allclose([r[3] for r in less_got], [r[3] for r in less_expected], rtol=1e-3, atol=1e-5)
    assert Counter(got["runs"]) == Counter(expected["runs"])
    # the warm-up's LoRA checkpoints sit in the shared work folder, where the gradient shards read them
    assert len(list((shared / "work" / "warmup").rglob("adapter_model.safetensors"))) == LORA["epochs"]
