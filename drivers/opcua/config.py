"""Configuration models of the OPC UA driver: one server connection (with its security) and one point.

Both are validated once, when the gateway starts. Message security is on by default: a connection without a
`security` key uses Basic256Sha256 with SignAndEncrypt and therefore needs the gateway's certificate, its key
and a trust list for the server's certificate; `security = "None"` must be written out to connect in clear.
Secrets (`password`, `private_key_password`) may be given as `env:NAME`, read from the environment at load
time, and are held as `SecretStr` so that they never appear in a repr, a log line or a dumped model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from asyncua.ua import NodeId, RelativePath
from asyncua.ua.uaerrors import UaStringParsingError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from edge.sdk import PointConfig

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
SecurityMode = Literal["Sign", "SignAndEncrypt"]
# Scalar built-in types a point can be written as (OPC UA Part 6 §5.1.2 names).
WriteType = Literal[
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
]
DeadbandType = Literal["absolute", "percent"]

_URL = re.compile(r"^opc\.tcp://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:\d{1,5})?(/\S*)?$")


def _secret(value: Any) -> Any:
    """'env:NAME' is replaced by the variable's value; a missing variable is a configuration error."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if not name:
            raise ValueError("'env:' needs a variable name, e.g. env:OPCUA_PASSWORD")
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    return value


Secret = Annotated[SecretStr, BeforeValidator(_secret)]


