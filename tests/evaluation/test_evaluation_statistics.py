"""The evaluation's statistics (issue #19) on a tiny random Llama, against direct computations
from the stored per-sample losses: the seed-averaged losses, the paired bootstrap interval of
each Δ, "beats every random seed", the token-matched random subsets (tokens counted here with
the tokenizer) and the two reference rows."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from transformers import AutoTokenizer

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.evaluation.finetune_cache import members_hash
from curation_assets.evaluation.report import COLUMNS
from curation_assets.models.chat_format import encode_conversation
from curation_assets.store import DuckDBStore
from tests.evaluation.test_evaluation import LORA, write_general
from tests.support.files import write_pool
from tests.support.pipelines import pipeline_document

SEEDS = 5
RESAMPLES = 500
DRAWS = 2
MAX_LENGTH = 64


def write_target(path: Path) -> None:
    words = "the a of to is and in it you that for on with as are this".split()
    path.write_text(
        "".join(
            json.dumps(
                {
                    "instruction": f"t{i} {' '.join(words[i % 5 : i % 5 + 3])}",
                    "input": "",
                    "output": " ".join(words[i % 7 : i % 7 + 1 + i % 3]),
                }
            )
            + "\n"
            for i in range(20)
        )
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_lm):
    folder = tmp_path_factory.mktemp("evaluation_statistics")
    write_pool(folder / "pool.jsonl", 24)
    write_target(folder / "target.jsonl")
    write_general(folder / "general.jsonl", folder / "pool.jsonl")
    document = pipeline_document(
        "st",
        stages=[{"name": "lengths", "kind": "text_stats"}],
        selections=[
            *({"name": f"random_s{s}", "kind": "random", "budget": 4, "seed": s} for s in range(SEEDS)),
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 4},
        ],
        evaluation={
            "selections": ["longest"],
            "baselines": [f"random_s{s}" for s in range(SEEDS)],
            "target": {"name": "task", "path": "target.jsonl", "validation_size": 4, "split_seed": 1},
            "target_heldout_size": None,
            "general": {"name": "general", "path": "general.jsonl", "size": 8, "seed": 3},
            "finetune": {"model": str(tiny_lm), "max_length": MAX_LENGTH, "lora": LORA, "batch_size": 3},
            "training_seeds": 2,
            "baseline_training_seeds": 1,  # the band and the token-matched subsets: one fine-tune each
            "token_matched_draws": DRAWS,
            "token_matched_seed": 11,
            "full_pool": True,
            "bootstrap_resamples": RESAMPLES,
            "bootstrap_seed": 5,
            "output_dir": "out",
        },
    )
    return folder, materialize_evaluation(folder, document)


def materialize_evaluation(folder: Path, document: dict) -> dict:
    """Materialise the pipeline `document` in `folder`; the evaluation asset's metadata."""
    (folder / "defs.yaml").write_text(yaml.safe_dump(document))
    result = dg.materialize(
        list(pipeline_definitions(load_pipeline_file(folder / "defs.yaml")).assets), raise_on_error=True
    )
    key = dg.AssetKey([document["attributes"]["name"], "evaluation"])
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return event.materialization.metadata


def stored(folder: Path, database: str = "st.duckdb", selections: list[str] | None = None):
    """evaluation_results by selection, every stored loss, the active pool and the members of `selections`."""
    names = selections or ["longest", *(f"random_s{s}" for s in range(SEEDS))]
    with DuckDBStore(folder / database).reader(read_only=True) as con:
        columns = [d[0] for d in con.execute("SELECT * FROM evaluation_results LIMIT 0").description]
        results = {
            row[columns.index("selection")]: dict(zip(columns, row))
            for row in con.execute("SELECT * FROM evaluation_results").fetchall()
        }
        losses = con.execute(
            "SELECT selection, training_seed, heldout_set, position, loss FROM evaluation_losses"
        ).fetchall()
        pool = con.execute("SELECT sample_id, messages FROM samples WHERE active ORDER BY sample_id").fetchall()
        members = {
            name: sorted(
                r[0] for r in con.execute("SELECT sample_id FROM selections WHERE selection = ?", [name]).fetchall()
            )
            for name in names
        }
    return results, losses, pool, members


def per_sample(losses, selection: str, heldout: str) -> list[float]:
    """A selection's per-sample loss on a set: the mean over its training seeds, by plain loops."""
    by_position: dict[int, list[float]] = {}
    for name, _, set_name, position, loss in losses:
        if name == selection and set_name == heldout:
            by_position.setdefault(position, []).append(loss)
    return [sum(v) / len(v) for _, v in sorted(by_position.items())]


