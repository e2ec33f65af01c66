"""The simulated devices of a load, and the gateway configuration and profiles that point at them.

Simulators run in their own processes (one port each, `DeviceGroup.per_process` devices per process) so
that their CPU is not counted against the gateway, and so that no single pymodbus server (~8k requests/s)
becomes the bottleneck. The gateway configuration is generated: tenants, a site per tenant, one device per
simulated unit, `[bus] mode = "external"` on the bench broker, `[storage]` defaults.
"""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Children, free_port, wait_port
from bench.scenarios import DeviceGroup, Load

__all__ = ["Device", "Fleet", "requests_per_poll", "write_gateway_config"]

SUNSPEC_UPDATE_INTERVAL = 1.0

# Points added to the shipped SunSpec profile (20 published points) to reach the 40 points per inverter of
# the building scenario. All are registers the inverter simulator really serves: line-to-line voltages, the
# other temperatures, vendor state and event bitfields, the common model's id and device address, and the
# vendor block at 40200 (one value in several word orders). (name, address, type, unit, scale factor)
_SUNSPEC_EXTRA: tuple[tuple[str, int, str, str | None, str | None], ...] = (
    ("sunspec_marker", 40000, "uint32", None, None),
    ("common_model_id", 40002, "uint16", None, None),
    ("device_address", 40068, "uint16", None, None),
    ("ac_voltage_ab", 40076, "uint16", "V", "v_sf"),
    ("ac_voltage_bc", 40077, "uint16", "V", "v_sf"),
    ("ac_voltage_ca", 40078, "uint16", "V", "v_sf"),
    ("transformer_temperature", 40104, "int16", "Cel", "tmp_sf"),
    ("other_temperature", 40105, "int16", "Cel", "tmp_sf"),
    ("vendor_state", 40108, "uint16", None, None),
    ("events_1", 40109, "uint32", None, None),
    ("events_2", 40111, "uint32", None, None),
    ("vendor_events_1", 40113, "uint32", None, None),
    ("vendor_events_2", 40115, "uint32", None, None),
    ("vendor_events_3", 40117, "uint32", None, None),
    ("vendor_events_4", 40119, "uint32", None, None),
    ("ac_power_float", 40200, "float32", "W", None),
    ("ac_power_float_swapped", 40202, "float32", "W", None),
    ("lifetime_energy_swapped", 40204, "uint32", "Wh", None),
    ("grid_export", 40206, "int32", "W", None),
    ("test_pattern", 40208, "uint16", None, None),
)
_SWAPPED = {"ac_power_float_swapped", "lifetime_energy_swapped"}


@dataclass(frozen=True)
class Device:
    name: str
    group: DeviceGroup
    port: int
    unit: int
    profile: str  # file name next to the gateway config


def sunspec_profile_text() -> str:
    """The shipped `sunspec-inverter` profile plus 20 more points: 40 published points per inverter."""
    shipped = importlib.resources.files("drivers.modbus") / "profiles" / "sunspec-inverter.toml"
    text = shipped.read_text(encoding="utf-8")
    text = text.replace('name = "sunspec-inverter"', 'name = "bench-sunspec-40"', 1)
    extra = ["", "# --- added by edge bench: 20 more registers the simulator serves ---"]
    for name, address, kind, unit, sf in _SUNSPEC_EXTRA:
        extra += ["", "[[points]]", f'name = "{name}"', f"address = {address}", f'type = "{kind}"']
        if unit:
            extra.append(f'unit = "{unit}"')
        if sf:
            extra.append(f'scale_factor = "{sf}"')
        if name in _SWAPPED:
            extra.append('word_order = "little"')
    return text + "\n".join(extra) + "\n"


def bank_profile_text(registers: int) -> str:
    """One uint16 point per holding register 0..registers-1."""
    lines = [
        "[profile]",
        f'name = "bench-bank-{registers}"',
        'driver = "modbus"',
        f'description = "edge bench: {registers} holding registers from address 0, one point each"',
        "",
        "[defaults]",
        'table = "holding"',
        'type = "uint16"',
        'unit = "W"',
    ]
    for address in range(registers):
        lines += ["", "[[points]]", f'name = "r{address:04d}"', f"address = {address}"]
    return "\n".join(lines) + "\n"


