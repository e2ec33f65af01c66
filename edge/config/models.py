"""The gateway configuration file, as typed models.

One TOML file per gateway. Device connections and points are validated afterwards, by the models of the
driver each device names (see `edge.config.loader`), so an error always points at the exact field.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)

from edge.ops.eventloop import EventLoopChoice
from edge.outbox import RetentionPolicy
from edge.sdk.points import Name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Strict):
    id: Name
    name: str = ""
    data_dir: str = Field(default="var", description="Outbox, broker state and logs; relative to the file.")
    event_loop: EventLoopChoice = Field(
        default="uvloop",
        description="The asyncio event loop the gateway runs on: uvloop (less CPU per point; asyncio's own loop"
        " when uvloop is not installed) or asyncio's own (edge/ops/eventloop.py).",
    )


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def _quantity(units: dict[str, int]) -> Any:
    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if match is None or match.group(2).lower() not in units:
            raise ValueError(f"expected a number with one of the units {sorted(u for u in units if u)}")
        return float(match.group(1)) * units[match.group(2).lower()]

    return BeforeValidator(parse)


Bytes = Annotated[int, _quantity(_SIZE_UNITS)]  # 1073741824, or "1GiB", "500MB"
Seconds = Annotated[float, _quantity(_TIME_UNITS)]  # 3600, or "1h", "7d", "90s"


class RetentionConfig(_Strict):
    """How much of one tenant the outbox keeps, and what happens beyond it (see edge/outbox/retention.py)."""

    max_age: Seconds = Field(
        default=7 * 86_400.0,
        gt=0,
        description="Events some consumer has not received are dropped after this.",
    )
    max_bytes: Bytes = Field(default=1 << 30, ge=1 << 20, description="The tenant's quota of event bytes.")
    policy: Literal["drop_oldest", "refuse_newest"] = Field(
        default="drop_oldest",
        description="When the quota is full: drop the oldest events or refuse new ones.",
    )
    keep_delivered: Seconds = Field(
        default=600.0, ge=0, description="Seconds of history kept after every consumer received an event."
    )


class RetentionOverride(_Strict):
    """Per-tenant changes to `[storage.retention]`; unset fields keep the gateway's default."""

    max_age: Seconds | None = Field(default=None, gt=0)
    max_bytes: Bytes | None = Field(default=None, ge=1 << 20)
    policy: Literal["drop_oldest", "refuse_newest"] | None = None
    keep_delivered: Seconds | None = Field(default=None, ge=0)


class TenantLimits(_Strict):
    """What one tenant may use of the gateway's shared parts, and so never takes from the others
    (edge/ops/quotas.py, docs/operations.md "Per-tenant limits"). Each limit acts by its own policy, counted per
    tenant in `edge status`, the API's /v1/status and the metrics; none drops an event silently."""

    ingest_rate: float = Field(
        default=5000.0, gt=0, description="Events/s the tenant's devices may produce; beyond: polls slowed."
    )
    ingest_burst: float = Field(default=5000.0, ge=1, description="Events taken at once before slowing.")
    mqtt_rate: float = Field(
        default=10_000.0,
        gt=0,
        description="Events/s published on MQTT; beyond: held in the outbox, sent later.",
    )
    module_time: float = Field(
        default=0.5,
        gt=0,
        le=8,
        description="Seconds of in-process module handler time per second; beyond: the tenant's module "
        "deliveries wait until the time is paid back.",
    )
    webhook_rate: float = Field(
        default=200.0, gt=0, description="Webhook deliveries/s over all subscriptions; beyond: they wait."
    )
    api_rate: float = Field(
        default=50.0, gt=0, description="REST requests/s; beyond: 429 with Retry-After (refused, counted)."
    )
    api_burst: float = Field(default=100.0, ge=1, description="REST requests taken at once.")
    ws_clients: int = Field(
        default=20, ge=0, description="WebSocket streams open at once; beyond: closed 1013 (counted)."
    )
    command_rate: float = Field(
        default=20.0, gt=0, description="Module commands/s (MQTT and API); beyond: refused with the reason."
    )


