"""The `<pipeline>/<evaluation name>` asset: runs the evaluation (curation_assets/evaluation/)
after every selection it lists and attaches the results table and bar chart as metadata.

(No `from __future__ import annotations`: Dagster reads the `context` annotation at definition time.)
"""

from typing import TYPE_CHECKING, Any

import dagster as dg

from curation_assets.components.metadata import store_metadata
from curation_assets.evaluation.harness import run_evaluation
from curation_assets.evaluation.spec import EvaluationSpec
from curation_assets.store import Store

if TYPE_CHECKING:
    from curation_assets.components.pipeline import CurationPipeline

EVALUATION_POOL = "evaluation"  # long-running: it holds no DuckDB lock while fine-tuning


def build_evaluation_asset(component: "CurationPipeline", evaluation: EvaluationSpec) -> dg.AssetsDefinition:
    key = component.get_asset_key(evaluation.name)
    kwargs = component.get_asset_kwargs(
        evaluation.name,
        (
            f"Fine-tunes {evaluation.finetune.model} on each of {', '.join(evaluation.selections)} and on the "
            f"baselines {', '.join(evaluation.baselines)}; held-out target and general losses."
        ),
    )
    kwargs["pool"] = EVALUATION_POOL

    @dg.asset(
        key=key,
        deps=[component.get_asset_key(name) for name in evaluation.evaluated()],
        kinds={"python", "torch", "peft", "duckdb"},
        code_version=evaluation.config_hash(),
        **kwargs,
    )
    def evaluation_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        component.check_bound_resources(context, component.resource_keys())
        store = component.prepared_store()
        spec = component.spec
        specs = {s.name: s for s in [*spec.stages, *spec.selections]}
        result = run_evaluation(
            evaluation,
            store=store,
            pipeline=spec.name,
            specs=specs,
            selection_names={s.name for s in spec.selections},
            stage_hashes=component.stage_hashes,
            cache_dir=store.work_dir / evaluation.name / "finetunes",
            log=context.log,
        )
        return dg.MaterializeResult(metadata=evaluation_metadata(result, store))

    return evaluation_asset


def evaluation_metadata(result: Any, store: Store) -> dict[str, Any]:
    from curation_assets.evaluation.report import COLUMNS, bar_chart_png, markdown, png_data_uri, table_rows

    png = bar_chart_png(result)
    rows = table_rows(result)
    metadata: dict[str, Any] = {
        "report": dg.MetadataValue.md(markdown(result, png_data_uri(png))),
        "results": dg.MetadataValue.table(
            records=[dg.TableRecord({c: row[c] for c in COLUMNS}) for row in rows],
            schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in COLUMNS]),
        ),
        "dagster/row_count": len(result.rows),
        "dagster/table_name": "evaluation_results",
        **store_metadata(store),
        "random_band_target_loss": result.band.target_mean,
        "random_band_general_loss": result.band.general_mean,
        "target_heldout_samples": len(result.target.sample_ids),
        "general_heldout_samples": len(result.general.sample_ids),
        "seconds": round(result.seconds, 3),
        **result.stats,
    }
    if result.spec.output_dir:
        metadata["eval_md"] = dg.MetadataValue.path(f"{result.spec.output_dir}/eval.md")
        metadata["eval_png"] = dg.MetadataValue.path(f"{result.spec.output_dir}/eval.png")
    return metadata
