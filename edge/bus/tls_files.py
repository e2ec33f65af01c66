"""Where the embedded broker's TLS material lives (edge.bus.tls makes it). Apart from tls.py so the broker's
listeners find their files without loading cryptography (~10 MB of RSS) in a gateway that makes none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BrokerCertificates", "broker_cert_dir"]


@dataclass(frozen=True, slots=True)
class BrokerCertificates:
    ca: Path
    ca_key: Path
    server: Path
    server_key: Path

    @classmethod
    def at(cls, directory: Path) -> BrokerCertificates:
        return cls(
            directory / "ca.pem", directory / "ca.key", directory / "server.pem", directory / "server.key"
        )


def broker_cert_dir(data_dir: Path) -> Path:
    return data_dir / "certs" / "broker"
