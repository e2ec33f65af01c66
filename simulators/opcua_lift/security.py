"""Security of the simulated server: offered policies, user names, the client trust directory, its certificate.

The certificate code is the simulator's own (it shares nothing with the gateway's `edge.sdk.certs`), so a mistake
in one is not silently mirrored by the other.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulators.opcua_lift.nodes import APPLICATION_URI

POLICIES: dict[str, tuple[ua.SecurityPolicyType, ua.SecurityPolicyType] | None] = {
    "None": None,
    "Basic256Sha256": (
        ua.SecurityPolicyType.Basic256Sha256_Sign,
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ),
    "Aes128_Sha256_RsaOaep": (
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ),
    "Aes256_Sha256_RsaPss": (
        ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    ),
}


class Users:
    """asyncua user manager: the configured user names and passwords, or a client certificate token."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None:  # a user name token (the channel's certificate comes along: ignore it)
            return User(role=UserRole.User) if self._users.get(username) == password else None
        if certificate is not None:  # an X.509 identity token, its signature checked by asyncua
            return User(role=UserRole.User)
        return None


async def client_validator(
    trusted_dir: Path,
) -> Callable[[x509.Certificate, ua.ApplicationDescription], Any]:
    """Pin client certificates to a directory (asyncua's recipe; an empty store refuses every client)."""
    if not _has_certificates(
        trusted_dir
    ):  # asyncua's TrustStore crashes on an empty directory: refuse explicitly instead

        async def refuse(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

        return refuse
    store = TrustStore([trusted_dir], [])
    await store.load()
    options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
    return CertificateValidator(options, store)


def _has_certificates(directory: Path) -> bool:
    return directory.is_dir() and any(p.suffix in (".der", ".pem") for p in directory.iterdir())


def make_certificate(directory: Path, host: str = "127.0.0.1", days: int = 365) -> tuple[Path, Path]:
    """The simulator's own self-signed server certificate (DER) and key (PEM), written to `directory`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lift controller simulator")])
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    alt: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(APPLICATION_URI),
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    with contextlib.suppress(ValueError):
        if host != "127.0.0.1":
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
    usage = x509.KeyUsage(True, True, True, True, False, True, False, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server_cert.der", directory / "server_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path