class TenantLimitsOverride(_Strict):
    """Per-tenant changes to `[limits]`; unset fields keep the gateway's default."""

    ingest_rate: float | None = Field(default=None, gt=0)
    ingest_burst: float | None = Field(default=None, ge=1)
    mqtt_rate: float | None = Field(default=None, gt=0)
    module_time: float | None = Field(default=None, gt=0, le=8)
    webhook_rate: float | None = Field(default=None, gt=0)
    api_rate: float | None = Field(default=None, gt=0)
    api_burst: float | None = Field(default=None, ge=1)
    ws_clients: int | None = Field(default=None, ge=0)
    command_rate: float | None = Field(default=None, gt=0)


class SparkplugConfig(_Strict):
    """Sparkplug B (v3.0) output of one tenant (edge/bus/sparkplug.py, docs/mqtt-access.md): an edge node for
    this gateway, a device per gateway device, births, deaths and data on the same broker as the bus."""

    enabled: bool = True
    group_id: Name | None = Field(default=None, description="Sparkplug group id; default: the tenant id.")
    edge_node_id: Name | None = Field(default=None, description="Edge node id; default: the gateway id.")
    primary_host_id: Name | None = Field(
        default=None,
        description="Publish births only while this host application's STATE is online (and rebirth when "
        "it comes back); none: birth as soon as connected.",
    )


class HomeAssistantConfig(_Strict):
    """Home Assistant MQTT discovery for one tenant (edge/bus/homeassistant.py): a device per gateway device,
    an entity per point, writable points as number/switch/select/text entities that write through `/set`."""

    enabled: bool = True
    discovery_prefix: Name = Field(default="homeassistant", description="Home Assistant's discovery prefix.")


HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]


class TenantCloudConfig(_Strict):
    """The tenant's cloud platform as the downlink sees it (edge/downlink, cloud_sync/README.md "Downlink"):
    where to long-poll, its OAuth2 client (like the uplink's) and the key the platform signs with."""

    url: HttpUrl = Field(
        description="The platform's base URL: {url}/v1/downlink/{tenant}, /v1/entitlements/…"
    )
    token_url: HttpUrl = Field(description="OAuth2 token endpoint (client credentials).")
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: str = Field(description="A secret reference: env:NAME or file:PATH (never the value).")
    scope: str | None = None
    verify_key: str | None = Field(
        default=None,
        description="PEM file (relative to the config file) of the platform's public key for this tenant, or a "
        "directory of them (*.pem): commands, deployments and entitlement answers must be signed with a "
        "private half (ES256). Read again when it changes (rotation without a restart).",
    )
    verify_keys: tuple[str, ...] = Field(
        default=(),
        max_length=8,
        description="More key files or directories, e.g. the old and the new key during a rotation: a message "
        "signed with any of them verifies.",
    )
    entitlements: bool = Field(
        default=True,
        description="Take this tenant's entitlements from the platform (start, module load, periodically).",
    )
    deployments: Literal["off", "tenant", "gateway"] = Field(
        default="tenant",
        description="Configuration deployments accepted: none, this tenant's devices and entitlements, or "
        "(the operator's tenant) the whole file and [[modules]].",
    )

    @model_validator(mode="after")
    def _secret_is_a_reference(self) -> TenantCloudConfig:
        if not re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*|file:.+", self.client_secret):
            raise ValueError("client_secret must be a reference (env:NAME or file:PATH), not the secret")
        if not self.key_paths:
            raise ValueError(
                "verify_key or verify_keys: the platform's public key (a PEM file or a directory)"
            )
        return self

    @property
    def key_paths(self) -> tuple[str, ...]:
        """Every configured key file or directory (relative to the config file)."""
        return (*((self.verify_key,) if self.verify_key else ()), *self.verify_keys)


