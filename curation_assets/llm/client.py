"""Async client for OpenAI-compatible chat endpoints: bounded concurrency, retries, cache.

Every request is looked up in `llm_cache` first; what is missing is sent with at most
`max_concurrency` in flight. 429, 408, 409, 5xx, timeouts, connection errors and malformed
responses are retried with exponential backoff and full jitter, honouring Retry-After.
401/403/404 stop the whole batch (LLMConfigError); other 4xx answers are permanent
failures of that one request (e.g. a prompt longer than the model's context).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import openai

from curation_assets.llm.cache import BackgroundFlush, ChatAnswer, LLMCache
from curation_assets.llm.endpoint import LLMConfigError, LLMEndpointSpec
from curation_assets.llm.spend import SpendGuard
from curation_assets.redact import MASK, redact_text

if TYPE_CHECKING:  # batch.py builds on this module
    from curation_assets.llm.batch import BatchRunner

_TRANSIENT_STATUS = {408, 409, 425, 429}
_CONFIG_STATUS = {401, 403, 404}
_RETRY_AFTER_CAP_S = 600.0


@dataclass(frozen=True)
class ChatRequest:
    """Messages and sampling parameters of one request. `attempt` (a re-ask after an
    unparseable answer) enters the cache key but is not sent; `sample_id` only labels failures."""

    messages: tuple[Mapping[str, str], ...]
    params: Mapping[str, Any]
    attempt: int = 0
    sample_id: str | None = None

    def payload(self, model: str) -> dict[str, Any]:
        return {"model": model, "messages": [dict(m) for m in self.messages], **self.params}

    def cache_key(self, model: str) -> tuple[str, str]:
        """(request hash, canonical request JSON)."""
        body = json.dumps(
            {**self.payload(model), "attempt": self.attempt}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(body.encode("utf-8")).hexdigest(), body


@dataclass(frozen=True)
class RequestFailure:
    """A request that got no usable answer: `permanent` ones (4xx) will fail again as sent."""

    error: str
    attempts: int
    permanent: bool


@dataclass
class UsageStats:
    """Counts for asset metadata and `stage_runs` (never the key or the prompts)."""

    model: str = ""  # the endpoint's model: Dagster's OpenAI integration keys usage by it
    requests: int = 0  # distinct requests asked for
    cache_hits: int = 0
    sent: int = 0  # HTTP requests made, retries included
    retries: int = 0
    failed: int = 0
    permanent_failures: int = 0
    calls: int = 0  # answers received from the server (not from the cache)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_seconds: float = 0.0  # sum of latencies of successful requests
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        # token usage under the keys of dagster-openai's `with_usage_metadata` (`openai.<model>.calls`,
        # `.prompt_tokens`, `.completion_tokens`, `.total_tokens`), which Dagster+ Insights aggregates
        usage = f"openai.{self.model}"
        return {
            "llm_requests": self.requests,
            "llm_cache_hits": self.cache_hits,
            "llm_http_requests": self.sent,
            "llm_retries": self.retries,
            "llm_failed": self.failed,
            "llm_permanent_failures": self.permanent_failures,
            f"{usage}.calls": self.calls,
            f"{usage}.prompt_tokens": self.prompt_tokens,
            f"{usage}.completion_tokens": self.completion_tokens,
            f"{usage}.total_tokens": self.prompt_tokens + self.completion_tokens,
            "llm_request_seconds": round(self.request_seconds, 3),
            "llm_errors": dict(self.errors),
        }


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Permanent(Exception):
    pass


class LLMClient:
    """Sends chat requests to one endpoint, through the cache."""

    def __init__(
        self,
        endpoint: LLMEndpointSpec,
        cache: LLMCache | None = None,
        *,
        pipeline: str = "",
        stage: str = "",
        log: Any = None,
        guard: SpendGuard | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.guard = guard  # when set, every batch is checked against the run's limits before it is sent
        self.cache = cache
        self.pipeline = pipeline
        self.stage = stage
        self.log = log
        self.stats = UsageStats(model=endpoint.model)
        # llm.mode: batch of a multi-round stage: each round's first asks go as one Batch job first
        self.batch_runner: BatchRunner | None = None
        self._key = ""  # the key in use, masked out of server messages

    def complete_all(self, requests: Sequence[ChatRequest]) -> list[ChatAnswer | RequestFailure]:
        """Answers in request order; identical requests are sent once."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._complete_all(requests))
        result: list[Any] = []  # inside a running loop (a notebook): use a thread of our own
        error: list[BaseException] = []

        def run() -> None:
            try:
                result.append(asyncio.run(self._complete_all(requests)))
            except BaseException as err:  # noqa: BLE001 - re-raised below
                error.append(err)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    async def _complete_all(self, requests: Sequence[ChatRequest]) -> list[ChatAnswer | RequestFailure]:
        model = self.endpoint.model
        keys = [r.cache_key(model) for r in requests]
        unique: dict[str, int] = {}
        for i, (request_hash, _) in enumerate(keys):
            unique.setdefault(request_hash, i)
        self.stats.requests += len(unique)
        found: dict[str, ChatAnswer | RequestFailure] = dict(self.cache.lookup(list(unique)) if self.cache else {})
        self.stats.cache_hits += len(found)
        missing = [i for h, i in unique.items() if h not in found]
        if missing:
            if self.guard is not None:  # raises SpendLimitExceeded, sending none of the batch
                self.guard.admit([requests[i] for i in missing])
            api_key = self.endpoint.api_key(self.stage)  # refuses plain http:// to another machine
            self._key = api_key
            semaphore = asyncio.Semaphore(self.endpoint.max_concurrency)
            # the Limits class of openai's own HTTP package (httpx2 for openai>=3, httpx before), not a guess
            limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=self.endpoint.max_concurrency)
            http_client = openai.DefaultAsyncHttpxClient(limits=limits)
            # answers are written by a worker thread: a DuckDB write never stalls requests in flight
            flusher = BackgroundFlush(self.cache, self.log) if self.cache is not None else None
            async with openai.AsyncOpenAI(
                base_url=self.endpoint.base_url,
                api_key=api_key,
                max_retries=0,
                timeout=self.endpoint.timeout_s,
                http_client=http_client,
            ) as client:
                try:
                    outcomes = await asyncio.gather(
                        *(self._send(client, semaphore, requests[i], *keys[i]) for i in missing)
                    )
                finally:
                    if flusher is not None:
                        await flusher.close()
            for i, outcome in zip(missing, outcomes):
                found[keys[i][0]] = outcome
        return [found[request_hash] for request_hash, _ in keys]

    async def _send(
        self,
        client: openai.AsyncOpenAI,
        semaphore: asyncio.Semaphore,
        request: ChatRequest,
        request_hash: str,
        request_json: str,
    ) -> ChatAnswer | RequestFailure:
        attempts = 0
        while True:
            attempts += 1
            try:
                async with semaphore:
                    self.stats.sent += 1
                    answer = await self._post(client, request)
            except _Permanent as err:
                return self._failed(request, request_hash, f"{err}", attempts, permanent=True)
            except _Transient as err:
                reason = str(err).split(":")[0]
                self.stats.errors[reason] = self.stats.errors.get(reason, 0) + 1
                if attempts > self.endpoint.max_retries:
                    return self._failed(request, request_hash, f"{err}", attempts, permanent=False)
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempts, err.retry_after))
                continue
            self.stats.calls += 1
            self.stats.prompt_tokens += answer.prompt_tokens or 0
            self.stats.completion_tokens += answer.completion_tokens or 0
            self.stats.request_seconds += answer.latency_s
            if self.cache is not None:
                self.cache.add(request_hash, self.endpoint.model, request_json, answer)
            return answer

    async def _post(self, client: openai.AsyncOpenAI, request: ChatRequest) -> ChatAnswer:
        payload = request.payload(self.endpoint.model)
        started = time.perf_counter()
        try:
            response = await client.chat.completions.create(**payload)
        except openai.APIStatusError as err:
            status = err.status_code
            if status in _CONFIG_STATUS:
                raise LLMConfigError(
                    f"{self.endpoint.display_url} answered HTTP {status} for model "
                    f"{self.endpoint.model!r}: {self._safe(err.message)}"
                ) from None
            if status in _TRANSIENT_STATUS or status >= 500:
                raise _Transient(f"HTTP {status}: {self._safe(err.message)}", _retry_after(err.response)) from err
            raise _Permanent(f"HTTP {status}: {self._safe(err.message)}") from err
        except openai.APITimeoutError as err:
            raise _Transient(f"timeout: no answer within {self.endpoint.timeout_s:g} s") from err
        except openai.APIConnectionError as err:
            raise _Transient(f"connection error: {self._safe(str(err.__cause__ or err))}") from err
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError, TypeError) as err:
            raise _Transient(f"malformed response: {self._safe(str(err))}") from err
        latency = time.perf_counter() - started
        try:
            choice = response.choices[0]
            text = choice.message.content
        except (AttributeError, IndexError, TypeError) as err:
            raise _Transient(f"malformed response: no choices[0].message ({self._safe(str(response))})") from err
        if not isinstance(text, str):
            raise _Transient("malformed response: choices[0].message.content is not text")
        usage = getattr(response, "usage", None)
        return ChatAnswer(
            text=text,
            finish_reason=getattr(choice, "finish_reason", None),
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            latency_s=latency,
        )

    def _failed(
        self, request: ChatRequest, request_hash: str, error: str, attempts: int, *, permanent: bool
    ) -> RequestFailure:
        self.stats.failed += 1
        self.stats.permanent_failures += permanent
        if self.cache is not None:
            self.cache.add_failure(self.pipeline, self.stage, request_hash, request.sample_id, error, attempts)
        if self.log is not None:
            self.log.warning(
                f"{self.stage}: request for sample {request.sample_id} failed after {attempts} attempt(s): {error}"
            )
        return RequestFailure(error=error, attempts=attempts, permanent=permanent)

    def _safe(self, text: str) -> str:
        """A server's message made fit to store and log: shortened, URLs redacted, the key masked
        (some servers echo the key they rejected)."""
        text = redact_text(str(text))
        if len(self._key) >= 8:
            text = text.replace(self._key, MASK)
        return _short(text)

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _RETRY_AFTER_CAP_S)
        ceiling = min(self.endpoint.backoff_max_s, self.endpoint.backoff_s * 2 ** (attempts - 1))
        return random.uniform(ceiling / 2, ceiling)


def _retry_after(response: Any) -> float | None:
    """Seconds from a Retry-After (seconds or HTTP date) or retry-after-ms header."""
    headers = getattr(response, "headers", None) or {}
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
