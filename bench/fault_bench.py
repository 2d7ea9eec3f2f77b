"""Fault table: real process faults, then recovery by running `curation run` again.

A subprocess running `curation run` on a pipeline (a JSONL source, text_stats, JVP embeddings
of a random subset written as resumable Parquet parts, AlpaGasus on another subset judged by
the packaged SmolLM2 served by llama.cpp behind a counting proxy, a JSONL export) is killed
with SIGKILL during one phase: the ingest, the JVP stage's chunk writes, the LLM stage, the
export. `curation run` again must complete with the tables of an uninterrupted run. Counted:
rows lost (reference rows missing after recovery), requests the server answered twice (the
proxy's count minus the distinct requests cached) and temporary files left behind. A second
row family starts two `curation run` of the same LLM stage at once (the first run's answers are
held at the proxy until the second is waiting for the stage's lock): one computes, one waits.
Last, the peak memory of ingesting a JSONL whose single 1.5 GB line exceeds `max_record_bytes`.

The JVP stage runs a tiny random Llama built in code: the fault, not the model, is measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.http_server import LoopbackServer, QuietHandler, forward

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "faults.duckdb"
PIPELINE = "faults"
VOLATILE_TYPES = ("TIMESTAMP",)
VOLATILE_COLUMNS = {"latency_s", "stage_run_id", "dagster_run_id"}
SKIPPED_TABLES = {"stage_runs", "llm_failures"}  # run bookkeeping: a killed run adds its own rows
WORDS = (
    "the a of to is and in it you that for on with as are this be what how why write explain answer "
    "question code list one two three four five hello world yes no"
).split()


# ---- a counting (and optionally holding) proxy in front of the llama.cpp server --------------------
class CountingProxy(LoopbackServer):
    """HTTP proxy on 127.0.0.1 forwarding to an OpenAI-compatible `upstream` (/v1 base URL).
    `forwarded` counts the POSTs the server answered; while `gate` is clear, POSTs are held."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.received = 0
        self.forwarded = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                try:
                    body = self.read_body()
                except OSError:  # the client was killed mid-request
                    return
                with proxy._lock:
                    proxy.received += 1
                proxy.gate.wait()
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                status, payload = forward(proxy.upstream, self.path, body, self.command)
                if body is not None and status == 200:
                    with proxy._lock:
                        proxy.forwarded += 1
                try:
                    self.reply(status, payload)
                except OSError:  # the client was killed: the server answered all the same
                    pass

        super().__init__(Handler)

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        super().__exit__(*exc)


# ---- the pipeline ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaultPipeline:
    """Sizes and models of the pipeline every fault runs on."""

    records: int  # source records (one sample each)
    jvp_samples: int  # random subset embedded by the JVP stage, in chunks of 256 (Parquet parts)
    llm_samples: int  # random subset judged by AlpaGasus (one request each)
    jvp_model: Path
    stages: tuple[str, ...] = ("lengths", "jvp", "judge")
    export: bool = True


