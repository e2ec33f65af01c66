"""The simulated devices of a load, and the gateway configuration and profiles that point at them.

Simulators run in their own processes so that their CPU is not counted against the gateway, and so that no
single server becomes the bottleneck: Modbus (one port each, `DeviceGroup.per_process` devices per process;
a pymodbus server answers ~8k requests/s), BACnet (one `simulators.bacnet_hvac` process per air handler with
its VAV boxes, one UDP port per device on 127.0.0.1), OPC UA (`simulators.opcua_lift`, `per_process` lifts
per server) and the cloud (`simulators.cloud`, every tenant's OAuth2 client and HMAC key). The gateway
configuration is generated: tenants (entitled to every domain module when the load runs them), a site per
tenant, one device per simulated unit, `[bus] mode = "external"` on the bench broker, `[storage]` defaults,
the domain modules and cloud sync when the load asks for them.
"""

from __future__ import annotations

import importlib.resources
import math
import random
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Children, free_port, wait_port
from bench.scenarios import DeviceGroup, Load

__all__ = ["Device", "Fleet", "requests_per_poll", "write_gateway_config"]

SUNSPEC_UPDATE_INTERVAL = 1.0
HVAC_INSTANCE_BASE = 10_000  # AHU i is instance 10_000 + 100 i; its VAV k is that + k
CLOUD_LINGER = 0.2  # s: cloud sync's batch linger (its default is 0.5 s)
MODULE_FLAGS = ("solar", "billing", "lifts", "hvac", "alarms")
# The domain modules as a building would run them (modules/*/README.md); in-process, the default run mode.
_MODULES = """
[[modules]]
name = "solar"
config = { interval = 300, devices = "inv-*", offline_after = 60 }

[[modules]]
name = "billing"
config = { price_per_kwh = 0.25, currency = "EUR", timezone = "UTC" }

[[modules]]
name = "lifts"
config = {}

[[modules]]
name = "hvac"
config = {}

[[modules]]
name = "alarms"
[modules.config]
rules = [
  { id = "inverter-offline", point = "ac_power", devices = "inv-*", bad_quality_after = 30, severity = "major" },
  { id = "zone-warm", point = "zone-temp", devices = "vav-*", high = 26.0, hysteresis = 0.5, delay = 60 },
]
"""

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
    unit: int  # Modbus unit id; BACnet device instance; OPC UA lift number
    profile: str  # a file next to the gateway config, or a profile shipped by the driver
    connection: str  # the device's `connection` as a TOML inline table


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
        self.cloud_port: int | None = None
        self.bacnet_local_port: int | None = None  # the gateway's own BACnet/IP port

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def modbus_endpoints(self) -> list[tuple[str, int, int]]:
        """(host, port, unit id) of every Modbus device, as the peer runners want them."""
        return [("127.0.0.1", d.port, d.unit) for d in self.devices if d.group.protocol == "modbus"]

    def start(self) -> Fleet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        waits: list[tuple[subprocess.Popen[bytes], int]] = []
        for group in self.load.runnable:
            if group.simulator in ("sunspec", "bank"):
                waits += self._start_modbus(group)
            elif group.simulator == "hvac-ahu":
                self._start_hvac(group)
            elif group.simulator == "lift":
                waits += self._start_lifts(group)
            elif group.simulator == "hvac-vav" and not any(
                g.simulator == "hvac-ahu" for g in self.load.runnable
            ):
                raise ValueError(
                    f"group {group.name!r}: VAV boxes are served by an air handlers group's simulators"
                )
        if self.load.cloud:
            self.cloud_port = free_port()
            argv = [sys.executable, "-m", "simulators.cloud", "--port", str(self.cloud_port)]
            argv += ["--tenants", ",".join(self.load.tenants)]
            proc = self._spawn(argv, "cloud")
            waits.append((proc, self.cloud_port))
        for proc, port in waits:
            wait_port(port, 30.0, proc)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            self.children.stop(proc, grace=5.0)
        self.procs = []

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        proc = self.children.spawn(argv, log=self.workdir / f"sim-{log_name}.log")
        self.procs.append(proc)
        return proc

    def _start_modbus(self, group: DeviceGroup) -> list[tuple[subprocess.Popen[bytes], int]]:
        profile = self._profile(group)
        waits = []
        made = 0
        while made < group.count:
            n = min(group.per_process, group.count - made)
            port = free_port()
            waits.append((self._spawn(self._modbus_argv(group, port, n), f"{group.prefix}-{port}"), port))
            for unit in range(1, n + 1):
                made += 1
                connection = f'{{ host = "127.0.0.1", port = {port}, unit_id = {unit}' + (
                    "" if self.load.coalesce else ", coalesce = false"
                )
                self.devices.append(
                    Device(f"{group.prefix}-{made:03d}", group, port, unit, profile, connection + " }")
                )
        return waits

    def _start_hvac(self, ahus: DeviceGroup) -> None:
        """One bacnet_hvac process per air handler, each with its share of the VAV boxes, a UDP port per device."""
        vav_group = next((g for g in self.load.runnable if g.simulator == "hvac-vav"), None)
        vavs = vav_group.count if vav_group else 0
        per_ahu = math.ceil(vavs / ahus.count) if vavs else 0
        self.bacnet_local_port = self.bacnet_local_port or free_udp_ports(1)[0]
        local = f"127.0.0.1/8:{self.bacnet_local_port}"
        made_vavs = 0
        for i in range(1, ahus.count + 1):
            here = min(per_ahu, vavs - made_vavs)
            base = free_udp_ports(here + 1)[0]
            instance = HVAC_INSTANCE_BASE + 100 * i
            argv = [sys.executable, "-m", "simulators.bacnet_hvac", "--vav", str(here), "--layout", "ports"]
            argv += ["--address", "127.0.0.1", "--port", str(base), "--instance", str(instance)]
            self._spawn(argv, f"hvac-{base}")
            units = [(ahus, f"{ahus.prefix}-{i:03d}", 0)]
            if vav_group is not None:
                units += [
                    (vav_group, f"{vav_group.prefix}-{made_vavs + k:03d}", k) for k in range(1, here + 1)
                ]
            made_vavs += here
            for group, name, k in units:
                connection = (
                    f'{{ address = "127.0.0.1:{base + k}", device_instance = {instance + k}, '
                    f'local_address = "{local}" }}'
                )
                profile = "ahu" if k == 0 else "vav"
                self.devices.append(Device(name, group, base + k, instance + k, profile, connection))

    def _start_lifts(self, group: DeviceGroup) -> list[tuple[subprocess.Popen[bytes], int]]:
        waits = []
        made = 0
        while made < group.count:
            n = min(group.per_process, group.count - made)
            port = free_port()
            argv = [sys.executable, "-m", "simulators.opcua_lift", "--port", str(port), "--lifts", str(n)]
            waits.append((self._spawn(argv, f"lift-{port}"), port))
            for lift in range(1, n + 1):
                made += 1
                connection = (
                    f'{{ url = "opc.tcp://127.0.0.1:{port}/lift", security = "None", '
                    f'node_variables = {{ lift = "Lift{lift}" }} }}'
                )
                self.devices.append(
                    Device(f"{group.prefix}-{made:03d}", group, port, lift, "lift", connection)
                )
        return waits

    def _profile(self, group: DeviceGroup) -> str:
        if group.simulator == "sunspec":
            name, text = "bench-sunspec-40.toml", sunspec_profile_text()
        else:
            name, text = f"bench-bank-{group.points}.toml", bank_profile_text(group.points)
        self.profiles[name] = text
        return name

    @staticmethod
    def _modbus_argv(group: DeviceGroup, port: int, n: int) -> list[str]:
        if group.simulator == "sunspec":
            module = "simulators.modbus_inverter"
            extra = ["--update-interval", str(SUNSPEC_UPDATE_INTERVAL), "--sim-time", "12:00"]
        else:
            module = "simulators.modbus_bank"
            update = max(min(group.poll_interval, 1.0), 0.05)
            extra = ["--registers", str(group.points), "--update-interval", str(update)]
        return [sys.executable, "-m", module, "--port", str(port), "--devices", str(n), *extra]


