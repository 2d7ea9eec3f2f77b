"""The client against the real llama.cpp server, directly and behind a fault-injecting proxy."""

import pytest

from curation_assets.llm.cache import LLMCache
from curation_assets.llm.client import ChatRequest, LLMClient, RequestFailure
from curation_assets.llm.endpoint import LLMConfigError, LLMEndpointSpec
from curation_assets.stages.core.llm_stage import LLMRequestsFailed, ask_and_parse
from curation_assets.store import DuckDBStore
from tests.llm_server import FaultProxy

pytestmark = pytest.mark.e2e


def _requests(n, tag="q"):
    return [
        ChatRequest(
            ({"role": "user", "content": f"{tag} {i}: say a number"},),
            {"temperature": 0, "max_tokens": 3},
            sample_id=f"s{i}",
        )
        for i in range(n)
    ]


def _endpoint(base_url, **overrides):
    settings = {
        "base_url": base_url,
        "model": "smollm2-135m-instruct",
        "max_concurrency": 2,
        "timeout_s": 60,
        "max_retries": 5,
        "backoff_s": 0.01,
        "backoff_max_s": 0.05,
    }
    return LLMEndpointSpec(**{**settings, **overrides})


@pytest.fixture()
def store(tmp_path):
    store = DuckDBStore(tmp_path / "llm.duckdb")
    store.ensure_schema()
    return store


@pytest.fixture()
def proxy(llm_server):
    with FaultProxy(llm_server.base_url, stall_s=3) as proxy:
        yield proxy


def test_answers_are_cached_and_not_requested_again(proxy, store):
    requests = _requests(5) + _requests(1)  # the last repeats the first: sent once
    client = LLMClient(_endpoint(proxy.base_url), LLMCache(store))
    answers = client.complete_all(requests)
    assert all(not isinstance(a, RequestFailure) and a.text for a in answers)
    assert answers[5].text == answers[0].text
    assert (client.stats.requests, client.stats.sent, client.stats.cache_hits) == (5, 5, 0)
    assert proxy.script.forwarded == 5
    assert client.stats.completion_tokens > 0 and client.stats.prompt_tokens > 0

    again = LLMClient(_endpoint(proxy.base_url), LLMCache(store))
    cached = again.complete_all(requests)
    assert [a.text for a in cached] == [a.text for a in answers] and all(a.cached for a in cached)
    assert (again.stats.sent, again.stats.cache_hits, proxy.script.forwarded) == (0, 5, 5)
    with store.reader() as con:
        assert con.execute("SELECT count(*) FROM llm_cache").fetchall()[0][0] == 5


def test_429_waits_for_retry_after(proxy, store):
    proxy.script.faults.extend(["429"])
    client = LLMClient(_endpoint(proxy.base_url, max_concurrency=1), LLMCache(store))
    (answer,) = client.complete_all(_requests(1))
    assert not isinstance(answer, RequestFailure)
    first, second = proxy.request_times()
    assert second - first >= 0.95  # Retry-After: 1, although backoff_s is 0.01
    assert client.stats.retries == 1 and client.stats.errors == {"HTTP 429": 1}


def test_5xx_timeouts_malformed_and_dropped_connections_are_retried(proxy, store):
    proxy.script.faults.extend(["500", "timeout", "malformed", "drop", "503"])
    client = LLMClient(_endpoint(proxy.base_url, max_concurrency=1, timeout_s=1.5), LLMCache(store))
    (answer,) = client.complete_all(_requests(1))
    assert not isinstance(answer, RequestFailure) and answer.text
    assert client.stats.retries == 5 and client.stats.sent == 6
    assert client.stats.errors.get("HTTP 500") == 1 and client.stats.errors.get("HTTP 503") == 1
    assert client.stats.errors.get("timeout") == 1
    assert client.stats.errors.get("malformed response", 0) + client.stats.errors.get("connection error", 0) == 2


def test_exhausted_retries_are_recorded_and_fail_the_stage(proxy, store):
    proxy.script.faults.extend(["500", "500", "500"])
    proxy.script.match = "fail 0:"
    client = LLMClient(
        _endpoint(proxy.base_url, max_concurrency=1, max_retries=2), LLMCache(store), pipeline="p", stage="judge"
    )
    requests = _requests(3, tag="fail")
    with pytest.raises(LLMRequestsFailed, match="1 request"):
        ask_and_parse(client, requests, lambda text: text, parse_retries=0, retry_temperature=0.7)
    with store.reader() as con:
        failures = con.execute("SELECT stage, sample_id, attempts, error FROM llm_failures").fetchall()
        cached = con.execute("SELECT count(*) FROM llm_cache").fetchall()[0][0]
    assert failures == [("judge", "s0", 3, failures[0][3])] and "HTTP 500" in failures[0][3]
    assert cached == 2  # the other answers are kept: a re-run asks only for the failed one
    rerun = LLMClient(_endpoint(proxy.base_url), LLMCache(store))
    assert all(not isinstance(a, RequestFailure) for a in rerun.complete_all(requests))
    assert rerun.stats.sent == 1 and rerun.stats.cache_hits == 2


def test_400_is_a_permanent_failure_of_one_request(proxy, store):
    proxy.script.faults.extend(["400"])
    client = LLMClient(_endpoint(proxy.base_url, max_concurrency=1), LLMCache(store))
    first, second = client.complete_all(_requests(2, tag="perm"))
    assert isinstance(first, RequestFailure) and first.permanent and first.attempts == 1
    assert not isinstance(second, RequestFailure)


def test_unauthorised_stops_everything(proxy, store):
    proxy.script.faults.extend(["401"])
    client = LLMClient(_endpoint(proxy.base_url, max_concurrency=1), LLMCache(store))
    with pytest.raises(LLMConfigError, match="HTTP 401"):
        client.complete_all(_requests(2, tag="auth"))


def test_api_key_comes_from_the_environment_and_is_never_stored(proxy, store, monkeypatch):
    secret = "sk-test-" + "9" * 24
    endpoint = _endpoint(proxy.base_url, api_key_env="CURATION_TEST_KEY")
    with pytest.raises(LLMConfigError, match="CURATION_TEST_KEY"):
        LLMClient(endpoint, LLMCache(store)).complete_all(_requests(1, tag="key"))
    monkeypatch.setenv("CURATION_TEST_KEY", secret)
    client = LLMClient(endpoint, LLMCache(store))
    assert not isinstance(client.complete_all(_requests(1, tag="key"))[0], RequestFailure)
    assert secret not in endpoint.model_dump_json()
    with store.reader() as con:
        dumped = str(con.execute("SELECT * FROM llm_cache").fetchall())
    assert secret not in dumped


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_bounded(proxy, store, concurrency):
    client = LLMClient(_endpoint(proxy.base_url, max_concurrency=concurrency), LLMCache(store))
    answers = client.complete_all(_requests(8, tag=f"conc{concurrency}"))
    assert all(not isinstance(a, RequestFailure) for a in answers)
    assert proxy.script.max_in_flight == concurrency