def write_pool(path: Path, n: int) -> None:
    """`n` distinct alpaca records of varied length."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        instruction = " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 4 + i % 13))
        output = " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 2 + i % 29))
        lines.append(json.dumps({"instruction": f"q{i} {instruction}", "input": "", "output": output}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_pipeline(folder: Path, settings: FaultPipeline, llm_base_url: str) -> Path:
    """The pool, short AlpaGasus prompts (fast on a CPU judge) and defs.yaml in `folder`."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    write_pool(folder / "pool.jsonl", settings.records)
    (folder / "prompts").mkdir(exist_ok=True)
    (folder / "prompts" / "system.txt").write_text("Rate answers.", encoding="utf-8")
    (folder / "prompts" / "user.txt").write_text("{instruction} {response}\nScore 0-5:", encoding="utf-8")
    stages = {
        "lengths": {"name": "lengths", "kind": "text_stats"},
        "jvp": {
            "name": "jvp",
            "kind": "jvp_embeddings",
            "input_selection": "jvp_subset",
            "model": str(settings.jvp_model),
            "num_blocks": 1,
            "dim": 32,
            "max_length": 48,
            "batch_size": 32,
        },
        "judge": {
            "name": "judge",
            "kind": "alpagasus",
            "input_selection": "llm_subset",
            "max_tokens": 2,
            "parse_retries": 0,
            "prompts": {"alpagasus_system": "prompts/system.txt", "alpagasus_user": "prompts/user.txt"},
            "llm": {
                "base_url": llm_base_url,
                "model": "smollm2-135m-instruct",
                "max_concurrency": 2,
                "timeout_s": 120,
                "backoff_s": 0.05,
                "backoff_max_s": 0.5,
            },
        },
    }
    selections = []
    if "jvp" in settings.stages:
        selections.append({"name": "jvp_subset", "kind": "random", "budget": settings.jvp_samples, "seed": 1})
    if "judge" in settings.stages:
        selections.append({"name": "llm_subset", "kind": "random", "budget": settings.llm_samples, "seed": 2})
    if "lengths" in settings.stages:
        selections.append(
            {"name": "longest", "kind": "top_score", "stage": "lengths", "column": "output_words", "budget": 100}
        )
    attributes: dict[str, Any] = {
        "name": PIPELINE,
        "duckdb_path": DB_NAME,
        "automation": {"condition": "none"},
        "sources": [{"name": "pool", "path": "pool.jsonl", "format": "alpaca"}],
        "stages": [stages[name] for name in settings.stages],
        "selections": selections,
    }
    if settings.export:
        attributes["exports"] = [{"selection": "samples", "path": "out/samples.jsonl", "format": "jsonl"}]
    path = folder / "defs.yaml"
    path.write_text(
        yaml.safe_dump({"type": "curation_assets.CurationPipeline", "attributes": attributes}), encoding="utf-8"
    )
    return path


# ---- running and killing `curation run` -----------------------------------------------------------
def start_run(folder: Path, log_name: str = "run.log", log_level: str = "INFO") -> subprocess.Popen:
    """`curation run defs.yaml` in a subprocess, output to `folder/log_name`, TMPDIR `folder/tmp`."""
    (folder / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "TMPDIR": str(folder / "tmp"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("DAGSTER_HOME", None)  # an ephemeral instance, like a plain `curation run`
    log = open(folder / log_name, "ab")  # noqa: SIM115 - closed with the process by the OS
    return subprocess.Popen(
        [sys.executable, "-m", "curation_assets.cli", "run", str(folder / "defs.yaml"), "--log-level", log_level],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _run_subprocess(folder: Path, log_name: str) -> int:
    return run_to_end(folder, log_name=log_name)


def run_to_end(folder: Path, timeout_s: float = 900, log_name: str = "run.log") -> int:
    process = start_run(folder, log_name)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def kill_when(
    process: subprocess.Popen, condition: Callable[[], bool], timeout_s: float = 600, poll_s: float = 0.005
) -> bool:
    """SIGKILL `process` as soon as `condition()` holds; False when it ended (or timed out) first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(poll_s)
    process.kill()
    process.wait()
    return False


@dataclass(frozen=True)
class Phase:
    """Where a fault lands: `reached` is polled to time the SIGKILL; `committed` tells afterwards
    whether the phase's work was already committed (the kill came too late to test anything)."""

    name: str
    reached: Callable[[Path, CountingProxy], bool]
    committed: Callable[[Path], bool]


def _stage_committed(stage: str) -> Callable[[Path], bool]:
    def committed(folder: Path) -> bool:
        return bool(_query(folder, "SELECT count(*) FROM stage_runs WHERE stage = $s", {"s": stage})[0][0])

    return committed


def phases(settings: FaultPipeline) -> list[Phase]:
    artifacts = f"{Path(DB_NAME).stem}.artifacts"
    found: list[Phase] = [
        Phase(
            "during ingest",
            lambda f, p: any((f / artifacts / ".staging").glob("ingest-pool-*/pool.samples.parquet")),
            _stage_committed("pool"),
        )
    ]
    if "jvp" in settings.stages:
        found.append(
            Phase(
                "during a stage's chunk writes (JVP parts)",
                lambda f, p: any((f / artifacts / "jvp").glob("*/partial/part-*.parquet")),
                _stage_committed("jvp"),
            )
        )
    if "judge" in settings.stages:
        found.append(
            Phase(
                "during an LLM stage",
                lambda f, p: p.forwarded >= max(1, settings.llm_samples // 3),
                _stage_committed("judge"),
            )
        )
    if settings.export:
        found.append(
            Phase(
                "during an export",
                lambda f, p: any((f / "out").glob(".samples.jsonl.export-tmp-*")),
                lambda f: (f / "out" / ".samples.jsonl.curation-export.json").exists(),
            )
        )
    return found


# ---- comparing a recovered run with an uninterrupted one ------------------------------------------
def _query(folder: Path, sql: str, params: dict | None = None) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(folder / DB_NAME), read_only=True)
    try:
        return con.execute(sql, params).fetchall() if params else con.execute(sql).fetchall()
    finally:
        con.close()


def table_contents(folder: Path) -> tuple[dict[str, Counter], dict[tuple, np.ndarray]]:
    """(table -> multiset of rows without volatile and vector columns, (table, column, key...) -> vector).
    Multisets, so a duplicated row counts."""
    import duckdb

    con = duckdb.connect(str(folder / DB_NAME), read_only=True)
    rows: dict[str, Counter] = {}
    vectors: dict[tuple, np.ndarray] = {}
    try:
        tables = [
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1"
            ).fetchall()
            if t not in SKIPPED_TABLES
        ]
        for table in tables:
            columns = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = $t ORDER BY ordinal_position",
                {"t": table},
            ).fetchall()
            plain = [
                c
                for c, kind in columns
                if c not in VOLATILE_COLUMNS and not kind.startswith(VOLATILE_TYPES) and kind != "FLOAT[]"
            ]
            floats = [c for c, kind in columns if kind == "FLOAT[]"]
            keys = [c for c in ("stage", "sample_id", "checkpoint") if c in plain]
            rows[table] = Counter(
                tuple(json.dumps(v, default=str, sort_keys=True) for v in row)
                for row in con.execute(f"SELECT {', '.join(plain)} FROM {table}").fetchall()
            )
            for column in floats:
                for *key, vector in con.execute(f"SELECT {', '.join(keys)}, {column} FROM {table}").fetchall():
                    vectors[(table, column, *key)] = np.asarray(vector, dtype=np.float32)
    finally:
        con.close()
    return rows, vectors


@dataclass
class Comparison:
    rows_lost: int  # reference rows missing after recovery
    rows_extra: int  # rows the reference lacks (duplicates, half-written rows)
    vectors_missing: int
    max_vector_diff: float
    tables_differing: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.rows_lost or self.rows_extra or self.vectors_missing) and self.max_vector_diff <= 1e-4


