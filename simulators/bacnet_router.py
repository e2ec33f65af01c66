"""BACnet router and BBMD simulator: a site's IP-to-MS/TP router with controllers behind it, on loopback.

An independent device: it imports nothing from `edge` or `drivers`; it is built on bacpypes3's own router and
BBMD (an `Application` with two network ports routes between them; a network port in BBMD mode keeps the
broadcast distribution and foreign device tables).

- The router: BACnet/IP on `address:port` as network `ip_network` (1), in BBMD mode (accepts foreign device
  registrations), and a second port on network `network` (2): a bacpypes3 virtual network standing in for an
  MS/TP trunk. It answers Who-Is-Router-To-Network and forwards requests, answers and COV notifications.
- The controllers behind it: `devices` of them, device instances `first_instance`, +1, ..., MAC addresses
  10, 11, ... on network `network`. Each has a zone temperature (analog-input 1, COV increment 0.1), a
  commandable zone temperature setpoint (analog-value 1), an occupancy input (binary-input 1), and
  `objects` more analog inputs (`point-N`), so that its object list does not fit one answer: reading it
  takes segmentation (the controllers accept 480-byte APDUs and segment).

Loopback: the router listens on its own port; clients on 127.0.0.1 with another port reach it by unicast,
or as foreign devices through its BBMD (their broadcasts then reach the router's networks).

    python -m simulators.bacnet_router --port 47900 --devices 3 --objects 300
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

from bacpypes3.app import Application
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryInputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.vlan import VirtualNetwork

from simulators.serving import serve_until_signal

__all__ = ["Controller", "RoutedSite", "main"]

_VENDOR = 999  # bacpypes3's identifier for samples and tests
_FIRST_MAC = 10
_names = itertools.count(1)  # bacpypes3 keeps virtual networks by name, process-wide


@dataclass
class Controller:
    """One controller behind the router."""

    instance: int
    mac: int
    app: Any
    objects: dict[str, Any]

    def value(self, name: str) -> Any:
        return self.objects[name].presentValue


class RoutedSite:
    """A router (and BBMD) at `address:port` with `devices` controllers on network `network` behind it."""

    def __init__(
        self,
        port: int,
        address: str = "127.0.0.1",
        *,
        network: int = 2,
        ip_network: int = 1,
        devices: int = 2,
        objects: int = 0,
        first_instance: int = 3001,
        mac_length: int = 1,
    ) -> None:
        if not 1 <= devices <= 100:
            raise ValueError("devices must be 1..100")
        if mac_length not in (1, 6):
            raise ValueError("mac_length must be 1 (MS/TP) or 6 (a BACnet/IP network behind the router)")
        self.mac_length = mac_length
        self.port, self.address, self.network, self.ip_network = port, address, network, ip_network
        self.devices, self.extra_objects, self.first_instance = devices, objects, first_instance
        self.controllers: list[Controller] = []
        self._router: Any = None
        self._lan = f"sim-trunk-{next(_names)}"

    @property
    def router_address(self) -> str:
        return f"{self.address}:{self.port}"

    async def start(self) -> None:
        VirtualNetwork(self._lan)
        self._router = Application.from_object_list(
            [
                DeviceObject(
                    objectIdentifier=("device", self.first_instance - 1),
                    objectName="sim-router",
                    vendorIdentifier=_VENDOR,
                ),
                NetworkPortObject(
                    f"{self.address}/8:{self.port}",
                    objectIdentifier=("network-port", 1),
                    objectName="ip-port",
                    networkNumber=self.ip_network,
                    networkNumberQuality="configured",
                    bacnetIPMode="bbmd",
                    bbmdAcceptFDRegistrations=True,
                    bbmdForeignDeviceTable=[],
                    bbmdBroadcastDistributionTable=[],
                ),
                self._trunk_port(1),
            ]
        )
        for k in range(self.devices):
            self.controllers.append(self._controller(self.first_instance + k, _FIRST_MAC + k))

    def _trunk_port(self, mac: int) -> Any:
        return NetworkPortObject(
            objectIdentifier=("network-port", 2 if mac == 1 else 1),
            objectName="trunk-port",
            networkType="virtual",
            protocolLevel="bacnet-application",
            networkNumber=self.network,
            networkNumberQuality="configured",
            macAddress=self.mac_address(mac),
            networkInterfaceName=self._lan,
            statusFlags=[0, 0, 0, 0],
            reliability="no-fault-detected",
            outOfService=False,
            changesPending=False,
        )

    def _controller(self, instance: int, mac: int) -> Controller:
        objects: dict[str, Any] = {
            "zone-temp": _input(1, "zone-temp", 21.0, "degreesCelsius", "Zone temperature", covIncrement=0.1),
            "zone-temp-setpoint": AnalogValueObjectCmd(
                objectIdentifier=("analog-value", 1),
                objectName="zone-temp-setpoint",
                presentValue=21.0,
                relinquishDefault=21.0,
                units="degreesCelsius",
                covIncrement=0.1,
                statusFlags=[0, 0, 0, 0],
                description="Zone temperature setpoint",
            ),
            "occupancy": BinaryInputObject(
                objectIdentifier=("binary-input", 1),
                objectName="occupancy",
                presentValue="inactive",
                statusFlags=[0, 0, 0, 0],
                description="Zone occupancy",
            ),
        }
        for n in range(2, self.extra_objects + 2):
            objects[f"point-{n}"] = _input(n, f"point-{n}", float(n), "percent", "")
        device = DeviceObject(
            objectIdentifier=("device", instance),
            objectName=f"sim-controller-{instance}",
            vendorIdentifier=_VENDOR,
            modelName="sim-controller",
            maxApduLengthAccepted=480,  # an MS/TP controller's APDU: a long object list needs segments
            segmentationSupported="segmented-both",
        )
        app = Application.from_object_list([device, self._trunk_port(mac), *objects.values()])
        return Controller(instance, mac, app, objects)

    def mac_address(self, mac: int) -> bytes:
        """The MAC of station `mac` on the trunk: one byte (MS/TP), or six (IPv4 address and UDP port, as
        stations of a BACnet/IP network behind the router have: 10.0.0.`mac`, port 47808)."""
        if self.mac_length == 1:
            return bytes([mac])
        return bytes([10, 0, 0, mac]) + (47808).to_bytes(2, "big")

    def controller(self, instance: int) -> Controller:
        return next(c for c in self.controllers if c.instance == instance)

    def set_value(self, instance: int, name: str, value: Any) -> None:
        """Change a present value as the controller would (COV subscribers are notified)."""
        self.controller(instance).objects[name].presentValue = value

    def foreign_devices(self) -> list[tuple[str, int, int]]:
        """The BBMD's foreign device table: (address, time to live, seconds remaining)."""
        link = next(iter(self._router.link_layers.values()))
        return [(str(e.fdAddress), int(e.fdTTL), int(e.fdRemain)) for e in link.bbmdFDT]

    async def stop(self) -> None:
        for controller in self.controllers:
            controller.app.close()
        self.controllers = []
        if self._router is not None:
            self._router.close()
            self._router = None
        VirtualNetwork._networks.pop(self._lan, None)

    async def __aenter__(self) -> RoutedSite:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _input(instance: int, name: str, value: float, units: str, text: str, **more: Any) -> Any:
    return AnalogInputObject(
        objectIdentifier=("analog-input", instance),
        objectName=name,
        presentValue=value,
        units=units,
        statusFlags=[0, 0, 0, 0],
        description=text,
        **more,
    )


async def main(site: RoutedSite) -> None:
    await site.start()
    first, last = site.controllers[0], site.controllers[-1]
    print(
        f"BACnet router and BBMD at {site.router_address} (network {site.ip_network}); controllers "
        f"{first.instance}..{last.instance} on network {site.network}, MAC "
        f"0x{site.mac_address(first.mac).hex()}..0x{site.mac_address(last.mac).hex()}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await site.stop()


def _cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m simulators.bacnet_router", description=__doc__.splitlines()[0]
    )
    p.add_argument("--port", type=int, default=47900, help="the router's BACnet/IP port")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--network", type=int, default=2, help="network number behind the router")
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--objects", type=int, default=0, help="more analog inputs per controller")
    p.add_argument(
        "--mac-length", type=int, choices=(1, 6), default=1, help="1: MS/TP; 6: BACnet/IP behind it"
    )
    args = p.parse_args(argv)
    site = RoutedSite(
        args.port, args.address, network=args.network, devices=args.devices, objects=args.objects,
        mac_length=args.mac_length,
    )  # fmt: skip
    asyncio.run(serve_until_signal(main(site)))


if __name__ == "__main__":
    _cli()