class TenantConfig(_Strict):
    id: Name
    name: str = ""
    locale: str = "en"
    entitlements: tuple[Name, ...] = ()  # flags a module manifest names (identifiers)
    retention: RetentionOverride = RetentionOverride()
    limits: TenantLimitsOverride = Field(
        default=TenantLimitsOverride(), description="This tenant's own limits over `[limits]`."
    )
    storage: Literal["shared", "dedicated", "database"] = Field(
        default="shared",
        description="'dedicated': this tenant's events apart (SQLite: its own file; PostgreSQL: its own schema "
        "and role); 'database': its own PostgreSQL database (edge.outbox.backends).",
    )
    sparkplug: SparkplugConfig | None = Field(default=None, description="Sparkplug B output (optional).")
    homeassistant: HomeAssistantConfig | None = Field(
        default=None, description="Home Assistant MQTT discovery (optional)."
    )
    cloud: TenantCloudConfig | None = Field(
        default=None, description="The tenant's platform: commands, deployments, entitlements (downlink)."
    )


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


class ListenerConfig(_Strict):
    """A listener of the embedded broker for the site's LAN (docs/mqtt-access.md): BMS, SCADA, Node-RED.

    Every client logs in as a tenant user (`edge tenant credentials add`), by password or, with
    `require_certificate`, by a client certificate whose common name is the user (`name@tenant`)."""

    name: Name | None = Field(
        default=None, description="Shown in messages; default mqtts-<port>, mqtt-, wss- or ws-<port>."
    )
    host: str = Field(default="0.0.0.0", description="Address to listen on; 0.0.0.0: every IPv4 address.")
    port: int = Field(default=8883, ge=1, le=65535)
    protocol: Literal["mqtt", "websockets"] = "mqtt"
    tls: bool = Field(default=True, description="false: plain text (passwords cross the LAN readable).")
    certfile: str | None = Field(
        default=None,
        description="Server certificate (PEM, chain after it); relative to the file. Default: the one "
        "`edge certs create --profile broker` writes to <data_dir>/certs/broker/server.pem.",
    )
    keyfile: str | None = Field(default=None, description="Its private key (PEM); with certfile.")
    cafile: str | None = Field(
        default=None,
        description="CA whose client certificates are accepted (require_certificate); default the broker CA.",
    )
    require_certificate: bool = Field(
        default=False,
        description="Clients log in with a certificate signed by cafile; its common name is the tenant user.",
    )
    allow_anonymous: bool = Field(default=False, description="Never true: a LAN listener requires a login.")

    @field_validator("allow_anonymous")
    @classmethod
    def _never_anonymous(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "anonymous access is never allowed on a LAN listener: give each local system a tenant "
                "login (edge tenant credentials add) and remove this line"
            )
        return value

    @model_validator(mode="after")
    def _coherent(self) -> ListenerConfig:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together (or neither, for the broker profile's files)")
        if not self.tls and (self.require_certificate or self.certfile is not None):
            raise ValueError("certificates need tls = true")
        return self

    @property
    def label(self) -> str:
        scheme = {"mqtt": "mqtt", "websockets": "ws"}[self.protocol] + ("s" if self.tls else "")
        return self.name or f"{scheme}-{self.port}"


class NatsConfig(_Strict):
    """`[bus.nats]`, for `[bus] mode = "nats"` (edge/bus/nats.py, docs/scale.md "Bus backends")."""

    servers: tuple[str, ...] = Field(
        default=("nats://127.0.0.1:4222",), min_length=1, description="NATS server URLs (one cluster)."
    )
    max_age: Seconds = Field(
        default=7 * 86_400, gt=0, description="How long each tenant's stream keeps events."
    )
    max_bytes: Bytes = Field(default=1 << 30, ge=1 << 20, description="Size of each tenant's events stream.")
    replicas: int = Field(
        default=1, ge=1, le=5, description="Stream replicas: 1 on one server, 3 in a cluster."
    )
    duplicate_window: Seconds = Field(
        default=120.0, gt=0, le=86_400, description="A replayed event id within this long is stored once."
    )
    ack_timeout: Seconds = Field(
        default=10.0, gt=0, le=600, description="A publish not acknowledged by JetStream by then is replayed."
    )
    mqtt_host: str = Field(default="127.0.0.1", description="nats-server's MQTT listener, for local tools.")
    mqtt_port: int = Field(
        default=1883,
        ge=1,
        le=65535,
        description="`edge point write` and `edge module command` connect there.",
    )
    modules: Literal["jetstream", "outbox"] = Field(
        default="jetstream",
        description="Where in-process modules' event subscriptions read: durable JetStream consumers, or the outbox.",
    )


class BusConfig(_Strict):
    mode: Literal["embedded", "external", "nats"] = "embedded"
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
    point_topic_mode: Literal["point", "device"] = Field(
        default="point",
        description="'point': one retained topic per point; 'device': one retained message per device holding "
        "all its points' latest values (one publish per device instead of one per point).",
    )
    point_min_interval: float = Field(
        default=1.0,
        ge=0.0,
        description="At most one retained update per point in this many seconds: pending updates are sent on "
        "the ticks of this interval, with the gateway's periodic work.",
    )
    max_queued_messages: int = Field(
        default=100_000, ge=1000, description="Per client: QoS 1 messages queued for an offline session."
    )
    max_queued_bytes: Bytes = Field(
        default=64 << 20, ge=0, description="Per client: bytes queued for an offline session (0: no limit)."
    )
    max_payload: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    persistence: bool = Field(
        default=True,
        description="The embedded broker keeps sessions, subscriptions, queued and retained messages in "
        "<data_dir>/broker/persistence/mosquitto.db across restarts.",
    )
    autosave_interval: Seconds = Field(
        default=60.0, ge=1, le=86_400, description="Seconds between the broker's saves (and on every stop)."
    )
    session_expiry: Seconds = Field(
        default=7 * 86_400.0,
        ge=60,
        description="A persistent session whose client stays away this long is dropped with its queue.",
    )
    session_grace: Seconds = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="After the broker restarts, events wait this long at most for the persistent sessions it "
        "restored to reconnect (Mosquitto queues nothing for them before).",
    )
    listeners: tuple[ListenerConfig, ...] = Field(
        default=(), description="LAN listeners of the embedded broker; login required on each."
    )

    nats: NatsConfig = NatsConfig()

    @model_validator(mode="after")
    def _listeners_fit(self) -> BusConfig:
        if self.mode == "embedded" and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r}: the embedded broker's own listener stays on loopback (127.0.0.1); "
                "open the bus to the LAN with a [[bus.listeners]] entry (TLS, login required)"
            )
        if self.mode != "embedded" and self.listeners:
            raise ValueError(
                f"listeners are the embedded broker's: with mode {self.mode!r}, configure them where the"
                " broker or server runs"
            )
        ports = [self.port, *(listener.port for listener in self.listeners)]
        taken = sorted({p for p in ports if ports.count(p) > 1})
        if taken:
            raise ValueError(f"port {taken[0]} is used by two listeners: give each its own port")
        return self


