"""A local OpenAI-compatible server (llama-cpp-python) for the packaged SmolLM2 or any GGUF.

Used by `curation llm-server`, `make demo` and the tests. llama-cpp-python[server] is an
optional extra (`pip install 'curation_assets[judge]'`; it compiles llama.cpp, ~6 min).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation_assets.llm.endpoint import LLMEndpointSpec

PACKAGED_ALIAS = "smollm2-135m-instruct"
DEFAULT_PORT = 8765


class LocalServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalLLMServer:
    """`python -m llama_cpp.server` on 127.0.0.1; start() waits until /v1/models answers."""

    model_path: Path | None = None  # default: the packaged SmolLM2-135M-Instruct GGUF
    port: int = DEFAULT_PORT
    alias: str = PACKAGED_ALIAS
    n_ctx: int = 4096
    n_threads: int = field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 8)))
    log_file: Path | None = None
    _process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def endpoint(self, **overrides: Any) -> LLMEndpointSpec:
        return LLMEndpointSpec(base_url=self.base_url, model=self.alias, **overrides)

    def start(self, timeout_s: float = 120.0) -> LocalLLMServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalServerError(
                "llama-cpp-python is not installed: `pip install 'curation_assets[judge]'` (or `make setup`) "
                "builds it (compiles llama.cpp, ~6 minutes)"
            )
        model = self.model_path or _packaged_gguf()
        if answers(self.base_url):
            raise LocalServerError(f"port {self.port} is already serving an API; stop it or pick another port")
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--model_alias",
            self.alias,
        ]
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LocalServerError(
                    f"llama_cpp.server exited with code {self._process.returncode} (command: {' '.join(command)})"
                )
            if answers(self.base_url):
                return self
            time.sleep(0.25)
        self.stop()
        raise LocalServerError(f"llama_cpp.server did not answer on {self.base_url} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


@contextlib.contextmanager
def serving(**kwargs: object) -> Iterator[LocalLLMServer]:
    server = LocalLLMServer(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def _packaged_gguf() -> Path:
    from curation_assets.models.causal_lm import packaged_gguf

    return packaged_gguf()


def answers(base_url: str) -> bool:
    """Whether an OpenAI-compatible API answers GET /models at `base_url`."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