def compare(reference: tuple[dict, dict], got: tuple[dict, dict]) -> Comparison:
    (ref_rows, ref_vectors), (rows, vectors) = reference, got
    lost = extra = 0
    differing = []
    for table, expected in ref_rows.items():
        have = rows.get(table, Counter())
        lost += sum((expected - have).values())
        extra += sum((have - expected).values())
        if expected != have:
            differing.append(table)
    missing = sum(key not in vectors for key in ref_vectors)
    diffs = [
        float(np.max(np.abs(vectors[k] - v))) if vectors[k].shape == v.shape else float("inf")
        for k, v in ref_vectors.items()
        if k in vectors and v.size
    ]
    return Comparison(lost, extra, missing, max(diffs, default=0.0), differing)


def table_digests(contents: tuple[dict[str, Counter], dict]) -> dict[str, tuple[int, str]]:
    """Per non-empty table: (row count, SHA-256 of its sorted rows)."""
    digests = {}
    for table, rows in contents[0].items():
        if rows:
            body = json.dumps(sorted(rows.elements()), ensure_ascii=False).encode("utf-8")
            digests[table] = (sum(rows.values()), hashlib.sha256(body).hexdigest())
    return digests


def temporaries_left(folder: Path) -> list[str]:
    """Temporary files a run leaves behind: staging folders, parts, *.tmp, export temporaries, TMPDIR."""
    root = folder / f"{Path(DB_NAME).stem}.artifacts"
    left = list((root / ".staging").glob("*")) if (root / ".staging").exists() else []
    left += list(root.glob("*/*/partial*"))
    left += list(folder.rglob("*.tmp"))
    left += list((folder / "out").glob(".*export-tmp-*")) if (folder / "out").exists() else []
    left += [p for p in (folder / "tmp").rglob("*") if p.is_file()] if (folder / "tmp").exists() else []
    left += [p for p in (folder / DB_NAME,) if Path(f"{p}.wal").exists()]
    return sorted(str(p.relative_to(folder)) for p in left)


