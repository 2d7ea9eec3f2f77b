"""The `curation_assets.CurationPipeline` Dagster component: pipeline YAML -> assets.

One observable source asset and one ingest asset per source, one asset per stage and per
selection, one per export, each writing its DuckDB table in one transaction and
reporting row count, column schema and column lineage. Subclass and override the small
hooks (`get_asset_key`, `get_asset_kwargs`, `execute_stage`) to change how assets look
or run.

The YAML schema is a plain pydantic model (`get_model_cls`) rather than `dg.Resolvable`:
`stages` is a list of specs discriminated by `kind`, and Resolvable's union resolver
resolves a list as a whole, so mixed kinds in one list fail. Templates (`{{ env.X }}`,
`{{ context.project_root }}`) are rendered in `load`, which also checks names,
references and files and reports problems with the YAML line.
"""

import inspect
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import dagster as dg
from dagster.components.resolved.context import ResolutionContext
from dagster.components.resolved.errors import ResolutionException
from dagster.components.resolved.scopes import LoadContextScope

from curation_assets.components.evaluation_asset import build_evaluation_asset
from curation_assets.components.metadata import plain_metadata, table_metadata
from curation_assets.components.resources import (
    apply_resources,
    check_bound_resources,
    pipeline_resource_keys,
    resource_summary,
    resources_from_context,
)
from curation_assets.components.scaffold import CurationPipelineScaffolder
from curation_assets.components.spec import (
    ExportSpec,
    PipelineSpecBase,
    check_pipeline,
    pipeline_protected_paths,
    pipeline_spec_model,
    pipeline_store_config,
    with_base_dir,
)
from curation_assets.export import export_selection
from curation_assets.redact import redact_text
from curation_assets.sources.fingerprint import file_fingerprint
from curation_assets.sources.hub import hub_data_version
from curation_assets.sources.ingest import resolve_source_location
from curation_assets.sources.spec import SourceSpec
from curation_assets.stages.core.context import restricted_sql
from curation_assets.stages.core.conversation_keys import selection_distinct_counts
from curation_assets.stages.core.llm_stage import LLMStageSpec
from curation_assets.stages.core.registry import StageKind, StageSpec, all_kinds, get_kind, pipeline_config_hashes
from curation_assets.stages.core.runner import INGEST_VERSION, RunSummary, run_ingest, run_stage, source_config_hash
from curation_assets.store import DuckDBStoreConfig, DuckLakeStoreConfig, Store, open_store
from curation_assets.store.sql_files import fetch_row, read_sql
from curation_assets.store.views import StageView, refresh_views

DUCKDB_POOL = "duckdb_writer"
SAMPLE_COLUMNS = ("sample_id", "instruction", "input", "output", "messages", "n_turns")


class AssetKwargs(TypedDict):
    """Keyword arguments of every asset decorator (typed, so the checker sees which `dg.asset` overload applies)."""

    group_name: str
    pool: str | None
    description: str | None
    automation_condition: dg.AutomationCondition | None
    required_resource_keys: set[str]


