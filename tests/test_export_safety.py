"""Exports never destroy what they did not write (issue #18, item 1).

A tiny pipeline is run once; then `curation export` (CLI, in-process and as a real
subprocess killed with SIGKILL) and the pipeline's own export assets are pointed at the
user's files, at earlier exports and at the project's own files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from dagster.components.core.component_tree import ComponentTreeException
from dagster.components.testing import create_defs_folder_sandbox

from curation_assets.cli import main
from curation_assets.components.standalone import load_pipeline_file
from tests.support.files import line_of, valid_pipeline_yaml, write_pipeline

BIN = Path(sys.executable).parent
TOP_BUDGET = 5


def invoke(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def digest(path: Path) -> str:
    """sha256 over a file, or over every file (name and bytes) under a folder."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        h.update(str(file.relative_to(path) if file != path else "").encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def leftovers(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.export-tmp-*"))


@pytest.fixture(autouse=True)
def _ephemeral_instance(monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export_safety")
    yaml_file = write_pipeline(root / "pipe", valid_pipeline_yaml(budget=TOP_BUDGET), records=30)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        result = CliRunner().invoke(main, ["run", str(yaml_file)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = yaml_file.parent
    (folder / "tiny.artifacts").mkdir(exist_ok=True)
    return {"yaml": yaml_file, "folder": folder, "db": folder / "tiny.duckdb", "root": root}


def expected_longest(pipe: dict) -> list[dict]:
    with duckdb.connect(str(pipe["db"]), read_only=True) as con:
        rows = con.execute(
            "SELECT s.raw_record FROM selections m JOIN samples s USING (sample_id) "
            "WHERE m.selection = 'longest' ORDER BY m.rank"
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


# ---- targets the export did not write -----------------------------------------------------------


def test_export_refuses_a_folder_it_did_not_write(pipe: dict, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my own notes\n")
    result = invoke("export", "longest", "--format", "hf", "--db", pipe["db"], "--out", out)
    assert result.exit_code != 0
    last = result.output.strip().splitlines()[-1]
    assert f"{out} exists and is not an earlier export" in last and "--force" in last
    assert (out / "notes.txt").read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert leftovers(out) == []


def test_export_refuses_a_file_it_did_not_write(pipe: dict, tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    out.write_text('{"mine": true}\n')
    result = invoke("export", "longest", "--db", pipe["db"], "--out", out)
    assert result.exit_code != 0 and "is not an earlier export" in result.output
    assert out.read_text() == '{"mine": true}\n'


def test_force_replaces_a_target_it_did_not_write(pipe: dict, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("replace me\n")
    result = invoke("export", "longest", "--format", "hf", "--db", pipe["db"], "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "notes.txt").exists()
    assert datasets.load_from_disk(str(out))["rank"] == list(range(1, TOP_BUDGET + 1))


def test_export_fills_an_empty_folder(pipe: dict, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "empty"
    out.mkdir()
    assert invoke("export", "longest", "--format", "hf", "--db", pipe["db"], "--out", out).exit_code == 0
    assert len(datasets.load_from_disk(str(out))) == TOP_BUDGET


@pytest.mark.parametrize(("first", "second"), [("jsonl", "jsonl"), ("hf", "hf"), ("parquet", "hf"), ("hf", "jsonl")])
def test_an_earlier_export_is_overwritten_without_force(pipe: dict, tmp_path: Path, first: str, second: str) -> None:
    out = tmp_path / "longest.out"
    assert invoke("export", "random_few", "--format", first, "--db", pipe["db"], "--out", out).exit_code == 0
    assert (tmp_path / ".longest.out.curation-export.json").is_file()
    result = invoke("export", "longest", "--format", second, "--db", pipe["db"], "--out", out)
    assert result.exit_code == 0, result.output
    if second == "jsonl":
        assert [json.loads(line) for line in out.read_text().splitlines()] == expected_longest(pipe)
    else:
        import datasets

        assert datasets.load_from_disk(str(out))["rank"] == list(range(1, TOP_BUDGET + 1))
    manifest = json.loads((tmp_path / ".longest.out.curation-export.json").read_text())
    assert manifest["selection"] == "longest" and manifest["format"] == second
    assert sorted(p.name for p in tmp_path.iterdir()) == [".longest.out.curation-export.json", "longest.out"]


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_an_earlier_export_changed_by_the_user_is_refused(pipe: dict, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "export"
    assert invoke("export", "longest", "--format", fmt, "--db", pipe["db"], "--out", out).exit_code == 0
    edited = out if fmt == "jsonl" else out / "my_readme.md"
    with edited.open("a") as handle:
        handle.write("my addition\n")
    before = digest(out)
    result = invoke("export", "random_few", "--format", fmt, "--db", pipe["db"], "--out", out)
    assert result.exit_code != 0
    assert "changed since it was exported" in result.output and "--force" in result.output
    assert digest(out) == before


# ---- the project's own files --------------------------------------------------------------------

PROTECTED = {  # --out relative to the pipeline folder -> what the refusal names
    "db": ("tiny.duckdb", "is the DuckDB file"),
    "wal": ("tiny.duckdb.wal", "is the DuckDB write-ahead log"),
    "artefacts": ("tiny.artifacts", "is the DuckDB file's artefact folder"),
    "inside_artefacts": ("tiny.artifacts/lengths/x.jsonl", "is inside the DuckDB file's artefact folder"),
    "source": ("data/alpaca.jsonl", "is source 'alpaca'"),
    "source_folder": ("data", "holds source 'alpaca'"),
    "pipeline_folder": (".", "holds the DuckDB file"),
    "above_pipeline_folder": ("..", "holds the DuckDB file"),
    "yaml": ("defs.yaml", "is a pipeline YAML file"),
}
DB_ONLY = ("db", "wal", "artefacts", "inside_artefacts", "pipeline_folder", "above_pipeline_folder")


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("case", list(PROTECTED))
def test_cli_refuses_the_projects_own_files(pipe: dict, case: str, force: bool) -> None:
    relative, says = PROTECTED[case]
    folder = pipe["folder"]
    before = {p: digest(p) for p in [pipe["db"], folder / "data" / "alpaca.jsonl", pipe["yaml"]]}
    runs = [("--pipeline", pipe["yaml"])] + ([("--db", pipe["db"])] if case in DB_ONLY else [])
    for option, value in runs:
        for fmt in ("jsonl", "hf"):
            args = ["export", "samples", "--format", fmt, option, value, "--out", folder / relative]
            result = invoke(*args, *(["--force"] if force else []))
            assert result.exit_code != 0, (case, option, fmt, result.output)
            last = result.output.strip().splitlines()[-1]
            assert says in last and "choose a path outside it" in last, last
    assert {p: digest(p) for p in before} == before
    assert not (folder / "tiny.duckdb.wal").exists()
    assert not (folder / "tiny.artifacts" / "lengths" / "x.jsonl").exists()
    assert not leftovers(folder / relative)


@pytest.mark.parametrize("case", list(PROTECTED))
def test_yaml_export_onto_the_projects_own_files_fails_to_load(tmp_path: Path, case: str) -> None:
    relative, says = PROTECTED[case]
    text = valid_pipeline_yaml(exports=f'- selection: longest\n  path: "{relative}"\n  overwrite: true\n')
    line = line_of(text, f'path: "{relative}"')
    yaml_file = write_pipeline(tmp_path / "pipe", text)
    (tmp_path / "pipe" / "tiny.artifacts").mkdir()

    result = invoke("check", yaml_file)  # the CLI: curation check / run
    assert result.exit_code != 0
    assert f"{yaml_file}:{line}" in result.output and "exports.0.path" in result.output
    assert says in result.output and "Traceback" not in result.output

    with create_defs_folder_sandbox() as sandbox:  # Dagster's component loading, as `dg check defs`
        write_pipeline(sandbox.defs_folder_path / "pipe", text)
        (sandbox.defs_folder_path / "pipe" / "tiny.artifacts").mkdir()
        with pytest.raises(ComponentTreeException) as info:
            with sandbox.build_component_tree() as tree:
                tree.build_defs()
        message = str(info.value.__cause__)
    assert f"defs.yaml:{line}" in message and says in message


def test_two_exports_to_one_path_fail_to_load(tmp_path: Path) -> None:
    text = valid_pipeline_yaml(
        exports="- selection: longest\n  path: out.jsonl\n- selection: random_few\n  path: ./out.jsonl\n"
    )
    yaml_file = write_pipeline(tmp_path / "pipe", text)
    with pytest.raises(Exception, match="exports.0 already writes") as info:
        load_pipeline_file(yaml_file)
    assert f"{yaml_file}:{line_of(text, 'path: ./out.jsonl')}" in str(info.value)


def test_pipeline_export_refuses_a_users_file_unless_overwrite(tmp_path: Path) -> None:
    """The export asset of a pipeline: the step fails naming the file, which survives; overwrite: true replaces it."""
    exports = "- selection: longest\n  path: out/mine.jsonl\n"
    yaml_file = write_pipeline(tmp_path / "pipe", valid_pipeline_yaml(exports=exports))
    mine = tmp_path / "pipe" / "out" / "mine.jsonl"
    mine.parent.mkdir()
    mine.write_text("user data\n")
    result = invoke("run", yaml_file)
    assert result.exit_code != 0
    last = result.output.strip().splitlines()[-1]
    assert "run failed at tiny/export_longest" in last and f"{mine} exists and is not an earlier export" in last
    assert mine.read_text() == "user data\n"

    yaml_file.write_text(valid_pipeline_yaml(exports=exports + "  overwrite: true\n"))
    result = invoke("run", yaml_file)
    assert result.exit_code == 0, result.output
    assert len(mine.read_text().splitlines()) == TOP_BUDGET


# ---- killed exports -----------------------------------------------------------------------------


def _inflate(db: Path, copies: int, record_bytes: int) -> int:
    """Add `copies` copies of every sample with large raw records, so exporting `samples` takes seconds."""
    with duckdb.connect(str(db)) as con:
        con.execute(f"""INSERT INTO samples
            SELECT s.* REPLACE (s.sample_id || '-' || t.i AS sample_id,
                                json_object('copy', t.i, 'text', repeat('x', {record_bytes}))::JSON AS raw_record)
            FROM samples AS s, range({copies}) AS t(i)""")
        return con.execute("SELECT count(*) FROM samples WHERE active").fetchone()[0]


def test_a_killed_export_leaves_the_previous_export_and_the_next_one_cleans_up(tmp_path: Path) -> None:
    yaml_file = write_pipeline(tmp_path / "pipe", valid_pipeline_yaml(budget=TOP_BUDGET), records=30)
    assert invoke("run", yaml_file).exit_code == 0
    db = tmp_path / "pipe" / "tiny.duckdb"
    total = _inflate(db, copies=100, record_bytes=20_000)  # ~60 MB of JSON Lines
    out = tmp_path / "exports" / "all.jsonl"
    assert invoke("export", "longest", "--db", db, "--out", out).exit_code == 0
    previous = out.read_bytes()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DAGSTER_HOME", None)
    process = subprocess.Popen(
        [str(BIN / "curation"), "export", "samples", "--db", str(db), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    staged_size = 0
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        staged = [p / "export.jsonl" for p in leftovers(out) if (p / "export.jsonl").exists()]
        staged_size = staged[0].stat().st_size if staged else 0
        if staged_size > 1_000_000:  # mid-write: some batches written, most not
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (process.returncode, process.stdout.read())
    assert staged_size > 1_000_000

    assert out.read_bytes() == previous  # the previous export, whole
    [temporary] = leftovers(out)  # the killed export's temporary, with its partial file
    assert 0 < (temporary / "export.jsonl").stat().st_size < 20_000 * total

    result = invoke("export", "samples", "--db", db, "--out", out)  # no --force: out is still our export
    assert result.exit_code == 0, result.output
    assert leftovers(out) == []
    assert sum(1 for _ in out.open("rb")) == total
    assert sorted(p.name for p in out.parent.iterdir()) == [".all.jsonl.curation-export.json", "all.jsonl"]


def test_a_folder_moved_aside_by_a_killed_export_is_put_back(pipe: dict, tmp_path: Path) -> None:
    """A kill between the two renames of a folder export leaves the old folder in the temporary:
    the state is laid out on disk as such a kill leaves it, and the next export restores it first."""
    import datasets

    out = tmp_path / "hf"
    assert invoke("export", "longest", "--format", "hf", "--db", pipe["db"], "--out", out).exit_code == 0
    before = digest(out)
    temporary = tmp_path / ".hf.export-tmp-killed"
    temporary.mkdir()
    (temporary / ".lock").touch()  # nobody holds its lock: its export is dead
    out.rename(temporary / "previous")
    (temporary / "hf").mkdir()  # the new export, complete but not yet renamed
    result = invoke("export", "random_few", "--format", "jsonl", "--db", pipe["db"], "--out", tmp_path / "other.jsonl")
    assert result.exit_code == 0 and out.exists() is False  # other targets leave it alone
    result = invoke("export", "random_few", "--format", "hf", "--db", pipe["db"], "--out", out)
    assert result.exit_code == 0, result.output  # restored, recognised as our export, replaced
    assert leftovers(out) == []
    assert len(datasets.load_from_disk(str(out))) == 4
    assert digest(out) != before


def test_a_temporary_of_a_running_export_is_kept(pipe: dict, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    running = tmp_path / ".x.jsonl.export-tmp-running"
    running.mkdir()
    with (running / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a live export holds it
        assert invoke("export", "longest", "--db", pipe["db"], "--out", out).exit_code == 0
        assert running.is_dir()
    assert invoke("export", "longest", "--db", pipe["db"], "--out", out).exit_code == 0
    assert not running.exists()
