"""Dagster code location for a cluster: one pipeline YAML and one job over all its assets, on the
executor a cluster runs steps with (docs/deployment.md, "Beyond one machine").

    CURATION_PIPELINE=/srv/pipeline/defs.yaml CURATION_EXECUTOR=celery \\
        dagster job execute -m curation_assets.deploy.location -j everything -c run.yaml

Every process that loads this module (the run's orchestrator, each Celery worker, each step pod)
reads its own copy of the YAML from `CURATION_PIPELINE`; the copies must be the same file, and
its `store:` block a DuckLake every machine reaches (a local DuckDB file is one machine's).
`CURATION_EXECUTOR`: `celery` (dagster-celery's `celery_executor`), `k8s` (dagster-k8s's
`k8s_job_executor`) or `multiprocess` (one machine; the default). The executor package is
imported only when named, so the module loads without the ones a deployment does not use.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import dagster as dg

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions

JOB = "everything"
EXECUTORS = {
    "celery": ("dagster_celery", "celery_executor", "dagster-celery[redis]"),
    "k8s": ("dagster_k8s", "k8s_job_executor", "dagster-k8s"),
}


def executor_named(name: str) -> Any:
    """The executor definition `CURATION_EXECUTOR` names; an error naming the package to install."""
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name not in EXECUTORS:
        raise ValueError(f"CURATION_EXECUTOR={name!r}: expected one of multiprocess, {', '.join(EXECUTORS)}")
    module, attribute, package = EXECUTORS[name]
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError as err:
        raise ImportError(f"CURATION_EXECUTOR={name} needs the package {package} in this environment") from err


def location_definitions(pipeline: Path, executor: str) -> dg.Definitions:
    """The pipeline's assets, checks and resources, and the job `everything` over all of them."""
    return dg.Definitions.merge(
        pipeline_definitions(load_pipeline_file(pipeline)),
        dg.Definitions(
            jobs=[dg.define_asset_job(JOB, selection=dg.AssetSelection.all(), executor_def=executor_named(executor))]
        ),
    )


def _pipeline_from_env() -> Path:
    value = os.environ.get("CURATION_PIPELINE")
    if not value:
        raise RuntimeError("set CURATION_PIPELINE to the pipeline YAML this code location serves")
    return Path(value)


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded when Dagster loads the code location (not on import: the helpers above need no environment)."""
    return location_definitions(_pipeline_from_env(), os.environ.get("CURATION_EXECUTOR", "multiprocess"))
