"""TLS material of the embedded broker's LAN listeners: a small CA, the server certificate, client certificates.

`edge certs create --profile broker` writes, in `<data_dir>/certs/broker/` (or `--out`):

- `ca.pem` / `ca.key`: a CA of this gateway only (10 years); `ca.pem` is what a BMS, SCADA or Node-RED trusts
  to verify the broker, `ca.key` (0600) stays here and signs the certificates below;
- `server.pem` / `server.key`: the broker's certificate, with a subjectAltName for every host name and address
  clients use to reach it (a client verifying the host name refuses any other);
- `clients/<name@tenant>.pem` / `.key` (`--profile client --user name@tenant`): a client certificate whose
  common name is the tenant user, for listeners with `require_certificate` (Mosquitto takes the name as the
  username, `use_identity_as_username`, and the tenant's ACL applies).

Keys are ECDSA P-256: accepted by every current TLS stack and far cheaper to make and use than RSA.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.bus.tls_files import BrokerCertificates, broker_cert_dir
from edge.sdk.certs import default_dns_names, write_private_file

__all__ = [
    "BrokerCertificates",
    "Expiry",
    "broker_cert_dir",
    "certificate_expiry",
    "write_broker_certificates",
    "write_client_certificate",
]

CA_DAYS: Final = 3650
EXPIRY_WARNING_DAYS: Final = 30
_CLOCK_SKEW: Final = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Expiry:
    path: Path
    not_after: datetime.datetime
    days_left: int

    @property
    def warning(self) -> bool:
        return self.days_left < EXPIRY_WARNING_DAYS


def write_broker_certificates(
    directory: Path,
    hosts: Sequence[str],
    *,
    days: int = 825,
    overwrite: bool = False,
) -> BrokerCertificates:
    """Create the CA (kept when it exists) and a server certificate for `hosts` (names and addresses).

    A CA already there is reused, so clients that trust it keep working when the server certificate is
    renewed; `overwrite` is needed to replace an existing server certificate. Raises ValueError on bad input."""
    files = BrokerCertificates.at(directory)
    if files.server.exists() and not overwrite:
        raise FileExistsError(f"{files.server} exists: refusing to replace the broker's certificate")
    if days < 1:
        raise ValueError("a certificate must be valid for at least one day")
    names = list(dict.fromkeys(hosts or [*default_dns_names(), "127.0.0.1"]))
    san = [_general_name(host) for host in names]
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_create_ca(files)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _signed(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]),
        key.public_key(),
        ca_cert,
        ca_key,
        days=days,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=san,
    )
    write_private_file(files.server_key, _key_pem(key))
    files.server.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def write_client_certificate(
    directory: Path, username: str, *, days: int = 825, overwrite: bool = False
) -> tuple[Path, Path]:
    """A client certificate for tenant user `username` (`name@tenant`), signed by the broker CA in
    `directory`; returns (certificate, key) under `directory/clients/`."""
    if "@" not in username:
        raise ValueError(f"{username!r} is not a tenant user: name@tenant (edge tenant credentials list)")
    files = BrokerCertificates.at(directory)
    if not files.ca.exists() or not files.ca_key.exists():
        raise ValueError(f"no broker CA in {directory}: run `edge certs create --profile broker` first")
    cert_path = directory / "clients" / f"{username}.pem"
    key_path = cert_path.with_suffix(".key")
    if cert_path.exists() and not overwrite:
        raise FileExistsError(f"{cert_path} exists: refusing to replace it")
    ca_cert, ca_key = _load_or_create_ca(files)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _signed(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, username)]),
        key.public_key(),
        ca_cert,
        ca_key,
        days=days,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        san=[],
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def certificate_expiry(path: Path, now: datetime.datetime | None = None) -> Expiry:
    """When the (first) certificate in a PEM file expires. Raises OSError or ValueError."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    not_after = cert.not_valid_after_utc
    left = not_after - (now or datetime.datetime.now(datetime.UTC))
    return Expiry(path, not_after, left.days)


# ---- internals ---------------------------------------------------------------------------------------------


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(c in host for c in " /@:*") or len(host) > 253:
        raise ValueError(f"{host!r} is neither a host name nor an IP address")
    return x509.DNSName(host)


def _load_or_create_ca(files: BrokerCertificates) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if files.ca.exists() and files.ca_key.exists():
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{files.ca_key} is not the EC key this tool writes")
        return x509.load_pem_x509_certificate(files.ca.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge gateway broker CA")])
    start = datetime.datetime.now(datetime.UTC) - _CLOCK_SKEW
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_file(files.ca_key, _key_pem(key))
    files.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _signed(
    subject: x509.Name,
    public: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    days: int,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName],
) -> x509.Certificate:
    start = datetime.datetime.now(datetime.UTC) - _CLOCK_SKEW
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
