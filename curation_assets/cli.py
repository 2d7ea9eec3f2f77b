"""`curation`: run a pipeline without the UI, query its DuckDB file, export and report selections."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from curation_assets.export import ExportFormat

DEMO_PIPELINE = Path(__file__).resolve().parent / "defs" / "demo" / "defs.yaml"
NAME_ARGUMENT = "PIPELINE (a pipeline YAML file)"
NAME_OPTION = "--pipeline PIPELINE.yaml (or --db FILE.duckdb)"


def _pipeline_path(pipeline: Path | None, how_to_name: str) -> Path:
    """`pipeline`, else the one pipeline of the current folder (said on stderr); no default pipeline."""
    from curation_assets.components.discovery import NoPipelineError, pipeline_in

    if pipeline is not None:
        return pipeline
    try:
        found = pipeline_in(Path.cwd(), how_to_name)
    except NoPipelineError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"pipeline: {found}", err=True)
    return found


def _load(pipeline: Path | None, sets: tuple[str, ...] = (), how_to_name: str = NAME_ARGUMENT) -> Any:
    import yaml

    from curation_assets.components.overrides import OverrideError, load_pipeline_with_overrides
    from curation_assets.components.standalone import PipelineFileError

    pipeline = _pipeline_path(pipeline, how_to_name)
    try:
        return load_pipeline_with_overrides(pipeline, sets)
    except (PipelineFileError, OverrideError) as err:
        raise click.ClickException(str(err)) from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = " ".join(filter(None, (err.context, err.problem)))
        raise click.ClickException(f"{pipeline}{where}: not valid YAML: {problem}") from err
    except Exception as err:  # validation errors carry the YAML line in their message
        if type(err).__name__ in ("ValidationError", "ResolutionException"):
            raise click.ClickException(f"invalid pipeline {pipeline}:\n{err}") from err
        raise


def _store_for(db: Path | None, pipeline: Path | None, sets: tuple[str, ...]) -> Any:
    """The store of --db (a DuckDB file) or of the pipeline; a DuckDB file waits 30 s for a writer."""
    from curation_assets.store import DuckDBStore

    if db is not None:
        if sets:
            raise click.UsageError("--set changes a pipeline's YAML: give --pipeline, not --db")
        return DuckDBStore(db, lock_timeout_s=30)
    return _cli_store(_load(pipeline, sets, NAME_OPTION))


def _cli_store(component: Any) -> Any:
    from curation_assets.store import DuckDBStore, StoreUnavailableError

    try:
        store = component.store
    except StoreUnavailableError as err:
        raise click.ClickException(str(err)) from err
    return DuckDBStore(store.path, lock_timeout_s=30) if isinstance(store, DuckDBStore) else store


def _store_label(store: Any) -> str:
    """`DuckDB: <file>` or `Store: <description>` (never a secret)."""
    return f"{'DuckDB' if store.kind == 'duckdb' else 'Store'}: {store.describe()}"


_VERBOSE = False


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """`curation --verbose CMD` or `curation CMD --verbose`; the group's flag is read first and resets it."""
    global _VERBOSE
    _VERBOSE = value if ctx.parent is None else (_VERBOSE or value)
    return value


SET_OPTION = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help=(
        "Override a value of the pipeline YAML's attributes for this command (repeatable), validated like "
        "the YAML: list entries by name, the value as YAML, e.g. --set stages.embed.batch_size=64 "
        "--set sources.sharegpt.limit=500."
    ),
)
DB_OPTION = click.option(
    "--db", type=click.Path(path_type=Path), default=None, help="DuckDB file (instead of --pipeline)."
)
PIPELINE_OPTION = click.option(
    "--pipeline",
    type=click.Path(path_type=Path),
    default=None,
    help="Pipeline YAML whose DuckDB to use (default: the one pipeline of the current folder).",
)

VERBOSE_OPTION = click.option(
    "--verbose",
    "-v",
    is_flag=True,
    expose_value=False,
    callback=_set_verbose,
    help="On an error, print the full traceback too (also Dagster's).",
)


