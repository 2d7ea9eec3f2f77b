"""The shipped eval pipeline loads, its evaluation asset waits for every method, and the
`make eval` runner derives reduced / judge-free variants that still validate."""

import dagster as dg
import yaml

from bench.eval_run import SHIPPED, derive, llm_stage_names
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions


def _asset_deps(component) -> dict[dg.AssetKey, set[dg.AssetKey]]:
    return {
        key: {dep.asset_key for dep in spec.deps}
        for asset in pipeline_definitions(component).assets or []
        if isinstance(asset, dg.AssetsDefinition)
        for key, spec in asset.specs_by_key.items()
    }


def test_shipped_eval_pipeline_loads_with_every_method():
    component = load_pipeline_file(SHIPPED)
    evaluation = component.spec.evaluation
    assert evaluation.baselines == [f"random_s{s}" for s in range(5)]  # issue #19: at least 5 random seeds
    assert (evaluation.training_seeds, evaluation.token_matched_draws, evaluation.full_pool) == (2, 1, True)
    assert {
        "target_similarity",
        "kcenter",
        "deft_ucs",
        "el2n_top",
        "lobass_top",
        "instruction_mining",
        "less",
        "less_v0",
        "influence_distillation",
        "influence_distillation_v0",
        "alpagasus_top",
        "mods",
        "deita",
    } == set(evaluation.selections)
    selections = {s.name: s for s in component.spec.selections}
    for name in [*evaluation.baselines, *evaluation.selections]:  # k = 5% of the pool
        assert getattr(selections[name], "fraction", None) == 0.05 or name == "mods"
    deps = _asset_deps(component)[dg.AssetKey(["eval", "evaluation"])]
    assert {dg.AssetKey(["eval", n]) for n in evaluation.evaluated()} <= deps
    # the held-out target part is the complement of what the target-aware methods select with
    for name in ("target_similarity", "less", "less_v0", "influence_distillation", "influence_distillation_v0"):
        [target] = selections[name].targets
        assert (target.package, target.validation_size, target.split_seed) == (
            evaluation.target.package,
            evaluation.target.validation_size,
            evaluation.target.split_seed,
        )


def test_reduced_judge_free_variant_validates(tmp_path):
    document = yaml.safe_load(SHIPPED.read_text())
    judged = llm_stage_names(document["attributes"])
    assert set(judged) == {"judge", "deita_labels"}
    derived, variant = derive(document, pool=200, epochs=1, heldout=100, no_judge=True)
    assert variant == "nojudge_n200_e1_h100"
    attributes = derived["attributes"]
    names = {s["name"] for s in attributes["stages"] + attributes["selections"]}
    assert not names & {
        "judge",
        "reward",
        "deita_labels",
        "deita_scorers",
        "deita_score",
        "alpagasus_top",
        "mods",
        "deita",
    }
    assert "deita" not in attributes["evaluation"]["selections"] and "less" in attributes["evaluation"]["selections"]
    assert attributes["sources"][0]["limit"] == 200 and attributes["evaluation"]["general"]["size"] == 100
    assert attributes["duckdb_path"].endswith("/.curation/eval_nojudge_n200_e1_h100.duckdb")
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(derived))
    component = load_pipeline_file(path)
    assert component.spec.evaluation.finetune.lora.epochs == 1
    assert derive(document)[1] == "full"
    cheap, name = derive(document, pool=200, training_seeds=1, token_matched=0, full_pool=False)
    assert name == "n200_s1_t0_nofull"
    assert {
        k: cheap["attributes"]["evaluation"][k] for k in ("training_seeds", "token_matched_draws", "full_pool")
    } == {"training_seeds": 1, "token_matched_draws": 0, "full_pool": False}


def test_only_variant_keeps_what_the_kept_methods_read(tmp_path):
    document = yaml.safe_load(SHIPPED.read_text())
    derived, variant = derive(
        document, pool=200, epochs=1, heldout=100, only={"deita"}, output_dir=str(tmp_path / "out")
    )
    assert variant == "only_deita_n200_e1_h100"
    attributes = derived["attributes"]
    assert {s["name"] for s in attributes["stages"]} == {"deita_embed", "deita_labels", "deita_scorers", "deita_score"}
    assert {s["name"] for s in attributes["selections"]} == {
        *(f"random_s{s}" for s in range(5)),
        "deita_label_pool",
        "deita",
    }
    assert attributes["evaluation"]["selections"] == ["deita"]
    assert attributes["evaluation"]["output_dir"] == str(tmp_path / "out")
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(derived))
    assert load_pipeline_file(path).spec.evaluation.selections == ["deita"]


