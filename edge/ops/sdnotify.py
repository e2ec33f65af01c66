"""systemd's notify protocol (sd_notify(3)): READY=1 once started, WATCHDOG=1 while healthy, STOPPING=1.

A datagram to the socket named by $NOTIFY_SOCKET (a path, or `@name` in the abstract namespace). Without the
variable (not started by systemd with Type=notify) every call does nothing. The unit's WatchdogSec restarts a
gateway that stops sending WATCHDOG=1, which `edge run` sends only while the gateway is live (edge.ops.health).
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify"]

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send `fields` (e.g. "READY=1", "STATUS=...") to systemd; True if a notify socket took them."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), target)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)
        return False
    return True
