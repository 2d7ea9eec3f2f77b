"""URL redaction, key-looking values and the endpoint's pool name / key transport rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from curation_assets.llm.endpoint import LLMConfigError, LLMEndpointSpec, is_loopback
from curation_assets.redact import looks_like_secret, redact_config, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("http://127.0.0.1:8765/v1", "http://127.0.0.1:8765/v1"),
        ("https://user:pass@host.example:8443/v1", "https://***@host.example:8443/v1"),
        ("https://token@host.example/v1", "https://***@host.example/v1"),
        ("https://host.example/v1?api-key=abc&x=1", "https://host.example/v1?***"),
        ("https://host.example/v1#access_token=abc", "https://host.example/v1#***"),
        ("http://u:p@[::1]:9000/v1?k=v", "http://***@[::1]:9000/v1?***"),
        ("https://host.example:notaport/v1", "***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_and_config_find_urls_anywhere() -> None:
    text = "request to 'https://al:pw9@h.example/v1?key=s3' failed; retry http://h2/x"
    assert redact_text(text) == "request to 'https://***@h.example/v1?***' failed; retry http://h2/x"
    config = {"llm": {"base_url": "https://al:pw9@h.example/v1", "model": "m"}, "list": ["x", "https://h/?q=1"], "n": 3}
    assert redact_config(config) == {
        "llm": {"base_url": "https://***@h.example/v1", "model": "m"},
        "list": ["x", "https://h/?***"],
        "n": 3,
    }


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("sk-proj-abc", True),
        ("hf_AbCdEfGhIjKlMnOp", True),
        ("AKIAIOSFODNN7EXAMPLE", True),
        ("Zq81Xw4TkLm0Np7Rv2Ys5Ub9", True),
        ("3f9a1c0e7b2d4f6a8c0e1b3d5f7a9c2e", True),
        ("OPENAI_API_KEY", False),
        ("MY_TEAM_JUDGE_API_KEY_2024_05_01", False),
        ("judge_key", False),
        ("smollm2-135m-instruct", False),
        ("gpt-4o-mini-2024-07-18", False),
    ],
)
def test_looks_like_secret(value: str, secret: bool) -> None:
    assert looks_like_secret(value) is secret


def test_validation_error_of_the_endpoint_hides_its_input() -> None:
    with pytest.raises(ValidationError) as caught:
        LLMEndpointSpec(api_key_env="sk-live-0123456789abcdefXYZ")
    assert "sk-live-0123456789abcdefXYZ" not in str(caught.value)
    assert "looks like an API key" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        LLMEndpointSpec(base_url="ftp://me:pw123456@h.example/v1")
    assert "pw123456" not in str(caught.value) and "ftp://***@h.example/v1" in str(caught.value)


def test_pool_name_has_no_credentials_and_is_unchanged_for_plain_urls() -> None:
    assert LLMEndpointSpec(base_url="http://127.0.0.1:8765/v1").pool_name() == "llm_127_0_0_1_8765_v1"
    secret = LLMEndpointSpec(base_url="https://bob:pw5x9q@judge.example:8443/v1?api-key=q7w8e9")
    assert secret.pool_name() == "llm_judge_example_8443_v1"
    assert secret.display_url == "https://***@judge.example:8443/v1?***"
    assert secret.hashed_config() == {"model": secret.model}


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("judge.localhost", True),
        ("10.0.0.5", False),
        ("example.com", False),
        ("0.0.0.0", False),
    ],
)
def test_loopback_hosts(host: str, local: bool) -> None:
    assert is_loopback(host) is local


def test_key_is_read_only_for_https_or_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", "sk-test-0123456789")
    secure = LLMEndpointSpec(base_url="https://h.example/v1", api_key_env="JUDGE_KEY")
    assert secure.api_key("s") == "sk-test-0123456789"
    assert LLMEndpointSpec(base_url="http://localhost:1/v1", api_key_env="JUDGE_KEY").api_key("s")
    insecure = LLMEndpointSpec(base_url="http://h.example/v1", api_key_env="JUDGE_KEY")
    with pytest.raises(LLMConfigError, match=r"stage 'rate': refusing to send the API key from \$JUDGE_KEY"):
        insecure.api_key("rate")
    assert LLMEndpointSpec(base_url="http://h.example/v1").api_key("rate") == "no-key"  # no key: nothing to leak