@click.group()
@VERBOSE_OPTION
def main() -> None:
    """Curate instruction-tuning data with declarative Dagster pipelines.

    Errors end with one line naming the cause; `--verbose` adds the full traceback.
    """


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path), default=None, required=False)
@click.option("--select", "selection", default=None, help="Dagster asset selection, e.g. 'demo/lengths+'.")
@click.option("--log-level", default="WARNING", show_default=True, help="Dagster console log level.")
@click.option(
    "--serve-llm",
    is_flag=True,
    help=(
        "Serve the packaged SmolLM2 on 127.0.0.1:8765 (llama-cpp-python) for this run, for LLM stages using the "
        "default local endpoint; nothing is started when that port already answers."
    ),
)
@SET_OPTION
@VERBOSE_OPTION
def run(pipeline: Path | None, selection: str | None, log_level: str, serve_llm: bool, sets: tuple[str, ...]) -> None:
    """Materialise PIPELINE (a pipeline YAML; default: the one in the current folder) in-process,
    then print a summary.

    A failed step's cause is printed last, in one line; its traceback is in the Dagster run
    log (the UI, with DAGSTER_HOME set) and, with --verbose, on the console.
    """
    from curation_assets.components.standalone import pipeline_definitions
    from curation_assets.store import StoreUnavailableError

    component = _load(pipeline, sets)
    definitions = pipeline_definitions(component)
    try:
        store = component.prepared_store()
    except StoreUnavailableError as err:
        raise click.ClickException(str(err)) from err
    started = time.monotonic()
    with _instance(store.work_dir) as instance, _local_llm() if serve_llm else contextlib.nullcontext():
        result = _materialize(definitions, instance, selection, log_level)
    _print_summary(store, result.run_id, time.monotonic() - started)
    if not result.success:
        from curation_assets.run_errors import step_failures

        failures = step_failures(result, definitions)
        if _VERBOSE:
            for failure in failures:
                click.echo(f"\n{failure.step}:\n{failure.traceback}", err=True)
        else:
            click.echo(
                f"Dagster run {result.run_id} failed; `curation run --verbose` or the run's log shows the traceback.",
                err=True,
            )
        if len(failures) == 1:
            raise click.ClickException(f"run failed at {failures[0].step}: {failures[0].cause}")
        raise click.ClickException(
            f"run failed at {len(failures)} steps:\n" + "\n".join(f"  {f.step}: {f.cause}" for f in failures)
        )


def _materialize(definitions: Any, instance: Any, selection: str | None, log_level: str) -> Any:
    """dg.materialize, with a console logger that leaves tracebacks out unless --verbose."""
    import dagster as dg

    from curation_assets.run_errors import brief_console_logger

    job_name = "__ephemeral_asset_job__"  # dg.materialize's name for the same job
    defs = dg.Definitions(
        jobs=[dg.define_asset_job(name=job_name, selection=selection)],
        assets=[*(definitions.assets or []), *(definitions.asset_checks or [])],
        resources=definitions.resources,
        loggers={"console": brief_console_logger(tracebacks=_VERBOSE)},
    )
    return defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level.upper()}}}},
    )


def _local_llm() -> Any:
    from curation_assets.llm.local_server import DEFAULT_PORT, LocalLLMServer, LocalServerError, answers

    @contextlib.contextmanager
    def serving() -> Any:
        server = LocalLLMServer(port=DEFAULT_PORT)
        if answers(server.base_url):
            click.echo(f"an API already answers on {server.base_url}: using it")
            yield None
            return
        click.echo(f"starting the packaged SmolLM2 judge on {server.base_url} ...")
        try:
            server.start()
        except LocalServerError as err:
            raise click.ClickException(str(err)) from err
        try:
            yield server
        finally:
            server.stop()

    return serving()


@main.command("llm-server")
@click.option("--port", default=8765, show_default=True, help="Port on 127.0.0.1.")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="A .gguf file; default: the packaged SmolLM2-135M-Instruct.",
)
@click.option("--alias", default="smollm2-135m-instruct", show_default=True, help="Model name clients send.")
@click.option("--n-ctx", default=4096, show_default=True, help="Context length.")
def llm_server(port: int, model_path: Path | None, alias: str, n_ctx: int) -> None:
    """Serve a GGUF model as an OpenAI-compatible API (llama-cpp-python) until interrupted."""
    from curation_assets.llm.local_server import LocalLLMServer, LocalServerError

    server = LocalLLMServer(model_path=model_path, port=port, alias=alias, n_ctx=n_ctx)
    try:
        server.start()
    except LocalServerError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"serving {alias} on {server.base_url} (Ctrl-C to stop)")
    try:
        while server.running:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@contextlib.contextmanager
