"""Export a selection (or every active sample) as JSON Lines, Parquet, a datasets folder or a Hub folder.

jsonl writes each sample's original record exactly as it was read (generated samples,
which have none, as {"messages": [...]}); parquet and hf write the normalised columns with
the original record as JSON text, plus rank and score; hub writes the folder `push_to_hub`
uploads: Parquet shards of one schema and a dataset card (see `hub_export`).

Nothing the export did not write is lost:
- a target equal to, inside or holding the DuckDB file, its WAL, its artefact folder (or any
  other protected path the caller names: sources, the pipeline folder) is refused;
- an existing target is replaced only when it is an earlier export, i.e. it still matches the
  manifest `.<name>.curation-export.json` written next to it (same files, sizes and mtimes),
  or an empty folder; anything else needs `overwrite=True`;
- the export is written in a temporary folder `.<name>.export-tmp-*` beside the target and
  renamed into place, so a killed export leaves the previous one intact; the next export to
  that target removes the leftover (and puts back a previous folder a kill caught mid-swap).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from curation_assets.store import DuckDBStore, Store
from curation_assets.store.parquet import write_batches
from curation_assets.store.sql_files import fetch_row, read_sql

ExportFormat = Literal["jsonl", "parquet", "hf", "hub"]
FOLDER_FORMATS = ("hf", "hub")
BATCH_ROWS = 5_000
MANIFEST_SUFFIX = ".curation-export.json"
TEMP_MARK = ".export-tmp-"
LOCK_NAME = ".lock"
PREVIOUS_NAME = "previous"
STALE_UNLOCKED_S = 60.0  # a temporary without its lock file yet may belong to an export just starting
WRITTEN_BY = "curation_assets export"
FORCE_HINT = "pass --force (CLI) or set `overwrite: true` (YAML export) to replace it"


class ExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class ProtectedPath:
    """A path no export may replace, hold or (unless `inside_ok`) write into."""

    path: Path
    what: str  # "the DuckDB file", "source 'alpaca'", ...
    inside_ok: bool = False  # the pipeline folder: exports may go into it, not replace it


def store_protected_paths(db: Path) -> list[ProtectedPath]:
    """The DuckDB file and what DuckDB and the stages keep beside it."""
    db = Path(db)
    return [
        ProtectedPath(db, "the DuckDB file"),
        ProtectedPath(db.with_name(db.name + ".wal"), "the DuckDB write-ahead log"),
        ProtectedPath(db.with_name(db.name + ".tmp"), "DuckDB's spill folder"),
        # the stages' checkpoints and trained scorers (StageContext.artifacts_dir)
        ProtectedPath(db.parent / f"{db.stem}.artifacts", "the DuckDB file's artefact folder"),
    ]


def protected_store_paths(store: Store) -> list[ProtectedPath]:
    """What an export must never replace in `store` (`store_protected_paths` for a DuckDB file)."""
    if isinstance(store, DuckDBStore):
        return store_protected_paths(store.path)
    return [ProtectedPath(path, f"a folder of the store ({store.describe()})") for path in store.protected_paths()]


def _canonical(path: Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def unsafe_target(out: Path, protected: Sequence[ProtectedPath]) -> str | None:
    """Why writing an export at `out` would destroy a protected path, or None when it would not."""
    target = _canonical(out)
    for item in protected:
        kept = _canonical(item.path)
        if target == kept:
            relation = "is"
        elif kept in target.parents and not item.inside_ok:
            relation = "is inside"
        elif target in kept.parents:
            relation = "holds"
        else:
            continue
        return (
            f"export path {out} {relation} {item.what} ({kept}); an export there would replace it: "
            f"choose a path outside it"
        )
    return None


def export_selection(
    store: Store,
    selection: str,
    fmt: ExportFormat,
    out: Path,
    *,
    read_only: bool = False,
    overwrite: bool = False,
    protected: Sequence[ProtectedPath] = (),
) -> int:
    """Write `selection` (or `samples`) to `out`; returns the number of samples written.

    Refuses a protected target always, and an existing target that is no earlier export
    unless `overwrite`.
    """
    out = Path(os.path.abspath(Path(out).expanduser()))
    problem = unsafe_target(out, [*protected_store_paths(store), *protected])
    if problem:
        raise ExportError(problem)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise ExportError(f"cannot create the folder of {out}: a file is in the way ({err})") from err
    clean_leftovers(out)
    if fmt not in FOLDER_FORMATS and out.is_dir() and (foreign_target(out) or not any(out.iterdir())):
        raise ExportError(f"{out} is a folder; give a file path for {fmt}")
    reason = None if overwrite else foreign_target(out)
    if reason:
        raise ExportError(f"{reason}, so it was left as it is: choose another path, or {FORCE_HINT}")
    with store.reader(read_only=read_only) as con:
        if selection == "samples":
            sql, params = read_sql("reads/export_samples.sql"), {}
        else:
            known = fetch_row(con, "SELECT count(*) FROM selections WHERE selection = $s", {"s": selection})
            if known[0] == 0:
                names = [r[0] for r in con.execute("SELECT DISTINCT selection FROM selections ORDER BY 1").fetchall()]
                raise ExportError(
                    f"no selection named {selection!r} in {store.describe()} "
                    f"(known: samples{''.join(', ' + n for n in names)})"
                )
            sql, params = read_sql("reads/export_selection.sql"), {"selection": selection}
        with _temporary(out) as tmp:
            if fmt == "hub":
                from curation_assets.hub_export import write_hub_folder

                staged = tmp / "hub"
                count = write_hub_folder(
                    con,
                    selection,
                    sql,
                    params,
                    staged,
                    database=store.path if isinstance(store, DuckDBStore) else Path(store.kind),
                )
            elif fmt == "jsonl":
                staged = tmp / "export.jsonl"
                count = _write_jsonl(con.sql(sql, params=params or None).to_arrow_reader(BATCH_ROWS), staged)
            else:
                staged = tmp / "export.parquet"
                count = write_batches(con.sql(sql, params=params or None).to_arrow_reader(BATCH_ROWS), staged)
                if fmt == "hf":
                    staged_parquet, staged = staged, tmp / "hf"
                    _write_hf(staged_parquet, staged)
            _replace(staged, out, tmp)
            _write_manifest(
                out, tmp, {"selection": selection, "format": fmt, "samples": count, "database": store.describe()}
            )
    return count


# ---- is the existing target an earlier export? ------------------------------------------------


def manifest_path(out: Path) -> Path:
    return out.parent / f".{out.name}{MANIFEST_SUFFIX}"


def _entries(out: Path) -> dict[str, list[int]] | None:
    """What is at `out`: {relative path: [size, mtime_ns]} ("." for a plain file; folders as [-1, 0]),
    None when nothing is there."""
    try:
        top = out.lstat()
    except FileNotFoundError:
        return None
    if not out.is_dir() or out.is_symlink():
        return {".": [top.st_size, top.st_mtime_ns]}
    entries: dict[str, list[int]] = {}
    for folder, dirs, files in os.walk(out):
        for name in dirs + files:
            path = Path(folder) / name
            status = path.lstat()
            relative = str(path.relative_to(out))
            entries[relative] = (
                [-1, 0] if path.is_dir() and not path.is_symlink() else [status.st_size, status.st_mtime_ns]
            )
    return entries


def foreign_target(out: Path) -> str | None:
    """Why `out` must not be replaced without `overwrite`: it exists and is neither an empty folder nor
    an unchanged earlier export. None when it may be replaced."""
    found = _entries(out)
    if found is None or (found == {} and out.is_dir()):
        return None
    try:
        manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("written_by") != WRITTEN_BY:
        kind = "folder" if out.is_dir() else "file"
        return f"{out} exists and is not an earlier export ({kind} with no {manifest_path(out).name} beside it)"
    recorded = manifest.get("entries") or {}
    if recorded != found:
        changed = sorted(set(found) ^ set(recorded)) or sorted(k for k in found if found[k] != recorded.get(k))
        shown = ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")
        return f"{out} changed since it was exported (differs in: {shown})"
    return None


def _write_manifest(out: Path, tmp: Path, details: dict[str, Any]) -> None:
    manifest = {"written_by": WRITTEN_BY, **details, "entries": _entries(out)}
    staged = tmp / "manifest.json"
    staged.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(staged, manifest_path(out))


# ---- temporaries --------------------------------------------------------------------------------


@contextlib.contextmanager
def _temporary(out: Path) -> Iterator[Path]:
    """A folder beside `out` for staging, locked while this process lives, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{TEMP_MARK}"))
    lock: IO[str] | None = None
    try:
        lock = (tmp / LOCK_NAME).open("w")
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process is killed
        yield tmp
    finally:
        if lock is not None:
            lock.close()
        shutil.rmtree(tmp, ignore_errors=True)


