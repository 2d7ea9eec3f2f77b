"""The `llm_cache` table: answers are looked up before sending and appended as they arrive.

Answers are buffered and written by a worker thread (`BackgroundFlush`) whenever
`flush_every` have arrived, and at least every `flush_after_s` seconds while any wait, each
flush a short transaction. The event loop never waits for DuckDB (a write waiting for another
process's lock would stall every request in flight until it timed out and was paid again),
and a run killed with SIGKILL loses only the answers not yet written: those of the last
flush interval (plus the batch being written, when the kill lands during its transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curation_assets.store import Store
from curation_assets.store.sql_files import execute_sql_file, read_sql
from curation_assets.store.writes import utc_now

_ANSWER_SCHEMA = pa.schema(
    [
        ("request_hash", pa.string()),
        ("model", pa.string()),
        ("request", pa.string()),
        ("response", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("latency_s", pa.float64()),
        ("created_at", pa.timestamp("us")),
    ]
)
_FAILURE_SCHEMA = pa.schema(
    [
        ("pipeline", pa.string()),
        ("stage", pa.string()),
        ("request_hash", pa.string()),
        ("sample_id", pa.string()),
        ("error", pa.string()),
        ("attempts", pa.int32()),
        ("failed_at", pa.timestamp("us")),
    ]
)


@dataclass(frozen=True)
class ChatAnswer:
    """One assistant answer, fresh or from the cache."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    cached: bool = False


class LLMCache:
    """Request hash -> answer, persisted in the pipeline's DuckDB file."""

    def __init__(self, store: Store, *, flush_every: int = 16, flush_after_s: float = 0.5) -> None:
        self.store = store
        self.flush_every = flush_every
        self.flush_after_s = flush_after_s
        self._answers: list[dict] = []
        self._failures: list[dict] = []
        self._last_flush = time.monotonic()
        self._buffer_lock = threading.Lock()  # add() runs on the event loop, flush() in a worker thread
        self._flush_lock = threading.Lock()  # one flush at a time, in buffer order
        self.on_due: Callable[[], object] | None = None  # set by BackgroundFlush: wake the flusher

    def lookup(self, hashes: Sequence[str]) -> dict[str, ChatAnswer]:
        if not hashes:
            return {}
        with self.store.reader() as con:
            rows = con.execute(read_sql("reads/llm_cache_lookup.sql"), {"hashes": list(hashes)}).fetchall()
        return {h: ChatAnswer(text, reason, pt, ct, latency, cached=True) for h, text, reason, pt, ct, latency in rows}

    def add(self, request_hash: str, model: str, request_json: str, answer: ChatAnswer) -> None:
        """Buffer an answer; written by the next flush (a BackgroundFlush, or `flush()` when called)."""
        with self._buffer_lock:
            self._answers.append(
                {
                    "request_hash": request_hash,
                    "model": model,
                    "request": request_json,
                    "response": answer.text,
                    "finish_reason": answer.finish_reason,
                    "prompt_tokens": answer.prompt_tokens,
                    "completion_tokens": answer.completion_tokens,
                    "latency_s": answer.latency_s,
                    "created_at": utc_now(),
                }
            )
        self._notify()

    def add_failure(
        self, pipeline: str, stage: str, request_hash: str, sample_id: str | None, error: str, attempts: int
    ) -> None:
        with self._buffer_lock:
            self._failures.append(
                {
                    "pipeline": pipeline,
                    "stage": stage,
                    "request_hash": request_hash,
                    "sample_id": sample_id,
                    "error": error[:2000],
                    "attempts": attempts,
                    "failed_at": utc_now(),
                }
            )
        self._notify()

    @property
    def pending(self) -> int:
        """Answers and failures buffered, not yet written."""
        with self._buffer_lock:
            return len(self._answers) + len(self._failures)

    def _notify(self) -> None:
        if self.on_due is not None and self.pending >= self.flush_every:
            self.on_due()

    def flush(self) -> None:
        """Write buffered answers and failures in one short transaction (blocking: call it from a
        worker thread while requests are in flight). What a failed write took is buffered again."""
        with self._flush_lock:
            with self._buffer_lock:
                answers_rows, failures_rows = self._answers, self._failures
                self._answers, self._failures = [], []
                self._last_flush = time.monotonic()
            if not answers_rows and not failures_rows:
                return
            try:
                self._write(
                    pa.Table.from_pylist(answers_rows, schema=_ANSWER_SCHEMA),
                    pa.Table.from_pylist(failures_rows, schema=_FAILURE_SCHEMA),
                )
            except BaseException:
                with self._buffer_lock:  # keep them for the next flush, in arrival order
                    self._answers[:0] = answers_rows
                    self._failures[:0] = failures_rows
                raise

    def _write(self, answers: pa.Table, failures: pa.Table) -> None:
        with self.store.transaction() as con:
            if answers.num_rows:
                con.register("new_llm_answers", answers)
                execute_sql_file(con, "writes/llm_cache_insert.sql")
                con.unregister("new_llm_answers")
            if failures.num_rows:
                con.register("new_llm_failures", failures)
                execute_sql_file(con, "writes/llm_failures_insert.sql")
                con.unregister("new_llm_failures")


class BackgroundFlush:
    """Flushes an LLMCache from a worker thread while the event loop keeps sending: when
    `flush_every` answers are buffered, and every `flush_after_s` seconds while any are.

    Use inside a running event loop: `flusher = BackgroundFlush(cache)`, then `await flusher.close()`
    (a last flush; raises if the cache cannot be written)."""

    def __init__(self, cache: LLMCache, log: Any = None) -> None:
        self.cache, self.log = cache, log
        self._wake = asyncio.Event()
        self._closing = False
        loop = asyncio.get_running_loop()
        cache.on_due = lambda: loop.call_soon_threadsafe(self._wake.set)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.cache.flush_after_s)
            self._wake.clear()
            if self._closing or not self.cache.pending:
                continue
            try:
                await asyncio.to_thread(self.cache.flush)
            except Exception as err:  # noqa: BLE001 - kept buffered; close() retries and raises
                if self.log is not None:
                    self.log.warning(
                        f"llm_cache: could not write {self.cache.pending} answers yet "
                        f"({type(err).__name__}: {err}); retrying"
                    )

    async def close(self) -> None:
        """Stop the flusher and write what is left (in a worker thread)."""
        self._closing = True
        self._wake.set()
        await self._task
        self.cache.on_due = None
        await asyncio.to_thread(self.cache.flush)
