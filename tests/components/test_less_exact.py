"""Exact LESS scores (`grad_features` with `projection: none`, issue #19) through the runner on a tiny
random Llama, checked against a plain loop: one transformers backward per sample, Adam
preconditioning by hand, the cosine of the full gradients, the LESS aggregation written out."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from curation_assets.models.chat_format import encode_conversation
from curation_assets.models.lora import LoraSettings, attach_lora
from curation_assets.store import DuckDBStore
from tests.components.test_less_pipeline import write_targets
from tests.support.files import write_pool
from tests.support.pipelines import LORA, lora_warmup_stage, pipeline_document, target_block
from tests.support.runs import run_document

TARGETS = [target_block()]


def document(pool_path: str, model_path: Path, grads: dict) -> dict:
    return pipeline_document(
        "less",
        [
            lora_warmup_stage(model_path),
            {"name": "grads", "kind": "grad_features", "warmup": "warmup", "batch_size": 4, **grads},
        ],
        [{"name": "less_top", "kind": "less", "features": "grads", "fraction": 0.25, "targets": TARGETS}],
        source_path=pool_path,
    )


def plain_loop_scores(model_path: Path, checkpoints: list, pool: list, targets: list, projector=None):
    """Per-subtask LESS scores of `pool` from full gradients (or through `projector`, given layer gradients)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = attach_lora(AutoModelForCausalLM.from_pretrained(model_path), LoraSettings(**LORA), 0).eval()
    named = [p for _, p in model.named_parameters() if p.requires_grad]

    def gradient(messages, state=None):
        model.zero_grad(set_to_none=True)
        sample = encode_conversation(tokenizer, messages, 64)
        ids = torch.tensor([sample.input_ids])
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([sample.labels])).loss.backward()
        layers = []
        for index, p in enumerate(named):
            g = p.grad
            if state is not None:  # the released code's Adam direction: m' / sqrt(v' + eps), no bias correction
                m = 0.9 * state["state"][index]["exp_avg"] + 0.1 * g
                v = 0.999 * state["state"][index]["exp_avg_sq"] + 0.001 * g * g
                g = m / torch.sqrt(v + 1e-8)
            layers.append(g.clone())
        if projector is not None:
            return projector.project_layers([g.unsqueeze(0) for g in layers])[0].numpy()
        return torch.cat([g.reshape(-1) for g in layers]).numpy()

    weights = np.array([c[2] for c in checkpoints]) / sum(c[2] for c in checkpoints)
    influence = np.zeros((len(pool), len(targets)))
    for weight, (_, path, _) in zip(weights, checkpoints):
        set_peft_model_state_dict(model, load_file(str(Path(path) / "adapter_model.safetensors")))
        state = torch.load(Path(path) / "optimizer.pt")
        train = np.stack([gradient(m, state) for _, m in pool]).astype(np.float64)
        val = np.stack([gradient(m) for _, _, _, m in targets]).astype(np.float64)
        for i in range(len(pool)):
            for j in range(len(targets)):
                influence[i, j] += weight * train[i] @ val[j] / (np.linalg.norm(train[i]) * np.linalg.norm(val[j]))
    subtasks = sorted({t[2] for t in targets})
    return {f"task:{s}": influence[:, [j for j, t in enumerate(targets) if t[2] == s]].mean(axis=1) for s in subtasks}


def read_run(folder: Path) -> dict:
    with DuckDBStore(folder / "less.duckdb").reader(read_only=True) as con:
        out = {
            "checkpoints": con.execute("SELECT epoch, path, mean_lr FROM lora_checkpoints ORDER BY epoch").fetchall(),
            "pool": con.execute("SELECT sample_id, messages FROM samples WHERE active ORDER BY sample_id").fetchall(),
            "targets": con.execute(
                "SELECT sample_id, split, subtask, messages FROM target_samples WHERE split = 'validation'"
            ).fetchall(),
            "members": con.execute(
                "SELECT sample_id, score FROM selections WHERE selection = 'less_top' ORDER BY rank"
            ).fetchall(),
            "details": con.execute(
                "SELECT sample_id, subtask, score FROM less_scores WHERE selection = 'less_top'"
            ).fetchall(),
            "widths": con.execute("SELECT DISTINCT len(features) FROM grad_features").fetchall(),
            "features": con.execute("SELECT count(*) FROM grad_features").fetchall()[0][0],
            "stats": [
                json.loads(s)
                for (s,) in con.execute(
                    "SELECT stats FROM stage_runs WHERE stage = 'grads' ORDER BY started_at"
                ).fetchall()
            ],
        }
    return out


