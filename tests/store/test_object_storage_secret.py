"""`s3_secret`: the DuckDB S3 secret of an `s3://` data_path, from the AWS_* environment variables only."""

from __future__ import annotations

import pytest

from curation_assets.store.object_storage import ObjectStorageConfigError, s3_secret

KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "se'cret"}


def test_an_s3_compatible_endpoint_is_addressed_path_style_with_its_scheme() -> None:
    secret = s3_secret("s3://b/p/", {**KEYS, "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-3"})
    assert secret.endpoint == "127.0.0.1:9000"
    assert "USE_SSL false" in secret.sql and "URL_STYLE 'path'" in secret.sql
    assert "SECRET 'se''cret'" in secret.sql and "REGION 'eu-west-3'" in secret.sql  # quoted, not injected
    assert "se'cret" not in repr(secret) and secret.hidden == ("se'cret",)
    tls = s3_secret("s3://b/", {**KEYS, "AWS_ENDPOINT_URL_S3": "https://minio.example:443", "AWS_SESSION_TOKEN": "t"})
    assert "USE_SSL true" in tls.sql and "SESSION_TOKEN 't'" in tls.sql and tls.hidden == ("se'cret", "t")


def test_aws_itself_needs_no_endpoint() -> None:
    secret = s3_secret("s3://b/", KEYS)
    assert secret.endpoint == "s3.amazonaws.com" and "ENDPOINT" not in secret.sql
    assert "REGION 'us-east-1'" in secret.sql


@pytest.mark.parametrize(
    ("path", "env", "message"),
    [
        ("s3://b/", {"AWS_ACCESS_KEY_ID": "k"}, "export AWS_SECRET_ACCESS_KEY"),
        ("s3://b/", {}, "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("gcs://b/", KEYS, "only s3:// URLs"),
        ("s3://b/", {**KEYS, "AWS_ENDPOINT_URL": "http://"}, "is not a URL"),
    ],
)
def test_a_missing_variable_or_scheme_is_a_clear_error(path: str, env: dict, message: str) -> None:
    with pytest.raises(ObjectStorageConfigError, match=message):
        s3_secret(path, env)
