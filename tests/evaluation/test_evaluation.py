"""The evaluation asset on a tiny random Llama: losses against plain transformers + peft, the
fine-tune cache (a second run trains nothing), the report table, the leak check."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch
import yaml

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.evaluation.heldout import HeldoutSet, LeakError, check_no_leak
from curation_assets.evaluation.report import COLUMNS
from curation_assets.models.chat_format import encode_conversation
from curation_assets.store import DuckDBStore
from tests.components.test_less_pipeline import write_targets
from tests.support.files import write_pool
from tests.support.pipelines import pipeline_document

LORA = {
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["q_proj", "v_proj"],
    "lr": 0.02,
    "epochs": 2,
    "batch_size": 2,
    "warmup_ratio": 0.0,
}


def document(tiny_lm, lr=LORA["lr"]):
    return pipeline_document(
        "ev",
        stages=[{"name": "lengths", "kind": "text_stats"}],
        selections=[
            *({"name": f"random_s{s}", "kind": "random", "budget": 4, "seed": s} for s in range(3)),
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 4},
            {"name": "same_as_random_s0", "kind": "random", "budget": 4, "seed": 0},
        ],
        evaluation={
            "selections": ["longest", "same_as_random_s0"],
            "baselines": ["random_s0", "random_s1", "random_s2"],
            "target": {"name": "task", "path": "target.jsonl", "validation_size": 4, "split_seed": 1},
            "target_heldout_size": 5,
            "general": {"name": "general", "path": "general.jsonl", "size": 5, "seed": 3},
            "finetune": {"model": str(tiny_lm), "max_length": 64, "lora": {**LORA, "lr": lr}, "batch_size": 3},
            # one fine-tune per set, no extra rows: the seeds and statistics are test_evaluation_statistics.py's
            "training_seeds": 1,
            "token_matched_draws": 0,
            "full_pool": False,
            "output_dir": "out",
        },
    )


def write_general(path: Path, pool_file: Path) -> None:
    """Ten records of the pool (must be skipped) and twelve new ones."""
    pool = pool_file.read_text().splitlines()[:10]
    new = [
        json.dumps(
            {
                "instruction": f"q{i} why is the answer {i % 3}",
                "input": "",
                "output": " ".join(["yes", "no", "the", "world"][: 1 + i % 4]),
            }
        )
        for i in range(12)
    ]
    path.write_text("\n".join(pool + new) + "\n")


def materialize(folder: Path, doc: dict) -> tuple[object, dg.ExecuteInProcessResult]:
    (folder / "defs.yaml").write_text(yaml.safe_dump(doc))
    component = load_pipeline_file(folder / "defs.yaml")
    result = dg.materialize(list(pipeline_definitions(component).assets), raise_on_error=True)
    return component, result


def evaluation_metadata(result) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["ev", "evaluation"])]
    return event.materialization.metadata


def plain_loss(model, tokenizer, messages) -> float:
    """Mean response-token loss with plain transformers (labels = -100 outside the response)."""
    sample = encode_conversation(tokenizer, messages, 64)
    with torch.no_grad():
        return model(input_ids=torch.tensor([sample.input_ids]), labels=torch.tensor([sample.labels])).loss.item()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_lm):
    folder = tmp_path_factory.mktemp("evaluation")
    write_pool(folder / "pool.jsonl", 24)
    write_targets(folder / "target.jsonl")
    write_general(folder / "general.jsonl", folder / "pool.jsonl")
    component, first = materialize(folder, document(tiny_lm))
    _, second = materialize(folder, document(tiny_lm))
    return folder, component, first, second


def test_losses_equal_plain_transformers_and_peft(evaluated, tiny_lm):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _, _, _ = evaluated
    with DuckDBStore(folder / "ev.duckdb").reader(read_only=True) as con:
        results = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT selection, role, k, finetune_key, target_loss, general_loss, target_delta, training_steps "
                "FROM evaluation_results"
            ).fetchall()
        }
        heldout = con.execute(
            "SELECT heldout_set, sample_id, messages FROM evaluation_samples ORDER BY heldout_set, position"
        ).fetchall()
        pool_ids = {r[0] for r in con.execute("SELECT sample_id FROM samples").fetchall()}
        members = [r[0] for r in con.execute("SELECT sample_id FROM selections WHERE selection = 'longest'").fetchall()]
    target = [m for name, _, m in heldout if name == "target:task"]
    general = [(sid, m) for name, sid, m in heldout if name == "general:general"]
    assert len(target) == 5 and len(general) == 5 and not {sid for sid, _ in general} & pool_ids

    # the held-out target part, split independently: seeded permutation of the records, after validation_size
    records = [json.loads(line) for line in (folder / "target.jsonl").read_text().splitlines()]
    order = np.random.default_rng(1).permutation(len(records))[4:9]
    assert [m[0]["content"] for m in target] == [records[i]["instruction"] for i in order]

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    assert results["base_model"][3] == pytest.approx(
        np.mean([plain_loss(base, tokenizer, m) for m in target]), rel=1e-5
    )
    role, k, key, target_loss, general_loss, _, steps = results["longest"]
    assert (role, k, steps) == ("method", 4, 4)  # 4 samples, batch 2, 2 epochs
    adapter = folder / "ev.artifacts" / "evaluation" / "finetunes" / key / "adapter"
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), str(adapter)).eval()
    assert target_loss == pytest.approx(np.mean([plain_loss(tuned, tokenizer, m) for m in target]), rel=1e-5)
    assert general_loss == pytest.approx(np.mean([plain_loss(tuned, tokenizer, m) for _, m in general]), rel=1e-5)
    assert abs(target_loss - results["base_model"][3]) > 1e-3  # the fine-tune moved the model
    meta = json.loads((adapter.parent / "meta.json").read_text())
    assert meta["training_samples"] == len(members) == 4

    band = [results[f"random_s{s}"][3] for s in range(3)]
    assert results["longest"][5] == pytest.approx(target_loss - np.mean(band))
    assert results["same_as_random_s0"][2] == results["random_s0"][2]  # same members, same fine-tune
    assert results["same_as_random_s0"][3] == results["random_s0"][3]


def test_second_run_fine_tunes_nothing(evaluated):
    folder, _, first, second = evaluated
    before, after = evaluation_metadata(first), evaluation_metadata(second)
    # base model + 3 random + longest measured; same_as_random_s0 reuses random_s0's fine-tune
    assert before["finetunes_run"].value == 4 and before["finetunes_cached"].value == 1
    assert after["finetunes_run"].value == 0 and after["loss_sets_measured"].value == 0
    assert after["random_band_target_loss"].value == before["random_band_target_loss"].value


def test_report_table_and_files(evaluated):
    folder, _, _, second = evaluated
    metadata = evaluation_metadata(second)
    report = metadata["report"].value
    header = "| " + " | ".join(COLUMNS) + " |"
    assert header in report and "data:image/png;base64," in report
    assert COLUMNS == (
        "method",
        "pool",
        "kind",
        "k",
        "response tokens",
        "target loss",
        "Δ target vs random [95% CI]",
        "beats all random seeds?",
        "Δ target vs token-matched random [95% CI]",
        "general loss",
        "Δ general vs random [95% CI]",
        "selection s",
        "incl. upstream s",
        "target gain per hour",
    )
    table = metadata["results"].value
    labels = [record.data["method"] for record in table.records]
    assert labels[:2] == ["base model (no fine-tune)", "**random band** (3 seeds, mean ± std)"]
    assert labels[2:] == ["random_s0", "random_s1", "random_s2", "**longest**", "**same_as_random_s0**"]
    markdown = (folder / "out" / "eval.md").read_text()
    assert header in markdown and "![losses relative to the random band](eval.png)" in markdown
    assert (folder / "out" / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    upstream = {r.data["method"]: r.data for r in table.records}["**longest**"]
    assert float(upstream["incl. upstream s"]) >= float(upstream["selection s"])  # + the lengths stage


def test_a_held_out_target_used_for_selection_is_refused(tmp_path):
    store = DuckDBStore(tmp_path / "leak.duckdb")
    store.ensure_schema()
    with store.transaction() as con:
        con.execute(
            "INSERT INTO target_samples VALUES ('less_top', 'gsm8k', 'abc', 'validation', 'all', 'q', 'a', "
            "[{'role': 'user', 'content': 'q'}])"
        )
    heldout = HeldoutSet("target:gsm8k", ["abc", "def"], [[], []])
    check_no_leak(store, heldout, ["other_selection"])  # another pipeline's selection: not ours
    with pytest.raises(LeakError, match="less_top .gsm8k: 1 samples.*split_seed"):
        check_no_leak(store, heldout, ["less_top"])


def test_unknown_selection_fails_at_load_time(tmp_path, tiny_lm):
    doc = document(tiny_lm)
    doc["attributes"]["evaluation"]["selections"] = ["longest", "nope"]
    write_pool(tmp_path / "pool.jsonl", 5)
    write_targets(tmp_path / "target.jsonl")
    write_general(tmp_path / "general.jsonl", tmp_path / "pool.jsonl")
    (tmp_path / "defs.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception, match="no selection named 'nope'"):
        load_pipeline_file(tmp_path / "defs.yaml")
