"""LLM judge client throughput against the real llama.cpp server (packaged SmolLM2-135M).

Baseline: the server's own saturated throughput, measured in the same run with a bare
client (urllib in 8 threads, no cache, no retries). Ours: `LLMClient` with its DuckDB cache
at concurrency 1, 2, 4, 8 on fresh requests of the same shape. Then a fully cached re-run.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import BenchResult
from curation_assets.llm.cache import LLMCache
from curation_assets.llm.client import ChatRequest, LLMClient
from curation_assets.llm.local_server import LocalLLMServer, free_port
from curation_assets.store import DuckDBStore

PARAMS = {"temperature": 0, "max_tokens": 8}


def _content(tag: str, i: int) -> str:
    return f"[{tag}-{i:04d}] In one word, which colour is the sky on a clear day?"


def _bare(base_url: str, tag: str, n: int, workers: int = 8) -> float:
    def post(i: int) -> None:
        body = json.dumps(
            {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": _content(tag, i)}], **PARAMS}
        )
        request = urllib.request.Request(
            f"{base_url}/chat/completions", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            json.loads(response.read())

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, range(n)))
    return n / (time.perf_counter() - started)


def run(quick: bool) -> BenchResult:
    n = 40 if quick else 120
    result = BenchResult(f"LLM judge client, {n} chat requests (max_tokens 8), llama.cpp server + SmolLM2-135M")
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalLLMServer(port=free_port(), n_ctx=2048, log_file=Path(tmp) / "server.log").start()
        try:
            _bare(server.base_url, "warm", 4)
            saturated = max(_bare(server.base_url, "bare-a", n), _bare(server.base_url, "bare-b", n))
            serial = _bare(server.base_url, "bare-serial", n, workers=1)
            store = DuckDBStore(Path(tmp) / "bench.duckdb")
            store.ensure_schema()
            endpoint = server.endpoint()
            # warm-up as for the bare client: the first call imports the OpenAI SDK and opens DuckDB
            LLMClient(endpoint, LLMCache(store)).complete_all(
                [ChatRequest(({"role": "user", "content": _content("warm-ours", i)},), PARAMS) for i in range(4)]
            )
            for concurrency in (1, 2, 4, 8):
                client = LLMClient(endpoint.model_copy(update={"max_concurrency": concurrency}), LLMCache(store))
                requests = [
                    ChatRequest(({"role": "user", "content": _content(f"c{concurrency}", i)},), PARAMS)
                    for i in range(n)
                ]
                started = time.perf_counter()
                client.complete_all(requests)
                seconds = time.perf_counter() - started
                ours = n / seconds
                result.add(
                    f"requests/s at concurrency {concurrency} vs saturated server",
                    saturated,
                    ours,
                    "req/s",
                    ">= 0.9 of saturated",
                    ours >= 0.9 * saturated,
                    higher_is_better=True,
                )
                if concurrency == 1:
                    result.add(
                        "requests/s at concurrency 1 vs bare client, 1 thread",
                        serial,
                        ours,
                        "req/s",
                        ">= 0.95 (client overhead <= 5%)",
                        ours >= 0.95 * serial,
                        higher_is_better=True,
                    )
                if concurrency == 4:
                    first_s, cached_requests = seconds, requests
            again = LLMClient(endpoint.model_copy(update={"max_concurrency": 4}), LLMCache(store))
            started = time.perf_counter()
            again.complete_all(cached_requests)
            rerun_s = time.perf_counter() - started
        finally:
            server.stop()
    result.add(
        "fully cached re-run vs first run (concurrency 4)",
        first_s,
        rerun_s,
        "s",
        "0 requests and < 2% of the first run's time (ratio > 50)",
        again.stats.sent == 0 and rerun_s < 0.02 * first_s,
    )
    result.notes.append(
        f"the cached re-run sent {again.stats.sent} HTTP requests ({again.stats.cache_hits} cache hits)"
    )
    result.notes.append(
        "llama-cpp-python's server answers one request at a time: with one request in flight "
        "it idles between requests (compare the bare client with 1 thread), from about 4 in "
        "flight it stays busy. Remote endpoints (vLLM, OpenAI) gain far more from concurrency."
    )
    return result
