"""Loopback HTTP servers for tests and benches: a threaded server on a free 127.0.0.1 port, a quiet
handler base with reply helpers, and forwarding to an upstream OpenAI-compatible server (the fault proxy,
the Batch API server and the bench's counting proxy are built on them)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request
from typing import Any, TypeVar

from curation_assets.llm.local_server import free_port


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler that logs nothing, with reply helpers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def reply(
        self,
        status: int,
        payload: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def reply_json(self, status: int, payload: Any) -> None:
        self.reply(status, json.dumps(payload).encode())


S = TypeVar("S", bound="LoopbackServer")


class LoopbackServer:
    """Serves `handler` on 127.0.0.1 at a free port, in a daemon thread, from `__enter__` to `__exit__`."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        # shutdown() waits for serve_forever's next poll: 0.05 s instead of the default 0.5 s per server
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (…/v1) of this server."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self: S) -> S:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def forward(upstream: str, path: str, body: bytes | None, method: str = "POST") -> tuple[int, bytes]:
    """Send `body` to `upstream` (a /v1 base URL) at `path` (with or without its /v1 prefix); an
    unreachable upstream answers 502, as a gateway would."""
    path = path[len("/v1") :] if path.startswith("/v1") else path
    request = urllib.request.Request(
        upstream.rstrip("/") + path, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError) as err:
        return 502, json.dumps({"error": {"message": f"upstream: {err}"}}).encode()