def clean_leftovers(out: Path) -> list[Path]:
    """Remove the temporaries of killed exports to `out`; returns what was removed.

    A temporary still locked belongs to a running export and is kept. One holding the
    `previous` folder was killed between its two renames: the previous export goes back.
    """
    removed = []
    for tmp in sorted(out.parent.glob(f".{glob_escape(out.name)}{TEMP_MARK}*")):
        if not tmp.is_dir() or tmp.is_symlink() or _in_use(tmp):
            continue
        previous = tmp / PREVIOUS_NAME
        if previous.exists() and not os.path.lexists(out):
            os.replace(previous, out)
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _in_use(tmp: Path) -> bool:
    try:
        handle = (tmp / LOCK_NAME).open("r")
    except FileNotFoundError:
        return time.time() - tmp.stat().st_mtime < STALE_UNLOCKED_S
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


# ---- writers --------------------------------------------------------------------------------------


def _write_jsonl(reader: Any, path: Path) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for batch in reader:
            raws = batch.column("raw_record").to_pylist()
            messages = batch.column("messages").to_pylist()
            for raw, conversation in zip(raws, messages):
                handle.write(raw if raw is not None else json.dumps({"messages": conversation}, ensure_ascii=False))
                handle.write("\n")
            count += batch.num_rows
    return count


def _write_hf(parquet_file: Path, folder: Path) -> None:
    import datasets

    with tempfile.TemporaryDirectory() as cache_dir:
        dataset = datasets.Dataset.from_parquet(str(parquet_file), cache_dir=cache_dir)
        dataset.save_to_disk(str(folder))


def _replace(staged: Path, out: Path, tmp: Path) -> None:
    """Move `staged` to `out`. A file replaces atomically; whatever was at `out` otherwise first moves
    into `tmp` (a kill between the two renames is undone by the next export's clean_leftovers)."""
    if os.path.lexists(out) and (out.is_dir() or staged.is_dir()):
        os.replace(out, tmp / PREVIOUS_NAME)
    os.replace(staged, out)
