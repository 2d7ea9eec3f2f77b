"""`distinct: true` on a ShareGPT pool holding one long conversation split into parts
(`saga_0` ... `saga_5`, four opening with the same user turn) and a near-copy of its first
turn under another id: the selections take one sample per conversation and first user turn,
exactly as the plain greedy loop here does; every selection's metadata and report count the
distinct conversations, first turns and near-duplicate clusters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import yaml

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.reports.data import gather_report
from curation_assets.store import DuckDBStore
from tests.components.test_target_similarity_pipeline import write_target
from tests.support.pipelines import pipeline_document

STORY = "Tell me the long story of the lighthouse keeper."


def chat(user: str, reply_words: int, tag: str) -> list[dict[str, str]]:
    return [
        {"from": "human", "value": user},
        {"from": "gpt", "value": " ".join(["wave"] * (reply_words - 1) + [tag])},
        {"from": "human", "value": "More?"},
        {"from": "gpt", "value": f"Yes ({tag})."},
    ]


def pool_records() -> list[dict]:
    records = [
        {
            "id": f"saga_{part}",
            "conversations": chat(STORY if part < 4 else f"Go on with chapter {part}.", 60 - part, f"part{part}"),
        }
        for part in range(6)
    ]
    records.append(
        {"id": "copy_9", "conversations": chat("  tell me THE long story\nof the lighthouse keeper. ", 53, "copy")}
    )
    records.append({"conversations": chat("A question without an id?", 52, "noid")})
    records += [{"id": f"q{i}", "conversations": chat(f"Question {i} about tides?", 10 + i, f"q{i}")} for i in range(8)]
    return records


def keys_by_hand(record: dict) -> tuple[str, str]:
    """(conversation, first user turn) as docs/methods/basics.md defines them, written out plainly."""
    conversation = re.sub(r"_[0-9]+$", "", str(record["id"])) if "id" in record else json.dumps(record)
    first_turn = " ".join(record["conversations"][0]["value"].split()).lower()
    return conversation, first_turn


def greedy_by_hand(ranked: list[str], keys: dict[str, tuple[str, str]], budget: int) -> list[str]:
    conversations, turns, picked = set(), set(), []
    for sample_id in ranked:
        if len(picked) == budget:
            break
        conversation, turn = keys[sample_id]
        if conversation in conversations or turn in turns:
            continue
        conversations.add(conversation)
        turns.add(turn)
        picked.append(sample_id)
    return picked


def test_distinct_selections_skip_conversation_parts_and_near_copies(tmp_path: Path, tiny_sentence_model: Path) -> None:
    records = pool_records()
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_target(tmp_path / "target.jsonl")
    target = {"name": "task", "path": "target.jsonl", "validation_size": 5, "split_seed": 2}
    document = pipeline_document(
        "dist",
        stages=[
            {"name": "lengths", "kind": "text_stats"},
            {
                "name": "embed",
                "kind": "embedding",
                "model": str(tiny_sentence_model),
                "template": "{instruction}",
                "batch_size": 8,
            },
        ],
        selections=[
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 5},
            {
                "name": "longest_plain",
                "kind": "top_score",
                "stage": "lengths",
                "column": "output_words",
                "budget": 5,
                "distinct": False,
            },
            {
                "name": "sim_all",
                "kind": "target_similarity",
                "embedding": "embed",
                "fraction": 1.0,
                "distinct": False,
                "targets": [target],
            },
            {"name": "sim", "kind": "target_similarity", "embedding": "embed", "budget": 4, "targets": [target]},
        ],
        source_format="sharegpt",
    )
    (tmp_path / "defs.yaml").write_text(yaml.safe_dump(document))
    definitions = pipeline_definitions(load_pipeline_file(tmp_path / "defs.yaml"))
    result = dg.materialize([*definitions.assets, *(definitions.asset_checks or [])], raise_on_error=True)
    metadata = {
        event.asset_key.path[-1]: event.materialization.metadata for event in result.get_asset_materialization_events()
    }

    with DuckDBStore(tmp_path / "dist.duckdb").reader(read_only=True) as con:
        by_user_turn = {}
        for sample_id, first_user, reply in con.execute(
            "SELECT sample_id, instruction, output FROM samples"
        ).fetchall():
            by_user_turn[(" ".join(first_user.split()), reply)] = sample_id  # the reader strips white space
        ids = {
            by_user_turn[(" ".join(r["conversations"][0]["value"].split()), r["conversations"][1]["value"])]: r
            for r in records
        }
        keys = {sample_id: keys_by_hand(record) for sample_id, record in ids.items()}
        words = dict(con.execute("SELECT sample_id, output_words FROM lengths").fetchall())

        def members(selection: str) -> list[str]:
            return [
                row[0]
                for row in con.execute(
                    "SELECT sample_id FROM selections WHERE selection = ? ORDER BY rank", [selection]
                ).fetchall()
            ]

        by_length = sorted(words, key=lambda sample_id: (-words[sample_id], sample_id))
        assert members("longest_plain") == by_length[:5]
        assert [ids[s].get("id") for s in members("longest_plain")] == [f"saga_{p}" for p in range(5)]
        assert members("longest") == greedy_by_hand(by_length, keys, 5)
        assert [ids[s].get("id") for s in members("longest")] == ["saga_0", None, "q7", "q6", "q5"]

        similarity_ranked = members("sim_all")
        assert len(similarity_ranked) == len(records)
        assert members("sim") == greedy_by_hand(similarity_ranked, keys, 4)

        for selection in ("longest", "longest_plain", "sim"):
            chosen = members(selection)
            conversations = len({keys[s][0] for s in chosen})
            turns = len({keys[s][1] for s in chosen})
            assert metadata[selection]["distinct_conversations"].value == conversations
            assert metadata[selection]["distinct_first_turns"].value == turns
            stats = json.loads(con.execute("SELECT stats FROM stage_runs WHERE stage = ?", [selection]).fetchone()[0])
            assert (stats["distinct_conversations"], stats["distinct_first_turns"]) == (conversations, turns)

            report = gather_report(con, selection)
            assert (report.distinct_conversations, report.distinct_first_turns) == (conversations, turns)
            vectors = dict(con.execute("SELECT sample_id, embedding FROM embed").fetchall())
            kept: list[np.ndarray] = []
            for sample_id in chosen:  # greedy by rank: a new cluster unless cosine > 0.95 to a kept member
                v = np.asarray(vectors[sample_id], dtype=np.float64)
                v = v / np.linalg.norm(v)
                if all(float(v @ u) <= 0.95 for u in kept):
                    kept.append(v)
            assert report.near_duplicates is not None and report.near_duplicates.stage == "embed"
            assert (report.near_duplicates.embedded, report.near_duplicates.clusters) == (len(chosen), len(kept))
        assert (
            metadata["longest_plain"]["distinct_conversations"].value,
            metadata["longest_plain"]["distinct_first_turns"].value,
        ) == (1, 2)
        assert (
            metadata["longest"]["distinct_conversations"].value,
            metadata["longest"]["distinct_first_turns"].value,
        ) == (5, 5)
        assert "distinct conversations" in metadata["longest"]["report"].value


def test_report_without_embedding_stage_says_so(tmp_path: Path) -> None:
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool_records()))
    document = pipeline_document(
        "dist",
        stages=[{"name": "lengths", "kind": "text_stats"}],
        selections=[
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 3}
        ],
        source_format="sharegpt",
    )
    (tmp_path / "defs.yaml").write_text(yaml.safe_dump(document))
    definitions = pipeline_definitions(load_pipeline_file(tmp_path / "defs.yaml"))
    result = dg.materialize([*definitions.assets, *(definitions.asset_checks or [])], raise_on_error=True)
    report = next(
        e.materialization.metadata["report"].value
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "longest"
    )
    assert "| distinct conversations | 3 of 3 |" in report
    assert "not counted: the pipeline has no embedding stage" in report