class PostgresConfig(_Strict):
    """The PostgreSQL outbox (`[storage] backend = "postgresql"`, edge/outbox/postgres.py, docs/scale.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dsn: str = Field(
        min_length=1,
        description="postgresql://USER@HOST:PORT/DATABASE (libpq URI or key=value), without the password.",
    )
    password: str | None = Field(
        default=None,
        description="A secret reference (env:NAME or file:PATH); unset: libpq's own (~/.pgpass).",
    )
    db_schema: str = Field(
        default="edge",
        alias="schema",
        min_length=1,
        max_length=40,
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="Schema of the shared tables; per-tenant schemas and databases are named after it.",
    )

    @model_validator(mode="after")
    def _no_password_in_dsn(self) -> PostgresConfig:
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(self.dsn)
        except Exception as exc:  # psycopg.ProgrammingError: the message names what is wrong
            raise ValueError(f"dsn is not a PostgreSQL connection string: {exc}") from None
        if "password" in parts:
            raise ValueError(
                "dsn must not contain the password: put a reference in storage.postgresql.password"
            )
        return self


class StorageConfig(_Strict):
    backend: Literal["sqlite", "postgresql"] = Field(
        default="sqlite", description="Where the outbox lives: a SQLite file in data_dir, or PostgreSQL."
    )
    path: str = Field(default="outbox.db", description="SQLite file; relative to data_dir.")
    postgresql: PostgresConfig | None = Field(default=None, description="Required with backend 'postgresql'.")
    commit_interval_ms: float = Field(
        default=2.0,
        ge=0.0,
        le=1000.0,
        description="How long the first event of a commit waits for the rest of its burst: 2 ms keeps a poll round in"
        " one or two commits while adding little to sample-to-MQTT latency (10 ms: -1 µs CPU/point, +8 ms p50).",
    )
    commit_max_events: int = Field(default=1000, ge=1, le=100_000)
    synchronous: Literal["full", "normal"] = "full"
    retention: RetentionConfig = RetentionConfig()
    retention_interval: Seconds = Field(
        default=5.0, gt=0, le=3600, description="Seconds between retention sweeps."
    )

    @model_validator(mode="after")
    def _backend_settings(self) -> StorageConfig:
        if self.backend == "postgresql" and self.postgresql is None:
            raise ValueError("backend 'postgresql' needs a [storage.postgresql] table with its dsn")
        return self


class WebhooksConfig(_Strict):
    """Outbound webhooks (edge/webhooks, docs/webhooks.md): retry policy and the SSRF allow-list."""

    timeout: Seconds = Field(default=15.0, gt=0, le=120, description="Per attempt: connect, send, answer.")
    max_attempts: int = Field(default=8, ge=1, le=100, description="Attempts before a dead letter.")
    retry_initial: Seconds = Field(default=1.0, gt=0, le=3600, description="First retry delay.")
    retry_cap: Seconds = Field(default=300.0, gt=0, le=86_400, description="Longest retry delay.")
    max_subscriptions: int = Field(default=50, ge=1, le=1000, description="Per tenant.")
    allow_networks: tuple[IPvAnyNetwork, ...] = Field(
        default=(),
        description="CIDRs webhooks may reach although loopback/private/link-local, e.g. '127.0.0.1/32'.",
    )
    reload_interval: Seconds = Field(
        default=1.0, gt=0, le=60, description="How often the gateway looks for changed subscriptions."
    )


class ModuleLimits(_Strict):
    """What an isolated module's process may use before the kernel ends it (and restarts it with backoff)."""

    memory: Bytes = Field(default=256 << 20, ge=16 << 20, description="Resident memory (RSS), e.g. '256MiB'.")
    cpu_percent: float | None = Field(
        default=None, gt=0, description="Share of one core averaged over 10 s; unset: no limit."
    )
    health_timeout: Seconds = Field(default=15.0, gt=0, description="Ended when it stops reporting health.")
    handler_timeout: Seconds = Field(
        default=60.0,
        gt=0,
        description="One handler call running this long counts as deadlocked: the SDK runner stops reporting "
        "health, so the process is ended after health_timeout and restarted (the batch comes again).",
    )
    max_crashes: int = Field(
        default=5, ge=1, description="Short-lived runs in a row before the circuit opens."
    )