@dg.scaffold_with(CurationPipelineScaffolder)
class CurationPipeline(dg.Component):
    """A declarative instruction-data curation pipeline (see README: "YAML reference")."""

    def __init__(self, spec: PipelineSpecBase, base_dir: Path) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.resources: dict[str, Any] = {}  # bound by `pipeline_definitions` outside a dg project
        # key -> what the pipeline took from that resource when it loaded (checked against the run's)
        self.loaded_resources: dict[str, dict[str, Any]] = {}
        self.project_root = base_dir

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    def get_model_cls(cls) -> type[PipelineSpecBase]:
        return pipeline_spec_model()

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext) -> "CurationPipeline":
        scoped = context.with_rendering_scope({"context": LoadContextScope(context)})
        yaml_file = context.path / "defs.yaml"
        base_dir = yaml_file.resolve().parent if yaml_file.exists() else context.path
        resources = resources_from_context(context, base_dir) if _names_resources(attributes) else {}
        return cls.from_attributes(
            attributes,
            scoped.resolution_context.at_path("attributes"),
            base_dir,
            resources=resources,
            project_root=context.project_root,
        )

    @classmethod
    def from_attributes(
        cls,
        attributes: Any,
        resolution: ResolutionContext,
        base_dir: Path,
        resources: Mapping[str, Any] | None = None,
        project_root: Path | None = None,
    ) -> "CurationPipeline":
        """Render templates in validated attributes, apply the resources the pipeline names (store,
        LLM endpoints), check names/references/files, build the component."""
        rendered = resolution.resolve_value(attributes.model_dump(mode="json", exclude_unset=True))
        spec = pipeline_spec_model().model_validate(rendered)
        spec, problems = apply_resources(spec, resources or {}, project_root or base_dir)
        problems = problems or check_pipeline(spec, base_dir)
        if problems:
            raise ResolutionException(_located_problems(resolution, problems))
        component = cls(with_base_dir(spec, base_dir), base_dir)
        component.project_root = project_root or base_dir
        component.loaded_resources = {
            key: resource_summary(resource, spec.name, component.project_root)
            for key, resource in (resources or {}).items()
            if key in component.resource_keys_used()
        }
        return component

    # ---- hooks --------------------------------------------------------------------------
    def get_asset_key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([self.spec.name, name])

    def get_raw_asset_key(self, source: SourceSpec) -> dg.AssetKey:
        return dg.AssetKey([self.spec.name, "raw", source.name])

    def get_asset_kwargs(self, name: str, description: str | None) -> AssetKwargs:
        """Keyword arguments shared by every asset (group, pool, automation, ...)."""
        held = self.automation_holds().get(name)
        if held is not None:  # the UI shows why this asset waits for a click
            description = f"{description}\n\n{held}" if description else held
        return {
            "group_name": self.spec.name,
            "pool": DUCKDB_POOL,
            "description": description,
            "automation_condition": self.get_automation_condition(name),
            "required_resource_keys": self.resource_keys(),
        }

    def resource_keys(self, stage: StageSpec | None = None) -> set[str]:
        """Dagster resources an asset uses: the store's, and `stage`'s LLM endpoint's (see resources.py)."""
        return pipeline_resource_keys(self.spec, stage)

    def check_bound_resources(self, context: dg.AssetExecutionContext | dg.OpExecutionContext, keys: set[str]) -> None:
        """Stop before anything is written when a resource bound to this run differs from the one the
        pipeline was loaded with (its config hashes and store come from the loaded one)."""
        bound = {key: getattr(context.resources, key) for key in keys if key in self.loaded_resources}
        label = context.op_def.name if bound else ""
        check_bound_resources(bound, self.loaded_resources, self.spec.name, self.project_root, label)

    def resource_keys_used(self) -> set[str]:
        stages = [*self.spec.stages, *self.spec.selections]
        return set().union(self.resource_keys(), *(self.resource_keys(s) for s in stages))

    def get_automation_condition(self, name: str | None = None) -> dg.AutomationCondition | None:
        """`automation.condition` for the cheap assets; `automation.llm_stages` for LLM stages; none
        for what reads an LLM stage while LLM stages are manual."""
        automation = self.spec.automation
        condition = automation.condition
        if name is not None and name in self.automation_holds():
            return None
        if name is not None and name in self.llm_stage_names():
            condition = automation.llm_stages
        if condition == "eager":
            return dg.AutomationCondition.eager()
        if condition == "on_cron":
            return dg.AutomationCondition.on_cron(automation.cron)
        return None

    def llm_stage_names(self) -> set[str]:
        """Stages that send LLM requests (paid on a hosted API)."""
        return {s.name for s in self.spec.stages if isinstance(s, LLMStageSpec)}

    def automation_holds(self) -> dict[str, str]:
        """Asset name -> why automation leaves it alone: with `automation.llm_stages: manual` (the
        default) LLM stages and everything downstream of them run only when launched, so a source
        that grows never starts paid requests by itself."""
        automation = self.spec.automation
        if automation.llm_stages != "manual":
            return {}
        deps: dict[str, list[str]] = {
            s.name: [k.path[-1] for k in self.stage_deps(s, get_kind(s.kind))]
            for s in [*self.spec.stages, *self.spec.selections]
        }
        deps.update({e.asset_name: [e.selection] for e in self.spec.exports})
        if self.spec.evaluation is not None:
            deps[self.spec.evaluation.name] = list(self.spec.evaluation.evaluated())
        opt_in = "set `automation: {llm_stages: eager}` in the pipeline YAML to re-curate it automatically"
        holds = {
            name: (
                f"Automation: off. `{name}` sends LLM requests (paid on a hosted API), so it runs only "
                f"when launched; {opt_in}."
            )
            for name in self.llm_stage_names()
        }
        changed = True
        while changed:  # everything that reads a held asset, however far down
            changed = False
            for name, upstream in deps.items():
                held = next((u for u in upstream if u in holds), None)
                if name not in holds and held is not None:
                    holds[name] = (
                        f"Automation: off. `{name}` reads `{held}`, which waits for LLM requests "
                        f"(automation.llm_stages: manual); {opt_in}."
                    )
                    changed = True
        return holds

    def get_op_tags(self, kind: StageKind) -> dict[str, Any] | None:
        """Op tags of a stage's step(s): `gpu_op_tags` for kinds that run a model (tag `torch`)."""
        return dict(self.spec.gpu_op_tags) if self.spec.gpu_op_tags and "torch" in kind.tags else None

    def execute_stage(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        kind: StageKind,
        stage: StageSpec,
        shard: tuple[int, int] | None = None,
    ) -> RunSummary:
        return run_stage(
            kind,
            stage,
            pipeline=self.spec.name,
            store=self.store,
            stage_hashes=self.stage_hashes,
            stage_tables=self.stage_tables,
            dagster_run_id=context.run_id,
            log=context.log,
            stage_specs={s.name: s for s in [*self.spec.stages, *self.spec.selections]},
            shard=shard,
        )

    def selection_report(self, context: dg.AssetExecutionContext, stage: StageSpec, store: Store) -> str | None:
        """The Markdown report attached to a selection's metadata (size, budget, score histograms,
        examples); a report that cannot be made is logged as a warning and never fails the selection."""
        try:
            from curation_assets.reports import selection_report_markdown  # matplotlib: only when reporting

            with store.reader() as con:
                return selection_report_markdown(con, stage.name)
        except Exception as err:  # noqa: BLE001 - the selection is written; its report is a courtesy
            context.log.warning(f"{stage.name}: no selection report ({type(err).__name__}: {err})")
            return None

    # ---- derived ------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The pipeline's store (`duckdb_path` or the `store:` block, resolved by `from_attributes`)."""
        return open_store(self.store_config)

    @property
    def store_config(self) -> DuckDBStoreConfig | DuckLakeStoreConfig:
        """The parsed `store:` block with absolute local paths (what `open_store` and workers take)."""
        try:
            return pipeline_store_config(self.spec, self.base_dir)
        except ValueError as err:
            raise RuntimeError(str(err)) from None

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def stage_hashes(self) -> dict[str, str]:
        return pipeline_config_hashes([*self.spec.stages, *self.spec.selections])

    @property
    def stage_tables(self) -> dict[str, str]:
        return {s.name: get_kind(s.kind).table or "" for s in self.spec.stages}

    def schema_files(self) -> list[str]:
        return [k.schema_file for k in all_kinds().values() if k.schema_file]

    def prepared_store(self) -> Store:
        """The store with every table and this pipeline's views in place."""
        store = self.store
        store.ensure_schema(self.schema_files())
        stages = [
            StageView(
                s.name, get_kind(s.kind).table or "", self.stage_hashes[s.name], get_kind(s.kind).one_row_per_sample
            )
            for s in self.spec.stages
        ]
        with store.transaction() as con:
            refresh_views(con, stages, [s.name for s in self.spec.selections])
        return store

    # ---- definitions --------------------------------------------------------------------
    def build_defs(self, context: dg.ComponentLoadContext | None) -> dg.Definitions:
        # the load context is not read: `curation run` builds the definitions without one (standalone.py)
        assets: list[Any] = []
        for source in self.spec.sources:
            assets.extend(self.build_source_assets(source))
        checks: list[Any] = []
        for stage in [*self.spec.stages, *self.spec.selections]:
            if stage.shards and stage.shards > 1:
                asset = self.build_sharded_stage_asset(stage)
                assets.append(asset)
                checks.append(self.build_coverage_check(stage, asset))
            else:
                assets.append(self.build_stage_asset(stage))
        for export in self.spec.exports:
            assets.append(self.build_export_asset(export))
        if self.spec.evaluation is not None:
            assets.append(build_evaluation_asset(self, self.spec.evaluation))
        return dg.Definitions(assets=assets, asset_checks=checks, **self.build_automation())

    def build_automation(self) -> dict[str, Any]:
        """The automation sensor (RUNNING by default), source observation and re-curation schedules."""
        automation, name = self.spec.automation, self.spec.name
        raw_keys = [self.get_raw_asset_key(s) for s in self.spec.sources]
        sensors: list[Any] = []
        schedules: list[Any] = []
        if automation.condition != "none" or automation.llm_stages != "manual":
            sensors.append(
                dg.AutomationConditionSensorDefinition(
                    f"{name}_automation",
                    target=dg.AssetSelection.groups(name) - dg.AssetSelection.assets(*raw_keys),
                    default_status=dg.DefaultSensorStatus.RUNNING,
                    minimum_interval_seconds=automation.sensor_interval_seconds,
                    description=f"Re-curates `{name}` when its sources or configs change ({automation.condition}; "
                    f"LLM stages: {automation.llm_stages}).",
                )
            )
        if automation.observe_sources_cron:
            observe = dg.define_asset_job(f"{name}_observe_sources", selection=dg.AssetSelection.assets(*raw_keys))
            schedules.append(
                dg.ScheduleDefinition(
                    name=f"{name}_observe_sources_schedule",
                    job=observe,
                    cron_schedule=automation.observe_sources_cron,
                    default_status=dg.DefaultScheduleStatus.RUNNING,
                )
            )
        if automation.schedule:
            recurate = dg.define_asset_job(
                f"{name}_recurate", selection=dg.AssetSelection.groups(name) - dg.AssetSelection.assets(*raw_keys)
            )
            schedules.append(
                dg.ScheduleDefinition(
                    name=f"{name}_recurate_schedule",
                    job=recurate,
                    cron_schedule=automation.schedule,
                    default_status=dg.DefaultScheduleStatus.RUNNING,
                )
            )
        return {"sensors": sensors, "schedules": schedules}

    def source_asset_keys(self) -> list[dg.AssetKey]:
        return [self.get_asset_key(s.name) for s in self.spec.sources]

    def build_source_assets(self, source: SourceSpec) -> list[Any]:
        raw_key = self.get_raw_asset_key(source)
        location = resolve_source_location(source, self.base_dir)

        def observe_source() -> dg.DataVersion:
            if source.hf_dataset:  # the commit the revision resolves to, or a local folder's content hash
                return dg.DataVersion(hub_data_version(source, self.base_dir))
            return dg.DataVersion(file_fingerprint(Path(location)))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)
            observed = dg.observable_source_asset(
                key=raw_key,
                group_name=self.spec.name,
                metadata={"location": location},
                description=f"Raw records of source `{source.name}`: {location}",
            )(observe_source)

        key = self.get_asset_key(source.name)
        checks = [
            dg.AssetCheckSpec(
                "counts_balance", asset=key, blocking=True, description="records read = samples + duplicates + rejected"
            ),
            dg.AssetCheckSpec(
                "sample_ids_unique",
                asset=key,
                blocking=True,
                description="sample_id is unique and non-null in `samples`",
            ),
        ]

        @dg.asset(
            key=key,
            deps=[raw_key],
            kinds={"duckdb", "python"},
            code_version=f"{INGEST_VERSION}-{source_config_hash(source)}",
            check_specs=checks,
            **self.get_asset_kwargs(
                source.name,
                source.description or f"Normalise `{source.name}` into `samples`; rejects go to `rejected_samples`.",
            ),
        )
        def ingest(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            self.check_bound_resources(context, self.resource_keys())
            store = self.prepared_store()
            summary, result = run_ingest(
                source,
                pipeline=self.spec.name,
                base_dir=self.base_dir,
                store=store,
                dagster_run_id=context.run_id,
                log=context.log,
            )
            with store.reader() as con:
                active = fetch_row(
                    con, "SELECT count(*) FROM source_samples WHERE source = $s AND active", {"s": source.name}
                )[0]
                unique = fetch_row(con, read_sql("checks/sample_ids_unique.sql"))
                metadata = table_metadata(
                    con,
                    table="samples",
                    row_count=active,
                    lineage=_source_lineage(source, raw_key),
                    store=store,
                )
            metadata.update(plain_metadata({**summary.stats, "seconds": round(summary.seconds, 3)}))
            return dg.MaterializeResult(
                metadata=metadata,
                check_results=[
                    dg.AssetCheckResult(
                        check_name="counts_balance",
                        passed=result.balanced,
                        metadata={
                            "records_read": result.records_read,
                            "samples": result.samples,
                            "duplicates": result.duplicates,
                            "rejected": result.rejected,
                        },
                    ),
                    dg.AssetCheckResult(
                        check_name="sample_ids_unique",
                        passed=bool(unique[0]),
                        metadata={"rows": unique[1], "distinct_non_null": unique[2]},
                    ),
                ],
            )

        return [observed, ingest]

    def stage_deps(self, stage: StageSpec, kind: StageKind) -> list[dg.AssetKey]:
        deps = [*self.source_asset_keys(), *(self.get_asset_key(ref) for ref in stage.references().values())]
        if not kind.generates_samples:  # generated samples are samples too: score them after they exist
            deps += [self.get_asset_key(s.name) for s in self.spec.stages if get_kind(s.kind).generates_samples]
        return list(dict.fromkeys(deps))

    def stage_table_metadata(
        self, store: Store, stage: StageSpec, kind: StageKind, config_hash: str
    ) -> tuple[dict[str, Any], int]:
        """(table metadata of a stage's asset, active samples still lacking a row for `config_hash`)."""
        with store.reader() as con:
            params = {"stage": stage.name, "config_hash": config_hash}
            missing_sql, missing_params = restricted_sql(
                "checks/stage_missing_rows.sql",
                stage.input_selection,
                params,
                originals_only=kind.generates_samples,
                table=kind.table or "",
            )
            missing = fetch_row(con, missing_sql, missing_params)[0]
            rows = fetch_row(con, read_sql("checks/stage_row_count.sql").format(table=kind.table), params)[0]
            lineage = {
                column: [(k, c) for k in self.source_asset_keys() for c in sources]
                for column, sources in kind.column_lineage.items()
            }
            metadata = table_metadata(con, table=kind.table or "", row_count=rows, lineage=lineage, store=store)
        return metadata, missing

    def build_sharded_stage_asset(self, stage: StageSpec) -> dg.AssetsDefinition:
        """A graph-backed asset: one op per shard (parallel steps under the multiprocess, k8s or celery
        executor; each computes its shard's samples and writes its rows in its own short transaction),
        then a commit op that reports the table. Coverage is checked by `build_coverage_check`."""
        kind = get_kind(stage.kind)
        key = self.get_asset_key(stage.name)
        count = int(stage.shards or 1)
        prefix = "__".join(key.path)
        deps = self.stage_deps(stage, kind)
        inputs = [f"upstream_{i}" for i in range(len(deps))]
        pool = stage.pool()  # LLM endpoints keep their pool; other shards run in parallel

        def shard_op(index: int) -> dg.OpDefinition:
            @dg.op(
                name=f"{prefix}__shard_{index}_of_{count}",
                ins={n: dg.In(dg.Nothing) for n in inputs},
                out=dg.Out(dg.Nothing),
                pool=pool,
                required_resource_keys=self.resource_keys(stage),
                tags={
                    "curation/stage": stage.name,
                    "curation/shard": f"{index}/{count}",
                    **(self.get_op_tags(kind) or {}),
                },
            )
            def run_shard(context: dg.OpExecutionContext) -> None:
                self.check_bound_resources(context, self.resource_keys(stage))
                self.prepared_store()
                summary = self.execute_stage(context, kind, stage, shard=(index, count))
                context.log.info(
                    f"{stage.name} shard {index}/{count}: {summary.rows_out} rows in {summary.seconds:.1f} s"
                )

            return run_shard

        shard_ops = [shard_op(i) for i in range(count)]

        @dg.op(
            name=f"{prefix}__commit",
            ins={f"shard_{i}": dg.In(dg.Nothing) for i in range(count)},
            required_resource_keys=self.resource_keys(),
        )
        def commit(context: dg.OpExecutionContext) -> None:
            self.check_bound_resources(context, self.resource_keys())
            store = self.prepared_store()
            metadata, missing = self.stage_table_metadata(store, stage, kind, self.stage_hashes[stage.name])
            metadata.update(
                plain_metadata({"config_hash": self.stage_hashes[stage.name], "shards": count, "missing_rows": missing})
            )
            context.add_output_metadata(metadata)

        def compose(**upstream: Any) -> Any:
            return commit(**{f"shard_{i}": op(**upstream) for i, op in enumerate(shard_ops)})

        compose.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in inputs]
        )
        compose.__name__ = prefix
        kwargs = self.get_asset_kwargs(stage.name, stage.description or kind.summary)
        return dg.graph_asset(
            key=key,
            ins={n: dg.AssetIn(key=k, dagster_type=dg.Nothing) for n, k in zip(inputs, deps)},
            group_name=kwargs["group_name"],
            description=kwargs["description"],
            automation_condition=kwargs["automation_condition"],
            code_version=self.stage_hashes[stage.name],
            kinds=set(kind.tags) | {"duckdb"},
        )(compose)

    def build_coverage_check(self, stage: StageSpec, asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
        kind = get_kind(stage.kind)

        @dg.asset_check(
            asset=asset,
            name="covers_active_samples",
            blocking=True,
            description="every active sample has a row for the current config (all shards)",
        )
        def covers_active_samples() -> dg.AssetCheckResult:
            _, missing = self.stage_table_metadata(self.store, stage, kind, self.stage_hashes[stage.name])
            return dg.AssetCheckResult(passed=missing == 0, metadata={"violations": missing})

        return covers_active_samples

    def build_stage_asset(self, stage: StageSpec) -> dg.AssetsDefinition:
        kind = get_kind(stage.kind)
        key = self.get_asset_key(stage.name)
        deps = self.stage_deps(stage, kind)
        check_name = "covers_active_samples" if kind.role == "stage" else "members_are_active"
        checks = [
            dg.AssetCheckSpec(
                check_name,
                asset=key,
                blocking=True,
                description=(
                    "every active sample has a row for the current config"
                    if kind.role == "stage"
                    else "every selected sample is an active sample"
                ),
            )
        ]

        asset_kwargs = self.get_asset_kwargs(stage.name, stage.description or kind.summary)
        if stage.pool():
            asset_kwargs["pool"] = stage.pool()
        asset_kwargs["required_resource_keys"] = self.resource_keys(stage)

        @dg.asset(
            key=key,
            deps=deps,
            kinds=set(kind.tags) | {"duckdb"},
            code_version=self.stage_hashes[stage.name],
            check_specs=checks,
            op_tags=self.get_op_tags(kind),
            **asset_kwargs,
        )
        def stage_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            self.check_bound_resources(context, self.resource_keys(stage))
            store = self.prepared_store()
            summary = self.execute_stage(context, kind, stage)
            if kind.role == "stage":
                metadata, missing = self.stage_table_metadata(store, stage, kind, summary.config_hash)
            else:
                with store.reader() as con:
                    missing = fetch_row(
                        con, read_sql("checks/selection_inactive_members.sql"), {"selection": stage.name}
                    )[0]
                    lineage = {
                        "sample_id": [(k, "sample_id") for k in self.source_asset_keys()],
                        "score": [(self.get_asset_key(s), c) for s, c in stage.score_sources()],
                    }
                    metadata = table_metadata(
                        con,
                        table=summary.table,
                        row_count=summary.rows_out,
                        lineage=lineage,
                        store=store,
                    )
                    metadata.update(selection_distinct_counts(con, stage.name))  # near-copies show
            metadata.update(
                plain_metadata(
                    {
                        "config_hash": summary.config_hash,
                        "rows_computed": summary.rows_out,
                        "seconds": round(summary.seconds, 3),
                        **summary.metadata,
                    }
                )
            )
            if kind.role == "selection":
                report = self.selection_report(context, stage, store)
                if report is not None:
                    metadata["report"] = dg.MetadataValue.md(report)
            return dg.MaterializeResult(
                metadata=metadata,
                check_results=[
                    dg.AssetCheckResult(check_name=check_name, passed=missing == 0, metadata={"violations": missing})
                ],
            )

        return stage_asset

    def build_export_asset(self, export: ExportSpec) -> dg.AssetsDefinition:
        upstream = self.source_asset_keys() if export.selection == "samples" else [self.get_asset_key(export.selection)]
        out = self.resolve_path(export.path)

        @dg.asset(
            key=self.get_asset_key(export.asset_name),
            deps=upstream,
            kinds={"duckdb", export.format},
            code_version=f"{export.format}:{export.selection}",
            **self.get_asset_kwargs(export.asset_name, f"`{export.selection}` as {export.format} at {out}"),
        )
        def export_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            self.check_bound_resources(context, self.resource_keys())
            count = export_selection(
                self.prepared_store(),
                export.selection,
                export.format,
                out,
                overwrite=export.overwrite,
                protected=pipeline_protected_paths(self.spec, self.base_dir),
            )
            context.log.info(f"exported {count} samples of {export.selection!r} to {out}")
            return dg.MaterializeResult(
                metadata={"dagster/row_count": count, "path": dg.MetadataValue.path(str(out)), "format": export.format}
            )

        return export_asset


def _source_lineage(source: SourceSpec, raw_key: dg.AssetKey) -> dict[str, list[tuple[dg.AssetKey, str]]]:
    """Which raw fields each `samples` column comes from."""
    if source.fields is not None:
        f = source.fields
        if f.messages:
            turns = [(raw_key, f.messages)]
            return {"instruction": turns, "output": turns, "messages": turns, "n_turns": turns}
        parts = {"instruction": f.instruction, "input": f.input, "output": f.output}
        lineage = {col: [(raw_key, name)] for col, name in parts.items() if name}
        lineage["messages"] = [(raw_key, n) for n in (f.system, f.instruction, f.input, f.output) if n]
        return lineage
    fmt = source.format if source.format != "auto" else ("sharegpt" if source.package == "sharegpt" else "auto")
    if source.package == "gsm8k":
        return {
            "instruction": [(raw_key, "question")],
            "output": [(raw_key, "answer")],
            "messages": [(raw_key, "question"), (raw_key, "answer")],
        }
    turn_fields = {
        "sharegpt": ["conversations"],
        "messages": ["messages"],
        "alpaca": ["instruction", "input", "output"],
        "auto": ["instruction", "input", "output", "conversations", "messages"],
    }[fmt]
    deps = [(raw_key, name) for name in turn_fields]
    if fmt == "alpaca":
        return {
            "instruction": [(raw_key, "instruction")],
            "input": [(raw_key, "input")],
            "output": [(raw_key, "output")],
            "messages": deps,
        }
    return {"instruction": deps, "input": deps, "output": deps, "messages": deps, "n_turns": deps}


def _names_resources(attributes: Any) -> bool:
    """Whether the YAML names a resource (`store:`, `llm:` or a stage's `llm: {resource: ...}`)."""
    if getattr(attributes, "store", None) is not None or getattr(attributes, "llm", None) is not None:
        return True
    stages = [*getattr(attributes, "stages", []), *getattr(attributes, "selections", [])]
    return any(getattr(getattr(s, "llm", None), "resource", None) for s in stages)


def _located_problems(resolution: Any, problems: Sequence[tuple[list[str | int], str]]) -> str:
    tree = resolution.source_position_tree
    parts = []
    for yaml_path, message in problems:
        full_path = ["attributes", *yaml_path]
        if tree is None:
            parts.append(f"{'.'.join(map(str, full_path))}: {message}")
            continue
        located = tree.source_error(yaml_path=full_path, inline_error_message=message, value_error=True)
        snippet = redact_text(located.snippet)  # YAML lines shown back: URLs lose credentials and queries
        parts.append(f"{located.file_name}:{located.start_line_no} - {located.location}\n{snippet}\n{message}")
    return "\n\n".join(parts)