def _instance(work_dir: Path) -> Iterator[Any]:
    """DAGSTER_HOME's instance, else an ephemeral one whose files live in a staging folder of the
    pipeline (a run killed with SIGKILL leaves nothing in the system temp folder; the next run
    removes it)."""
    import os

    import dagster as dg

    from curation_assets.stages.core.run_guard import staging_folder

    if os.environ.get("DAGSTER_HOME"):
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
        with dg.DagsterInstance.get() as instance:
            yield instance
        return
    with (
        staging_folder(work_dir, "dagster-instance") as folder,
        dg.DagsterInstance.ephemeral(tempdir=str(folder)) as instance,
    ):
        yield instance


def _print_summary(store: Any, run_id: str, seconds: float) -> None:
    with store.reader() as con:
        rows = con.execute(
            "SELECT stage, kind, rows_in, rows_out, round(seconds, 2) FROM stage_runs "
            "WHERE dagster_run_id = $run ORDER BY started_at",
            {"run": run_id},
        ).fetchall()
    click.echo(_format_table(["stage", "kind", "rows in", "rows out", "seconds"], rows))
    click.echo(f"\n{_store_label(store)}   (total {seconds:.1f} s, Dagster run {run_id})")
    click.echo('Query it:  curation query "SELECT * FROM stage_runs"')
    click.echo("Open the UI: make ui   (then http://127.0.0.1:3000)")


SANDBOX_SETTINGS = (
    # no file, network or extension access; the DuckDB file itself stays open
    "SET enable_external_access = false",
    "SET python_enable_replacements = false",  # no scans of Python variables in the CLI's frames
)
LOCKED_SETTINGS = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET lock_configuration = true",  # last: no SET/RESET/PRAGMA can undo the above
)
REFUSED_STATEMENTS = {
    "ATTACH": "ATTACH",
    "DETACH": "DETACH",
    "LOAD": "INSTALL/LOAD of extensions",
    # by type, not by name: DuckDB 1.5.5 (the ducklake environment) lets PRAGMA enable_profiling through
    # lock_configuration; DESCRIBE, SHOW and CALL pragma_table_info(...) read the same
    "PRAGMA": "PRAGMA (use DESCRIBE, SHOW TABLES or CALL pragma_...() instead)",
}

# A DuckLake's data folder stays readable to the sandbox (its rows are files there): nothing may write into it
LAKE_REFUSED_STATEMENTS = {"COPY": "COPY on a DuckLake", "EXPORT": "EXPORT DATABASE on a DuckLake"}

PRAGMA_TEXT = re.compile(r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*pragma\b", re.IGNORECASE | re.DOTALL)


@main.command()
@click.argument("sql", required=False)
@click.option(
    "--file",
    "sql_file",
    type=click.File("r"),
    default=None,
    help="Read the SQL from a file (`-` for stdin), e.g. one of sql/queries/.",
)
@DB_OPTION
@PIPELINE_OPTION
@SET_OPTION
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--max-width", default=60, show_default=True, help="Truncate table cells to this many characters.")
@click.option(
    "--allow-files",
    is_flag=True,
    help=(
        "Also let the SQL read and write files (read_csv, read_parquet, COPY ... TO, ...). "
        "ATTACH, extensions and SET stay refused."
    ),
)
@VERBOSE_OPTION
def query(
    sql: str | None,
    sql_file: Any,
    db: Path | None,
    pipeline: Path | None,
    sets: tuple[str, ...],
    fmt: str,
    max_width: int,
    allow_files: bool,
) -> None:
    """Run SQL on a pipeline's store (DuckDB file or DuckLake) in a read-only sandbox.

    \b
    Allowed: SELECT (and WITH, DESCRIBE, SUMMARIZE, EXPLAIN, SHOW, CALL pragma_...())
    on the tables and views of the store, and TEMP tables in memory.
    Refused: writing the store; reading or writing any other file (read_csv,
    read_parquet, read_text, glob, COPY, EXPORT DATABASE); ATTACH/DETACH; INSTALL/LOAD
    of extensions; PRAGMA; SET/RESET of any setting (the configuration is locked).
    --allow-files lifts only the file rule.
    """
    import duckdb

    from curation_assets.store import StoreLockedError

    if (sql is None) == (sql_file is None):
        raise click.UsageError("give the SQL as an argument or with --file")
    sql = sql if sql is not None else sql_file.read()

    store = _store_for(db, pipeline, sets)
    try:
        with contextlib.closing(store.query_connection()) as con:
            for setting in ([] if allow_files else list(SANDBOX_SETTINGS)) + list(LOCKED_SETTINGS):
                con.execute(setting)
            for statement in con.extract_statements(sql):
                # `PRAGMA name = value` parses as SET: refused as PRAGMA too, whatever the lock covers
                kind = "PRAGMA" if PRAGMA_TEXT.match(statement.query) else statement.type.name
                refused = REFUSED_STATEMENTS.get(kind)
                if refused is None and store.kind == "ducklake" and not allow_files:
                    refused = LAKE_REFUSED_STATEMENTS.get(kind)
                if refused:
                    raise click.ClickException(f"`curation query` refuses {refused}: it reads only {store.describe()}")
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall()
    except (FileNotFoundError, StoreLockedError) as err:
        raise click.ClickException(str(err)) from err
    except duckdb.Error as err:
        text = " ".join(str(err).split())
        if "read-only" in text:
            raise click.ClickException(f"`curation query` is read-only; the statement would write: {text}") from err
        if isinstance(err, duckdb.PermissionException):
            hint = "" if allow_files else "; pass --allow-files to let it read and write files"
            first_line = str(err).strip().splitlines()[0]  # not the echo of the SQL with a caret under it
            raise click.ClickException(f"`curation query` is a sandbox: {first_line}{hint}") from err
        if "configuration has been locked" in text:
            raise click.ClickException(f"`curation query` does not change settings: {text}") from err
        raise click.ClickException(text) from err
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, row)) for row in rows], default=str, ensure_ascii=False, indent=1))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        click.echo(_format_table(columns, rows, max_width=max_width))
        click.echo(f"({len(rows)} rows)")


