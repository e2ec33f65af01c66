"""The embedded broker's listeners: the gateway's own on loopback and the site's LAN ones (`[[bus.listeners]]`).

`broker_listeners` resolves the configuration into `Listener`s with absolute certificate paths;
`mosquitto_lines` renders them for Mosquitto; `port_problems` says in one line per listener which port is
already taken and what to change (`edge config check`, `edge run`); `certificate_problems` names a missing or
unreadable certificate file before Mosquitto would fail on it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.bus.tls_files import BrokerCertificates, broker_cert_dir
from edge.config.models import BusConfig, ListenerConfig

__all__ = [
    "OWN",
    "Listener",
    "broker_listeners",
    "certificate_problems",
    "free_port_from",
    "mosquitto_lines",
    "port_problems",
]

OWN = "own"  # the gateway's loopback listener, configured by [bus] host and port


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    host: str
    port: int
    protocol: str = "mqtt"  # or "websockets"
    certfile: Path | None = None  # set: TLS
    keyfile: Path | None = None
    cafile: Path | None = None  # clients' CA, with require_certificate
    require_certificate: bool = False
    where: str = "[bus] port"  # the configuration field to change

    @property
    def tls(self) -> bool:
        return self.certfile is not None


def broker_listeners(bus: BusConfig, config_dir: Path, data_dir: Path) -> list[Listener]:
    """The own loopback listener first, then each LAN listener with its files resolved."""
    own = Listener(OWN, bus.host, bus.port)
    return [own, *(_lan(index, item, config_dir, data_dir) for index, item in enumerate(bus.listeners))]


def _lan(index: int, item: ListenerConfig, config_dir: Path, data_dir: Path) -> Listener:
    where = f"bus.listeners[{index}].port"
    if not item.tls:
        return Listener(item.label, item.host, item.port, item.protocol, where=where)
    defaults = BrokerCertificates.at(broker_cert_dir(data_dir))

    def resolve(value: str | None, default: Path) -> Path:
        return default if value is None else (config_dir / value).resolve()

    return Listener(
        item.label,
        item.host,
        item.port,
        item.protocol,
        certfile=resolve(item.certfile, defaults.server),
        keyfile=resolve(item.keyfile, defaults.server_key),
        cafile=resolve(item.cafile, defaults.ca) if item.require_certificate else None,
        require_certificate=item.require_certificate,
        where=where,
    )


def mosquitto_lines(listeners: Iterable[Listener]) -> str:
    """Mosquitto `listener` blocks (settings after a `listener` line belong to it). Every listener shares the
    access files: allow_anonymous is off whenever one is not on loopback (`AccessStore`)."""
    out: list[str] = []
    for item in listeners:
        out.append(f"listener {item.port} {item.host}")
        if item.protocol == "websockets":
            out.append("protocol websockets")
        if item.certfile is not None and item.keyfile is not None:
            out += [f"certfile {item.certfile}", f"keyfile {item.keyfile}", "tls_version tlsv1.2"]
        if item.require_certificate and item.cafile is not None:
            # the certificate's common name is the username: the tenant user's ACL applies
            out += [f"cafile {item.cafile}", "require_certificate true", "use_identity_as_username true"]
    return "\n".join(out) + "\n"


def port_problems(listeners: Sequence[Listener]) -> list[str]:
    """One line per listener whose port something else already holds: the port, the listener, the fix."""
    problems = []
    for item in listeners:
        error = _bind_error(item.host, item.port)
        if error == errno.EADDRINUSE:
            suggestion = free_port_from(item.port + 1, item.host)
            problems.append(
                f"port {item.port} ({item.name} listener on {item.host}) is already in use: set "
                f"{item.where} to a free port (e.g. {suggestion}) or stop what listens there"
            )
        elif error is not None:
            problems.append(
                f"{item.name} listener cannot listen on {item.host}:{item.port}: {os.strerror(error)} "
                f"(set {item.where.rsplit('.', 1)[0]}.host to an address of this machine, or 0.0.0.0)"
            )
    return problems


def certificate_problems(listeners: Sequence[Listener]) -> list[str]:
    problems = []
    for item in listeners:
        for kind, path in (("certfile", item.certfile), ("keyfile", item.keyfile), ("cafile", item.cafile)):
            if path is not None and not path.is_file():
                hint = " (create it with `edge certs create --profile broker`)" if kind != "keyfile" else ""
                problems.append(f"{item.name} listener: {kind} {path} does not exist{hint}")
    return problems


def free_port_from(start: int, host: str = "127.0.0.1", tries: int = 100) -> int:
    """The first port from `start` nothing listens on (or `start` if none in `tries` is free)."""
    for port in range(start, min(start + tries, 65_536)):
        if _bind_error(host, port) is None:
            return port
    return start


def _bind_error(host: str, port: int) -> int | None:
    """Why a listener could not bind host:port now (an errno), or None. SO_REUSEADDR as Mosquitto: a
    connection in TIME_WAIT is no conflict."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror:
            return errno.EADDRNOTAVAIL
        except OSError as exc:
            return exc.errno or errno.EINVAL
    return None
