"""A small implementation of OpenAI's documented Files and Batches endpoints for tests.

No local server (llama.cpp, llama-cpp-python) serves /v1/files and /v1/batches, so this one does:
POST /v1/files (multipart upload), GET /v1/files/{id}/content, POST /v1/batches,
GET /v1/batches/{id} and GET /v1/batches (the list). A batch's lines are forwarded one by one, in a background thread, to a
real chat server's /chat/completions; output lines follow the documented format
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`.
`forwarded` counts the lines forwarded per custom_id (a line paid twice shows as 2);
`gate` holds every batch (from the `gate_from`-th on) in_progress until set (to kill a client while it
waits); the first `fail_lines` lines get an error line instead of an answer. POST /v1/chat/completions is
passed through (counted in `chat_forwarded`), as OpenAI serves both at one base URL.
"""

from __future__ import annotations

import collections
import email.parser
import email.policy
import json
import threading
import time
import uuid
from typing import Any

from tests.support.http_server import LoopbackServer, QuietHandler, forward


class BatchServer(LoopbackServer):
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.forwarded: collections.Counter[str] = collections.Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.gate_from = 0  # batches created before this many others run without waiting for `gate`
        self.create_delay_s = 0.0  # POST /v1/batches creates the batch, then waits this long to answer
        self.chat_forwarded = 0  # synchronous chat requests passed through
        self.fail_lines = 0  # this many lines (the first ones) get an error line instead of being forwarded
        self.lock = threading.Lock()
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
                    content = server.contents.get(parts[2])
                    if content is None:
                        return self.reply_json(404, {"error": {"message": f"no file {parts[2]}"}})
                    return self.reply(200, content, "application/octet-stream")
                if parts == ["v1", "batches"]:  # newest first, as OpenAI lists them
                    with server.lock:
                        data = json.loads(json.dumps(list(reversed(server.batches.values()))))
                    return self.reply_json(200, {"object": "list", "data": data, "has_more": False})
                if parts[:2] == ["v1", "batches"] and len(parts) == 3:
                    with server.lock:
                        batch = server.batches.get(parts[2])
                        batch = None if batch is None else json.loads(json.dumps(batch))
                    if batch is None:
                        return self.reply_json(404, {"error": {"message": f"no batch {parts[2]}"}})
                    return self.reply_json(200, batch)
                self.reply_json(404, {"error": {"message": f"unknown path {self.path}"}})

            def do_POST(self) -> None:
                body = self.read_body()
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/files":
                    return self.reply_json(200, server.upload(self.headers.get("Content-Type", ""), body))
                if path == "/v1/batches":
                    request = json.loads(body)
                    if request.get("input_file_id") not in server.contents:
                        return self.reply_json(400, {"error": {"message": "unknown input_file_id"}})
                    batch = server.create_batch(request)
                    time.sleep(server.create_delay_s)  # created, not yet answered: a client may die now
                    return self.reply_json(200, batch)
                if path == "/v1/chat/completions":  # the synchronous endpoint beside them, as on OpenAI
                    with server.lock:
                        server.chat_forwarded += 1
                    return self.reply(*forward(server.upstream, path, body))
                self.reply_json(404, {"error": {"message": f"unknown path {self.path}"}})

        super().__init__(Handler)

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        super().__exit__(*exc)

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
            gated = len(self.batches) >= self.gate_from
            self.batches[batch["id"]] = batch
        threading.Thread(target=self._process, args=(batch["id"], lines, gated), daemon=True).start()
        return batch

    def _process(self, batch_id: str, lines: list[dict[str, Any]], gated: bool) -> None:
        if gated:
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
        status, payload = forward(self.upstream, url, json.dumps(body).encode())
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, {"error": {"message": payload.decode(errors="replace")}}

    def wait_done(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(b["status"] == "completed" for b in self.batches.values()):
                    return
            time.sleep(0.1)
        raise TimeoutError("batches still running")