def cached_requests(folder: Path) -> int:
    return _query(folder, "SELECT count(*) FROM llm_cache")[0][0]


def export_digest(folder: Path) -> str | None:
    path = folder / "out" / "samples.jsonl"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


# ---- one fault --------------------------------------------------------------------------------------
@dataclass
class FaultOutcome:
    fault: str
    killed_in_phase: bool  # the SIGKILL came while the phase ran (its work was not committed)
    recovered: bool  # the next `curation run` exited 0
    comparison: Comparison
    export_equal: bool
    paid_twice: int  # requests the server answered more than once (killed run + recovery)
    answers_lost: int  # answered before the kill but not in llm_cache after it
    temporaries: list[str]
    seconds: float
    contents: tuple[dict, dict] | None = None  # table_contents after the recovery (None when it failed)

    @property
    def ok(self) -> bool:
        return (
            self.killed_in_phase
            and self.recovered
            and self.comparison.equal
            and self.export_equal
            and not self.temporaries
        )


def reference_run(
    folder: Path, settings: FaultPipeline, llm_upstream: str, run: Callable[[Path, str], int] | None = None
) -> tuple[tuple[dict, dict], str | None, int]:
    """An uninterrupted run (`run`: `run_to_end` by default, a subprocess): its tables, its export
    digest and the requests its server answered."""
    with CountingProxy(llm_upstream) as proxy:
        write_pipeline(folder, settings, proxy.base_url)
        code = (run or _run_subprocess)(folder, "run.log")
        if code != 0:
            raise RuntimeError(f"the uninterrupted run failed (exit {code}); see {folder / 'run.log'}")
        return table_contents(folder), export_digest(folder), proxy.forwarded


def inject(
    folder: Path,
    settings: FaultPipeline,
    phase: Phase,
    llm_upstream: str,
    reference: tuple[dict, dict],
    reference_export: str | None,
    rerun: Callable[[Path, str], int] | None = None,
) -> FaultOutcome:
    """SIGKILL `curation run` (a subprocess) when `phase` is reached, then run it again (`rerun`:
    `run_to_end` by default, another subprocess; tests/test_faults.py reruns in its own process) and compare."""
    started = time.perf_counter()
    with CountingProxy(llm_upstream) as proxy:
        write_pipeline(folder, settings, proxy.base_url)
        process = start_run(folder, "killed.log")
        killed = kill_when(process, lambda: phase.reached(folder, proxy))
        killed_in_phase = killed and (folder / DB_NAME).exists() and not phase.committed(folder)
        answered_before = proxy.forwarded
        cached_before = cached_requests(folder) if (folder / DB_NAME).exists() else 0
        recovered = (rerun or _run_subprocess)(folder, "recovery.log") == 0
        contents = table_contents(folder) if recovered else None
        comparison = compare(reference, contents) if contents else Comparison(-1, -1, -1, float("inf"))
        paid_twice = proxy.forwarded - cached_requests(folder) if recovered else -1
    return FaultOutcome(
        phase.name,
        killed_in_phase,
        recovered,
        comparison,
        export_digest(folder) == reference_export,
        paid_twice,
        answered_before - cached_before,
        temporaries_left(folder),
        time.perf_counter() - started,
        contents,
    )


def run_twice_at_once(
    folder: Path, settings: FaultPipeline, llm_upstream: str, timeout_s: float = 600
) -> dict[str, Any]:
    """Two `curation run` of the same pipeline: the first run's LLM answers are held at the proxy
    until the second logs that it waits for the stage's lock (or sends requests itself, which
    a run without the lock does); then both finish. Returns counts for the table and the test."""
    with CountingProxy(llm_upstream) as proxy:
        write_pipeline(folder, settings, proxy.base_url)
        proxy.gate.clear()
        first = start_run(folder, "first.log")
        deadline = time.monotonic() + timeout_s
        while proxy.received == 0 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = start_run(folder, "second.log")
        waited = False
        while time.monotonic() < deadline and second.poll() is None:
            log = (folder / "second.log").read_text(errors="replace")
            if "judge: another run holds" in log:
                waited = True
                break
            if proxy.received > 2:  # more than the first run's max_concurrency: the second one computes too
                break
            time.sleep(0.1)
        proxy.gate.set()
        codes = [first.wait(timeout=timeout_s), second.wait(timeout=timeout_s)]
        judged = _query(folder, "SELECT count(*), count(DISTINCT sample_id) FROM alpagasus WHERE stage = 'judge'")[0]
        runs = _query(folder, "SELECT rows_in FROM stage_runs WHERE stage = 'judge' ORDER BY finished_at")
        return {
            "exit_codes": codes,
            "second_waited": waited,
            "rows": judged[0],
            "distinct_rows": judged[1],
            "judge_rows_in": [r[0] for r in runs],
            "requests_answered": proxy.forwarded,
            "requests_cached": cached_requests(folder),
            "temporaries": temporaries_left(folder),
        }


