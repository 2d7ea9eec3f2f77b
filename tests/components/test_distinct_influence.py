"""`influence_distillation` with `distinct: true` on a pool of five ShareGPT conversations split
into five parts each: the round robin (one subtask: a walk down the weight ranking) skips every
part of a conversation already picked, exactly as the plain loop over the stored weights does."""

from __future__ import annotations

import json
import re
from pathlib import Path

from curation_assets.store import DuckDBStore
from tests.components.test_influence_pipeline import PROJECT_VARIANT, pipeline
from tests.components.test_less_pipeline import write_targets
from tests.support.files import WORDS
from tests.support.runs import run_document

BUDGET = 6


def split_conversations() -> list[dict]:
    records = []
    for group in range(5):
        for part in range(5):
            opening = f"tell me about {WORDS[group]}" if part % 2 == 0 else f"{WORDS[group]} then {WORDS[part]}"
            reply = " ".join(WORDS[(group * 3 + part + j) % len(WORDS)] for j in range(2 + (group + part) % 5))
            records.append(
                {
                    "id": f"c{group}_{part}",
                    "conversations": [{"from": "human", "value": opening}, {"from": "gpt", "value": reply}],
                }
            )
    return records


def test_round_robin_skips_parts_of_a_picked_conversation(tmp_path: Path, tiny_lm: Path) -> None:
    records = split_conversations()
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_targets(tmp_path / "target.jsonl")
    document = pipeline(tiny_lm, **PROJECT_VARIANT)
    selection = document["attributes"]["selections"][0]
    selection.pop("fraction")
    selection.update(
        {"budget": BUDGET, "targets": [{"name": "task", "path": "target.jsonl", "validation_size": 6, "split_seed": 1}]}
    )
    document["attributes"]["selections"].append({**selection, "name": "plain", "distinct": False})
    run_document(tmp_path, document)

    with DuckDBStore(tmp_path / "infdist.duckdb").reader(read_only=True) as con:
        rows = con.execute(
            "SELECT i.sample_id, i.weight, i.influence, s.instruction FROM influence_scores AS i "
            "JOIN samples AS s USING (sample_id) WHERE i.selection = 'influential' "
            "ORDER BY i.sample_id"
        ).fetchall()
        members = {
            name: [
                r[0]
                for r in con.execute(
                    "SELECT sample_id FROM selections WHERE selection = ? ORDER BY rank", [name]
                ).fetchall()
            ]
            for name in ("influential", "plain")
        }
        stats = json.loads(con.execute("SELECT stats FROM stage_runs WHERE stage = 'influential'").fetchone()[0])
    by_turn_and_reply = {(r["conversations"][0]["value"], r["conversations"][1]["value"]): r["id"] for r in records}
    with DuckDBStore(tmp_path / "infdist.duckdb").reader(read_only=True) as con:
        source_id = {
            sid: by_turn_and_reply[(instruction, output)]
            for sid, instruction, output in con.execute("SELECT sample_id, instruction, output FROM samples").fetchall()
        }

    # one subtask: the round robin walks the ranking by weight, then influence, then sample_id
    ranked = [r[0] for r in sorted(enumerate(rows), key=lambda e: (-e[1][1], -e[1][2], e[0]))]
    ranked = [rows[i][0] for i in ranked]
    assert members["plain"] == ranked[:BUDGET]
    conversations, turns, expected = set(), set(), []
    for sample_id in ranked:
        conversation = re.sub(r"_[0-9]+$", "", source_id[sample_id])
        turn = next(r[3] for r in rows if r[0] == sample_id).lower()
        if conversation in conversations or turn in turns:
            continue
        conversations.add(conversation)
        turns.add(turn)
        expected.append(sample_id)
        if len(expected) == BUDGET:
            break
    assert members["influential"] == expected
    assert len(expected) == 5  # five conversations: distinct cannot fill a budget of six
    assert len({re.sub(r"_[0-9]+$", "", source_id[s]) for s in members["plain"]}) < BUDGET  # pigeonhole
    assert (stats["distinct_conversations"], stats["distinct_first_turns"]) == (5, 5)
