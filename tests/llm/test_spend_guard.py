"""The spend guard (issue #21): `llm.max_requests_per_run` / `max_cost_per_run` stop a run before
it sends what it may not, count only requests that are not in `llm_cache`, and hold as a ceiling
through re-asks and later rounds. A small real HTTP server counts what actually arrives."""

import hashlib
import http.server
import json
import math
import threading
from pathlib import Path

import dagster as dg
import pytest
import yaml

from curation_assets.components.standalone import load_pipeline_file, pipeline_definitions
from curation_assets.llm.client import ChatRequest
from curation_assets.llm.endpoint import LLMEndpointSpec
from curation_assets.llm.local_server import free_port
from curation_assets.llm.spend import SpendGuard, SpendLimitExceeded
from tests.support.pipelines import pipeline_document


class CountingServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 answering `answer`; keeps every body."""

    def __init__(self, answer: str = "Score: 4") -> None:
        self.answer = answer
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    server.bodies.append(body)
                # one answer per request text: generated samples (LIFT) get distinct ids
                tag = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:12]
                reply = json.dumps(
                    {
                        "id": "c",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": f"{server.answer}\n({tag})"},
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        # stop() waits for serve_forever's next poll: 0.05 s instead of the default 0.5 s
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def received(self) -> int:
        with self.lock:
            return len(self.bodies)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    counting = CountingServer()
    yield counting
    counting.stop()


def write_pool(path: Path, n: int) -> None:
    path.write_text(
        "".join(
            json.dumps({"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{i} plus {i} is {2 * i}."})
            + "\n"
            for i in range(n)
        )
    )


def run(tmp_path: Path, stage: dict) -> dg.ExecuteInProcessResult:
    document = pipeline_document("spend", [stage], automation={"condition": "none", "observe_sources_cron": None})
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(document))
    definitions = pipeline_definitions(load_pipeline_file(path))
    return dg.materialize(list(definitions.assets), raise_on_error=False)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(event.step_failure_data.error)


def judge(server: CountingServer, **llm) -> dict:
    return {
        "name": "judge",
        "kind": "alpagasus",
        "parse_retries": 0,
        "llm": {"base_url": server.base_url, "max_concurrency": 2, **llm},
    }


def expected_cost(bodies: list[dict], input_price: float, output_price: float) -> float:
    """The documented estimate, from what the server received: ceil(chars/4) + 4 per message, + 3,
    times the input price; max_tokens times the output price (prices per million tokens)."""
    total = 0.0
    for body in bodies:
        prompt = 3 + sum(math.ceil(len(m["content"]) / 4) + 4 for m in body["messages"])
        total += prompt * input_price + body["max_tokens"] * output_price
    return total / 1e6


def test_over_the_limit_nothing_is_sent_and_a_raised_limit_pays_only_what_is_not_cached(tmp_path, server):
    write_pool(tmp_path / "pool.jsonl", 4)
    assert run(tmp_path, judge(server, max_requests_per_run=4)).success
    assert server.received == 4

    write_pool(tmp_path / "pool.jsonl", 10)  # 6 new samples; the 4 judged ones are in llm_cache
    message = failure_message(run(tmp_path, judge(server, max_requests_per_run=5)))
    assert server.received == 4  # refused before a single request left
    assert "stage 'judge'" in message and "needs 6 LLM request(s) for 6 pending sample(s)" in message
    assert "llm.max_requests_per_run = 5" in message and "nothing was sent" in message

    assert run(tmp_path, judge(server, max_requests_per_run=6)).success
    assert server.received == 10  # exactly the 6 that were not cached


def test_cost_limit_from_prices_stops_before_sending(tmp_path, server):
    write_pool(tmp_path / "pool.jsonl", 5)
    prices = {"input_price_per_mtok": 2.5, "output_price_per_mtok": 10.0}
    reference = tmp_path / "reference"
    reference.mkdir()
    write_pool(reference / "pool.jsonl", 5)
    assert run(reference, judge(server, **prices)).success  # what the 5 requests are, as received
    cost = expected_cost(server.bodies, 2.5, 10.0)
    assert cost > 0

    message = failure_message(run(tmp_path, judge(server, **prices, max_cost_per_run=cost * 0.99)))
    assert server.received == 5  # nothing more arrived
    assert f"estimated cost {cost:.4f}" in message and "llm.max_cost_per_run" in message
    assert "characters/4" in message and "upper bound" in message
    assert run(tmp_path, judge(server, **prices, max_cost_per_run=cost * 1.01)).success
    assert server.received == 10


def test_re_asks_never_take_a_run_past_the_limit(tmp_path):
    unparseable = CountingServer(answer="I cannot rate this.")
    try:
        write_pool(tmp_path / "pool.jsonl", 3)
        stage = {**judge(unparseable, max_requests_per_run=5), "parse_retries": 2}
        message = failure_message(run(tmp_path, stage))
        assert unparseable.received == 3  # the 3 first asks fit; their 3 re-asks would make 6 > 5
        assert "would bring this run to 6" in message and "3 request(s) were sent" in message
    finally:
        unparseable.stop()


def test_later_rounds_are_counted_before_the_first_is_sent(tmp_path, server):
    write_pool(tmp_path / "pool.jsonl", 2)
    stage = {
        "name": "expand",
        "kind": "lift_expand",
        "rounds": 2,
        "llm": {"base_url": server.base_url, "max_requests_per_run": 7},
    }
    message = failure_message(run(tmp_path, stage))
    # per sample: round-1 rewrite, its answer, round-2 rewrite, its answer
    assert "needs 8 LLM request(s) for 2 pending sample(s), 6 of them following earlier answers" in message
    assert server.received == 0
    stage["llm"]["max_requests_per_run"] = 8
    assert run(tmp_path, stage).success
    assert server.received == 8


def test_shards_split_the_limit_and_cost_needs_prices():
    endpoint = LLMEndpointSpec(
        max_requests_per_run=10, input_price_per_mtok=1.0, output_price_per_mtok=2.0, max_cost_per_run=1.0
    )
    guard = SpendGuard(endpoint, "judge", shard=(1, 3))
    assert guard.max_requests == 4 and guard.max_cost == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="input_price_per_mtok and output_price_per_mtok"):
        LLMEndpointSpec(max_cost_per_run=1.0)
    assert LLMEndpointSpec().max_requests_per_run == 10_000
    assert SpendGuard(LLMEndpointSpec(max_requests_per_run=None), "judge").max_requests is None
    capped = SpendGuard(LLMEndpointSpec(max_requests_per_run=1), "judge")
    request = ChatRequest(({"role": "user", "content": "x" * 40},), {"max_tokens": 5})
    capped.admit([request])
    with pytest.raises(SpendLimitExceeded, match="would bring this run to 2"):
        capped.admit([request])
    assert capped.sent.requests == 1 and capped.sent.prompt_tokens == 3 + 10 + 4 and capped.sent.answer_tokens == 5


def test_the_limits_do_not_change_the_config_hash():
    from curation_assets.stages.llm_judges.alpagasus import AlpagasusSpec

    plain = AlpagasusSpec(name="judge", kind="alpagasus")
    capped = AlpagasusSpec(
        name="judge",
        kind="alpagasus",
        llm=LLMEndpointSpec(
            max_requests_per_run=3, input_price_per_mtok=1, output_price_per_mtok=1, max_cost_per_run=0.5
        ),
    )
    assert plain.hashed_config() == capped.hashed_config()
