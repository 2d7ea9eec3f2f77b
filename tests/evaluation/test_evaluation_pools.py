"""Sub-pool bands (`evaluation.pools`, issue #19 item 1) on a tiny random Llama: a method that selects
within a seeded sub-pool is compared with random selections drawn from that sub-pool (its Δ, interval,
beaten seeds) and with token-matched subsets drawn from it, checked against plain computations from the
stored per-sample losses; the table and `evaluation_results` say which pool each row used; bad `pools:`
blocks fail at load time naming the key, and a method outside its sub-pool stops the evaluation."""

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pytest
import yaml
from transformers import AutoTokenizer

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.evaluation.finetune_cache import members_hash
from curation_assets.evaluation.harness import RESULT_SCHEMA
from curation_assets.evaluation.report import COLUMNS, TOKEN_COLUMNS
from curation_assets.models.chat_format import encode_conversation
from curation_assets.store import DuckDBStore
from curation_assets.store.sql_files import execute_sql_file
from tests.evaluation.test_evaluation import LORA, write_general
from tests.evaluation.test_evaluation_statistics import (
    RESAMPLES,
    bootstrap_by_hand,
    materialize_evaluation,
    per_sample,
    write_target,
)
from tests.evaluation.test_evaluation_statistics import stored as stored_evaluation
from tests.support.files import write_pool
from tests.support.pipelines import pipeline_document

MAX_LENGTH = 64
SUB_SEEDS = 3
SUB_SIZE = 12


def document(tiny_lm: Path) -> dict:
    """Pool 24; whole-pool band random_s0/s1 + method `longest`; sub-pool `sub` (12 random samples) with
    band sub_random_s0..s2 + method `longest_sub` (top_score reading only the sub-pool)."""
    return pipeline_document(
        "sp",
        stages=[{"name": "lengths", "kind": "text_stats"}],
        selections=[
            {"name": "sub_pool", "kind": "random", "budget": SUB_SIZE, "seed": 7},
            *({"name": f"random_s{s}", "kind": "random", "budget": 4, "seed": s} for s in range(2)),
            *(
                {
                    "name": f"sub_random_s{s}",
                    "kind": "random",
                    "budget": 4,
                    "seed": s,
                    "input_selection": "sub_pool",
                }
                for s in range(SUB_SEEDS)
            ),
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 4},
            {
                "name": "longest_sub",
                "kind": "top_score",
                "stage": "lengths",
                "column": "output_words",
                "budget": 4,
                "input_selection": "sub_pool",
            },
        ],
        evaluation={
            "selections": ["longest", "longest_sub"],
            "baselines": ["random_s0", "random_s1"],
            "pools": [
                {
                    "name": "sub",
                    "selection": "sub_pool",
                    "baselines": [f"sub_random_s{s}" for s in range(SUB_SEEDS)],
                    "selections": ["longest_sub"],
                }
            ],
            "target": {"name": "task", "path": "target.jsonl", "validation_size": 4, "split_seed": 1},
            "target_heldout_size": 8,
            "general": {"name": "general", "path": "general.jsonl", "size": 6, "seed": 3},
            "finetune": {
                "model": str(tiny_lm),
                "max_length": MAX_LENGTH,
                "lora": {**LORA, "epochs": 1},
                "batch_size": 4,
            },
            "training_seeds": 1,
            "token_matched_draws": 1,
            "token_matched_seed": 11,
            "full_pool": False,
            "bootstrap_resamples": RESAMPLES,
            "bootstrap_seed": 5,
            "output_dir": "out",
        },
    )


def write_files(folder: Path) -> None:
    write_pool(folder / "pool.jsonl", 24)
    write_target(folder / "target.jsonl")
    write_general(folder / "general.jsonl", folder / "pool.jsonl")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_lm):
    folder = tmp_path_factory.mktemp("evaluation_pools")
    write_files(folder)
    return folder, materialize_evaluation(folder, document(tiny_lm))


def stored(folder: Path):
    return stored_evaluation(folder, "sp.duckdb", ["sub_pool", "longest", "longest_sub"])


