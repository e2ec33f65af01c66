"""Opening an asyncua client to one server: message security, the server trust check, the user identity.

For a secure connection the server's certificate is fetched with GetEndpoints (over a None channel, which
every server allows for discovery) and checked against the configured trust list *before* anything else is
sent; an untrusted certificate raises `DeviceUnreachable("server certificate not trusted: ...")`. The trusted
certificate is then pinned for the secure channel (asyncua checks that CreateSession presents the same one,
and a `certificate_validator` re-checks it against the trust list). A server that offers the certificate but
does not hold its private key cannot open the channel. asyncua's own reconnect stays off: the kernel reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from drivers.opcua.certs import TrustList, application_uri, describe, load_certificate, load_private_key
from drivers.opcua.config import OpcuaConnection
from drivers.opcua.values import status_name
from edge.sdk import DeviceUnreachable

APPLICATION_NAME = "Edge gateway"
PRODUCT_URI = "urn:edge-gateway:opcua-driver"
NO_SECURITY_URI = "http://opcfoundation.org/UA/SecurityPolicy#None"

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES: dict[str, ua.MessageSecurityMode] = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
# Status codes a server answers with when it does not accept the gateway, and what to do about it.
_HINTS: dict[str, str] = {
    "BadCertificateUntrusted": "the server does not trust the gateway's certificate: add it to the server's trust list",
    "BadSecurityChecksFailed": "the server refused the gateway's certificate or signature: is the gateway's "
    "certificate on the server's trust list?",
    "BadCertificateUriInvalid": "the gateway's application_uri differs from its certificate's URI",
    "BadCertificateTimeInvalid": "a certificate is expired or not yet valid",
    "BadIdentityTokenInvalid": "the server refused the user identity (user name, password or user certificate)",
    "BadIdentityTokenRejected": "the server refused the user identity (user name, password or user certificate)",
    "BadUserAccessDenied": "the server refused the user identity (user name, password or user certificate)",
    "BadSecurityPolicyRejected": "the server does not accept this security policy",
}

_STALE_CHECK_INTERVAL = 3600.0  # seconds; see open_client

LostCallback = Callable[[Exception], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class _Material:
    certificate: bytes  # DER
    private_key: bytes  # DER, PKCS#8, unencrypted, in memory only
    application_uri: str
    trust: TrustList


def quiet_asyncua_logging() -> None:
    """Raise the `asyncua` logger to CRITICAL unless the operator configured it.

    asyncua logs a traceback when a connection it is tearing down is already gone, an INFO line per read and
    a warning per secure session; the driver reports each outcome as a typed error or a fault instead, which
    the kernel logs once when a device goes down and once when it recovers.
    """
    logger = logging.getLogger("asyncua")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


async def open_client(
    conn: OpcuaConnection, *, device: str, request_timeout: float, on_lost: LostCallback | None = None
) -> Client:
    """A connected client with an active session, or `DeviceUnreachable` saying why not."""
    client = Client(conn.url, timeout=request_timeout, watchdog_intervall=conn.watchdog_interval)
    # The session subscribes on `client.uaclient`, not through `Client.create_subscription`, so asyncua's own
    # stale-subscription check (a wake-up every 0.5 s per client) never has one to check: the session's
    # keep-alive watchdog does that job. asyncua has no public setting for its period (a test pins the name).
    client._stale_check_interval = _STALE_CHECK_INTERVAL
    client.name = client.description = APPLICATION_NAME
    client.product_uri = PRODUCT_URI
    client.session_timeout = round(conn.session_timeout * 1000)
    client.max_messagesize = conn.max_message_size
    client.max_chunkcount = conn.max_chunk_count
    try:
        if conn.security != "None":
            await _secure(client, conn, device)
        await _identify(client, conn, device)
        client.connection_lost_callback = on_lost
        await client.connect()
    except DeviceUnreachable:
        await close_client(client)
        raise
    except BaseException as exc:
        await close_client(client)
        reason = unreachable_reason(exc, conn)
        if reason is None:
            raise
        raise DeviceUnreachable(device, reason) from exc
    return client


async def close_client(client: Client) -> None:
    """Disconnect without raising: a dead server must not make closing fail (or hang past a second)."""
    try:
        async with asyncio.timeout(1.0):
            await client.disconnect()
    except (TimeoutError, OSError, UaError, ConnectionError):
        client.disconnect_socket()


def unreachable_reason(exc: BaseException, conn: OpcuaConnection) -> str | None:
    """A person-readable reason for a failed connect, or None if `exc` is not about reaching the server."""
    where = urlparse(conn.url).netloc
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} in time"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {where} refused"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    if isinstance(exc, UaStatusCodeError):
        name = status_name(exc.code)
        hint = _HINTS.get(name)
        return f"{name}: {hint}" if hint else name
    if isinstance(exc, ServiceError):
        return status_name(exc.code)
    if isinstance(exc, ConnectionError | UaError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


async def _secure(client: Client, conn: OpcuaConnection, device: str) -> None:
    material = await asyncio.to_thread(_load_material, conn, device)
    client.application_uri = material.application_uri
    server_cert = await _server_certificate(client, conn, device)
    reason = material.trust.check(server_cert)
    if reason is not None:
        raise DeviceUnreachable(device, f"server certificate not trusted: {reason}")
    client.certificate_validator = _validator(material.trust)
    await client.set_security(
        POLICIES[conn.security],
        certificate=material.certificate,
        private_key=material.private_key,
        server_certificate=server_cert.public_bytes(serialization.Encoding.DER),
        mode=MODES[conn.mode],
    )


async def _server_certificate(client: Client, conn: OpcuaConnection, device: str) -> x509.Certificate:
    """The certificate of the endpoint matching our policy and mode, as the server's GetEndpoints gives it."""
    endpoints = await client.connect_and_get_server_endpoints()
    policy_uri = POLICIES[conn.security].URI
    mode = MODES[conn.mode]
    for endpoint in endpoints:
        if endpoint.SecurityPolicyUri == policy_uri and endpoint.SecurityMode == mode:
            if not endpoint.ServerCertificate:
                raise DeviceUnreachable(device, f"the {conn.security} endpoint has no server certificate")
            try:
                return load_certificate(_first_certificate(endpoint.ServerCertificate))
            except ValueError as exc:
                raise DeviceUnreachable(device, f"the server's certificate cannot be read: {exc}") from exc
    offered = sorted(
        {
            f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ua.MessageSecurityMode(e.SecurityMode).name.rstrip('_')}"
            for e in endpoints
        }
    )
    raise DeviceUnreachable(
        device, f"the server offers no {conn.security}/{conn.mode} endpoint (offered: {', '.join(offered)})"
    )


