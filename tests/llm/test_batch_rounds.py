"""`llm: {mode: batch}` for the multi-round kinds (lift_expand, deita_evol): each round's requests go as
one Batch job (tests/llm/batch_server.py, forwarding every line to the real llama.cpp server), the next
round is built from the cached answers, the rows equal the synchronous mode's, and a `curation run`
killed with SIGKILL in round 2 re-runs without submitting round 1 again and adopts round 2's batch."""

from __future__ import annotations

import hashlib
import json
import signal
import time

import pytest
import yaml

from curation_assets.llm.batch import BatchKey, BatchRunner, LLMBatchPending
from curation_assets.llm.cache import LLMCache
from curation_assets.llm.client import ChatRequest, LLMClient
from curation_assets.llm.endpoint import LLMEndpointSpec
from curation_assets.stages.core.registry import get_kind
from curation_assets.store import DuckDBStore
from tests.components.test_llm_pipeline import document, llm, query, write_pool
from tests.llm.batch_server import BatchServer
from tests.llm.test_batch_mode import _batch_rows, _curation_run
from tests.support.runs import materialize_document

# temperature 0 everywhere: the synchronous and the batch run must get the same answers
LIFT = {"name": "expand", "kind": "lift_expand", "rounds": 2, "temperature": 0, "response_temperature": 0}
LIFT |= {"max_tokens": 24, "response_max_tokens": 12, "parse_retries": 0}
DEITA = {"name": "evol", "kind": "deita_evol", "dimensions": ["complexity"], "iterations": 2, "temperature": 0}
DEITA |= {"max_tokens": 24, "score_max_tokens": 24, "parse_retries": 0}
TABLES = {
    "expand": "SELECT sample_id, round, child_id, status, instruction, detail FROM expand ORDER BY sample_id, round",
    "evol": "SELECT sample_id, variant, operation, instruction, response, score, status, ranking_answer FROM evol "
    "ORDER BY sample_id, variant",
}


def _input_lines(server: BatchServer, batch: dict) -> list[dict]:
    return [json.loads(x) for x in server.contents[batch["input_file_id"]].decode().splitlines()]


def _in_round_two(rows: list[tuple], round_one: int) -> bool:
    """Round 1's batches downloaded and the next one submitted (waiting at the server's gate)."""
    statuses = [r[1] for r in rows]
    return statuses.count("downloaded") == round_one and "submitted" in statuses


def _stage(stage: dict, base_url: str, *, batch: bool) -> dict:
    mode = {"mode": "batch", "batch_poll_seconds": 0.05} if batch else {}
    return {**stage, "llm": llm(base_url, **mode)}


def test_every_llm_kind_takes_batch_mode_and_only_the_multi_round_ones_batch_by_round():
    for kind in ("alpagasus", "lift_quality", "lift_expand", "deita_evol"):
        spec = get_kind(kind).spec.model_validate({"name": "x", "kind": kind, "llm": {"mode": "batch"}})
        assert spec.llm.mode == "batch"
        assert spec.BATCH_ROUNDS == (kind in ("lift_expand", "deita_evol"))
        sync = get_kind(kind).spec.model_validate({"name": "x", "kind": kind})
        assert sync.hashed_config() == spec.hashed_config()  # same requests, same answers, same cache rows


@pytest.mark.e2e
@pytest.mark.parametrize("stage", [LIFT, DEITA], ids=["lift_expand", "deita_evol"])
def test_round_by_round_batches_equal_the_synchronous_mode(tmp_path, llm_server, stage):
    sync_dir, batch_dir = tmp_path / "sync", tmp_path / "batch"
    for folder in (sync_dir, batch_dir):
        folder.mkdir()
        write_pool(folder / "pool.jsonl", 2, multi_turn=False)
    materialize_document(sync_dir, document(llm_server.base_url, [_stage(stage, llm_server.base_url, batch=False)], []))
    with BatchServer(llm_server.base_url) as server:
        materialize_document(batch_dir, document(server.base_url, [_stage(stage, server.base_url, batch=True)], []))
        batches = list(server.batches.values())
        assert server.chat_forwarded == 0 and set(server.forwarded.values()) == {1}

    cache_sql = "SELECT request_hash, response, finish_reason FROM llm_cache ORDER BY request_hash"
    assert query(batch_dir, cache_sql) == query(sync_dir, cache_sql)
    assert len(query(batch_dir, cache_sql)) == sum(server.forwarded.values())
    sql = TABLES[stage["name"]]
    assert query(batch_dir, sql) == query(sync_dir, sql) != []
    generated = "SELECT sample_id, parent_id, instruction, output FROM samples WHERE parent_id IS NOT NULL ORDER BY 1"
    assert query(batch_dir, generated) == query(sync_dir, generated)

    # one batch per round: lift_expand asks rewrites then answers per round (2 x rounds), deita_evol one
    # batch per evolution step and one for the ranking; a round never holds requests of a later one
    rounds = 2 * stage["rounds"] if stage["kind"] == "lift_expand" else stage["iterations"] + 1
    assert len(batches) == rounds and sum(b["request_counts"]["total"] for b in batches) == len(server.forwarded)
    firsts = [_input_lines(server, b)[0]["body"]["messages"] for b in batches]
    if stage["kind"] == "lift_expand":  # rewrites (a system prompt) and answers (the instruction alone) alternate
        assert [m[0]["role"] for m in firsts] == ["system", "user"] * stage["rounds"]
    else:  # evolution steps, then the ranking of the M + 1 variants
        assert ["[Question 1]" in m[0]["content"] for m in firsts] == [False] * stage["iterations"] + [True]
    rows = query(batch_dir, "SELECT batch_id, status FROM llm_batches ORDER BY submitted_at")
    assert rows == [(b["id"], "downloaded") for b in batches]
    (stats,) = query(batch_dir, f"SELECT stats FROM stage_runs WHERE stage = '{stage['name']}'")[0]
    stats = json.loads(stats)
    assert (stats["llm_batches_submitted"], stats["llm_http_requests"]) == (rounds, 0)
    assert stats["llm_batch_answers"] == sum(server.forwarded.values())


