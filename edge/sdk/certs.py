"""Application instance certificates: the gateway's own identity towards secure industrial protocols.

Protocol-neutral (it knows X.509, not OPC UA): a self-signed RSA certificate whose subjectAltName carries the
application URI, DNS names and IP addresses, with the key usages an OPC UA application instance certificate
needs (Part 6 §6.2.2: digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment, keyCertSign for a
self-signed one; serverAuth + clientAuth), which other protocols accept as well. `edge certs create` and the
tests use it; drivers load what it wrote with `load_certificate` / `load_private_key`.

Files written by `write_application_certificate`: `certificate.der` (what peers put on their trust list),
`certificate.pem` (the same, for tools that want PEM) and `private_key.pem` (PKCS#8, mode 0600, optionally
encrypted with a password).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateFiles",
    "application_uri",
    "create_application_certificate",
    "default_dns_names",
    "load_certificate",
    "load_private_key",
    "thumbprint",
    "write_application_certificate",
    "write_private_file",
]

CERTIFICATE_DER = "certificate.der"
CERTIFICATE_PEM = "certificate.pem"
PRIVATE_KEY_PEM = "private_key.pem"


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    certificate: Path  # DER
    certificate_pem: Path
    private_key: Path  # PEM, PKCS#8
    thumbprint: str  # SHA-1, hex: how OPC UA tools name a certificate


def default_dns_names() -> list[str]:
    """`localhost` and this machine's host name (OPC UA stacks warn when the host name is missing)."""
    names = ["localhost"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


def create_application_certificate(
    *,
    application_uri: str,
    common_name: str,
    days: int = 365,
    dns_names: Sequence[str] | None = None,
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    organization: str | None = None,
    key_size: int = 2048,
    now: datetime.datetime | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed application instance certificate and its RSA key. Raises ValueError on bad input."""
    if not application_uri or ":" not in application_uri:
        raise ValueError(f"application URI {application_uri!r} is not a URI (e.g. urn:acme:edge-gateway)")
    if not common_name:
        raise ValueError("the certificate needs a name (its subject common name)")
    if days < 1:
        raise ValueError("a certificate must be valid for at least one day")
    if key_size < 2048:
        raise ValueError("RSA keys shorter than 2048 bits are refused by current security policies")
    ips = [ipaddress.ip_address(ip) for ip in ip_addresses]  # ValueError names the bad address
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)  # clock skew
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    san += [x509.DNSName(d) for d in (default_dns_names() if dns_names is None else dns_names)]
    san += [x509.IPAddress(ip) for ip in ips]
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,  # OPC UA wants it on a self-signed application certificate
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def write_application_certificate(
    out_dir: Path,
    *,
    application_uri: str,
    common_name: str,
    days: int = 365,
    dns_names: Sequence[str] | None = None,
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    organization: str | None = None,
    key_password: str | None = None,
    overwrite: bool = False,
) -> CertificateFiles:
    """Create a certificate and write it to `out_dir`; refuses to replace an existing key unless `overwrite`."""
    files = (out_dir / CERTIFICATE_DER, out_dir / CERTIFICATE_PEM, out_dir / PRIVATE_KEY_PEM)
    existing = [f for f in files if f.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists: refusing to replace the gateway's identity")
    cert, key = create_application_certificate(
        application_uri=application_uri,
        common_name=common_name,
        days=days,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        organization=organization,
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(key_password.encode())
        if key_password
        else serialization.NoEncryption()
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_private_file(files[2], key_pem)
    files[0].write_bytes(cert.public_bytes(serialization.Encoding.DER))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateFiles(files[0], files[1], files[2], thumbprint(cert))


def write_private_file(path: Path, data: bytes) -> None:
    """Write a secret readable by the owner only (created 0600, never world-readable in between)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_certificate(path_or_data: Path | bytes) -> x509.Certificate:
    """A certificate from a DER or PEM file (or bytes). Raises ValueError if it is neither."""
    data = path_or_data.read_bytes() if isinstance(path_or_data, Path) else path_or_data
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def load_private_key(path: Path, password: str | None = None) -> PrivateKeyTypes:
    """A private key from a PEM or DER file. Raises ValueError (bad data or password) or TypeError."""
    data = path.read_bytes()
    secret = password.encode() if password else None
    if data.lstrip().startswith(b"-----BEGIN"):
        return serialization.load_pem_private_key(data, secret)
    return serialization.load_der_private_key(data, secret)


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER certificate, lower-case hex: the name OPC UA trust lists and tools use."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).hexdigest()


def application_uri(cert: x509.Certificate) -> str | None:
    """The first URI in the certificate's subjectAltName (an OPC UA application's ApplicationUri)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
