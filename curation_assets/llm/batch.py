"""Batch mode of an LLM stage (YAML `llm: {mode: batch}`): requests go as OpenAI Batch jobs.

The Batch API (OpenAI's; LiteLLM's proxy serves it in front of vLLM) takes a JSONL file of request lines
`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}` and, within 24 h,
returns output lines `{"custom_id", "response": {"status_code", "body"}, "error"}` at about
half the price of chat requests and outside their rate limits. custom_id is the request's
`llm_cache` hash, so answers go straight into the same cache the synchronous mode fills.

Every batch is recorded in `llm_batches` the moment it is created; a run killed while it
waits polls the same batch on its next start (never submitting its requests again). Lines
that come back without an answer are not cached: the stage's synchronous path then sends them
(retried like any request). The spend guard admits a batch's requests before it is submitted.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from curation_assets.llm.cache import ChatAnswer
from curation_assets.llm.client import ChatRequest, LLMClient
from curation_assets.redact import MASK, redact_text
from curation_assets.store.sql_files import execute_sql_file, read_sql
from curation_assets.store.writes import utc_now

CHAT_URL = "/v1/chat/completions"
_DONE = {"completed", "expired", "cancelled"}  # ended with (maybe partial) output
_FAILED = {"failed"}  # rejected as a whole (validation): no output
_SUBMITTING = "submitting-"  # batch_id of a row written before the provider gave the batch its id
_TOKEN_KEY = "curation_submission"  # batch metadata key holding that row's token
_LIST_LIMIT = 1000  # newest batches searched for a token (a kill lands seconds after the create)


class LLMBatchPending(RuntimeError):
    """A batch is still running when `batch_timeout_seconds` ran out; the next run polls it again."""


class LLMBatchFailed(RuntimeError):
    """The provider rejected a batch as a whole (e.g. its model or endpoint does not take batches)."""


@dataclass(frozen=True)
class BatchKey:
    """Which stage run a batch belongs to: an open batch is resumed only by the same one."""

    pipeline: str
    stage: str
    config_hash: str
    shard: str = ""  # "index/count" of a sharded run


@dataclass
class BatchStats:
    batch_ids: list[str] = field(default_factory=list)
    submitted: int = 0  # batches created by this run
    resumed: int = 0  # batches of an earlier run polled by this one
    lines: int = 0  # requests sent in batches by this run
    answers: int = 0  # answers written to llm_cache
    failed_lines: int = 0  # lines without an answer (left to the synchronous path)

    def as_dict(self) -> dict[str, Any]:
        return {
            "llm_batches": list(self.batch_ids),
            "llm_batches_submitted": self.submitted,
            "llm_batches_resumed": self.resumed,
            "llm_batch_lines": self.lines,
            "llm_batch_answers": self.answers,
            "llm_batch_failed_lines": self.failed_lines,
        }


def request_line(request_hash: str, payload: dict[str, Any]) -> str:
    """One line of a batch input file."""
    return json.dumps(
        {"custom_id": request_hash, "method": "POST", "url": CHAT_URL, "body": payload},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def parse_output_line(line: dict[str, Any]) -> tuple[str, ChatAnswer | str]:
    """(custom_id, answer) of one output line, or (custom_id, why there is no answer)."""
    custom_id = str(line.get("custom_id"))
    response = line.get("response") or {}
    error = line.get("error")
    status = response.get("status_code")
    if error:
        return custom_id, f"batch line error: {error.get('message', error) if isinstance(error, dict) else error}"
    if status != 200:
        return custom_id, f"batch line HTTP {status}: {str(response.get('body'))[:300]}"
    body = response.get("body") or {}
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return custom_id, "malformed batch line: no choices[0].message"
    if not isinstance(text, str):
        return custom_id, "malformed batch line: choices[0].message.content is not text"
    usage = body.get("usage") or {}
    return custom_id, ChatAnswer(
        text=text,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        latency_s=0.0,  # a batch has no per-request latency
    )


class BatchRunner:
    """Answers requests through Batch jobs into `client.cache` (resuming recorded ones first)."""

    def __init__(self, client: LLMClient, key: BatchKey) -> None:
        if client.cache is None:
            raise ValueError("batch mode needs the llm_cache (answers are read back from it)")
        self.client, self.key, self.cache = client, key, client.cache
        self.endpoint = client.endpoint
        self.stats = BatchStats()
        self._api: openai.OpenAI | None = None
        self._secret = ""

    # ---- the whole run -------------------------------------------------------------------------

    def run(self, requests: Sequence[ChatRequest], *, only_asked: bool = False) -> BatchStats:
        """Resume this stage's open batches, then submit what is still not cached; wait for all.

        `only_asked` (one round of a multi-round stage): resume only the open batches holding some of
        `requests`; the others belong to a later round, which resumes them (see `settle`)."""
        model = self.endpoint.model
        wanted: dict[str, tuple[ChatRequest, str]] = {}
        for request in requests:
            request_hash, request_json = request.cache_key(model)
            wanted.setdefault(request_hash, (request, request_json))
        deadline = time.monotonic() + self.endpoint.batch_timeout_seconds
        self._resume(wanted, deadline, only_asked=only_asked)
        cached = set(self.cache.lookup(list(wanted)))
        missing = [h for h in wanted if h not in cached]
        if not missing:
            return self.stats
        if self.client.guard is not None:  # raises SpendLimitExceeded before anything is submitted
            self.client.guard.admit([wanted[h][0] for h in missing])
        size = self.endpoint.batch_max_requests
        submitted = [self._submit(missing[i : i + size], wanted) for i in range(0, len(missing), size)]
        for batch_id in submitted:
            self._finish(batch_id, wanted, deadline)
        return self.stats

    def settle(self) -> BatchStats:
        """Resume the open batches no round asked for (their samples went away, or the run ended
        before their round): their answers are paid for, so they are cached (see `_collect`)."""
        self._resume({}, time.monotonic() + self.endpoint.batch_timeout_seconds, only_asked=False)
        return self.stats

    def _resume(self, wanted: dict[str, tuple[ChatRequest, str]], deadline: float, *, only_asked: bool) -> None:
        for batch_id, hashes in self._open_batches():
            if only_asked and wanted.keys().isdisjoint(hashes):
                continue
            if batch_id.startswith(_SUBMITTING):
                found = self._find_created(batch_id.removeprefix(_SUBMITTING))
                if found is None:  # the provider never created it: its requests go again
                    self._mark(batch_id, "lost", "killed before the batch was created")
                    continue
                self._created(batch_id, found)
                batch_id = found
            self.stats.resumed += 1
            self._log(f"resuming batch {batch_id} ({len(hashes)} requests) submitted by an earlier run")
            self._finish(batch_id, wanted, deadline)

    # ---- one batch ----------------------------------------------------------------------------

    def _submit(self, hashes: list[str], wanted: dict[str, tuple[ChatRequest, str]]) -> str:
        model = self.endpoint.model
        text = "".join(request_line(h, wanted[h][0].payload(model)) + "\n" for h in hashes)
        api = self._client()
        uploaded = api.files.create(
            file=("requests.jsonl", io.BytesIO(text.encode("utf-8")), "application/jsonl"), purpose="batch"
        )
        # recorded before the batch is created: a kill while `create` is answered leaves a
        # 'submitting' row whose token the next run finds in the batch list (nothing is paid twice)
        token = uuid.uuid4().hex
        with self.cache.store.transaction() as con:
            execute_sql_file(
                con,
                "writes/llm_batch_insert.sql",
                {
                    **self._key_params(),
                    "batch_id": f"{_SUBMITTING}{token}",
                    "status": "submitting",
                    "model": model,
                    "input_file_id": uploaded.id,
                    "request_hashes": hashes,
                    "now": utc_now(),
                },
            )
        batch = api.batches.create(
            input_file_id=uploaded.id,
            endpoint=CHAT_URL,
            completion_window="24h",
            metadata={"curation_stage": self.key.stage[:500], _TOKEN_KEY: token},
        )
        self._created(f"{_SUBMITTING}{token}", batch.id)
        self.stats.submitted += 1
        self.stats.lines += len(hashes)
        self._log(f"submitted batch {batch.id} ({len(hashes)} requests)")
        return batch.id

    def _finish(self, batch_id: str, wanted: dict[str, tuple[ChatRequest, str]], deadline: float) -> None:
        """Poll until the batch ends, cache its answers, mark it downloaded (or failed)."""
        self.stats.batch_ids.append(batch_id)
        try:
            self._collect(batch_id, wanted, deadline)
        except openai.NotFoundError as err:
            # the server no longer knows the batch (or its output expired): its requests are not
            # answered anywhere, so they are submitted again below instead of failing every run
            self._mark(batch_id, "lost", f"not found: {self._safe(err.message)}")
            self._log(f"batch {batch_id} is unknown to {self.endpoint.display_url}; its requests go again", warn=True)

    def _collect(self, batch_id: str, wanted: dict[str, tuple[ChatRequest, str]], deadline: float) -> None:
        batch = self._poll(batch_id, deadline)
        if batch.status in _FAILED:
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            detail = "; ".join(self._safe(getattr(e, "message", "") or "") for e in errors) or "no reason given"
            self._mark(batch_id, "failed", f"{batch.status}: {detail}")
            raise LLMBatchFailed(
                f"stage {self.key.stage!r}: batch {batch_id} at {self.endpoint.display_url} failed: {detail}; "
                "nothing of it was answered (fix the cause, or use llm.mode: sync) and run the stage again"
            )
        lines = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = self._client().files.content(file_id).content
                lines.extend(json.loads(x) for x in content.decode("utf-8").splitlines() if x.strip())
        answered, problems = 0, []
        submitted: dict[str, str] | None = None
        for line in lines:
            custom_id, outcome = parse_output_line(line)
            if isinstance(outcome, str):
                problems.append(outcome)
                continue
            request_json = wanted[custom_id][1] if custom_id in wanted else None
            if request_json is None:
                # a request no round of this run asks (its sample went away; `settle`): paid for,
                # so cached under the request read back from the batch's input file
                submitted = self._submitted_requests(batch.input_file_id) if submitted is None else submitted
                request_json = submitted.get(custom_id)
                if request_json is None:
                    continue
            self.cache.add(custom_id, self.endpoint.model, request_json, outcome)
            self.client.stats.calls += 1
            self.client.stats.prompt_tokens += outcome.prompt_tokens or 0
            self.client.stats.completion_tokens += outcome.completion_tokens or 0
            answered += 1
        self.cache.flush()  # answers first, then the mark: a crash in between downloads again (free)
        self.stats.answers += answered
        self.stats.failed_lines += len(problems)
        if problems:
            self._log(
                f"batch {batch_id}: {len(problems)} line(s) without an answer (first: {self._safe(problems[0])}); "
                "they are sent as chat requests",
                warn=True,
            )
        self._mark(batch_id, "downloaded", f"{batch.status}: {answered} answers, {len(problems)} failed lines")

    def _submitted_requests(self, input_file_id: str | None) -> dict[str, str]:
        """custom_id -> canonical request JSON of a batch's input lines (what `ChatRequest.cache_key`
        hashes: a first ask, attempt 0); a line whose hash does not match its custom_id is left out."""
        if not input_file_id:
            return {}
        try:
            content = self._client().files.content(input_file_id).content
        except openai.APIError as err:  # a provider that keeps batch inputs to itself: those answers are dropped
            self._log(f"cannot read batch input file {input_file_id} ({self._safe(str(err))})", warn=True)
            return {}
        out = {}
        for text in content.decode("utf-8").splitlines():
            if not text.strip():
                continue
            line = json.loads(text)
            params = dict(line.get("body") or {})
            model, messages = params.pop("model", None), params.pop("messages", None)
            if not isinstance(model, str) or not isinstance(messages, list):
                continue
            request_hash, request_json = ChatRequest(tuple(messages), params).cache_key(model)
            if request_hash == line.get("custom_id"):
                out[request_hash] = request_json
        return out

    def _poll(self, batch_id: str, deadline: float) -> Any:
        api = self._client()
        while True:
            try:
                batch = api.batches.retrieve(batch_id)
            except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError) as err:
                batch = None  # the server is away for a moment: poll again
                self._log(f"batch {batch_id}: could not poll ({self._safe(str(err))}); trying again", warn=True)
            if batch is not None and (batch.status in _DONE or batch.status in _FAILED):
                return batch
            if time.monotonic() + self.endpoint.batch_poll_seconds > deadline:
                status = batch.status if batch is not None else "unknown"
                raise LLMBatchPending(
                    f"stage {self.key.stage!r}: batch {batch_id} is still {status} after "
                    f"llm.batch_timeout_seconds = {self.endpoint.batch_timeout_seconds:g}; its answers are not lost: "
                    "run the stage again to keep polling it (it is not submitted again)"
                )
            time.sleep(self.endpoint.batch_poll_seconds)

    # ---- state and plumbing -------------------------------------------------------------------

    def _created(self, row_id: str, batch_id: str) -> None:
        """The provider created the batch of the 'submitting' row `row_id`: record its id."""
        with self.cache.store.transaction() as con:
            execute_sql_file(con, "writes/llm_batch_created.sql", {"row_id": row_id, "batch_id": batch_id})

    def _find_created(self, token: str) -> str | None:
        """Id of the batch created with `token` in its metadata (among the newest), or None."""
        try:
            for seen, batch in enumerate(self._client().batches.list(limit=100)):
                if (batch.metadata or {}).get(_TOKEN_KEY) == token:
                    return batch.id
                if seen >= _LIST_LIMIT:
                    break
        except openai.NotFoundError:  # a server without the list: the batch may exist, so never guess
            raise LLMBatchFailed(
                f"stage {self.key.stage!r}: an earlier run was killed while creating a batch, and "
                f"{self.endpoint.display_url} does not list batches (GET /v1/batches) to find it; look for a batch "
                f"with metadata {_TOKEN_KEY} = {token}, then set that llm_batches row's batch_id to its id (or its "
                "status to 'lost' if there is none) and run the stage again"
            ) from None
        return None

    def _open_batches(self) -> list[tuple[str, list[str]]]:
        with self.cache.store.reader() as con:
            rows = con.execute(read_sql("reads/llm_batches_open.sql"), self._key_params()).fetchall()
        return [(batch_id, list(hashes)) for batch_id, hashes in rows]

    def _mark(self, batch_id: str, status: str, detail: str) -> None:
        with self.cache.store.transaction() as con:
            execute_sql_file(
                con,
                "writes/llm_batch_finish.sql",
                {"batch_id": batch_id, "status": status, "detail": detail[:2000], "now": utc_now()},
            )

    def _key_params(self) -> dict[str, Any]:
        k = self.key
        return {
            "pipeline": k.pipeline,
            "stage": k.stage,
            "config_hash": k.config_hash,
            "shard": k.shard,
            "base_url": self.endpoint.display_url,
        }

    def _client(self) -> openai.OpenAI:
        if self._api is None:
            self._secret = self.endpoint.api_key(self.key.stage)  # refuses plain http:// to another machine
            self._api = openai.OpenAI(
                base_url=self.endpoint.base_url,
                api_key=self._secret,
                max_retries=self.endpoint.max_retries,
                timeout=self.endpoint.timeout_s,
            )
        return self._api

    def _safe(self, text: str) -> str:
        text = redact_text(str(text))
        if len(self._secret) >= 8:
            text = text.replace(self._secret, MASK)
        return " ".join(text.split())[:300]

    def _log(self, message: str, *, warn: bool = False) -> None:
        if self.client.log is not None:
            (self.client.log.warning if warn else self.client.log.info)(f"{self.key.stage}: {message}")
