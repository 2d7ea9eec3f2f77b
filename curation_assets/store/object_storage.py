"""Object-storage credentials for a DuckLake whose `data_path` is an `s3://` URL (issue #22).

Only from environment variables, the AWS SDK's standard names, so nothing secret is ever in the
pipeline YAML: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (required), AWS_SESSION_TOKEN,
AWS_REGION / AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL for an S3-compatible
server (MinIO, Ceph, R2, ...; addressed path-style, as such servers expect). They become an
in-memory DuckDB secret of the httpfs extension; DuckDB's `credential_chain` provider would need
the `aws` extension, which has no wheel here, so the variables are read in Python instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from curation_assets.store.config import StoreUnavailableError

S3_SCHEMES = ("s3://",)
KEY_ID_ENV = "AWS_ACCESS_KEY_ID"
SECRET_ENV = "AWS_SECRET_ACCESS_KEY"
TOKEN_ENV = "AWS_SESSION_TOKEN"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class ObjectStorageConfigError(StoreUnavailableError):
    """The data_path's scheme is not supported, or a required credential variable is unset."""


@dataclass(frozen=True)
class S3Secret:
    """The `CREATE SECRET` statement and the values an error message must never show."""

    sql: str = field(repr=False)
    hidden: tuple[str, ...] = field(repr=False)
    endpoint: str


def _quote(text: str) -> str:
    return text.replace("'", "''")


def s3_secret(data_path: str, environ: Mapping[str, str] | None = None) -> S3Secret:
    """The DuckDB S3 secret for `data_path` from the environment; a clear error naming what to set."""
    env = os.environ if environ is None else environ
    if not data_path.startswith(S3_SCHEMES):
        raise ObjectStorageConfigError(
            f"data_path {data_path}: only s3:// URLs (AWS S3 or an S3-compatible server) and local or shared "
            "folders are supported"
        )
    missing = [name for name in (KEY_ID_ENV, SECRET_ENV) if not env.get(name)]
    if missing:
        raise ObjectStorageConfigError(
            f"data_path {data_path} is on object storage: export {' and '.join(missing)} (and AWS_ENDPOINT_URL "
            "for an S3-compatible server, AWS_REGION if not us-east-1) in every process that opens the store"
        )
    options = [f"KEY_ID '{_quote(env[KEY_ID_ENV])}'", f"SECRET '{_quote(env[SECRET_ENV])}'"]
    hidden = [env[SECRET_ENV]]
    if env.get(TOKEN_ENV):
        options.append(f"SESSION_TOKEN '{_quote(env[TOKEN_ENV])}'")
        hidden.append(env[TOKEN_ENV])
    region = next((env[name] for name in REGION_ENVS if env.get(name)), "us-east-1")
    options.append(f"REGION '{_quote(region)}'")
    endpoint_url = next((env[name] for name in ENDPOINT_ENVS if env.get(name)), "")
    endpoint = "s3.amazonaws.com"
    if endpoint_url:
        parts = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
        if not parts.netloc:
            raise ObjectStorageConfigError(f"AWS_ENDPOINT_URL {endpoint_url!r} is not a URL such as http://host:9000")
        endpoint = parts.netloc
        options += [
            f"ENDPOINT '{_quote(endpoint)}'",
            f"USE_SSL {'true' if parts.scheme == 'https' else 'false'}",
            "URL_STYLE 'path'",  # S3-compatible servers rarely resolve bucket subdomains
        ]
    return S3Secret(sql=f"CREATE SECRET (TYPE s3, {', '.join(options)})", hidden=tuple(hidden), endpoint=endpoint)