def _with_sub_pool(document: dict) -> dict:
    """The shipped YAML plus a sub-pool band holding `less` and `influence_distillation`."""
    attributes = document["attributes"]
    attributes["selections"] += [
        {"name": "sub_pool", "kind": "random", "budget": 100, "seed": 11},
        *(
            {"name": f"sub_random_s{s}", "kind": "random", "fraction": 0.05, "seed": s, "input_selection": "sub_pool"}
            for s in range(5)
        ),
    ]
    attributes["evaluation"]["pools"] = [
        {
            "name": "sub100",
            "selection": "sub_pool",
            "baselines": [f"sub_random_s{s}" for s in range(5)],
            "selections": ["less", "influence_distillation"],
        }
    ]
    return document


def test_variants_keep_a_sub_pool_band_only_while_it_holds_a_kept_method(tmp_path):
    document = _with_sub_pool(yaml.safe_load(SHIPPED.read_text()))
    sub_baselines = {f"sub_random_s{s}" for s in range(5)}
    derived, _ = derive(document, pool=200, only={"less"})
    attributes = derived["attributes"]
    assert attributes["evaluation"]["pools"] == [
        {"name": "sub100", "selection": "sub_pool", "baselines": sorted(sub_baselines), "selections": ["less"]}
    ]
    assert sub_baselines | {"sub_pool"} <= {s["name"] for s in attributes["selections"]}
    path = tmp_path / "only.yaml"
    path.write_text(yaml.safe_dump(derived))
    assert [band.selections for band in load_pipeline_file(path).spec.evaluation.pools] == [["less"]]

    derived, _ = derive(document, pool=200, only={"kcenter"})
    attributes = derived["attributes"]
    assert attributes["evaluation"]["pools"] == []
    assert not sub_baselines & {s["name"] for s in attributes["selections"]}
    path.write_text(yaml.safe_dump(derived))
    assert load_pipeline_file(path).spec.evaluation.selections == ["kcenter"]

    derived, _ = derive(document, pool=200, drop={"grads"}, no_judge=True)
    assert [band["selections"] for band in derived["attributes"]["evaluation"]["pools"]] == [["influence_distillation"]]
    path.write_text(yaml.safe_dump(derived))
    load_pipeline_file(path)


def test_the_cpu_plan_puts_the_gradient_methods_on_a_sub_pool_with_its_own_band(tmp_path):
    derived, name = derive(yaml.safe_load(SHIPPED.read_text()), plan="cpu-3h")
    assert name == "cpu3h"
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(derived))
    spec = load_pipeline_file(path).spec  # the evaluation.pools checks run at load time
    stages = {s.name: s for s in spec.stages}
    selections = {s.name: s for s in spec.selections}
    assert set(stages) == {"embed", "el2n", "warmup", "grads", "jvp"} and stages["el2n"].runs == 1
    assert stages["embed"].input_selection is None
    assert all(stages[n].input_selection == "sub_pool" for n in ("el2n", "warmup", "grads", "jvp"))
    assert selections["sub_pool"].budget == 500
    evaluation = spec.evaluation
    (pool,) = evaluation.pools
    assert pool.selection == "sub_pool" and set(pool.selections) == {"el2n_top", "less", "influence_distillation"}
    for name in [*evaluation.selections, *evaluation.baselines, *pool.baselines]:
        assert selections[name].budget == 100 and selections[name].fraction is None, name
        in_sub_pool = name in pool.selections or name in pool.baselines
        assert selections[name].input_selection == ("sub_pool" if in_sub_pool else None), name
    assert not llm_stage_names(derived["attributes"])
    assert (evaluation.finetune.max_length, evaluation.finetune.lora.epochs) == (256, 1)
    assert (evaluation.target_heldout_size, evaluation.general.size, evaluation.full_pool) == (200, 100, False)
    # each method under 2 training seeds, each random or token-matched set under 1
    assert (evaluation.training_seeds, evaluation.baseline_training_seeds, evaluation.seeds_of("baseline")) == (2, 1, 1)
    assert (evaluation.seeds_of("method"), evaluation.seeds_of("token_matched")) == (2, 1)
