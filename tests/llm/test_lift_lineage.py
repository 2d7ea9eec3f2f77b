"""LIFT expansion lineage (issue #21): a small real HTTP server answers every rewrite with the SAME
text and every answer request with the SAME text, whatever it is asked, so three originals and two
rounds give six identical expansions. Each must be its own sample whose parent_id is its own parent
(round 1: the original, round 2: round 1's child), in the synchronous and the Batch mode; re-runs
share a child only where parent, round and text are the same; a store written with the text-only
ids of kind version 1 is recomputed without losing its old rows."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from pathlib import Path

import pytest

from curation_assets.sources.normalise import sample_id_for
from curation_assets.stages.core import registry
from curation_assets.stages.llm_judges import lift_expand
from curation_assets.store.sql_files import read_sql
from tests.components.test_llm_pipeline import document, llm, query, write_pool
from tests.llm.batch_server import BatchServer
from tests.support.http_server import LoopbackServer, QuietHandler
from tests.support.runs import run_document

REWRITE = "Explain, step by step, how to add two whole numbers."
ANSWER = "Line up the digits and add them column by column."
# identical requests are asked once (llm_cache): the three round-1 rewrites, then one answer (the same
# instruction each time) and one round-2 rewrite (of the same text); round 2's answers are cached
ASKED = 5
EXPAND = {"name": "expand", "kind": "lift_expand", "rounds": 2, "parse_retries": 0}


class SameTextServer(LoopbackServer):
    """/v1/chat/completions answering REWRITE to a rewrite request (it has a system prompt) and ANSWER
    to anything else; counts the requests it answered."""

    def __init__(self) -> None:
        self.requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.read_body())
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self.reply_json(404, {"error": {"message": f"unknown path {self.path}"}})
                with server.lock:
                    server.requests += 1
                content = REWRITE if body["messages"][0]["role"] == "system" else ANSWER
                choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                usage = {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}
                reply = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"]}
                self.reply_json(200, {**reply, "choices": [choice], "usage": usage})

        super().__init__(Handler)


def child_id(parent_id: str, round_no: int) -> str:
    """The documented derivation, written out: SHA-256 of the canonical JSON of the conversation, the
    parent's id and the round, first 32 hex digits."""
    messages = [{"role": "user", "content": REWRITE}, {"role": "assistant", "content": ANSWER}]
    payload = {"messages": messages, "parent_id": parent_id, "round": round_no}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def run(folder: Path, base_url: str, rounds: int = 2, **mode: object) -> str:
    """Run the expansion through the runner; its config hash."""
    stage = {**EXPAND, "rounds": rounds, "llm": llm(base_url, **mode)}
    return run_document(folder, document(base_url, [stage], [])).stage_hashes["expand"]


def ok_rows(folder: Path, config_hash: str) -> list[tuple]:
    """(original, round, child) of the rows of one config; every one of them is `ok`."""
    sql = (
        "SELECT sample_id, round, child_id, status FROM lift_expand WHERE stage = 'expand' AND config_hash = $h "
        "ORDER BY sample_id, round"
    )
    rows = query(folder, sql, {"h": config_hash})
    assert rows and {r[3] for r in rows} == {"ok"}
    return [r[:3] for r in rows]


def generated(folder: Path) -> dict[str, tuple]:
    """sample_id -> (parent_id, instruction, output, lineage parent_id, active) of every generated sample."""
    sql = (
        "SELECT sample_id, parent_id, instruction, output, raw_record, active FROM samples WHERE parent_id IS NOT NULL"
    )
    return {r[0]: (r[1], r[2], r[3], json.loads(r[4])["parent_id"], r[5]) for r in query(folder, sql)}