def free_udp_ports(n: int, attempts: int = 100) -> list[int]:
    """`n` consecutive UDP ports free on 127.0.0.1 (a BACnet simulator takes one per device)."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20_000, 60_000 - n)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return list(range(base, base + n))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {n} consecutive free UDP ports on 127.0.0.1 after {attempts} attempts")


def write_gateway_config(
    path: Path,
    fleet: Fleet,
    *,
    broker_port: int,
    gateway_id: str = "bench",
    bus: Sequence[str] = (),
    postgresql: tuple[str, str] | None = None,
) -> Path:
    """The gateway's TOML (and the profiles and secrets it names, next to it); devices spread over the load's tenants.
    `bus`: the `[bus]` settings (default: external mode on the bench broker's port). `postgresql`: (dsn,
    password) of the outbox's database when the load runs on PostgreSQL."""
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
    if postgresql is not None:
        dsn, password = postgresql
        secret = path.parent / "pg-password"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        lines += [
            'backend = "postgresql"',
            "[storage.postgresql]",
            f'dsn = "{dsn}"',
            'password = "file:pg-password"',
        ]
    flags = ", ".join(f'"{f}"' for f in MODULE_FLAGS) if load.modules else ""
    for tenant in load.tenants:
        lines += ["", "[[tenants]]", f'id = "{tenant}"', f"entitlements = [{flags}]"]
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
            f'driver = "{device.group.protocol}"',
            f'tenant = "{tenant}"',
            f'site = "{tenant}-site"',
            f'profile = "{device.profile}"',
            f"poll_interval = {device.group.poll_interval}",
            "timeout = 1.0",
            f"connection = {device.connection}",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if load.modules:
        lines.append(_MODULES)
    if fleet.cloud_port is not None:
        lines += _cloud_sync(path.parent, load.tenants, fleet.cloud_port)
    for name, text in fleet.profiles.items():
        (path.parent / name).write_text(text)
    path.write_text("\n".join(lines) + "\n")
    return path