@main.command()
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "parquet", "hf", "hub"]),
    default="jsonl",
    show_default=True,
    help="hub: a Hugging Face Hub dataset folder (Parquet shards of one schema and a dataset card).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output file (or folder for hf/hub).")
@DB_OPTION
@PIPELINE_OPTION
@SET_OPTION
@click.option(
    "--force",
    is_flag=True,
    help=(
        "Replace --out even when it is not an earlier export (which the manifest .OUT.curation-export.json "
        "beside it marks). The DuckDB file, its WAL and artefact folder, sources and the pipeline folder "
        "are refused even so."
    ),
)
@click.option(
    "--push",
    metavar="REPO_ID",
    default=None,
    help="With --format hub: upload the folder to the Hub dataset REPO_ID (created if missing); token from HF_TOKEN.",
)
@VERBOSE_OPTION
def export(
    name: str,
    fmt: ExportFormat,
    out: Path,
    db: Path | None,
    pipeline: Path | None,
    sets: tuple[str, ...],
    force: bool,
    push: str | None,
) -> None:
    """Export selection NAME (or `samples`) in its original format (jsonl) or as parquet/hf.

    The export is written beside --out under a temporary name and renamed into place; an
    existing --out is replaced only when it is an earlier export (or an empty folder).
    """
    from curation_assets.components.spec import pipeline_protected_paths
    from curation_assets.export import ExportError, export_selection
    from curation_assets.hub_export import HubExportError, hub_token, push_folder
    from curation_assets.store import DuckDBStore

    if db is not None and sets:
        raise click.UsageError("--set changes a pipeline's YAML: give --pipeline, not --db")
    token = None
    if push is not None:  # checked first: a push that cannot happen writes nothing
        if fmt != "hub":
            raise click.UsageError(f"--push needs --format hub (got --format {fmt})")
        try:
            token = hub_token()
        except HubExportError as err:
            raise click.ClickException(str(err)) from err
    protected: list[Any] = []
    if db is None or pipeline is not None:
        component = _load(pipeline, sets, NAME_OPTION)
        protected = pipeline_protected_paths(component.spec, component.base_dir)
        store = DuckDBStore(db, lock_timeout_s=30) if db is not None else _cli_store(component)
    else:
        store = DuckDBStore(db, lock_timeout_s=30)
    try:
        count = export_selection(
            store,
            name,
            fmt,
            out,
            read_only=True,
            overwrite=force,
            protected=protected,
        )
    except (ExportError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {count} samples of {name!r} to {out} ({fmt})")
    if push is not None and token is not None:
        try:
            url = push_folder(out, push, token, message=f"curation export {name} ({count} samples)")
        except HubExportError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"pushed {out} to https://huggingface.co/datasets/{push} ({url})")