def test_exact_less_scores_equal_a_plain_loop_and_stats_hold_the_projected_correlation(tmp_path, tiny_lm):
    write_pool(tmp_path / "pool.jsonl", 20)
    write_targets(tmp_path / "target.jsonl")
    grads = {"projection": "none", "targets": TARGETS, "compare_projection": "kronecker", "dim": 64}
    run_document(tmp_path, document("pool.jsonl", tiny_lm, grads))
    run = read_run(tmp_path)
    pool, targets, checkpoints = run["pool"], run["targets"], run["checkpoints"]
    assert len(checkpoints) == 2 and len(targets) == 6
    # nothing but one exact cosine per target validation sample is stored per sample and checkpoint
    assert run["widths"] == [(6,)] and run["features"] == 2 * len(pool)

    expected = plain_loop_scores(tiny_lm, checkpoints, pool, targets)
    got = {(sid, role): value for sid, role, value in run["details"]}
    for i, (sid, _) in enumerate(pool):
        for role, values in expected.items():
            assert got[(sid, role)] == pytest.approx(values[i], abs=1e-4)
    best = np.max(np.stack(list(expected.values())), axis=0)
    order = sorted(range(len(pool)), key=lambda i: -best[i])[: round(0.25 * len(pool))]
    assert [m[0] for m in run["members"]] == [pool[i][0] for i in order]
    assert [m[1] for m in run["members"]] == pytest.approx([best[i] for i in order], abs=1e-4)

    # the Kronecker-projected scores of the same gradients, and their correlation with the exact ones
    from transformers import AutoModelForCausalLM

    from curation_assets.methods.projection import KroneckerProjector

    lora = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_lm), LoraSettings(**LORA), 0)
    shapes = [tuple(p.shape) for _, p in lora.named_parameters() if p.requires_grad]
    kronecker = KroneckerProjector(shapes, 64, seed=0)
    projected = plain_loop_scores(tiny_lm, checkpoints, pool, targets, kronecker)
    projected_best = np.max(np.stack(list(projected.values())), axis=0)
    comparison = run["stats"][0]["projection_correlation"]
    assert comparison["projection"] == "kronecker" and comparison["samples"] == len(pool)
    assert comparison["dim"] == kronecker.dim
    assert comparison["pearson"] == pytest.approx(pearsonr(projected_best, best)[0], abs=1e-3)
    assert comparison["spearman"] == pytest.approx(spearmanr(projected_best, best)[0], abs=1e-3)

    # incremental: new pool samples only get their gradients, the old rows stay, the scores stay exact
    write_pool(tmp_path / "pool.jsonl", 26)
    run_document(tmp_path, document("pool.jsonl", tiny_lm, grads))
    again = read_run(tmp_path)
    assert again["stats"][-1]["pending"] == len(again["pool"]) - len(pool) > 0
    expected = plain_loop_scores(tiny_lm, again["checkpoints"], again["pool"], again["targets"])
    got = {(sid, role): value for sid, role, value in again["details"]}
    for i, (sid, _) in enumerate(again["pool"]):
        for role, values in expected.items():
            assert got[(sid, role)] == pytest.approx(values[i], abs=1e-4)


def test_projection_none_changes_the_config_hash_and_needs_the_selections_targets(tmp_path, tiny_lm):
    from curation_assets.components.standalone import load_pipeline_file
    from curation_assets.stages.core.registry import pipeline_config_hashes

    write_pool(tmp_path / "pool.jsonl", 4)
    write_targets(tmp_path / "target.jsonl")
    write_targets(tmp_path / "other.jsonl")

    def hashes(grads: dict) -> dict:
        import yaml

        (tmp_path / "defs.yaml").write_text(yaml.safe_dump(document("pool.jsonl", tiny_lm, grads)))
        spec = load_pipeline_file(tmp_path / "defs.yaml").spec
        return pipeline_config_hashes([*spec.stages, *spec.selections])

    projected = hashes({"projection": "kronecker", "dim": 64})
    exact = hashes({"projection": "none", "targets": TARGETS})
    assert exact["grads"] != projected["grads"]
    # the default: exact where the stage knows the targets, kronecker where it does not
    assert hashes({"targets": TARGETS})["grads"] == exact["grads"]
    assert hashes({"dim": 64})["grads"] == projected["grads"]
    # the comparison only adds stats; dim / seed only shape that comparison
    assert (
        hashes({"projection": "none", "targets": TARGETS, "compare_projection": "dense", "dim": 32, "seed": 4})["grads"]
        == exact["grads"]
    )
    assert hashes({"projection": "none", "targets": [{**TARGETS[0], "validation_size": 5}]})["grads"] != exact["grads"]

    import yaml

    for grads, message in [
        ({"projection": "none"}, "projection: none needs `targets`"),
        ({"projection": "kronecker", "targets": TARGETS}, "only with projection: none"),
        ({"projection": "kronecker", "compare_projection": "dense"}, "only with projection: none"),
    ]:
        (tmp_path / "defs.yaml").write_text(yaml.safe_dump(document("pool.jsonl", tiny_lm, grads)))
        with pytest.raises(Exception, match=message):
            load_pipeline_file(tmp_path / "defs.yaml")

    # exact cosines are with the stage's own targets: a `less` selection with other targets is refused
    other = document("pool.jsonl", tiny_lm, {"projection": "none", "targets": [{**TARGETS[0], "path": "other.jsonl"}]})
    with pytest.raises(Exception) as failure:
        run_document(tmp_path, other)
    chain, error = [], failure.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or getattr(error, "user_exception", None)
    assert any("`targets` differ from those of grad_features stage 'grads'" in text for text in chain), chain


def test_a_warm_up_too_short_for_its_schedule_stops_less_with_what_to_change(tmp_path, tiny_lm):
    # 1 warm-up sample = 1 optimizer step per epoch: the linear warm-up's first step has learning rate 0
    write_pool(tmp_path / "pool.jsonl", 10)
    write_targets(tmp_path / "target.jsonl")
    short = document("pool.jsonl", tiny_lm, {})
    warmup = short["attributes"]["stages"][0]
    warmup["train_fraction"] = 0.1
    warmup["lora"] = {**LORA, "epochs": 1, "warmup_ratio": 0.03}  # the stage default
    with pytest.raises(ValueError, match=r"warm-up 'warmup': the mean learning rate of every checkpoint is 0") as err:
        run_document(tmp_path, short)
    assert "train_fraction" in str(err.value) and "epochs" in str(err.value)