# ---- peak memory of a single huge line --------------------------------------------------------------
INGEST_PEAK = """
import sys
from pathlib import Path
from curation_assets.components.standalone import load_pipeline_file
from curation_assets.stages.core.runner import run_ingest
component = load_pipeline_file(Path(sys.argv[1]))
store = component.prepared_store()
for source in component.spec.sources:
    summary, result = run_ingest(source, pipeline=component.spec.name, base_dir=component.base_dir, store=store)
peak = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")][0]
print(result.records_read, result.rejected, int(peak.split()[1]) * 1024)
"""


def single_line_jsonl_peak_memory(
    folder: Path, line_bytes: int = 1_500_000_000, max_record_bytes: int = 16_000_000
) -> dict[str, float]:
    """Peak RSS (bytes) of ingesting a JSONL whose one line holds `line_bytes`, next to the same
    ingest of the file without that line. With `max_record_bytes`, the source reader skips the
    line unread, so the peak should grow by about `max_record_bytes` at most, not by the line."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    small = [json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"}) for i in range(100)]
    measured: dict[str, float] = {}
    for name, huge in (("without", False), ("with", True)):
        data = folder / f"{name}.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            handle.write("\n".join(small[:50]) + "\n")
            if huge:  # one record: {"instruction": "xxxx...", "output": "y"}
                handle.write('{"instruction": "')
                block = "x" * (1 << 24)
                remaining = line_bytes - 40
                while remaining > 0:
                    handle.write(block[: min(len(block), remaining)])
                    remaining -= len(block)
                handle.write('", "input": "", "output": "y"}\n')
            handle.write("\n".join(small[50:]) + "\n")
        defs = folder / f"{name}.yaml"
        defs.write_text(
            yaml.safe_dump(
                {
                    "type": "curation_assets.CurationPipeline",
                    "attributes": {
                        "name": "line",
                        "duckdb_path": f"{name}.duckdb",
                        "automation": {"condition": "none"},
                        "sources": [
                            {
                                "name": "pool",
                                "path": data.name,
                                "format": "alpaca",
                                "max_record_bytes": max_record_bytes,
                                "max_rejected_fraction": 0.5,
                            }
                        ],
                    },
                }
            )
        )
        out = subprocess.run(
            [sys.executable, "-c", INGEST_PEAK, str(defs)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            timeout=1800,
            check=False,
        )
        data.unlink()
        if out.returncode != 0:
            raise RuntimeError(f"ingest of the {name}-line file failed: {out.stderr[-2000:]}")
        records, rejected, peak = map(int, out.stdout.split()[-3:])
        measured[f"{name}_peak"] = peak
        measured[f"{name}_records"] = records
        measured[f"{name}_rejected"] = rejected
    measured["line_bytes"] = line_bytes
    measured["max_record_bytes"] = max_record_bytes
    return measured


# ---- the table ----------------------------------------------------------------------------------------
@dataclass
class FaultTable:
    title: str
    outcomes: list[FaultOutcome] = field(default_factory=list)
    concurrent: dict[str, Any] | None = None
    memory: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            f"## {self.title}",
            "",
            "| fault (SIGKILL of `curation run`) | faults injected | runs recovered | rows lost (goal 0) | "
            "requests paid twice (goal 0) | temporaries left | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for o in self.outcomes:
            recovered = int(o.recovered and o.comparison.equal and o.export_equal)
            lines.append(
                f"| {o.fault} | {int(o.killed_in_phase)} | {recovered} | {max(o.comparison.rows_lost, 0)} | "
                f"{o.paid_twice} | {len(o.temporaries)} | {o.seconds:.0f} |"
            )
        if self.concurrent is not None:
            c = self.concurrent
            twice = c["requests_answered"] - c["requests_cached"]
            ok = int(c["exit_codes"] == [0, 0] and c["rows"] == c["distinct_rows"])
            lines.append(
                f"| two `curation run` of one LLM stage at once (no kill) | 1 | {ok} | 0 | {twice} | "
                f"{len(c['temporaries'])} | - |"
            )
        if self.memory is not None:
            m = self.memory
            growth = m["with_peak"] - m["without_peak"]
            lines += [
                "",
                "| ingest of a JSONL with one huge line | peak RSS | goal | met |",
                "|---|---|---|---|",
                f"| without the line (baseline) | {m['without_peak'] / 1e6:.0f} MB | - | - |",
                f"| with one {m['line_bytes'] / 1e9:.1f} GB line | {m['with_peak'] / 1e6:.0f} MB "
                f"({growth / 1e6:+.0f} MB) | growth bounded by max_record_bytes "
                f"({m['max_record_bytes'] / 1e6:.0f} MB) x 3, not the line | "
                f"{'yes' if growth <= 3 * m['max_record_bytes'] else 'no'} |",
            ]
        lines += [""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)


def run(quick: bool) -> FaultTable:
    import tempfile

    from bench.common import progress
    from curation_assets.llm.local_server import LocalLLMServer, free_port
    from tests.support.models import build_tiny_causal_lm

    records, jvp_samples, llm_samples = (30_000, 600, 60) if quick else (200_000, 1_500, 300)
    table = FaultTable(
        f"Faults: SIGKILL of `curation run`, then `curation run` again ({records} records, "
        f"JVP on {jvp_samples}, AlpaGasus on {llm_samples} via llama.cpp)"
    )
    with tempfile.TemporaryDirectory(prefix="fault-bench-") as scratch:
        root = Path(scratch)
        settings = FaultPipeline(records, jvp_samples, llm_samples, build_tiny_causal_lm(root))
        server = LocalLLMServer(port=free_port(), n_ctx=2048, n_threads=2, log_file=root / "llama.log").start()
        try:
            progress("faults: uninterrupted reference run")
            reference, reference_export, answered = reference_run(root / "reference", settings, server.base_url)
            for i, phase in enumerate(phases(settings)):
                progress(f"faults: SIGKILL {phase.name}")
                table.outcomes.append(
                    inject(root / f"fault-{i}", settings, phase, server.base_url, reference, reference_export)
                )
            progress("faults: two runs at once")
            table.concurrent = run_twice_at_once(
                root / "concurrent",
                FaultPipeline(records // 10, 0, llm_samples, settings.jvp_model, stages=("judge",), export=False),
                server.base_url,
            )
        finally:
            server.stop()
        progress("faults: one 1.5 GB line")
        table.memory = single_line_jsonl_peak_memory(root / "line")
    from curation_assets.llm.cache import LLMCache

    flush = LLMCache.__init__.__kwdefaults__
    lost = [o for o in table.outcomes if o.answers_lost > 0]
    table.notes += [
        f"reference run: {answered} requests answered; every recovery is compared with it table by table (rows "
        "without timestamps; vectors within 1e-4) and by the export's bytes",
        "requests paid twice = requests the server answered (killed run + recovery) - distinct requests cached; "
        f"an LLM-stage kill loses the answers of the last cache flush interval (LLMCache: {flush['flush_every']} "
        f"answers or {flush['flush_after_s']:g} s) plus the requests in flight, so that row cannot reach 0: "
        + (
            ", ".join(f"{o.fault}: {o.answers_lost} answered but not yet written when killed" for o in lost)
            or "no answers were lost"
        ),
        "temporaries: staging folders (<db>.artifacts/.staging), part files, *.tmp, export temporaries, "
        "files in TMPDIR, a DuckDB .wal, after the recovery (Dagster's ephemeral instance of the killed run "
        "leaves an empty tmp* folder in TMPDIR; it holds no file)",
    ]
    if table.concurrent is not None:
        c = table.concurrent
        table.notes.append(
            f"two runs at once: second waited for the lock: {c['second_waited']}; judge rows "
            f"{c['rows']} ({c['distinct_rows']} distinct); runs of the stage computed "
            f"{c['judge_rows_in']} samples"
        )
    return table