def _cloud_sync(folder: Path, tenants: tuple[str, ...], port: int) -> list[str]:
    """cloud_sync for every tenant against the cloud simulator, with its demo credentials in 0600 files."""
    url = f"http://127.0.0.1:{port}"
    lines = ["", "[[modules]]", 'name = "cloud_sync"', "[modules.config]", f"linger = {CLOUD_LINGER}"]
    for tenant in tenants:
        secrets = {"client_secret": f"{tenant}-client-secret", "hmac_key": f"{tenant}-hmac-key"}
        for kind, value in secrets.items():
            secret = folder / f"{tenant}.{kind}"
            secret.write_text(value)
            secret.chmod(0o600)
        lines += [
            f"[modules.config.tenants.{tenant}]",
            f'endpoint = "{url}/v1/events"',
            f'token_url = "{url}/oauth2/token"',
            f'client_id = "{tenant}"',
            f'client_secret = "file:{folder / f"{tenant}.client_secret"}"',
            f'hmac_key = "file:{folder / f"{tenant}.hmac_key"}"',
        ]
    return lines


def requests_per_poll(config: Path) -> float:
    """Mean Modbus read requests per Modbus device per poll in the plans the gateway compiles from `config`."""
    from edge.config import load_config
    from edge.plugins import PluginRegistry

    registry = PluginRegistry.from_entry_points()
    loaded = load_config(config, registry)
    counts = [
        len(getattr(registry.driver(spec.driver).compile(spec), "requests", ()))
        for spec in loaded.devices
        if spec.driver == "modbus"  # only the Modbus plan is a list of read requests
    ]
    return sum(counts) / len(counts) if counts else 0.0