def bootstrap_by_hand(d: list[float], seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(RESAMPLES):
        picks = rng.integers(0, len(d), size=len(d))
        means.append(sum(d[i] for i in picks) / len(d))
    low, high = np.percentile(means, [2.5, 97.5])
    return sum(d) / len(d), float(low), float(high)


def test_delta_interval_and_beating_every_seed_equal_a_direct_computation(evaluated):
    folder, _ = evaluated
    results, losses, _, _ = stored(folder)
    seeds_of = {}
    for name, seed, _, _, _ in losses:
        seeds_of.setdefault(name, set()).add(seed)
    assert seeds_of["longest"] == seeds_of["full_pool"] == {0, 1} and seeds_of["base_model"] == {-1}
    assert seeds_of["random_s3"] == seeds_of["token_matched:longest:1"] == {0}
    assert results["longest"]["training_seeds"] == 2 and results["random_s3"]["training_seeds"] == 1
    seed0 = [
        loss for name, seed, s, _, loss in sorted(losses) if name == "longest" and seed == 0 and s == "target:task"
    ]
    seed1 = [
        loss for name, seed, s, _, loss in sorted(losses) if name == "longest" and seed == 1 and s == "target:task"
    ]
    assert len(seed0) == 16 and max(abs(a - b) for a, b in zip(seed0, seed1)) > 1e-4  # two different fine-tunes

    for heldout, column in (("target:task", "target"), ("general:general", "general")):
        randoms = [per_sample(losses, f"random_s{s}", heldout) for s in range(SEEDS)]
        random_mean = [sum(values) / SEEDS for values in zip(*randoms)]
        for name in ("longest", "base_model", "full_pool", "random_s2"):
            mine = per_sample(losses, name, heldout)
            assert results[name][f"{column}_loss"] == pytest.approx(sum(mine) / len(mine), rel=1e-9)
            d = [a - b for a, b in zip(mine, random_mean)]
            delta, low, high = bootstrap_by_hand(d, seed=5)
            row = results[name]
            assert (row[f"{column}_delta"], row[f"{column}_ci_low"], row[f"{column}_ci_high"]) == pytest.approx(
                (delta, low, high), rel=1e-9, abs=1e-12
            )
            assert low < high
    target_losses = {s: sum(per_sample(losses, f"random_s{s}", "target:task")) for s in range(SEEDS)}
    for name in ("longest", "base_model", "full_pool"):
        mine = sum(per_sample(losses, name, "target:task"))
        assert results[name]["beats_all_random"] == all(mine < target_losses[s] for s in range(SEEDS))
    assert results["random_s0"]["beats_all_random"] is None


def test_token_matched_subsets_equal_a_direct_computation(evaluated, tiny_lm):
    folder, _ = evaluated
    results, losses, pool, members = stored(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    tokens = {}
    for sample_id, messages in pool:
        labels = encode_conversation(tokenizer, messages, MAX_LENGTH).labels
        tokens[sample_id] = sum(1 for label in labels if label != -100)
    ids = [sample_id for sample_id, _ in pool]
    wanted = sum(tokens[s] for s in members["longest"])
    assert results["longest"]["response_tokens"] == wanted
    assert results["random_s1"]["response_tokens"] == sum(tokens[s] for s in members["random_s1"])
    assert results["full_pool"]["response_tokens"] == sum(tokens.values())
    assert (results["full_pool"]["k"], results["full_pool"]["role"]) == (len(ids), "full_pool")

    matched_losses = []
    for draw in range(DRAWS):
        order = np.random.default_rng(11 + draw).permutation(len(ids))
        best_length, best_gap, running = 0, None, 0
        for length, index in enumerate(order, start=1):
            running += tokens[ids[index]]
            if best_gap is None or abs(running - wanted) < best_gap:
                best_length, best_gap = length, abs(running - wanted)
        chosen = sorted(ids[i] for i in order[:best_length])
        row = results[f"token_matched:longest:{draw}"]
        assert (row["role"], row["matched_to"], row["k"]) == ("token_matched", "longest", best_length)
        assert row["response_tokens"] == sum(tokens[s] for s in chosen)
        assert abs(row["response_tokens"] - wanted) == best_gap
        assert row["members_hash"] == members_hash(chosen)
        matched_losses.append(per_sample(losses, f"token_matched:longest:{draw}", "target:task"))

    mine = per_sample(losses, "longest", "target:task")
    d = [a - (b + c) / 2 for a, b, c in zip(mine, *matched_losses)]
    delta, low, high = bootstrap_by_hand(d, seed=5)
    row = results["longest"]
    assert (row["token_matched_delta"], row["token_matched_ci_low"], row["token_matched_ci_high"]) == pytest.approx(
        (delta, low, high), rel=1e-9, abs=1e-12
    )


def test_report_shows_the_statistics(evaluated):
    folder, metadata = evaluated
    report = (folder / "out" / "eval.md").read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in report
    labels = [record.data["method"] for record in metadata["results"].value.records]
    assert labels == [
        "base model (no fine-tune)",
        "full pool (every active sample)",
        f"**random band** ({SEEDS} seeds, mean ± std)",
        *(f"random_s{s}" for s in range(SEEDS)),
        "**longest**",
    ]
    longest = {r.data["method"]: r.data for r in metadata["results"].value.records}["**longest**"]
    results, _, _, _ = stored(folder)
    row = results["longest"]
    assert longest["Δ target vs random [95% CI]"] == (
        f"{row['target_delta']:+.4f} [{row['target_ci_low']:+.4f}, {row['target_ci_high']:+.4f}]"
    )
    assert longest["beats all random seeds?"].startswith("yes" if row["beats_all_random"] else "no")
    gain = -row["target_delta"] / (row["upstream_seconds"] / 3600.0)
    assert longest["target gain per hour"] == f"{gain:+.4f}"
    assert "Token-matched random subsets:" in report and "token_matched:longest:1" in report
    assert "fine-tuned with 2 training seed(s) (0, 1), the random baselines and token-matched subsets with " in report
    assert "Only" not in report.split("| method")[0]  # five seeds: no warning
