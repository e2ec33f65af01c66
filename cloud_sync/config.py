"""Configuration of cloud sync: one pydantic model, validated once at start, and secret references.

Secrets are never written in the configuration: `client_secret` and `hmac_key` are references, `env:NAME`
(an environment variable) or `file:/path` (the file's bytes, a trailing newline stripped). They are resolved
when the module starts, kept in memory only, and never logged or stored; errors name the reference, never
the value.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

log = logging.getLogger(__name__)

SecretRef = Annotated[str, StringConstraints(pattern=r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")]
HttpUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$")]


class SecretUnavailable(Exception):
    """A secret reference could not be resolved (the message names the reference, never a value)."""


def resolve_secret(ref: str) -> bytes:
    kind, _, target = ref.partition(":")
    if kind == "env":
        value = os.environ.get(target)
        if not value:
            raise SecretUnavailable(f"environment variable {target} is not set")
        return value.encode()
    path = Path(target)
    try:
        data = path.read_bytes().rstrip(b"\r\n")
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret file %s is readable by others (mode %o); use 0600", path, stat.S_IMODE(mode))
    if not data:
        raise SecretUnavailable(f"secret file {path} is empty")
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantUplinkConfig(_Strict):
    """One tenant's cloud: its endpoint (or the default), its OAuth2 client and its HMAC key."""

    endpoint: HttpUrl | None = Field(default=None, description="Events endpoint; default: the module's.")
    token_url: HttpUrl | None = Field(
        default=None, description="OAuth2 token endpoint; default: the module's."
    )
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: SecretRef
    scope: str | None = None
    hmac_key: SecretRef
    hmac_key_id: str = Field(default="k1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    weight: float = Field(default=1.0, gt=0, le=1000, description="Share of the uplink under contention.")
    rate_limit: float | None = Field(default=None, gt=0, description="Events per second at most.")
    burst: int | None = Field(default=None, ge=1, description="Token bucket size; default: one batch.")


class CloudSyncConfig(_Strict):
    endpoint: HttpUrl | None = Field(default=None, description="Default events endpoint of every tenant.")
    token_url: HttpUrl | None = Field(default=None, description="Default OAuth2 token endpoint.")
    tenants: dict[str, TenantUplinkConfig] = Field(min_length=1)
    batch_size: int = Field(default=1000, ge=1, le=20_000, description="Events per batch at most.")
    max_batch_bytes: int = Field(default=8 << 20, ge=1 << 10, description="Uncompressed bytes per batch.")
    linger: float = Field(default=0.5, ge=0, le=60, description="Seconds to wait for a batch to fill.")
    gzip_level: int = Field(default=1, ge=1, le=9)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    timeout: float = Field(default=30.0, gt=0, le=600, description="Read/write timeout of one upload.")
    max_concurrent_uploads: int = Field(default=2, ge=1, le=64, description="Uploads in flight, all tenants.")
    token_leeway: float = Field(default=60.0, ge=0, le=60, description="Refresh a token this long before.")
    backoff_base: float = Field(default=1.0, gt=0, le=60)
    backoff_cap: float = Field(default=60.0, gt=0, le=3600)
    retry_after_cap: float = Field(default=600.0, gt=0, description="Longest Retry-After honoured.")

    @model_validator(mode="after")
    def _every_tenant_has_endpoints(self) -> CloudSyncConfig:
        for tenant, uplink in self.tenants.items():
            if (uplink.endpoint or self.endpoint) is None:
                raise ValueError(f"tenants.{tenant}: no endpoint (set it for the tenant or for the module)")
            if (uplink.token_url or self.token_url) is None:
                raise ValueError(f"tenants.{tenant}: no token_url (set it for the tenant or for the module)")
        return self

    def endpoint_of(self, tenant: str) -> str:
        url = self.tenants[tenant].endpoint or self.endpoint
        assert url is not None
        return url

    def token_url_of(self, tenant: str) -> str:
        url = self.tenants[tenant].token_url or self.token_url
        assert url is not None
        return url


def parse_config(raw: dict[str, Any]) -> CloudSyncConfig:
    return CloudSyncConfig.model_validate(raw)