def test_sub_pool_method_is_compared_with_the_sub_pool_band(evaluated):
    folder, _ = evaluated
    results, losses, _, members = stored(folder)
    assert set(members["longest_sub"]) <= set(members["sub_pool"]) and len(members["sub_pool"]) == SUB_SIZE
    assert members["longest_sub"] != members["longest"]  # the sub-pool changed what was chosen
    pools = {name: row["pool"] for name, row in results.items()}
    assert pools == {
        "base_model": "all",
        "random_s0": "all",
        "random_s1": "all",
        "longest": "all",
        "token_matched:longest:0": "all",
        "longest_sub": "sub",
        "token_matched:longest_sub:0": "sub",
        **{f"sub_random_s{s}": "sub" for s in range(SUB_SEEDS)},
    }

    for heldout, column in (("target:task", "target"), ("general:general", "general")):
        whole = np.mean([per_sample(losses, f"random_s{s}", heldout) for s in range(2)], axis=0)
        sub = np.mean([per_sample(losses, f"sub_random_s{s}", heldout) for s in range(SUB_SEEDS)], axis=0)
        assert np.abs(whole - sub).max() > 1e-6  # two different bands: the test can tell them apart
        for name, band in (("longest_sub", sub), ("sub_random_s1", sub), ("longest", whole), ("base_model", whole)):
            mine = np.array(per_sample(losses, name, heldout))
            delta, low, high = bootstrap_by_hand((mine - band).tolist(), seed=5)
            row = results[name]
            assert (row[f"{column}_delta"], row[f"{column}_ci_low"], row[f"{column}_ci_high"]) == pytest.approx(
                (delta, low, high), rel=1e-9, abs=1e-12
            ), (name, heldout)
    sub_totals = [np.sum(per_sample(losses, f"sub_random_s{s}", "target:task")) for s in range(SUB_SEEDS)]
    mine = np.sum(per_sample(losses, "longest_sub", "target:task"))
    beaten = sum(bool(mine < total) for total in sub_totals)
    assert results["longest_sub"]["beats_all_random"] == (beaten == SUB_SEEDS)


