"""Certificates for OPC UA: the gateway's own (made by the kernel's `edge.sdk.certs`) and the server trust list.

The trust list is explicit: a server certificate is accepted only if it is on the list (the same DER bytes) or
was issued by a CA certificate on the list, and is within its validity period. Nothing is trusted on first use.
The list is read from disk on every connection, so a renewed server certificate dropped into a trust directory
is picked up at the next reconnect.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from edge.sdk.certs import (
    application_uri,
    create_application_certificate,
    load_certificate,
    load_private_key,
    thumbprint,
    write_application_certificate,
)

__all__ = [
    "TrustList",
    "application_uri",
    "create_application_certificate",
    "describe",
    "load_certificate",
    "load_private_key",
    "thumbprint",
    "write_application_certificate",
]

_CERT_SUFFIXES = frozenset({".der", ".pem", ".crt", ".cer"})


def describe(cert: x509.Certificate) -> str:
    """'CN=Lift controller simulator, thumbprint 3f2a…' for error messages and logs."""
    return f"{cert.subject.rfc4514_string() or '(no subject)'}, thumbprint {thumbprint(cert)}"


@dataclass(frozen=True)
class TrustList:
    certificates: tuple[x509.Certificate, ...]
    problems: tuple[str, ...] = ()  # entries that could not be read, for the refusal message

    @classmethod
    def load(cls, entries: Sequence[Path]) -> TrustList:
        """Read certificate files and every certificate file in listed directories (blocking file I/O)."""
        certs: list[x509.Certificate] = []
        problems: list[str] = []
        for entry in entries:
            files: Iterable[Path]
            if entry.is_dir():
                files = sorted(p for p in entry.iterdir() if p.suffix.lower() in _CERT_SUFFIXES)
            elif entry.exists():
                files = [entry]
            else:
                problems.append(f"{entry} does not exist")
                continue
            for path in files:
                try:
                    certs.append(load_certificate(path))
                except (OSError, ValueError) as exc:
                    problems.append(f"{path}: {exc}")
        return cls(tuple(certs), tuple(problems))

    def check(self, cert: x509.Certificate, now: datetime.datetime | None = None) -> str | None:
        """None when `cert` is trusted; otherwise why not."""
        moment = now or datetime.datetime.now(datetime.UTC)
        if cert.not_valid_after_utc < moment:
            return f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d} ({describe(cert)})"
        if cert.not_valid_before_utc > moment:
            return f"certificate not valid before {cert.not_valid_before_utc:%Y-%m-%d} ({describe(cert)})"
        der = cert.public_bytes(serialization.Encoding.DER)
        for trusted in self.certificates:
            if trusted.public_bytes(serialization.Encoding.DER) == der:
                return None
            if _is_ca(trusted) and _issued_by(cert, trusted):
                return None
        note = f"; unreadable trust entries: {'; '.join(self.problems)}" if self.problems else ""
        return f"{describe(cert)} is not on the trust list ({len(self.certificates)} certificate(s)){note}"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