def _paths(value: Any) -> Any:
    """One path as text, or several separated by commas (as `--connection key=value` gives them)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _variables(value: Any) -> Any:
    """'lift=Lift2' or 'lift=Lift2,bank=B' (as `--connection node_variables=lift=Lift2` gives it)."""
    if isinstance(value, str):
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        if any(not sep or not key.strip() for key, sep, _ in pairs):
            raise ValueError(f"node_variables {value!r}: expected name=value[,name=value]")
        return {key.strip(): text.strip() for key, _, text in pairs}
    return value


class OpcuaConnection(BaseModel):
    """How to reach one OPC UA server, prove who the gateway is, and whom to trust."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Endpoint URL, e.g. opc.tcp://10.0.0.5:4840/ (as the server publishes it).")
    security: SecurityPolicy = Field(
        default="Basic256Sha256",
        description='Security policy; "None" (no signing, no encryption) must be set explicitly.',
    )
    mode: SecurityMode = Field(default="SignAndEncrypt", description="Message security mode when secure.")
    certificate: Path | None = Field(
        default=None, description="The gateway's application instance certificate (DER or PEM)."
    )
    private_key: Path | None = Field(default=None, description="Its private key (PEM or DER).")
    private_key_password: Secret | None = None
    application_uri: str | None = Field(
        default=None,
        description="The gateway's ApplicationUri; default: the certificate's subjectAltName URI.",
    )
    trusted_server_certificates: Annotated[tuple[Path, ...], BeforeValidator(_paths)] = Field(
        default=(),
        description="Trust list: server certificate files and/or directories of them (DER or PEM). The server "
        "certificate must be one of these, or be issued by a CA certificate among them.",
    )
    username: str | None = Field(default=None, min_length=1)
    password: Secret | None = None
    user_certificate: Path | None = Field(
        default=None, description="X.509 user identity (instead of a user name)."
    )
    user_private_key: Path | None = None
    node_variables: Annotated[dict[str, str], BeforeValidator(_variables)] = Field(
        default_factory=dict,
        description="Values for {name} placeholders in the profile's node ids and browse paths, e.g. "
        '{ lift = "Lift2" } so that one profile serves every lift of a group controller.',
    )
    session_timeout: float = Field(default=60.0, ge=1.0, le=3600.0, description="Seconds.")
    publishing_interval_ms: float = Field(
        default=100.0, gt=0.0, le=3_600_000.0, description="The device's subscription publishing interval."
    )
    keepalive_count: int = Field(
        default=10, ge=1, le=1000, description="Publishing intervals without data before a keep-alive."
    )
    lifetime_count: int = Field(
        default=60,
        ge=3,
        le=100_000,
        description="Intervals without a publish request before the server drops it.",
    )
    max_notifications_per_publish: int = Field(default=10_000, ge=0, description="0: no limit.")
    watchdog_interval: float = Field(
        default=5.0,
        gt=0.0,
        le=60.0,
        description="Seconds between asyncua's server-state probes (a read each); while subscribed, the "
        "session's keep-alive watchdog notices a silent server sooner.",
    )
    max_message_size: int = Field(
        default=16 * 1024 * 1024,
        ge=8192,
        description="Largest message, bytes, announced in Hello (asyncua then uses the server's answer).",
    )
    max_chunk_count: int = Field(
        default=512, ge=1, description="Most chunks per message, announced in Hello."
    )
    max_nodes_per_read: int = Field(
        default=0, ge=0, description="Nodes per Read call; 0: the server's OperationLimits (or no limit)."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _URL.match(self.url):
            raise ValueError(f"url {self.url!r} is not an opc.tcp://host[:port][/path] endpoint URL")
        if self.security != "None":
            missing = [n for n in ("certificate", "private_key") if getattr(self, n) is None]
            if missing:
                raise ValueError(
                    f"security {self.security!r} needs the gateway's {' and '.join(missing)} "
                    '(create them with `edge certs create`), or set security = "None" explicitly'
                )
            if not self.trusted_server_certificates:
                raise ValueError(
                    "trusted_server_certificates is empty: list the server's certificate (or a directory "
                    "of trusted certificates); a server is never trusted blindly"
                )
        elif self.password is not None:
            raise ValueError(
                'a password over security "None" would travel in clear text; use a secure policy'
            )
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError("user_certificate and user_private_key go together")
        if self.user_certificate is not None and self.username is not None:
            raise ValueError("choose one user identity: username/password or user_certificate")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.lifetime_count < 3 * self.keepalive_count:
            raise ValueError("lifetime_count must be at least 3 x keepalive_count (OPC UA Part 4 §5.13.2)")
        return self


class OpcuaPoint(PointConfig):
    """A variable of the server, by node id or by browse path from the Objects folder."""

    node: str | None = Field(
        default=None,
        description='Node id: "ns=2;s=Lift1.CurrentFloor", "i=2258", or with the namespace URI '
        '(stable across server restarts): "nsu=urn:edge-gw:sim:lift;s=Lift1.CurrentFloor".',
    )
    browse_path: str | None = Field(
        default=None,
        description='Relative path from Objects in OPC UA text form, e.g. "/2:Lifts/2:Lift1/2:CurrentFloor".',
    )
    sampling_interval_ms: float | None = Field(
        default=None, ge=0.0, description="None: the connection's publishing interval; 0: fastest."
    )
    deadband: float = Field(default=0.0, ge=0.0, description="0: report every change.")
    deadband_type: DeadbandType = "absolute"
    queue_size: int = Field(
        default=1, ge=1, le=10_000, description="Samples the server keeps between publishes."
    )
    data_type: WriteType | None = Field(
        default=None, description="Type for writes; default: the node's DataType, read once per connection."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give exactly one of 'node' and 'browse_path'")
        if self.node is not None:
            parse_node_id(self.node)
        if self.browse_path is not None:
            parse_browse_path(self.browse_path)
        if self.deadband_type == "percent" and self.deadband > 100.0:
            raise ValueError("a percent deadband is at most 100")
        return self


def parse_node_id(text: str) -> NodeId:
    """A NodeId (an ExpandedNodeId when the text names its namespace by URI). Raises ValueError."""
    try:
        node_id = NodeId.from_string(text.strip())
    except (UaStringParsingError, ValueError) as exc:
        raise ValueError(
            f"node {text!r} is not an OPC UA node id (forms: 'ns=2;s=Name', 'ns=3;i=1001', 'nsu=<uri>;s=Name')"
        ) from exc
    if getattr(node_id, "ServerIndex", None):
        raise ValueError(f"node {text!r} is on another server (srv=): not supported")
    return node_id


def parse_browse_path(text: str) -> RelativePath:
    """A RelativePath from its text form ('/2:Lifts/2:Lift1/2:CurrentFloor'). Raises ValueError."""
    try:
        path = RelativePath.from_string(text)
    except (UaStringParsingError, ValueError) as exc:
        raise ValueError(f"browse_path {text!r} is not an OPC UA relative path: {exc}") from exc
    if not path.Elements:
        raise ValueError(f"browse_path {text!r} is empty")
    return path
