"""A small implementation of OpenAI's documented Files and Batches endpoints for tests.

No local server (llama.cpp, llama-cpp-python) serves /v1/files and /v1/batches, so this one does:
POST /v1/files (multipart upload), GET /v1/files/{id}/content, POST /v1/batches,
GET /v1/batches/{id} and GET /v1/batches (the list). A batch's lines are forwarded one by one, in a background thread, to a
real chat server's /chat/completions; output lines follow the documented format
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`.
`forwarded` counts the lines forwarded per custom_id (a line paid twice shows as 2);
`gate` holds every batch in_progress until set (to kill a client while it waits); the first
`fail_lines` lines get an error line instead of an answer. POST /v1/chat/completions is passed through (counted
in `chat_forwarded`), as OpenAI serves both at one base URL.
"""

from __future__ import annotations

import collections
import email.parser
import email.policy
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from curation_assets.llm.local_server import free_port


class BatchServer:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.forwarded: collections.Counter[str] = collections.Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.create_delay_s = 0.0  # POST /v1/batches creates the batch, then waits this long to answer
        self.chat_forwarded = 0  # synchronous chat requests passed through
        self.fail_lines = 0  # this many lines (the first ones) get an error line instead of being forwarded
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
                    content = server.contents.get(parts[2])
                    if content is None:
                        return self._json(404, {"error": {"message": f"no file {parts[2]}"}})
                    return self._reply(200, content, "application/octet-stream")
                if parts == ["v1", "batches"]:  # newest first, as OpenAI lists them
                    with server.lock:
                        data = json.loads(json.dumps(list(reversed(server.batches.values()))))
                    return self._json(200, {"object": "list", "data": data, "has_more": False})
                if parts[:2] == ["v1", "batches"] and len(parts) == 3:
                    with server.lock:
                        batch = server.batches.get(parts[2])
                        batch = None if batch is None else json.loads(json.dumps(batch))
                    if batch is None:
                        return self._json(404, {"error": {"message": f"no batch {parts[2]}"}})
                    return self._json(200, batch)
                self._json(404, {"error": {"message": f"unknown path {self.path}"}})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/files":
                    return self._json(200, server.upload(self.headers.get("Content-Type", ""), body))
                if path == "/v1/batches":
                    request = json.loads(body)
                    if request.get("input_file_id") not in server.contents:
                        return self._json(400, {"error": {"message": "unknown input_file_id"}})
                    batch = server.create_batch(request)
                    time.sleep(server.create_delay_s)  # created, not yet answered: a client may die now
                    return self._json(200, batch)
                if path == "/v1/chat/completions":  # the synchronous endpoint beside them, as on OpenAI
                    with server.lock:
                        server.chat_forwarded += 1
                    return self._json(*server._forward(path, json.loads(body)))
                self._json(404, {"error": {"message": f"unknown path {self.path}"}})

            def _json(self, status: int, payload: Any) -> None:
                self._reply(status, json.dumps(payload).encode(), "application/json")

            def _reply(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> BatchServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()

    # ---- files ------------------------------------------------------------------------------

    def upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body
        )
        fields: dict[str, Any] = {}
        for part in message.iter_parts() if message.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True))
        filename, content = fields["file"]
        purpose = fields["purpose"][1].decode()
        return self.add_file(filename or "upload.jsonl", content, purpose)

    def add_file(self, filename: str, content: bytes, purpose: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:16]}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        with self.lock:
            self.files[file_id], self.contents[file_id] = meta, content
        return meta

    # ---- batches ----------------------------------------------------------------------------

    def create_batch(self, request: dict[str, Any]) -> dict[str, Any]:
        lines = [json.loads(x) for x in self.contents[request["input_file_id"]].decode().splitlines() if x.strip()]
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:16]}",
            "object": "batch",
            "endpoint": request["endpoint"],
            "input_file_id": request["input_file_id"],
            "completion_window": request["completion_window"],
            "status": "in_progress",
            "created_at": int(time.time()),
            "in_progress_at": int(time.time()),
            "output_file_id": None,
            "error_file_id": None,
            "metadata": request.get("metadata"),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        }
        with self.lock:
            self.batches[batch["id"]] = batch
        threading.Thread(target=self._process, args=(batch["id"], lines), daemon=True).start()
        return batch

    def _process(self, batch_id: str, lines: list[dict[str, Any]]) -> None:
        self.gate.wait()
        outputs, errors = [], []
        for line in lines:
            custom_id = line["custom_id"]
            with self.lock:
                fail = self.fail_lines > 0
                self.fail_lines -= fail
            if fail:
                error = {"code": "server_error", "message": "injected line failure"}
                errors.append(
                    {"id": f"req_{uuid.uuid4().hex[:8]}", "custom_id": custom_id, "response": None, "error": error}
                )
                with self.lock:
                    self.batches[batch_id]["request_counts"]["failed"] += 1
                continue
            with self.lock:
                self.forwarded[custom_id] += 1
            status, body = self._forward(line["url"], line["body"])
            outputs.append(
                {
                    "id": f"req_{uuid.uuid4().hex[:8]}",
                    "custom_id": custom_id,
                    "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
                    "error": None,
                }
            )
            with self.lock:
                self.batches[batch_id]["request_counts"]["completed"] += 1
        output = self.add_file("output.jsonl", "".join(json.dumps(o) + "\n" for o in outputs).encode(), "batch_output")
        error_file = (
            self.add_file("errors.jsonl", "".join(json.dumps(e) + "\n" for e in errors).encode(), "batch_output")
            if errors
            else None
        )
        with self.lock:
            self.batches[batch_id].update(
                status="completed",
                completed_at=int(time.time()),
                output_file_id=output["id"],
                error_file_id=error_file["id"] if error_file else None,
            )

    def _forward(self, url: str, body: dict[str, Any]) -> tuple[int, Any]:
        path = url[len("/v1") :] if url.startswith("/v1") else url
        request = urllib.request.Request(
            self.upstream + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, {"error": {"message": err.read().decode(errors="replace")}}

    def wait_done(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(b["status"] == "completed" for b in self.batches.values()):
                    return
            time.sleep(0.1)
        raise TimeoutError("batches still running")
