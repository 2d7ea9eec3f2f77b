"""The LLM cache is written by a worker thread: a DuckDB write waiting for another process's lock
never stalls the requests in flight (none times out and is paid twice), and answers reach the
store within `flush_after_s` even when no further answer arrives."""

import asyncio
import subprocess
import sys
import threading
import time

import pytest

from curation_assets.llm.cache import BackgroundFlush, ChatAnswer, LLMCache
from curation_assets.llm.client import ChatRequest, LLMClient, RequestFailure
from curation_assets.llm.endpoint import LLMEndpointSpec
from curation_assets.store import DuckDBStore
from tests.llm_server import FaultProxy, chat_json

# Another process opens the DuckDB file for writing (DuckDB allows one writer process) and
# holds it for `seconds`, or less when a line arrives on its stdin; it prints the monotonic clock
# (system-wide on Linux) when it got and gives up the lock.
HOLD_STORE = (
    "import duckdb, select, sys, time\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print(time.monotonic(), flush=True)\n"
    "select.select([sys.stdin], [], [], float(sys.argv[2]))\n"
    "print(time.monotonic(), flush=True)\n"
    "con.close()\n"
)


def hold_store(path, seconds: float) -> subprocess.Popen:
    """Holds the store `seconds`; writing a line to its stdin releases it earlier."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(path), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return process


def rows(store: DuckDBStore) -> int:
    with store.reader() as con:
        return con.execute("SELECT count(*) FROM llm_cache").fetchall()[0][0]


def answer(i: int) -> ChatAnswer:
    return ChatAnswer(text=f"answer {i}", finish_reason="stop", prompt_tokens=3, completion_tokens=2, latency_s=0.1)


@pytest.fixture()
def store(tmp_path):
    store = DuckDBStore(tmp_path / "llm.duckdb")
    store.ensure_schema()
    return store


def test_answers_are_written_within_flush_after_s_without_further_answers(store):
    cache = LLMCache(store, flush_every=100, flush_after_s=0.3)

    async def one_answer_then_quiet() -> int:
        flusher = BackgroundFlush(cache)
        cache.add("h0", "m", "{}", answer(0))  # far below flush_every: only the timer can write it
        deadline = time.monotonic() + 60
        while (written := rows(store)) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await flusher.close()
        return written

    assert asyncio.run(one_answer_then_quiet()) == 1


def test_a_write_refused_by_a_locked_store_is_kept_and_written_later(tmp_path):
    store = DuckDBStore(tmp_path / "llm.duckdb", lock_timeout_s=0.5)
    store.ensure_schema()
    cache = LLMCache(store, flush_every=1, flush_after_s=0.2)
    warnings: list[str] = []

    class Log:
        def warning(self, message: str) -> None:
            warnings.append(message)

    holder = hold_store(store.path, 60)  # released below, once a flush has failed
    holder.stdout.readline()  # the other process has the file

    async def answers_while_locked() -> None:
        flusher = BackgroundFlush(cache, Log())
        for i in range(3):
            cache.add(f"h{i}", "m", "{}", answer(i))
            await asyncio.sleep(0.3)
        deadline = time.monotonic() + 60
        while not warnings and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert warnings and "retrying" in warnings[0]  # the flush failed, the answers stayed buffered
        assert holder.poll() is None  # the other process still has the file
        holder.stdin.write("release\n")  # the other process lets go of the file
        holder.stdin.flush()
        holder.wait()
        await flusher.close()

    try:
        asyncio.run(answers_while_locked())
    finally:
        if holder.poll() is None:  # a failed assert above: do not leave it holding the file
            holder.kill()
            holder.wait()
    assert cache.pending == 0
    with store.reader() as con:
        assert sorted(r[0] for r in con.execute("SELECT request_hash FROM llm_cache").fetchall()) == ["h0", "h1", "h2"]


@pytest.mark.e2e
def test_a_cache_write_waiting_for_the_store_does_not_stall_requests(llm_server, store):
    n = 12
    requests = [
        ChatRequest(
            ({"role": "user", "content": f"r{i}: say a number"},),
            {"temperature": 0, "max_tokens": 3},
            sample_id=f"s{i}",
        )
        for i in range(n)
    ]
    cache = LLMCache(store, flush_every=2, flush_after_s=0.5)
    holder: dict[str, subprocess.Popen] = {}
    chat_json(llm_server.base_url, "warm up")  # the server's first answer is slow (model load)
    with FaultProxy(llm_server.base_url) as proxy:
        endpoint = LLMEndpointSpec(
            base_url=proxy.base_url,
            model="smollm2-135m-instruct",
            max_concurrency=2,
            timeout_s=5,
            max_retries=3,
            backoff_s=0.01,
            backoff_max_s=0.05,
        )

        def lock_the_store_once_requests_flow() -> None:  # after the cache lookup, which reads the store
            while proxy.script.received < 1:
                time.sleep(0.01)
            holder["process"] = process = hold_store(store.path, 15)
            # Release the store once the server has answered every request, not after the full 15 s
            # (complete_all itself returns only after the final write). A client stalled by the waiting
            # write cannot reach that before the 15 s are over: its remaining requests then arrive
            # after the release, and the asserts below fail as they did with a fixed 15 s hold.
            while proxy.script.forwarded < n and process.poll() is None:
                time.sleep(0.01)
            if process.poll() is None:
                process.stdin.write("release\n")
                process.stdin.flush()

        locker = threading.Thread(target=lock_the_store_once_requests_flow)
        locker.start()
        client = LLMClient(endpoint, cache)
        answers = client.complete_all(requests)
        locker.join()
        out, _ = holder["process"].communicate(timeout=60)
        locked_at, released_at = map(float, out.split())
        arrivals = proxy.request_times()
    assert all(not isinstance(a, RequestFailure) for a in answers)
    assert client.stats.retries == 0 and proxy.script.forwarded == n  # nothing timed out, nothing paid twice
    # every request reached the server while another process held the store: the writes waited
    # in their thread, the requests did not wait for them
    assert sum(locked_at < t for t in arrivals) >= n // 2
    assert max(arrivals) < released_at
    assert rows(store) == n and cache.pending == 0
