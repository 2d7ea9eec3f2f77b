"""Where an LLM stage sends its requests: an OpenAI-compatible chat endpoint (YAML `llm:`)."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from curation_assets.redact import looks_like_secret, redact_url
from curation_assets.specs import SpecModel

DEFAULT_LOCAL_BASE_URL = "http://127.0.0.1:8765/v1"
# a hosted API's run stops here unless the YAML says otherwise (at ~1k tokens a request, a few to
# tens of dollars on a frontier model); a large local pool raises it or sets null
DEFAULT_MAX_REQUESTS = 10_000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LLMEndpointSpec(SpecModel):
    """An OpenAI-compatible server (OpenAI, vLLM, llama.cpp, ...). The API key is read from the
    environment variable named by `api_key_env` at run time; it is never part of the config.

    Validation errors never repeat a value of this block (it may hold a pasted key or a URL with
    credentials); `display_url` is the base URL with user, password and query string masked."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str = Field(
        default=DEFAULT_LOCAL_BASE_URL,
        description=(
            "Base URL of the OpenAI-compatible API (ends in /v1). Default: the packaged SmolLM2 served by "
            "`curation llm-server` on 127.0.0.1:8765."
        ),
    )
    model: str = Field(default="smollm2-135m-instruct", description="Model name sent with each request.")
    # No `pattern` here: dg's JSON-schema check would print the offending value; the validator below does not.
    api_key_env: str | None = Field(
        default=None,
        description=(
            "Name of the environment variable holding the API key (e.g. OPENAI_API_KEY); unset for local servers. "
            "The key is refused over plain http:// to a host other than this machine (loopback)."
        ),
    )
    max_concurrency: int = Field(default=4, ge=1, le=256, description="Requests in flight at once.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(
        default=5,
        ge=0,
        le=20,
        description=(
            "Retries of a request after 429/5xx/timeouts/connection errors/malformed responses "
            "(exponential backoff with jitter; Retry-After honoured)."
        ),
    )
    backoff_s: float = Field(
        default=1.0, gt=0, description="First retry delay; doubles per retry, up to `backoff_max_s`."
    )
    backoff_max_s: float = Field(
        default=30.0, gt=0, description="Longest delay between retries (Retry-After may ask more)."
    )
    resource: str | None = Field(
        default=None,
        description=(
            "Name of an `LLMEndpoint` Dagster resource (defined in a `resources.py` defs module) supplying "
            "base_url, model and the API key; the other keys of this block override it."
        ),
    )
    # batch mode (llm/batch.py): how requests travel, never part of the config hash (same answers)
    mode: Literal["sync", "batch"] = Field(
        default="sync",
        description=(
            "sync: chat requests, answered as they go. batch: the stage's requests go as OpenAI Batch "
            "jobs (JSONL upload, poll, download; about half the price, outside the chat rate limits; LiteLLM's "
            "proxy serves the same endpoints in front of vLLM), filling the same llm_cache; a run killed after "
            "submitting resumes the recorded batch. Kinds: alpagasus, lift_quality (one batch of every request); "
            "lift_expand, deita_evol (one batch per round of a chunk: a round's requests need the previous "
            "round's answers)."
        ),
    )
    batch_poll_seconds: float = Field(default=30.0, gt=0, description="Seconds between polls of a batch's status.")
    batch_timeout_seconds: float = Field(
        default=90_000.0,
        gt=0,
        description=(
            "How long one run waits for its batches (the provider's window is 24 h); then the stage fails and "
            "the next run polls the same batches again (nothing is submitted twice)."
        ),
    )
    batch_max_requests: int = Field(
        default=50_000, ge=1, description="Requests per batch job (OpenAI's limit: 50,000 lines, 200 MB)."
    )
    # spend guard (llm/spend.py): limits of one stage run, never part of the config hash
    max_requests_per_run: int | None = Field(
        default=DEFAULT_MAX_REQUESTS,
        ge=0,
        description=(
            "Most requests one stage run may send (a sharded stage: each shard its share); a run that needs more "
            "stops before sending any, naming the count it needs. Answers already in llm_cache are free and not "
            "counted; re-asks and later rounds are. null = no limit."
        ),
    )
    input_price_per_mtok: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Price of one million prompt tokens (e.g. 2.5 for $2.50 / 1M); with `output_price_per_mtok`, runs "
            "report an estimated cost and `max_cost_per_run` applies."
        ),
    )
    output_price_per_mtok: float | None = Field(default=None, ge=0, description="Price of one million answer tokens.")
    max_cost_per_run: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Most one stage run may cost, in the currency of the prices: prompt tokens estimated as characters/4, "
            "answers counted at max_tokens (an upper bound). Needs both prices. null = no limit."
        ),
    )

    @model_validator(mode="after")
    def _cost_needs_prices(self) -> LLMEndpointSpec:
        if self.max_cost_per_run is not None and (
            self.input_price_per_mtok is None or self.output_price_per_mtok is None
        ):
            raise ValueError(
                "max_cost_per_run needs input_price_per_mtok and output_price_per_mtok (the "
                "provider's prices per million tokens) to estimate what a run costs"
            )
        return self

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if looks_like_secret(value):
            raise ValueError(
                "api_key_env holds what looks like an API key, not the name of an environment "
                "variable: put the key in an environment variable (export OPENAI_API_KEY=...) and "
                "give that variable's name here; treat the pasted key as leaked and rotate it"
            )
        if not _ENV_NAME.match(value):
            raise ValueError(
                "api_key_env must be the name of an environment variable (letters, digits and "
                "underscores, not starting with a digit), e.g. OPENAI_API_KEY"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if "{{" in value:  # a template ({{ env.LLM_URL }}), checked again once rendered
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ValueError("base_url is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {redact_url(value)!r}")
        return value

    @property
    def display_url(self) -> str:
        """The base URL as shown and stored: user, password and query string masked."""
        return redact_url(self.base_url)

    def insecure_key_problem(self) -> str | None:
        """Why the API key must not be sent to `base_url`: plain http:// to a host that is not loopback."""
        if self.api_key_env is None or "{{" in self.base_url:
            return None
        parts = urlsplit(self.base_url)
        if parts.scheme != "http" or is_loopback(parts.hostname or ""):
            return None
        return (
            f"refusing to send the API key from ${self.api_key_env} over plain http:// to "
            f"{parts.hostname}, which is not this machine: use https:// (or a loopback address for a "
            "local server)"
        )

    def api_key(self, stage: str = "") -> str:
        """The key from the environment; local servers without a key get a placeholder."""
        if self.api_key_env is None:
            return "no-key"
        where = f"stage {stage!r}: " if stage else ""
        problem = self.insecure_key_problem()
        if problem is not None:
            raise LLMConfigError(f"{where}{problem}")
        value = os.environ.get(self.api_key_env)
        if not value:
            raise LLMConfigError(f"{where}environment variable {self.api_key_env} (llm.api_key_env) is not set")
        return value

    def pool_name(self) -> str:
        """Dagster pool of this endpoint: stages sharing a server take turns (keyed by host, port and
        path only: credentials and query strings never reach pool names)."""
        parts = urlsplit(self.base_url)
        try:
            port = parts.port
        except ValueError:
            port = None
        where = f"{parts.hostname or ''}{f':{port}' if port else ''}{parts.path}"
        slug = re.sub(r"[^a-z0-9]+", "_", where.lower()).strip("_")
        return f"llm_{slug}"[:100]

    def hashed_config(self) -> dict[str, Any]:
        """Only the model changes answers; where it is served and how fast do not."""
        return {"model": self.model}


class LLMConfigError(RuntimeError):
    """The endpoint cannot be used at all (no key, unknown model, unauthorised): stop at once."""


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
