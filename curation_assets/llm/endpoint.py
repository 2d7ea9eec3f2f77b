"""Where an LLM stage sends its requests: an OpenAI-compatible chat endpoint (YAML `llm:`)."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import Field

from curation_assets.specs import SpecModel

DEFAULT_LOCAL_BASE_URL = "http://127.0.0.1:8765/v1"


class LLMEndpointSpec(SpecModel):
    """An OpenAI-compatible server (OpenAI, vLLM, llama.cpp, ...). The API key is read from the
    environment variable named by `api_key_env` at run time; it is never part of the config."""

    base_url: str = Field(DEFAULT_LOCAL_BASE_URL, description=(
        "Base URL of the OpenAI-compatible API (ends in /v1). Default: the packaged SmolLM2 served by "
        "`curation llm-server` on 127.0.0.1:8765."))
    model: str = Field("smollm2-135m-instruct", description="Model name sent with each request.")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description=(
        "Name of the environment variable holding the API key (e.g. OPENAI_API_KEY); unset for local servers."))
    max_concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(5, ge=0, le=20, description=(
        "Retries of a request after 429/5xx/timeouts/connection errors/malformed responses "
        "(exponential backoff with jitter; Retry-After honoured)."))
    backoff_s: float = Field(1.0, gt=0, description="First retry delay; doubles per retry, up to `backoff_max_s`.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest delay between retries (Retry-After may ask more).")

    def api_key(self) -> str:
        """The key from the environment; local servers without a key get a placeholder."""
        if self.api_key_env is None:
            return "no-key"
        value = os.environ.get(self.api_key_env)
        if not value:
            raise LLMConfigError(f"environment variable {self.api_key_env} (llm.api_key_env) is not set")
        return value

    def pool_name(self) -> str:
        """Dagster pool of this endpoint: stages sharing a server take turns."""
        slug = re.sub(r"[^a-z0-9]+", "_", self.base_url.lower().split("://", 1)[-1]).strip("_")
        return f"llm_{slug}"[:100]

    def hashed_config(self) -> dict[str, Any]:
        """Only the model changes answers; where it is served and how fast do not."""
        return {"model": self.model}


class LLMConfigError(RuntimeError):
    """The endpoint cannot be used at all (no key, unknown model, unauthorised): stop at once."""