def test_token_matched_subsets_are_drawn_from_the_sub_pool(evaluated, tiny_lm):
    folder, _ = evaluated
    results, losses, pool, members = stored(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    tokens = {
        sid: sum(1 for label in encode_conversation(tokenizer, messages, MAX_LENGTH).labels if label != -100)
        for sid, messages in pool
    }
    chosen_for = {}
    for method, candidates in (("longest_sub", members["sub_pool"]), ("longest", [sid for sid, _ in pool])):
        wanted = sum(tokens[s] for s in members[method])
        order = np.random.default_rng(11).permutation(len(candidates))
        best_length, best_gap, running = 0, None, 0
        for length, index in enumerate(order, start=1):
            running += tokens[candidates[index]]
            if best_gap is None or abs(running - wanted) < best_gap:
                best_length, best_gap = length, abs(running - wanted)
        chosen = sorted(candidates[i] for i in order[:best_length])
        row = results[f"token_matched:{method}:0"]
        assert (row["k"], row["response_tokens"], row["members_hash"]) == (
            best_length,
            sum(tokens[s] for s in chosen),
            members_hash(chosen),
        ), method
        chosen_for[method] = chosen
    assert set(chosen_for["longest_sub"]) <= set(members["sub_pool"])
    assert set(chosen_for["longest"]) - set(members["sub_pool"])  # the whole pool's draw leaves it: they differ

    mine = np.array(per_sample(losses, "longest_sub", "target:task"))
    matched = np.array(per_sample(losses, "token_matched:longest_sub:0", "target:task"))
    delta, low, high = bootstrap_by_hand((mine - matched).tolist(), seed=5)
    row = results["longest_sub"]
    assert (row["token_matched_delta"], row["token_matched_ci_low"], row["token_matched_ci_high"]) == pytest.approx(
        (delta, low, high), rel=1e-9, abs=1e-12
    )


def test_report_says_which_pool_each_row_used(evaluated):
    folder, metadata = evaluated
    records = [record.data for record in metadata["results"].value.records]
    assert [(r["method"], r["pool"]) for r in records] == [
        ("base model (no fine-tune)", "all"),
        ("**random band** (2 seeds, mean ± std)", "all"),
        ("random_s0", "all"),
        ("random_s1", "all"),
        ("**longest**", "all"),
        (f"**random band of sub** ({SUB_SEEDS} seeds, mean ± std)", f"sub ({SUB_SIZE})"),
        *((f"sub_random_s{s}", f"sub ({SUB_SIZE})") for s in range(SUB_SEEDS)),
        ("**longest_sub**", f"sub ({SUB_SIZE})"),
    ]
    results, _, _, _ = stored(folder)
    sub_band = [results[f"sub_random_s{s}"]["target_loss"] for s in range(SUB_SEEDS)]
    band_row = records[5]
    assert band_row["target loss"] == f"{np.mean(sub_band):.4f} ± {np.std(sub_band, ddof=1):.4f}"
    longest_sub = records[-1]
    row = results["longest_sub"]
    assert longest_sub["beats all random seeds?"].endswith(f"/{SUB_SEEDS})")
    assert longest_sub["Δ target vs random [95% CI]"] == (
        f"{row['target_delta']:+.4f} [{row['target_ci_low']:+.4f}, {row['target_ci_high']:+.4f}]"
    )
    report = (folder / "out" / "eval.md").read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in report and "| " + " | ".join(TOKEN_COLUMNS) + " |" in report
    assert f"Sub-pool `sub`: the {SUB_SIZE} samples of the selection `sub_pool`" in report
    assert "**Only 2 random seeds**" in report and f"**Only {SUB_SEEDS} random seeds in pool `sub`**" in report
    assert "| token_matched:longest_sub:0 | longest_sub | sub (12) |" in report
    assert (folder / "out" / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def pools_block(**changes) -> dict:
    block = {
        "name": "sub",
        "selection": "sub_pool",
        "baselines": [f"sub_random_s{s}" for s in range(SUB_SEEDS)],
        "selections": ["longest_sub"],
    }
    return {**block, **changes}


@pytest.mark.parametrize(
    ("pools", "selection_changes", "message"),
    [
        ([pools_block(baselines=["sub_random_s0"])], {}, r"evaluation.pools.0.baselines at [\s\S]*at least 2 items"),
        ([pools_block(selection="nope")], {}, r"evaluation.pools.0.selection\n[\s\S]*\^ no selection named 'nope'"),
        (
            [pools_block(selection="lengths")],
            {},
            r"evaluation.pools.0.selection\n[\s\S]*\^ 'lengths' is a stage, not a selection",
        ),
        (
            [pools_block(baselines=["sub_random_s0", "sub_random_s1", "random_s1"])],
            {},
            r"is already a baseline in `baselines`",
        ),
        (
            [pools_block(), pools_block(name="other", baselines=["other_random", "other_random2"])],
            {},
            r"`pools.1.selections`: 'longest_sub' is already in pool 'sub'",
        ),
        (
            [pools_block(selections=["not_a_method"])],
            {},
            r"`pools.0.selections`: 'not_a_method' is not in the "
            r"evaluation's `selections`",
        ),
        ([pools_block(name="all")], {}, r"`pools.0.name`: 'all' is taken"),
        ([pools_block(selection="longest")], {}, r"`pools.0.selection`: the sub-pool 'longest' is itself evaluated"),
        (
            [pools_block()],
            {"sub_random_s2": None},
            r"evaluation.pools.0.baselines\n[\s\S]*\^ 'sub_random_s2' draws from the whole pool, not from the sub-pool 'sub_pool': give it "
            r"`input_selection: sub_pool`",
        ),
    ],
)
def test_bad_pools_blocks_fail_at_load_time_naming_the_key(tmp_path, tiny_lm, pools, selection_changes, message):
    doc = document(tiny_lm)
    attributes = doc["attributes"]
    attributes["selections"] += [
        {"name": name, "kind": "random", "budget": 4, "seed": 9} for name in ("other_random", "other_random2")
    ]
    for selection in attributes["selections"]:
        if selection["name"] in selection_changes:  # None: no input_selection
            selection.pop("input_selection")
            if selection_changes[selection["name"]] is not None:
                selection["input_selection"] = selection_changes[selection["name"]]
    attributes["evaluation"]["pools"] = pools
    write_files(tmp_path)
    (tmp_path / "defs.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception, match=message):
        load_pipeline_file(tmp_path / "defs.yaml")


def test_a_method_outside_its_sub_pool_stops_the_evaluation_before_any_fine_tune(tmp_path, tiny_lm):
    doc = document(tiny_lm)
    doc["attributes"]["evaluation"]["pools"][0]["selections"] = ["longest"]  # reads the whole pool
    write_files(tmp_path)
    (tmp_path / "defs.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(
        Exception,
        match=r"'longest' \(pool 'sub'\) selected \d+ samples outside the sub-pool "
        r"'sub_pool'.*input_selection: sub_pool",
    ):
        dg.materialize(
            list(pipeline_definitions(load_pipeline_file(tmp_path / "defs.yaml")).assets), raise_on_error=True
        )
    assert not (tmp_path / "sp.artifacts" / "evaluation" / "finetunes").exists() or not any(
        (tmp_path / "sp.artifacts" / "evaluation" / "finetunes").iterdir()
    )


def test_results_table_gains_pool_and_old_rows_still_read(tmp_path):
    """The DDL and RESULT_SCHEMA agree column for column; a file written before `pool` existed gets the
    column (NULL on its rows) when the schema is applied again."""
    con = duckdb.connect()
    execute_sql_file(con, "schema/005_evaluation.sql")
    table = {r[0]: r[1] for r in con.execute("DESCRIBE evaluation_results").fetchall()}
    con.register("staged", pa.Table.from_batches([], schema=RESULT_SCHEMA))
    staged = {r[0]: r[1] for r in con.execute("DESCRIBE staged").fetchall()}
    assert table == staged and "pool" in table

    store = DuckDBStore(tmp_path / "old.duckdb")
    store.ensure_schema()
    with store.transaction() as c:
        c.execute("ALTER TABLE evaluation_results DROP COLUMN pool")  # the column set before sub-pool bands
        c.execute(
            "INSERT INTO evaluation_results (evaluation, selection, kind, role, k, finetune_key, computed_now, "
            "config_hash, evaluated_at) VALUES ('evaluation', 'old', 'random', 'baseline', 4, 'key', false, "
            "'hash', now())"
        )
    store.ensure_schema()
    with store.reader(read_only=True) as c:
        assert c.execute("SELECT selection, k, pool FROM evaluation_results").fetchall() == [("old", 4, None)]
