"""The `llm_cache` table: answers are looked up before sending and appended as they arrive.

Writes are buffered for at most `flush_every` answers or `flush_after_s` seconds, each flush a
short transaction, so a killed run loses at most one buffer and a re-run pays only for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from curation_assets.store import DuckDBStore
from curation_assets.store.sql_files import execute_sql_file, read_sql
from curation_assets.store.writes import utc_now

_ANSWER_SCHEMA = pa.schema([
    ("request_hash", pa.string()), ("model", pa.string()), ("request", pa.string()), ("response", pa.string()),
    ("finish_reason", pa.string()), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()),
    ("latency_s", pa.float64()), ("created_at", pa.timestamp("us")),
])
_FAILURE_SCHEMA = pa.schema([
    ("pipeline", pa.string()), ("stage", pa.string()), ("request_hash", pa.string()), ("sample_id", pa.string()),
    ("error", pa.string()), ("attempts", pa.int32()), ("failed_at", pa.timestamp("us")),
])


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

    def __init__(self, store: DuckDBStore, *, flush_every: int = 16, flush_after_s: float = 2.0) -> None:
        self.store = store
        self.flush_every = flush_every
        self.flush_after_s = flush_after_s
        self._answers: list[dict] = []
        self._failures: list[dict] = []
        self._last_flush = time.monotonic()

    def lookup(self, hashes: Sequence[str]) -> dict[str, ChatAnswer]:
        if not hashes:
            return {}
        with self.store.reader() as con:
            rows = con.execute(read_sql("reads/llm_cache_lookup.sql"), {"hashes": list(hashes)}).fetchall()
        return {h: ChatAnswer(text, reason, pt, ct, latency, cached=True) for h, text, reason, pt, ct, latency in rows}

    def add(self, request_hash: str, model: str, request_json: str, answer: ChatAnswer) -> None:
        self._answers.append({
            "request_hash": request_hash, "model": model, "request": request_json, "response": answer.text,
            "finish_reason": answer.finish_reason, "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens, "latency_s": answer.latency_s, "created_at": utc_now()})
        self._maybe_flush()

    def add_failure(self, pipeline: str, stage: str, request_hash: str, sample_id: str | None, error: str,
                    attempts: int) -> None:
        self._failures.append({"pipeline": pipeline, "stage": stage, "request_hash": request_hash,
                               "sample_id": sample_id, "error": error[:2000], "attempts": attempts,
                               "failed_at": utc_now()})
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= self.flush_after_s
        if len(self._answers) >= self.flush_every or due:
            self.flush()

    def flush(self) -> None:
        """Write buffered answers and failures in one short transaction."""
        self._last_flush = time.monotonic()
        if not self._answers and not self._failures:
            return
        answers = pa.Table.from_pylist(self._answers, schema=_ANSWER_SCHEMA)
        failures = pa.Table.from_pylist(self._failures, schema=_FAILURE_SCHEMA)
        with self.store.transaction() as con:
            if answers.num_rows:
                con.register("new_llm_answers", answers)
                execute_sql_file(con, "writes/llm_cache_insert.sql")
                con.unregister("new_llm_answers")
            if failures.num_rows:
                con.register("new_llm_failures", failures)
                execute_sql_file(con, "writes/llm_failures_insert.sql")
                con.unregister("new_llm_failures")
        self._answers.clear()
        self._failures.clear()