@pytest.mark.e2e
def test_run_killed_in_round_two_resubmits_nothing_of_round_one_and_adopts_round_twos_batch(tmp_path, llm_server):
    write_pool(tmp_path / "pool.jsonl", 2, multi_turn=False)
    db = tmp_path / "judge.duckdb"
    with BatchServer(llm_server.base_url) as server:
        server.gate_from, round_one = 2, 2  # round 1 (rewrites, answers) is answered; round 2 waits
        server.gate.clear()
        doc = document(server.base_url, [_stage(LIFT, server.base_url, batch=True)], [])
        yaml_file = tmp_path / "defs.yaml"
        yaml_file.write_text(yaml.safe_dump(doc))
        process = _curation_run(yaml_file, tmp_path)
        deadline = time.monotonic() + 300
        while not _in_round_two(_batch_rows(db), round_one):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the run never reached round 2"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)  # a real crash while round 2's batch runs
        process.wait()
        assert process.returncode == -signal.SIGKILL
        rows = _batch_rows(db)
        assert len(server.batches) == round_one + 1 and [r[1] for r in rows].count("downloaded") == round_one
        [(waiting, _, round_two_hashes)] = [r for r in rows if r[1] == "submitted"]
        first_ids = list(server.batches)
        assert first_ids[-1] == waiting
        round_one_lines = sum(server.forwarded.values())
        assert query(tmp_path, "SELECT count(*) FROM llm_cache")[0][0] == round_one_lines > 0
        server.gate.set()  # the provider finishes round 2's batch while nobody waits for it

        materialize_document(tmp_path, doc)  # the run again (in-process: the crash was the subprocess's)
        # round 1 not submitted again, round 2's rewrites adopted, only its answers are a new batch
        assert list(server.batches)[: round_one + 1] == first_ids and len(server.batches) == round_one + 2
        assert set(server.forwarded.values()) == {1}  # no line paid twice
        assert all(server.forwarded[h] == 1 for h in round_two_hashes)
        assert server.chat_forwarded == 0
    assert {r[0] for r in query(tmp_path, "SELECT status FROM llm_batches")} == {"downloaded"}
    (stats,) = query(tmp_path, "SELECT stats FROM stage_runs WHERE stage = 'expand'")[0]
    stats = json.loads(stats)
    assert (stats["llm_batches_resumed"], stats["llm_batches_submitted"]) == (1, 1)
    assert stats["llm_batches"][0] == waiting
    assert query(tmp_path, "SELECT DISTINCT round FROM expand ORDER BY round") == [(1,), (2,)]
    assert query(tmp_path, "SELECT count(*) FROM llm_cache")[0][0] == sum(server.forwarded.values())


def _rows(store: DuckDBStore, sql: str) -> list[tuple]:
    with store.reader(read_only=True) as con:
        return con.execute(sql).fetchall()


def _ask(label: str, n: int = 2) -> list[ChatRequest]:
    params = {"temperature": 0, "max_tokens": 4}
    return [ChatRequest(({"role": "user", "content": f"{label}: say {i}."},), params) for i in range(n)]


@pytest.mark.e2e
def test_a_batch_no_round_asks_for_waits_for_settle_which_caches_it_from_its_input_file(tmp_path, llm_server):
    store = DuckDBStore(tmp_path / "batches.duckdb")
    store.ensure_schema()
    with BatchServer(llm_server.base_url) as server:
        endpoint = LLMEndpointSpec.model_validate(llm(server.base_url, mode="batch", batch_poll_seconds=0.1))

        def runner(timeout_s: float) -> BatchRunner:
            spec = endpoint.model_copy(update={"batch_timeout_seconds": timeout_s})
            return BatchRunner(LLMClient(spec, LLMCache(store), stage="s"), BatchKey("p", "s", "hash"))

        gone, asked = _ask("gone"), _ask("asked")
        server.gate.clear()
        with pytest.raises(LLMBatchPending):  # a run that ended while its batch ran
            runner(1).run(gone)
        server.gate.set()
        second = runner(300)
        second.run(asked, only_asked=True)  # one round: it neither waits for nor adopts the other batch
        statuses = _rows(store, "SELECT cardinality(request_hashes), status FROM llm_batches ORDER BY submitted_at")
        assert statuses == [(2, "submitted"), (2, "downloaded")] and second.stats.resumed == 0
        second.settle()  # the end of the stage: the batch no round asked for is downloaded and cached
        assert second.stats.resumed == 1 and len(server.batches) == 2 and set(server.forwarded.values()) == {1}
    assert [s for _, s in _rows(store, "SELECT 1, status FROM llm_batches")] == ["downloaded", "downloaded"]
    cached = dict(_rows(store, "SELECT request_hash, request FROM llm_cache"))
    assert len(cached) == 4
    for request in gone:  # cached under the request read back from the input file: its hash is the key
        body = {"model": endpoint.model, "messages": [dict(m) for m in request.messages], **request.params}
        text = json.dumps({**body, "attempt": 0}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        assert json.loads(cached[digest]) == json.loads(text)
