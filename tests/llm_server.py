"""The real local LLM server for tests (llama-cpp-python serving the packaged SmolLM2), and a
fault-injecting HTTP proxy to put in front of it."""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from curation_assets.llm.local_server import LocalLLMServer, free_port
from tests.support.http_server import LoopbackServer, QuietHandler, forward


def start_server(tmp_dir) -> LocalLLMServer:
    return LocalLLMServer(port=free_port(), n_ctx=2048, n_threads=2, log_file=tmp_dir / "llama_server.log").start()


@dataclass
class FaultScript:
    """Faults served to the next POST requests, in order; then requests pass through."""

    faults: collections.deque = field(default_factory=collections.deque)
    match: str | None = None  # when set, faults go only to requests whose body contains it
    received: int = 0
    forwarded: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, body: bytes) -> str | None:
        with self.lock:
            self.received += 1
            if self.match is not None and self.match.encode() not in body:
                return None
            return self.faults.popleft() if self.faults else None


class FaultProxy(LoopbackServer):
    """HTTP proxy on 127.0.0.1 forwarding to `upstream` (an /v1 base URL) unless a fault is due.

    Faults: "429" (Retry-After: 1), "429-slow" (Retry-After: 3), "500", "503", "400",
    "timeout" (no answer for `stall_s`), "malformed" (200 with a body that is not JSON),
    "drop" (close the connection without answering).
    """

    def __init__(self, upstream: str, stall_s: float = 5.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.stall_s = stall_s
        self.script = FaultScript()
        self.retry_after_seen: list[float] = []
        self._times: list[float] = []
        proxy = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                body = self.read_body()
                proxy._times.append(time.monotonic())
                fault = proxy.script.next_fault(body)
                if fault is None:
                    with proxy.script.lock:
                        proxy.script.in_flight += 1
                        proxy.script.max_in_flight = max(proxy.script.max_in_flight, proxy.script.in_flight)
                    try:
                        self._forward(body)
                    finally:
                        with proxy.script.lock:
                            proxy.script.in_flight -= 1
                elif fault in ("429", "429-slow"):
                    self.reply(
                        429,
                        b'{"error": {"message": "rate limited"}}',
                        headers={"Retry-After": "1" if fault == "429" else "3"},
                    )
                elif fault in ("500", "503", "400", "401", "404"):
                    self.reply(int(fault), b'{"error": {"message": "injected fault"}}')
                elif fault == "timeout":
                    time.sleep(proxy.stall_s)
                    self.close_connection = True
                elif fault == "malformed":
                    self.reply(200, b'{"id": "x", "choices": [ {"message": ')
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                else:
                    raise ValueError(f"unknown fault {fault!r}")

            def _forward(self, body: bytes | None) -> None:
                status, payload = forward(proxy.upstream, self.path, body, self.command)
                if body is not None:
                    with proxy.script.lock:
                        proxy.script.forwarded += 1
                self.reply(status, payload)

        super().__init__(Handler)

    def request_times(self) -> list[float]:
        return list(self._times)


def chat_json(base_url: str, content: str, max_tokens: int = 4) -> dict:
    """One direct chat request (to check the server independently of our client)."""
    body = json.dumps(
        {"model": "x", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0}
    ).encode()
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())