class ModuleConfig(_Strict):
    name: Name
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    run_mode: Literal["in_process", "isolated"] | None = Field(
        default=None, description="Overrides the manifest's run_mode for an installed module."
    )
    command: tuple[str, ...] | None = Field(
        default=None,
        min_length=1,
        description="A sidecar in any language: launched with this command line and supervised (isolated).",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the isolated process."
    )
    limits: ModuleLimits = ModuleLimits()

    @model_validator(mode="after")
    def _sidecars_run_isolated(self) -> ModuleConfig:
        if self.command is not None and self.run_mode == "in_process":
            raise ValueError("a module with a command is a sidecar: it runs isolated, not in_process")
        return self


class OidcConfig(_Strict):
    """The OpenID Connect issuer whose bearer tokens the API accepts (docs/api.md: claim mapping per IdP)."""

    issuer: str = Field(description="Issuer URL; its /.well-known/openid-configuration names the JWKS.")
    audience: str = Field(description="The `aud` a token must carry for this gateway.")
    algorithms: tuple[Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"], ...] = Field(
        default=("RS256", "ES256"),
        min_length=1,
        description="Accepted signature algorithms (never none/HMAC).",
    )
    leeway: float = Field(default=30.0, ge=0.0, le=60.0, description="Seconds of clock skew for exp/nbf/iat.")
    tenant_claim: str = Field(
        default="tenant", description="Claim naming the tenant; dots reach nested claims."
    )
    role_claim: str = Field(default="roles", description="Claim with the role (a string or a list of them).")
    role_map: dict[str, Literal["viewer", "operator", "admin"]] = Field(
        default_factory=dict,
        description="IdP role names to gateway roles. When set, only these names are roles: an IdP role "
        "that happens to be called 'admin' is not the gateway's admin unless mapped. Empty: the claim holds "
        "the gateway's role names themselves.",
    )
    jwks_cache: float = Field(
        default=300.0, gt=0, description="Seconds the issuer's keys are trusted without refetch."
    )
    jwks_refresh_min: float = Field(
        default=30.0, ge=0, description="Least seconds between refetches on unknown kids."
    )
    http_timeout: float = Field(
        default=5.0, gt=0, le=60, description="Seconds for a discovery or JWKS request."
    )
    allow_http: bool = Field(
        default=False, description="Accept a plain-http issuer (tests, the demo, loopback)."
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        description="The console's public client at the issuer: with it, the console signs people in with "
        "the authorization code flow and PKCE (redirect URI: <API URL>/v1/session/oidc/callback).",
    )
    scope: str = Field(default="openid", description="Scopes the console asks the issuer for.")

    @model_validator(mode="after")
    def _https_issuer(self) -> OidcConfig:
        # Keys fetched over plain http can be swapped by anyone on the path: refuse unless asked for.
        if not self.issuer.startswith("https://") and not (
            self.allow_http and self.issuer.startswith("http://")
        ):
            raise ValueError(f"issuer {self.issuer!r} must be an https:// URL (or set allow_http = true)")
        return self