class Fleet:
    """The simulator processes of a load's runnable groups, and the devices they serve."""

    def __init__(self, load: Load, workdir: Path, children: Children) -> None:
        self.load = load
        self.workdir = workdir
        self.children = children
        self.devices: list[Device] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.profiles: dict[str, str] = {}

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def modbus_endpoints(self) -> list[tuple[str, int, int]]:
        """(host, port, unit id) of every Modbus device, as the peer runner wants them."""
        return [("127.0.0.1", d.port, d.unit) for d in self.devices if d.group.protocol == "modbus"]

    def start(self) -> Fleet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pending: list[tuple[subprocess.Popen[bytes], int]] = []
        for group in self.load.runnable:
            profile = self._profile(group)
            made = 0
            while made < group.count:
                n = min(group.per_process, group.count - made)
                port = free_port()
                proc = self.children.spawn(
                    self._sim_argv(group, port, n),
                    log=self.workdir / f"sim-{group.prefix}-{port}.log",
                )
                self.procs.append(proc)
                pending.append((proc, port))
                for unit in range(1, n + 1):
                    made += 1
                    self.devices.append(Device(f"{group.prefix}-{made:03d}", group, port, unit, profile))
        for proc, port in pending:
            wait_port(port, 30.0, proc)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            self.children.stop(proc, grace=5.0)
        self.procs = []

    def _profile(self, group: DeviceGroup) -> str:
        if group.simulator == "sunspec":
            name, text = "bench-sunspec-40.toml", sunspec_profile_text()
        else:
            name, text = f"bench-bank-{group.points}.toml", bank_profile_text(group.points)
        self.profiles[name] = text
        return name

    @staticmethod
    def _sim_argv(group: DeviceGroup, port: int, n: int) -> list[str]:
        if group.simulator == "sunspec":
            module = "simulators.modbus_inverter"
            extra = ["--update-interval", str(SUNSPEC_UPDATE_INTERVAL), "--sim-time", "12:00"]
        else:
            module = "simulators.modbus_bank"
            update = max(min(group.poll_interval, 1.0), 0.05)
            extra = ["--registers", str(group.points), "--update-interval", str(update)]
        return [sys.executable, "-m", module, "--port", str(port), "--devices", str(n), *extra]


def write_gateway_config(
    path: Path,
    fleet: Fleet,
    *,
    broker_port: int,
    gateway_id: str = "bench",
    bus: Sequence[str] = (),
) -> Path:
    """The gateway's TOML (and the profiles it names, next to it); devices spread over the load's tenants.
    `bus`: the `[bus]` settings (default: external mode on the bench broker's port)."""
    load = fleet.load
    lines = [
        "# written by edge bench",
        "[gateway]",
        f'id = "{gateway_id}"',
        'data_dir = "data"',
        "",
        "[bus]",
        *(bus or ('mode = "external"', 'host = "127.0.0.1"', f"port = {broker_port}")),
        f"point_topics = {'true' if load.point_topics else 'false'}",
        "",
        "[storage]  # defaults",
    ]
    for tenant in load.tenants:
        lines += ["", "[[tenants]]", f'id = "{tenant}"']
        if load.sparkplug:
            lines += ["[tenants.sparkplug]"]
        if load.homeassistant:
            lines += ["[tenants.homeassistant]"]
        lines += ["", "[[sites]]", f'id = "{tenant}-site"']
    for i, device in enumerate(fleet.devices):
        tenant = load.tenants[i % len(load.tenants)]
        lines += [
            "",
            "[[devices]]",
            f'name = "{device.name}"',
            'driver = "modbus"',
            f'tenant = "{tenant}"',
            f'site = "{tenant}-site"',
            f'profile = "{device.profile}"',
            f"poll_interval = {device.group.poll_interval}",
            "timeout = 1.0",
            f'connection = {{ host = "127.0.0.1", port = {device.port}, unit_id = {device.unit}'
            + ("" if load.coalesce else ", coalesce = false")
            + " }",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, text in fleet.profiles.items():
        (path.parent / name).write_text(text)
    path.write_text("\n".join(lines) + "\n")
    return path


def requests_per_poll(config: Path) -> float:
    """Mean read requests per device per poll in the plans the gateway compiles from `config`."""
    from edge.config import load_config
    from edge.plugins import PluginRegistry

    registry = PluginRegistry.from_entry_points()
    loaded = load_config(config, registry)
    counts = [len(registry.driver(spec.driver).compile(spec).requests) for spec in loaded.devices]
    return sum(counts) / len(counts) if counts else 0.0
