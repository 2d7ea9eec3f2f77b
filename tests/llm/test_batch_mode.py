"""`llm: {mode: batch}`: requests go as OpenAI Batch jobs (tests/llm/batch_server.py implements the
documented /v1/files and /v1/batches endpoints, forwarding every line to the real llama.cpp
server), answers land in the same llm_cache as the synchronous mode's, and a `curation run`
killed with SIGKILL after submitting resumes the same batch without paying for a line twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.llm.batch import parse_output_line, request_line
from curation_assets.llm.cache import ChatAnswer
from curation_assets.stages.core.registry import get_kind
from curation_assets.store import DuckDBStore
from tests.components.test_llm_pipeline import document, llm, query, write_pool
from tests.llm.batch_server import BatchServer
from tests.support.runs import materialize_document


def test_batch_mode_keys_leave_the_config_hash_alone():
    spec = get_kind("alpagasus").spec
    sync = spec.model_validate({"name": "x", "kind": "alpagasus"})
    batch = spec.model_validate({"name": "x", "kind": "alpagasus", "llm": {"mode": "batch", "batch_poll_seconds": 1}})
    assert sync.hashed_config() == batch.hashed_config()  # same requests, same answers, same cache rows


def test_output_lines_in_the_documented_format():
    line = json.loads(request_line("abc", {"model": "m", "messages": []}))
    assert line == {
        "custom_id": "abc",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": []},
    }
    body = {
        "choices": [{"message": {"content": "Score: 4"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3},
    }
    custom_id, answer = parse_output_line(
        {"custom_id": "abc", "response": {"status_code": 200, "body": body}, "error": None}
    )
    assert custom_id == "abc" and isinstance(answer, ChatAnswer)
    assert (answer.text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens) == (
        "Score: 4",
        "stop",
        10,
        3,
    )
    for bad in (
        {"custom_id": "x", "response": None, "error": {"message": "boom"}},
        {"custom_id": "x", "response": {"status_code": 400, "body": {"error": "too long"}}, "error": None},
        {"custom_id": "x", "response": {"status_code": 200, "body": {"choices": []}}, "error": None},
    ):
        assert isinstance(parse_output_line(bad)[1], str)


def _stages(base_url: str, *, batch: bool = True) -> list[dict]:
    mode = {"mode": "batch", "batch_poll_seconds": 0.05} if batch else {}
    return [
        {"name": "judge", "kind": "alpagasus", "max_tokens": 12, "parse_retries": 0, "llm": llm(base_url, **mode)},
        {"name": "rubric", "kind": "lift_quality", "max_tokens": 12, "parse_retries": 0, "llm": llm(base_url, **mode)},
    ]


@pytest.mark.e2e
def test_batch_answers_equal_the_synchronous_modes(tmp_path, llm_server):
    sync_dir, batch_dir = tmp_path / "sync", tmp_path / "batch"
    for folder in (sync_dir, batch_dir):
        folder.mkdir()
        write_pool(folder / "pool.jsonl", 1)  # a single-turn sample, the two-turn conversation, the injection
    materialize_document(sync_dir, document(llm_server.base_url, _stages(llm_server.base_url, batch=False), []))
    with BatchServer(llm_server.base_url) as server:
        materialize_document(batch_dir, document(server.base_url, _stages(server.base_url), []))
        assert len(server.batches) == 2  # one per stage
        assert server.chat_forwarded == 0 and set(server.forwarded.values()) == {1}

    cache_sql = "SELECT request_hash, response, finish_reason FROM llm_cache ORDER BY request_hash"
    sync_cache, batch_cache = query(sync_dir, cache_sql), query(batch_dir, cache_sql)
    assert batch_cache == sync_cache and len(batch_cache) == sum(server.forwarded.values())
    for table, columns in (
        ("judge", "sample_id, score, turn_scores, answers, status"),
        ("rubric", "sample_id, llm_score, accuracy, answers, status"),
    ):
        sql = f"SELECT {columns} FROM {table} ORDER BY sample_id"
        assert query(batch_dir, sql) == query(sync_dir, sql)
    rows = query(batch_dir, "SELECT stage, status, cardinality(request_hashes) FROM llm_batches ORDER BY stage")
    assert [(r[0], r[1]) for r in rows] == [("judge", "downloaded"), ("rubric", "downloaded")]
    (stats,) = query(batch_dir, "SELECT stats FROM stage_runs WHERE stage = 'judge'")[0]
    stats = json.loads(stats)
    assert stats["llm_batches_submitted"] == 1 and stats["llm_batch_answers"] == rows[0][2]
    assert stats["llm_http_requests"] == 0  # nothing went as a chat request


@pytest.mark.e2e
def test_failed_lines_go_as_chat_requests(tmp_path, llm_server):
    write_pool(tmp_path / "pool.jsonl", 3, multi_turn=False)
    with BatchServer(llm_server.base_url) as server:
        server.fail_lines = 1
        stage = _stages(server.base_url)[0]
        materialize_document(tmp_path, document(server.base_url, [stage], []))
        assert server.chat_forwarded == 1 and sum(server.forwarded.values()) == 2  # the failed line, sent again
    assert query(tmp_path, "SELECT count(*) FROM llm_cache")[0][0] == 3
    assert [r[0] for r in query(tmp_path, "SELECT status FROM judge")] != []
    (stats,) = query(tmp_path, "SELECT stats FROM stage_runs WHERE stage = 'judge'")[0]
    stats = json.loads(stats)
    assert stats["llm_batch_failed_lines"] == 1 and stats["llm_http_requests"] == 1


def _batch_rows(db: Path) -> list[tuple]:
    """llm_batches rows, read while another process may be writing the file (retried while locked)."""
    if not db.exists():
        return []
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            if not con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'llm_batches'").fetchall():
                return []
            return con.execute("SELECT batch_id, status, request_hashes FROM llm_batches").fetchall()
    except duckdb.IOException:
        return []


def _curation_run(yaml_file: Path, tmp_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    return subprocess.Popen(
        [sys.executable, "-m", "curation_assets.cli", "run", str(yaml_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.e2e
def test_run_killed_after_submitting_resumes_the_same_batch_and_pays_nothing_twice(tmp_path, llm_server):
    n = 3
    write_pool(tmp_path / "pool.jsonl", n, multi_turn=False)
    db = tmp_path / "judge.duckdb"
    with BatchServer(llm_server.base_url) as server:
        server.gate.clear()  # the batch stays in_progress until the client is dead
        doc = document(server.base_url, _stages(server.base_url)[:1], [])
        yaml_file = tmp_path / "defs.yaml"
        yaml_file.write_text(yaml.safe_dump(doc))
        process = _curation_run(yaml_file, tmp_path)
        deadline = time.monotonic() + 300
        while not (rows := [r for r in _batch_rows(db) if r[1] == "submitted"]):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the run never recorded its batch"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)  # a real crash between submit and download
        process.wait()
        assert process.returncode == -signal.SIGKILL
        [(batch_id, status, hashes)] = rows
        assert status == "submitted" and list(server.batches) == [batch_id]
        assert query(tmp_path, "SELECT count(*) FROM llm_cache")[0][0] == 0
        server.gate.set()  # the provider finishes the batch while nobody waits for it

        materialize_document(tmp_path, doc)  # the run again (in-process: the crash was the subprocess's)
        assert list(server.batches) == [batch_id]  # nothing submitted again
        assert dict(server.forwarded) == dict.fromkeys(hashes, 1)  # every line forwarded exactly once
        assert server.chat_forwarded == 0
    assert sorted(r[0] for r in query(tmp_path, "SELECT request_hash FROM llm_cache")) == sorted(hashes)
    assert query(tmp_path, "SELECT status FROM llm_batches") == [("downloaded",)]
    assert query(tmp_path, "SELECT count(*) FROM judge")[0][0] == n
    (stats,) = query(tmp_path, "SELECT stats FROM stage_runs WHERE stage = 'judge'")[0]
    stats = json.loads(stats)
    assert (stats["llm_batches_resumed"], stats["llm_batches_submitted"], stats["llm_batches"]) == (1, 0, [batch_id])


def test_spend_guard_stops_a_batch_before_anything_is_uploaded(tmp_path):
    write_pool(tmp_path / "pool.jsonl", 5, multi_turn=False)
    with BatchServer("http://127.0.0.1:9/v1") as server:  # no upstream: nothing may reach it
        stage = _stages(server.base_url)[0]
        stage["llm"]["max_requests_per_run"] = 3
        path = tmp_path / "defs.yaml"
        path.write_text(yaml.safe_dump(document(server.base_url, [stage], [])))
        assets: list[Any] = list(pipeline_definitions(load_pipeline_file(path)).assets or [])
        result = dg.materialize(assets, raise_on_error=False)
        assert not result.success
        assert server.files == {} and server.batches == {}  # nothing uploaded, nothing submitted
    error = result.get_step_failure_events()[0].step_failure_data.error
    messages = []
    while error is not None:
        messages.append((error.cls_name, error.message))
        error = error.cause
    assert any(
        name == "SpendLimitExceeded" and "needs 5 LLM request(s)" in text and "max_requests_per_run = 3" in text
        for name, text in messages
    ), messages
    assert query(tmp_path, "SELECT count(*) FROM llm_batches")[0][0] == 0


@pytest.mark.e2e
def test_a_batch_the_server_no_longer_knows_is_marked_lost_and_its_requests_go_again(tmp_path, llm_server):
    write_pool(tmp_path / "pool.jsonl", 2, multi_turn=False)
    with BatchServer(llm_server.base_url) as server:
        doc = document(server.base_url, _stages(server.base_url)[:1], [])
        materialize_document(tmp_path, doc)
        # a batch recorded by an earlier run that the server has lost (restarted, or expired)
        with DuckDBStore(tmp_path / "judge.duckdb").transaction() as con:
            con.execute("UPDATE llm_batches SET batch_id = 'batch_gone', status = 'submitted'")
        write_pool(tmp_path / "pool.jsonl", 3, multi_turn=False)  # one new sample
        materialize_document(tmp_path, doc)
        assert len(server.batches) == 2 and set(server.forwarded.values()) == {1}
    rows = query(tmp_path, "SELECT batch_id, status FROM llm_batches ORDER BY submitted_at")
    assert rows[0] == ("batch_gone", "lost") and rows[1][1] == "downloaded"
    assert query(tmp_path, "SELECT count(*) FROM judge")[0][0] == 3


@pytest.mark.e2e
def test_run_killed_while_the_batch_is_being_created_adopts_it_by_its_token(tmp_path, llm_server):
    write_pool(tmp_path / "pool.jsonl", 3, multi_turn=False)
    db = tmp_path / "judge.duckdb"
    with BatchServer(llm_server.base_url) as server:
        server.create_delay_s = 120  # the batch exists at the server; its id never reaches the client
        doc = document(server.base_url, _stages(server.base_url)[:1], [])
        yaml_file = tmp_path / "defs.yaml"
        yaml_file.write_text(yaml.safe_dump(doc))
        process = _curation_run(yaml_file, tmp_path)
        deadline = time.monotonic() + 300
        while not (server.batches and (rows := _batch_rows(db))):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the run never created its batch"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)  # killed between create and learning the batch id
        process.wait()
        [(row_id, status, hashes)] = rows
        assert status == "submitting" and row_id.startswith("submitting-")
        [batch_id] = list(server.batches)
        server.create_delay_s = 0

        materialize_document(tmp_path, doc)  # the run again (in-process: the crash was the subprocess's)
        assert list(server.batches) == [batch_id]  # adopted, not submitted again
        assert dict(server.forwarded) == dict.fromkeys(hashes, 1)
    assert query(tmp_path, "SELECT batch_id, status FROM llm_batches") == [(batch_id, "downloaded")]
    assert query(tmp_path, "SELECT count(*) FROM judge")[0][0] == 3