class ApiConfig(_Strict):
    """The REST API, WebSocket, console and metrics served by the gateway process (docs/api.md)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port (tests).")
    oidc: OidcConfig | None = Field(
        default=None,
        description="The token issuer. Without one, callers sign in with local accounts (`edge user add`).",
    )
    ws_queue: int = Field(default=1000, ge=10, le=100_000, description="Events queued per WebSocket client.")
    max_auth_failures: int = Field(
        default=20,
        ge=1,
        description="Failed authentications of one credential from one client within a second before 429.",
    )
    trusted_proxies: tuple[IPvAnyNetwork, ...] = Field(
        default=(),
        description="Reverse proxies (addresses or networks) whose X-Forwarded-For names the client; from "
        "any other peer the header is ignored.",
    )
    max_body: int = Field(
        default=65_536,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body in bytes (routes may declare their own); larger ones get 413 "
        "before routing or authentication.",
    )
    tls_cert: str | None = Field(
        default=None,
        description="PEM certificate chain for HTTPS (`edge certs create` writes one); relative to this file.",
    )
    tls_key: str | None = Field(
        default=None, description="PEM private key of `tls_cert`; relative to this file."
    )
    allow_plain_http: bool = Field(
        default=False,
        description="Serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy only).",
    )
    session_idle: float = Field(
        default=1800.0,
        ge=60,
        le=86_400,
        description="Seconds without a request before a console session ends.",
    )
    session_max: float = Field(
        default=43_200.0, ge=300, le=604_800, description="Seconds a console session lasts at most."
    )
    sign_in_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Failed sign-ins of one account from one client address within `sign_in_lockout` "
        "seconds before that account is locked for that address (other accounts and addresses are not).",
    )
    sign_in_lockout: float = Field(
        default=300.0, ge=1, le=86_400, description="Seconds of the lockout window."
    )
    metrics_networks: tuple[IPvAnyNetwork, ...] = Field(
        default=(),
        description="Besides loopback, the networks that may scrape /metrics without a token.",
    )
    metrics_token: str | None = Field(
        default=None,
        min_length=16,
        description="A bearer token that may scrape /metrics from any address (a secret reference works).",
    )

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> ApiConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both, or neither")
        if (
            self.enabled
            and self.tls_cert is None
            and not self.allow_plain_http
            and not is_loopback(self.host)
        ):
            raise ValueError(
                f"host {self.host!r} is not a loopback address and no TLS is configured: set tls_cert and "
                "tls_key (`edge certs create`), or allow_plain_http = true behind a TLS-terminating proxy"
            )
        return self


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or 'localhost') is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CloudConfig(_Strict):
    """How the downlink behaves for every tenant with a `[tenants.cloud]` (edge/downlink)."""

    poll_wait: Seconds = Field(default=25.0, gt=0, le=300, description="Long-poll: the platform holds it.")
    backoff_base: Seconds = Field(default=1.0, gt=0, le=60, description="First reconnect delay.")
    backoff_cap: Seconds = Field(default=60.0, gt=0, le=3600, description="Longest reconnect delay.")
    clock_leeway: Seconds = Field(default=30.0, ge=0, le=300, description="Skew allowed on not-after times.")
    entitlement_interval: Seconds = Field(
        default=300.0, gt=0, description="How often each tenant's entitlements are asked for."
    )
    entitlement_max_age: Seconds | None = Field(
        default=None,
        gt=0,
        description="Offline, the last answer holds this long, then the tenant's entitlements lapse (none "
        "until the platform answers again); unset: the last answer holds however long the outage.",
    )
    deploy_timeout: Seconds = Field(
        default=30.0, gt=0, le=600, description="A deployment's changed devices must be up within this."
    )


class ClusterConfig(_Strict):
    """Cluster mode (edge/cluster, docs/scale.md): several gateway instances share this file and one PostgreSQL;
    each device is polled by the one instance holding its lease, tenant-wide consumers by each tenant's leader.

    Safety rests on `renew_deadline < lease_ttl`: an instance that could not renew for `renew_deadline` stops
    polling, `lease_ttl - renew_deadline` before anyone else may take its devices."""

    enabled: bool = False
    dsn: str = Field(
        default="",
        description="PostgreSQL for the leases (postgresql://USER@HOST:PORT/DB, no password); unset: the "
        "outbox's [storage.postgresql].",
    )
    password: str | None = Field(default=None, description="A secret reference (env:NAME or file:PATH).")
    lease_ttl: Seconds = Field(
        default=10.0, ge=1.0, le=300, description="A lease not renewed expires after this."
    )
    renew_interval: Seconds = Field(default=2.0, gt=0, le=60, description="Seconds between lease renewals.")
    renew_deadline: Seconds = Field(
        default=6.0,
        gt=0,
        description="Without a renewal for this long, the instance stops polling (< lease_ttl).",
    )
    drain_timeout: Seconds = Field(
        default=30.0,
        ge=0,
        le=600,
        description="On SIGTERM, wait this long for devices to move before stopping.",
    )

    @model_validator(mode="after")
    def _deadlines(self) -> ClusterConfig:
        if not self.renew_interval < self.renew_deadline < self.lease_ttl:
            raise ValueError(
                f"need renew_interval ({self.renew_interval:g}s) < renew_deadline ({self.renew_deadline:g}s)"
                f" < lease_ttl ({self.lease_ttl:g}s): a partitioned instance must stop before its leases expire"
            )
        if self.lease_ttl - self.renew_deadline < 1.0:
            raise ValueError(
                "lease_ttl must exceed renew_deadline by at least 1 s (the time a poll takes to stop)"
            )
        return self


class GatewayConfig(_Strict):
    gateway: GatewaySection
    tenants: tuple[TenantConfig, ...] = Field(min_length=1)
    sites: tuple[SiteConfig, ...] = Field(min_length=1)
    devices: tuple[DeviceConfig, ...] = ()
    modules: tuple[ModuleConfig, ...] = ()
    bus: BusConfig = BusConfig()
    storage: StorageConfig = StorageConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    api: ApiConfig = ApiConfig()
    cloud: CloudConfig = CloudConfig()
    cluster: ClusterConfig = ClusterConfig()
    limits: TenantLimits = Field(default=TenantLimits(), description="Per-tenant limits, the same for each.")

    def cluster_database(self) -> tuple[str, str | None]:
        """Connection string and password of the cluster's PostgreSQL: its own, or the outbox's."""
        if self.cluster.dsn or self.storage.postgresql is None:
            return self.cluster.dsn, self.cluster.password
        return self.storage.postgresql.dsn, self.storage.postgresql.password

    @model_validator(mode="after")
    def _cluster_bus(self) -> GatewayConfig:
        if self.cluster.enabled and not self.cluster_database()[0]:
            raise ValueError(
                "cluster.dsn: cluster mode needs PostgreSQL: set [cluster] dsn, or [storage] backend = "
                '"postgresql" whose database the cluster then shares'
            )
        if self.cluster.enabled and self.cluster.dsn and self.storage.backend == "postgresql":
            raise ValueError(
                'cluster.dsn: with [storage] backend = "postgresql" the cluster keeps its leases in the outbox\'s'
                " database (its commits check them): leave [cluster] dsn unset"
            )
        dialects = [(t.sparkplug, t.homeassistant) for t in self.tenants]
        if self.cluster.enabled and any((s and s.enabled) or (h and h.enabled) for s, h in dialects):
            raise ValueError(
                "cluster.enabled: Sparkplug B and Home Assistant discovery speak for one gateway process (one edge"
                " node, one device registry); not available in cluster mode yet"
            )
        if self.cluster.enabled and self.bus.mode == "embedded":
            raise ValueError(
                'cluster.enabled: instances must share one broker; set [bus] mode = "external" (docs/scale.md)'
            )
        return self

    @model_validator(mode="after")
    def _tiers_fit_the_backend(self) -> GatewayConfig:
        for tenant in self.tenants:
            if tenant.storage == "database" and self.storage.backend != "postgresql":
                raise ValueError(
                    f"tenant {tenant.id!r}: storage 'database' needs [storage] backend = 'postgresql'"
                    " (on SQLite, 'dedicated' gives the tenant its own database file)"
                )
        return self

    def tenant_limits(self, tenant: str) -> TenantLimits:
        """`[limits]` with the tenant's own overrides applied."""
        for config in self.tenants:
            if config.id == tenant:
                return self.limits.model_copy(update=config.limits.model_dump(exclude_none=True))
        return self.limits

    def retention_policy(self, tenant: str) -> RetentionPolicy:
        """The storage defaults with the tenant's own overrides applied."""
        merged = self.storage.retention.model_dump()
        for config in self.tenants:
            if config.id == tenant:
                merged.update(config.retention.model_dump(exclude_none=True))
        return RetentionPolicy(**merged)


class ProfileHeader(_Strict):
    name: str
    driver: Name
    description: str = ""
    manufacturer: str = ""
    model: str = ""