def assert_own_parents(folder: Path, ok: list[tuple]) -> None:
    """Every ok row's child is a distinct active sample whose parent is its own parent."""
    originals = {r[0] for r in query(folder, "SELECT sample_id FROM samples WHERE parent_id IS NULL")}
    children = generated(folder)
    round_one = {original: child for original, round_no, child in ok if round_no == 1}
    assert len(ok) == len({child for _, _, child in ok}) == 6 and len(originals) == 3
    for original, round_no, child in ok:
        parent = original if round_no == 1 else round_one[original]
        assert children[child] == (parent, REWRITE, ANSWER, parent, True)
        assert child == child_id(parent, round_no) and child not in originals
    # the lineage query walks every round-2 child back to its own original
    chain = query(folder, read_sql("queries/06_lineage_of_generated_samples.sql"))
    roots = {c: a for c, a, depth, _ in chain if depth == 2}
    assert roots == {child: original for original, round_no, child in ok if round_no == 2}


@pytest.mark.parametrize("mode", ["sync", "batch"])
def test_the_same_expansion_from_different_parents_is_one_child_per_parent(tmp_path, mode):
    write_pool(tmp_path / "pool.jsonl", 3, multi_turn=False)
    with SameTextServer() as chat, BatchServer(chat.base_url) as batch:
        if mode == "batch":
            config_hash = run(tmp_path, batch.base_url, mode="batch", batch_poll_seconds=0.05)
            assert batch.chat_forwarded == 0 and sum(batch.forwarded.values()) == len(batch.forwarded) == ASKED
        else:
            config_hash = run(tmp_path, chat.base_url)
        assert chat.requests == ASKED
    assert_own_parents(tmp_path, ok_rows(tmp_path, config_hash))


def test_reruns_share_a_child_only_for_the_same_parent_round_and_text(tmp_path):
    write_pool(tmp_path / "pool.jsonl", 3, multi_turn=False)
    with SameTextServer() as chat:
        two = run(tmp_path, chat.base_url)
        first = ok_rows(tmp_path, two)
        one = run(tmp_path, chat.base_url, rounds=1)  # another config: round 1 again, from llm_cache
        assert one != two and chat.requests == ASKED
        again = ok_rows(tmp_path, one)
        assert again == [r for r in first if r[1] == 1]  # the same children, written once
        children = generated(tmp_path)
        assert len(children) == 6  # nothing duplicated: round-2 children kept, inactive, with their parents
        assert {c for c, v in children.items() if v[4]} == {r[2] for r in again}
        assert run(tmp_path, chat.base_url) == two  # back to two rounds: its rows are stored, nothing is asked
        assert chat.requests == ASKED
    assert_own_parents(tmp_path, ok_rows(tmp_path, two))


def test_a_store_with_version_one_text_ids_is_recomputed_and_keeps_its_old_rows(tmp_path, monkeypatch):
    write_pool(tmp_path / "pool.jsonl", 3, multi_turn=False)
    old_kind = dataclasses.replace(registry.get_kind("lift_expand"), version="1")
    with SameTextServer() as chat:
        with monkeypatch.context() as old:  # the kind as it was: version 1, a child's id from its text only
            old.setitem(registry._REGISTRY, "lift_expand", old_kind)
            old.setattr(lift_expand, "generated_sample_id", lambda messages, parent, round_no: sample_id_for(messages))
            old_hash = run(tmp_path, chat.base_url)
        [(old_child, (old_parent, *_))] = generated(tmp_path).items()  # six rows, one child: lineage lost
        new_hash = run(tmp_path, chat.base_url)  # version 2: a new config hash, recomputed from llm_cache
        assert new_hash != old_hash and chat.requests == ASKED
    assert_own_parents(tmp_path, ok_rows(tmp_path, new_hash))
    children = generated(tmp_path)  # the old child stays, inactive, with its parent: nothing orphaned
    assert len(children) == 7 and children[old_child][0] == old_parent and not children[old_child][4]
    assert [r[2] for r in ok_rows(tmp_path, old_hash)] == [old_child] * 6  # the old rows stay under the old hash
