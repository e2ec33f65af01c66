"""What the OPC UA driver relies on in asyncua beyond its public API, pinned so an upgrade that changes it fails
here instead of silently costing CPU."""

from __future__ import annotations

from asyncua.client.client import Client


def test_asyncua_still_has_the_stale_check_period_the_driver_lengthens() -> None:
    # drivers/opcua/connect.py sets it (no public setting exists): renamed, the assignment would create an
    # unused attribute and every client would wake every 0.5 s again
    assert isinstance(Client("opc.tcp://127.0.0.1:4840")._stale_check_interval, float)
