"""Keep secrets out of what is stored, shown and logged (stdlib only; every layer may use it).

URLs keep their scheme, host, port and path; a user, password, query string or fragment is
replaced by `***` (`https://***@host/v1?***`). `looks_like_secret` recognises API keys pasted
where a name was expected, so validation errors can refuse them without repeating them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# scheme://rest-of-URL inside free text (error messages, logs); stops at whitespace and quotes
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`]+")
# Prefixes of widely used API keys / tokens (OpenAI, Anthropic, Hugging Face, Groq, xAI, GitHub,
# GitLab, AWS, Google, Stripe-style) and an HTTP Authorization value.
_KEY_PREFIX = re.compile(
    r"^(sk-|sk_|pk_|rk_|hf_|gsk_|xai-|ghp_|gho_|ghs_|ghu_|github_pat_|glpat-|AKIA|ASIA|AIza|ya29\.|"
    r"Bearer\s|Basic\s)"
)


def redact_url(url: str) -> str:
    """`url` with its user, password, query string and fragment masked (unparseable: fully masked)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return url if not looks_like_secret(url) else MASK
    netloc = host or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{MASK}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, MASK if parts.query else "", MASK if parts.fragment else ""))


def redact_text(text: str) -> str:
    """Every URL inside `text` passed through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


def redact_config(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with every URL inside its strings redacted."""
    if isinstance(value, str):
        return redact_text(value) if "://" in value else value
    if isinstance(value, dict):
        return {key: redact_config(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_config(item) for item in value]
    return value


def looks_like_secret(value: str) -> bool:
    """Whether `value` looks like an API key or token rather than a name: a known key prefix, or a
    long run of letters and digits mixing cases (environment variable names are words in one case)."""
    value = value.strip()
    if _KEY_PREFIX.match(value):
        return True
    if len(value) < 20 or any(c.isspace() for c in value):
        return False
    digits = sum(c.isdigit() for c in value)
    mixed_case = any(c.islower() for c in value) and any(c.isupper() for c in value)
    upper_snake = re.fullmatch(r"[A-Z0-9_]+", value) is not None  # how environment variables are named
    return (mixed_case and digits >= 2) or (len(value) >= 32 and digits >= 6 and not upper_snake)
