"""Run a pipeline YAML document in-process and insist every check passed: through Dagster
(`materialize_document`, for the tests of the Dagster wiring) or straight through the runner
(`run_document`: the same ingest/stage/selection code and the same checks, without Dagster's
per-run overhead, for the tests of what a kind computes), or as one job in a `dagster job execute`
process under the multiprocess executor (`execute_multiprocess_job`, shards in parallel processes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from curation_assets.components.pipeline import CurationPipeline
from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.stages.core.registry import get_kind
from curation_assets.stages.core.runner import run_ingest, run_stage
from curation_assets.store.sql_files import fetch_row, read_sql

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def write_document(folder: Path, document: dict[str, Any]) -> CurationPipeline:
    path = folder / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_pipeline_file(path)


def materialize_document(folder: Path, document: dict[str, Any]) -> CurationPipeline:
    component = write_document(folder, document)
    definitions = pipeline_definitions(component)
    result = dg.materialize([*definitions.assets, *(definitions.asset_checks or [])], raise_on_error=True)
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    assert not failed, f"asset checks failed: {failed}"
    return component


def run_document(folder: Path, document: dict[str, Any], only: set[str] | None = None) -> CurationPipeline:
    """Write `document` as folder/defs.yaml and run it without Dagster; see `run_pipeline`."""
    return run_pipeline(write_document(folder, document), only)


def run_pipeline(component: CurationPipeline, only: set[str] | None = None) -> CurationPipeline:
    """Ingest every source, then run every stage and selection (or those in `only`) in dependency
    order through `runner.run_stage`, as the Dagster assets do, asserting the checks those assets
    report: counts balance and unique sample ids after an ingest, every active sample covered
    after a stage, no inactive member after a selection. Shards, exports and evaluation assets
    are Dagster's: use `materialize_document` for those."""
    spec = component.spec
    specs = {s.name: s for s in [*spec.stages, *spec.selections]}
    failed: list[str] = []
    store = component.prepared_store()  # tables and views; the assets refresh them per run, they do not change
    for source in spec.sources:
        _, result = run_ingest(source, pipeline=spec.name, base_dir=component.base_dir, store=store)
        with store.reader() as con:
            unique = fetch_row(con, read_sql("checks/sample_ids_unique.sql"))[0]
        failed += [f"{source.name}: counts_balance"] * (not result.balanced)
        failed += [f"{source.name}: sample_ids_unique"] * (not unique)
    for name in _dependency_order(component):
        if only is not None and name not in only:
            continue
        stage, kind = specs[name], get_kind(specs[name].kind)
        assert not (stage.shards and stage.shards > 1), f"{name}: shards run as Dagster ops (materialize_document)"
        summary = run_stage(
            kind,
            stage,
            pipeline=spec.name,
            store=store,
            stage_hashes=component.stage_hashes,
            stage_tables=component.stage_tables,
            stage_specs=specs,
        )
        if kind.role == "stage":
            _, missing = component.stage_table_metadata(store, stage, kind, summary.config_hash)
            failed += [f"{name}: covers_active_samples"] * (missing != 0)
        else:
            with store.reader() as con:
                inactive = fetch_row(con, read_sql("checks/selection_inactive_members.sql"), {"selection": name})[0]
            failed += [f"{name}: members_are_active"] * (inactive != 0)
    assert not failed, f"checks failed: {failed}"
    return component


def _dependency_order(component: CurationPipeline) -> list[str]:
    """Stage and selection names, each after the assets it depends on (the Dagster asset graph's edges)."""
    spec = component.spec
    stages = [*spec.stages, *spec.selections]
    deps = {
        s.name: [k.path[-1] for k in component.stage_deps(s, get_kind(s.kind)) if k.path[-1] != s.name] for s in stages
    }
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join([*path, name])}"
        if name in order or name not in deps:
            return
        for upstream in deps[name]:
            visit(upstream, (*path, name))
        order.append(name)

    for stage in stages:
        visit(stage.name, ())
    return order


def curation_in_process(args: Sequence[str], tmpdir: Path) -> tuple[int, str]:
    """`curation ARGS` in this process (click's test runner) as a subprocess with TMPDIR=`tmpdir`,
    no DAGSTER_HOME and (when torch is loaded) one torch thread would run it: the same command and
    code, without a new interpreter importing Dagster and torch. Returns (exit code, output with
    any traceback)."""
    import os
    import tempfile
    import traceback

    from click.testing import CliRunner

    from curation_assets.cli import main

    torch = sys.modules.get("torch")  # not imported here for a run that needs no model
    threads = torch.get_num_threads() if torch is not None else None
    saved = tempfile.tempdir, {k: os.environ.get(k) for k in ("TMPDIR", "DAGSTER_HOME")}
    tempfile.tempdir = os.environ["TMPDIR"] = str(tmpdir)
    os.environ.pop("DAGSTER_HOME", None)  # an ephemeral instance, like a plain `curation run`
    if torch is not None:
        torch.set_num_threads(1)  # 2 threads next to another busy process (an LLM server) crawl on 2 cores
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        tempfile.tempdir = saved[0]
        for key, value in saved[1].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch is not None and threads is not None:
            torch.set_num_threads(threads)
    output = result.output
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        output += "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, output


def execute_multiprocess_job(
    folder: Path,
    max_concurrent: int,
    env: dict[str, str],
    timeout_s: float = 900,
    preload: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """folder/defs.yaml as one Dagster job of all its assets, run by `dagster job execute` under the
    multiprocess executor (`max_concurrent` steps at a time) with `env`, the repository on PYTHONPATH
    and a new DAGSTER_HOME (folder/dagster_home) holding the project's dagster.yaml. With `preload`,
    each step's process is forked from a forkserver that imported those modules once (Dagster's
    `start_method: forkserver`) instead of a fresh interpreter importing them per step (spawn): every
    step still runs in its own process."""
    (folder / "defs_module.py").write_text(
        "from pathlib import Path\n"
        "import dagster as dg\n"
        "from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions\n"
        "defs = dg.Definitions.merge(\n"
        "    pipeline_definitions(load_pipeline_file(Path(__file__).parent / 'defs.yaml')),\n"
        "    dg.Definitions(jobs=[dg.define_asset_job('everything', selection=dg.AssetSelection.all())]))\n"
    )
    executor: dict[str, Any] = {"max_concurrent": max_concurrent}
    if preload:
        executor["start_method"] = {"forkserver": {"preload_modules": list(preload)}}
    run_config = {"execution": {"config": {"multiprocess": executor}}}
    (folder / "run.yaml").write_text(yaml.safe_dump(run_config))
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-f", "defs_module.py", "-j", "everything", "-c", "run.yaml"],
        cwd=folder,
        env={**env, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