@main.command()
@click.argument("selection")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output file (default: SELECTION.html, or SELECTION.md with --format md).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md"]),
    default="html",
    show_default=True,
    help="html: a standalone page; md: the Markdown the selection asset attaches to its metadata.",
)
@DB_OPTION
@PIPELINE_OPTION
@SET_OPTION
def report(
    selection: str, out: Path | None, fmt: str, db: Path | None, pipeline: Path | None, sets: tuple[str, ...]
) -> None:
    """Write the report of SELECTION: size, budget, pool-vs-selected score histograms, examples."""
    from curation_assets.reports import ReportError, selection_report_html, selection_report_markdown
    from curation_assets.store import StoreLockedError

    store = _store_for(db, pipeline, sets)
    out = out if out is not None else Path(f"{selection}.{fmt}")
    try:
        with store.reader(read_only=True) as con:
            text = (
                selection_report_html(con, selection, source=_store_label(store))
                if fmt == "html"
                else selection_report_markdown(con, selection)
            )
    except (ReportError, FileNotFoundError, StoreLockedError) as err:
        raise click.ClickException(f"{store.describe()}: {err}" if isinstance(err, ReportError) else str(err)) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote the report of {selection!r} to {out}")


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path), default=None, required=False)
@SET_OPTION
def check(pipeline: Path | None, sets: tuple[str, ...]) -> None:
    """Validate PIPELINE (default: the one in the current folder) without running it."""
    from curation_assets.store.config import DuckDBStoreConfig, describe_store_config

    component = _load(pipeline, sets)
    spec = component.spec
    config = component.store_config  # not opened: a DuckLake pipeline checks without the DuckLake packages
    where = f"DuckDB {config.path}" if isinstance(config, DuckDBStoreConfig) else describe_store_config(config)
    click.echo(
        f"ok: pipeline {spec.name!r}: {len(spec.sources)} sources, {len(spec.stages)} stages, "
        f"{len(spec.selections)} selections, {len(spec.exports)} exports; {where}"
    )


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path), default=None, required=False)
@SET_OPTION
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help=(
        "Grace period (e.g. 7d, 12h, 30m): only snapshots, scheduled files and orphaned files older than this "
        "go. Keep it longer than the longest write transaction and the longest read."
    ),
)
@click.option("--merge", is_flag=True, help="First merge small adjacent data files (ducklake_merge_adjacent_files).")
@click.option("--dry-run", is_flag=True, help="List what would be expired and deleted; change nothing.")
@VERBOSE_OPTION
def maintain(pipeline: Path | None, sets: tuple[str, ...], older_than: str, merge: bool, dry_run: bool) -> None:
    """Reclaim a DuckLake store's data files: expire snapshots older than --older-than, delete the
    files only they (or a merge) referenced once scheduled that long ago, and delete orphaned files
    (written by a writer that never committed) of that age. docs/deployment.md, "Shared store"."""
    import duckdb

    from curation_assets.store.ducklake_maintenance import MaintenanceRefusedError, parse_duration

    try:
        grace = parse_duration(older_than)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--older-than") from err
    store = _cli_store(_load(pipeline, sets))
    if store.kind != "ducklake":
        raise click.ClickException(
            f"`curation maintain` is for a DuckLake store; {store.describe()} is one DuckDB file, which keeps "
            "no snapshots or orphaned files"
        )
    click.echo(_store_label(store), err=True)
    try:
        report = store.maintain(older_than=grace, merge=merge, dry_run=dry_run)
    except (FileNotFoundError, MaintenanceRefusedError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    except duckdb.Error as err:
        raise click.ClickException(" ".join(str(err).split())) from err
    for line in report.lines():
        click.echo(line)


def _format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value).replace("\n", "\\n")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in body)]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def entry_point() -> None:
    """Console script: run the CLI, then leave without interpreter finalisation.

    DuckDB 2.0's nanobind bindings print "leaked instance" noise at interpreter exit after
    a Dagster run that also loaded torch/transformers; everything is written and closed by
    then, so the process ends with os._exit once output is flushed. An unforeseen exception
    ends in one `Error:` line naming it; its traceback is printed only with --verbose.
    """
    import os
    import traceback

    try:
        main(standalone_mode=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as err:  # noqa: BLE001 - unforeseen: reported in one line (traceback on request), exit 1
        if _VERBOSE or "--verbose" in sys.argv[1:] or "-v" in sys.argv[1:]:
            traceback.print_exc()
        else:
            click.echo("(an unexpected error; --verbose shows its traceback)", err=True)
        click.echo(f"Error: {type(err).__name__}: {' '.join(str(err).split())}", err=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