def _first_certificate(der: bytes) -> bytes:
    """A server may send its certificate chain concatenated; the first DER SEQUENCE is its own."""
    if len(der) > 4 and der[0] == 0x30 and der[1] == 0x82:
        return der[: int.from_bytes(der[2:4], "big") + 4]
    return der


def _validator(
    trust: TrustList,
) -> Callable[[x509.Certificate, ua.ApplicationDescription], Coroutine[Any, Any, None]]:
    async def validate(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        if trust.check(cert) is not None:
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

    return validate


def _load_material(conn: OpcuaConnection, device: str) -> _Material:
    """Read the gateway's certificate, key and the trust list (blocking file I/O, run in a thread)."""
    assert conn.certificate is not None and conn.private_key is not None
    try:
        cert = load_certificate(conn.certificate)
    except (OSError, ValueError) as exc:
        raise DeviceUnreachable(
            device, f"cannot read the gateway certificate {conn.certificate}: {exc}"
        ) from exc
    password = conn.private_key_password.get_secret_value() if conn.private_key_password else None
    try:
        key = load_private_key(conn.private_key, password)
    except (OSError, ValueError, TypeError) as exc:
        # never echo the exception text of a key load: it may quote key material
        raise DeviceUnreachable(
            device, f"cannot read the private key {conn.private_key} (missing, damaged or wrong password)"
        ) from exc
    uri = conn.application_uri or application_uri(cert)
    if uri is None:
        raise DeviceUnreachable(
            device, f"the gateway certificate ({describe(cert)}) has no URI in its subjectAltName"
        )
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _Material(
        cert.public_bytes(serialization.Encoding.DER),
        key_der,
        uri,
        TrustList.load(conn.trusted_server_certificates),
    )


async def _identify(client: Client, conn: OpcuaConnection, device: str) -> None:
    if conn.username is not None:
        client.set_user(conn.username)
        if conn.password is not None:
            client.set_password(conn.password.get_secret_value())
    elif conn.user_certificate is not None and conn.user_private_key is not None:
        cert_path, key_path = conn.user_certificate, conn.user_private_key
        try:
            cert, key = await asyncio.to_thread(
                lambda: (load_certificate(cert_path), load_private_key(key_path))
            )
        except (OSError, ValueError, TypeError) as exc:
            raise DeviceUnreachable(
                device, f"cannot read the user certificate {cert_path} or its key {key_path}"
            ) from exc
        client.user_certificate = cert
        client.user_private_key = key
