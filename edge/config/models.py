"""The gateway configuration file, as typed models.

One TOML file per gateway. Device connections and points are validated afterwards, by the models of the
driver each device names (see `edge.config.loader`), so an error always points at the exact field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.points import Name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Strict):
    id: Name
    name: str = ""
    data_dir: str = Field(default="var", description="Outbox, broker state and logs; relative to the file.")


class TenantConfig(_Strict):
    id: Name
    name: str = ""
    locale: str = "en"
    entitlements: tuple[str, ...] = ()


class SiteConfig(_Strict):
    id: Name
    name: str = ""
    timezone: str = "UTC"


class DeviceConfig(_Strict):
    name: Name
    driver: Name
    tenant: Name
    site: Name
    profile: str = Field(description="A profile shipped by the driver (by name) or a path to a profile file.")
    poll_interval: float = Field(default=1.0, gt=0.0, le=86_400.0)
    timeout: float = Field(default=1.0, gt=0.0, le=60.0)
    enabled: bool = True
    mode: Literal["auto", "poll"] = Field(
        default="auto",
        description="'auto': use the driver's pushed changes (COV, subscriptions) where it offers them.",
    )
    connection: dict[str, Any] = Field(default_factory=dict)


class BusConfig(_Strict):
    mode: Literal["embedded", "external"] = "embedded"
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    topic_prefix: Name = "edge"
    qos: Literal[0, 1] = Field(default=1, description="QoS of events (telemetry, status, results).")
    point_qos: Literal[0, 1] = Field(
        default=0,
        description="QoS of the retained per-point topics: state, not history; republished after every reconnect.",
    )
    max_inflight: int = Field(default=1000, ge=1, le=20_000)
    point_topics: bool = Field(
        default=True, description="Publish each point's latest value on its own retained topic."
    )
    point_min_interval: float = Field(
        default=1.0, ge=0.0, description="At most one retained update per point in this many seconds."
    )
    max_queued_messages: int = Field(default=100_000, ge=1000)
    max_payload: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)


class StorageConfig(_Strict):
    path: str = Field(default="outbox.db", description="SQLite file; relative to data_dir.")
    commit_interval_ms: float = Field(default=10.0, ge=0.0, le=1000.0)
    commit_max_events: int = Field(default=1000, ge=1, le=100_000)
    synchronous: Literal["full", "normal"] = "full"


class ModuleConfig(_Strict):
    name: Name
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class GatewayConfig(_Strict):
    gateway: GatewaySection
    tenants: tuple[TenantConfig, ...] = Field(min_length=1)
    sites: tuple[SiteConfig, ...] = Field(min_length=1)
    devices: tuple[DeviceConfig, ...] = ()
    modules: tuple[ModuleConfig, ...] = ()
    bus: BusConfig = BusConfig()
    storage: StorageConfig = StorageConfig()


class ProfileHeader(_Strict):
    name: str
    driver: Name
    description: str = ""
    manufacturer: str = ""
    model: str = ""
