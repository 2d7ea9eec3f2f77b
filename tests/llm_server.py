"""The real local LLM server for tests (llama-cpp-python serving the packaged SmolLM2), and a
fault-injecting HTTP proxy to put in front of it."""

from __future__ import annotations

import collections
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from curation_assets.llm.local_server import LocalLLMServer, free_port


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


class FaultProxy:
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

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
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
                    self._reply(429, b'{"error": {"message": "rate limited"}}',
                                {"Retry-After": "1" if fault == "429" else "3"})
                elif fault in ("500", "503", "400", "401", "404"):
                    self._reply(int(fault), b'{"error": {"message": "injected fault"}}')
                elif fault == "timeout":
                    time.sleep(proxy.stall_s)
                    self.close_connection = True
                elif fault == "malformed":
                    self._reply(200, b'{"id": "x", "choices": [ {"message": ')
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                else:
                    raise ValueError(f"unknown fault {fault!r}")

            def _forward(self, body: bytes | None) -> None:
                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                request = urllib.request.Request(proxy.upstream + path, data=body, method=self.command,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=600) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as err:
                    status, payload = err.code, err.read()
                except (urllib.error.URLError, OSError) as err:  # upstream down: a gateway error
                    status, payload = 502, json.dumps({"error": {"message": f"upstream: {err}"}}).encode()
                if body is not None:
                    with proxy.script.lock:
                        proxy.script.forwarded += 1
                self._reply(status, payload)

            def _reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def request_times(self) -> list[float]:
        return list(self._times)


def chat_json(base_url: str, content: str, max_tokens: int = 4) -> dict:
    """One direct chat request (to check the server independently of our client)."""
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": content}],
                       "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())
