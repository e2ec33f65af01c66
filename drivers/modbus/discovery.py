"""SunSpec discovery on a Modbus TCP host, a serial device server or a serial port: scan unit ids, find
"SunS", walk the model chain.

Target keys: `host` (required but on a serial port; several: `10.0.4.11-30,10.0.5.7`, scanned concurrently),
`port` (502, or the serial device path), `units`
("1-247", "1,2,5" or "1-3,9"), `timeout` (seconds per request, 0.5), and `transport` with the line settings
exactly as a device's connection takes them (`rtu-over-tcp` for a serial device server, `rtu` / `ascii` with
`baudrate`, `parity`, `stopbits`, `bytesize` on a serial port). Units are probed one at a time on one
connection (a gateway in front of RS-485 devices can only serve one at a time anyway). A unit with the SunSpec marker at 40000, 0 or 50000 yields a `DiscoveredDevice`
with the common model's manufacturer, model, version and serial number, and a point map for every model of its
chain, generated from the official SunSpec model definitions (`drivers.modbus.sunspec`). The shipped
`sunspec-inverter` profile is proposed instead when the chain is exactly what it maps: a common model of 65
registers and model 103 at 40069.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusException

from drivers.modbus.config import ModbusConnection
from drivers.modbus.lines import describe, open_client
from drivers.modbus.sunspec import SunSpecModelError, model_points, profile_name
from edge.sdk import DeviceUnreachable, DiscoveredDevice

SUNS = (0x5375, 0x6E53)  # "SunS"
BASES = (40000, 0, 50000)
SHIPPED_CHAIN = ((1, 40002), (103, 40069))  # what profiles/sunspec-inverter.toml maps: models and addresses
_MAX_MODELS = 64  # bound on the model chain walk
_MAX_MODEL_REGISTERS = 4096  # a longer model is not read (and not mapped): no standard model comes close
_READ_CHUNK = 125  # Modbus limit per read
_END = 0xFFFF
_PROGRESS_EVERY = 10
_SCAN_KEYS = ("units", "timeout")
_MAX_HOSTS = 1024
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_HOSTS_AT_ONCE = 16  # concurrent host scans: each is one connection, one request at a time  # target keys of the scan itself; the others describe the connection
# common model 1, data offsets (after id and length) and register counts of its strings
_COMMON = {
    "manufacturer": (0, 16),
    "model": (16, 16),
    "options": (32, 8),
    "version": (40, 8),
    "serial": (48, 16),
}


def parse_units(text: str) -> list[int]:
    """'1-3,9' -> [1, 2, 3, 9]; raises ValueError for anything outside 1..247."""
    units: list[int] = []
    for part in str(text).split(","):
        low, _, high = part.strip().partition("-")
        first, last = int(low), int(high or low)
        if not 1 <= first <= last <= 247:
            raise ValueError(f"units: {part.strip()!r} is not within 1..247")
        units.extend(range(first, last + 1))
    return sorted(set(units))


def target_connection(target: dict[str, Any]) -> ModbusConnection:
    """The connection a discovery target describes, validated like a device's; raises ValueError."""
    fields = {k: v for k, v in target.items() if k not in _SCAN_KEYS}
    if not fields.get("host") and str(fields.get("transport", "tcp")) not in ("rtu", "ascii"):
        raise ValueError(
            "modbus discovery needs -t host=ADDRESS (and optionally port, units, timeout, transport), "
            "or -t transport=rtu -t port=/dev/ttyUSB0 on a serial port"
        )
    try:
        return ModbusConnection.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'target'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"modbus discovery target: {problems}") from None


def parse_hosts(text: str) -> list[str]:
    """'10.0.4.11', '10.0.4.11-10.0.4.30', '10.0.4.11-30' or several of them comma-separated -> the hosts, in
    order; a name is kept as it is. Raises ValueError for a bad range or more than 1024 hosts."""
    hosts: list[str] = []
    for part in (p.strip() for p in str(text).split(",")):
        first, dash, last = part.partition("-")
        if not dash or not _IPV4.match(first):  # one address or host name (names may hold dashes)
            hosts.append(part)
            continue
        try:
            low = ipaddress.IPv4Address(first)
            high = ipaddress.IPv4Address(last if "." in last else first.rsplit(".", 1)[0] + "." + last)
        except ValueError:
            raise ValueError(f"host: {part!r} is not an IPv4 range such as 10.0.4.11-30") from None
        if high < low:
            raise ValueError(f"host: {part!r} runs backwards")
        hosts.extend(str(ipaddress.IPv4Address(n)) for n in range(int(low), int(high) + 1))
        if len(hosts) > _MAX_HOSTS:
            raise ValueError(f"host: more than {_MAX_HOSTS} hosts in one discovery")
    return list(dict.fromkeys(h for h in hosts if h))


async def discover(target: dict[str, Any], progress: Callable[[str], None]) -> list[DiscoveredDevice]:
    """Scan the unit ids behind one host (or serial port), or behind each of several hosts concurrently
    (`host=10.0.4.11-30`: a host that does not accept the connection is reported and skipped)."""
    units = parse_units(str(target.get("units", "1-247")))
    timeout = float(target.get("timeout", 0.5))
    hosts = parse_hosts(str(target["host"])) if target.get("host") else [""]
    connections = [target_connection(target | ({"host": h} if h else {})) for h in hosts]
    if len(connections) == 1:
        return await _scan(connections[0], units, timeout, progress)
    progress(f"scanning {len(connections)} hosts, {len(units)} unit ids each")
    gate = asyncio.Semaphore(_HOSTS_AT_ONCE)

    async def one(connection: ModbusConnection) -> list[DiscoveredDevice]:
        async with gate:
            try:
                return await _scan(connection, units, timeout, lambda line: None)
            except DeviceUnreachable as exc:
                progress(f"{describe(connection)}: {exc.reason}, skipped")
                return []

    results = await asyncio.gather(*(one(c) for c in connections))
    found = [device for devices in results for device in devices]
    progress(f"scanned {len(connections)} hosts: {len(found)} SunSpec device(s)")
    return found


async def _scan(
    connection: ModbusConnection, units: list[int], per_request: float, progress: Callable[[str], None]
) -> list[DiscoveredDevice]:
    where = describe(connection)
    client = open_client(connection, per_request)
    if not await client.connect():
        raise DeviceUnreachable(where, "cannot connect")
    found: list[DiscoveredDevice] = []
    try:
        for count, unit in enumerate(units, 1):
            device = await _probe(client, connection.model_copy(update={"unit_id": unit}))
            if device is not None:
                found.append(device)
                progress(
                    f"unit {unit}: {device.identity.get('manufacturer', '')} {device.identity.get('model', '')}"
                )
            if count % _PROGRESS_EVERY == 0 or count == len(units):
                progress(f"scanned {count}/{len(units)} unit ids, {len(found)} SunSpec device(s)")
            if not client.connected and not await client.connect():
                raise DeviceUnreachable(where, "connection lost during the scan")
    finally:
        client.close()
    return found


async def _read(client: ModbusBaseClient, unit: int, address: int, count: int) -> list[int] | None:
    try:
        response = await client.read_holding_registers(address, count=count, device_id=unit)
    except ModbusException:
        return None
    if response.isError() or len(response.registers) < count:
        return None
    return list(response.registers)


async def _probe(client: ModbusBaseClient, connection: ModbusConnection) -> DiscoveredDevice | None:
    unit = connection.unit_id
    for base in BASES:
        marker = await _read(client, unit, base, 2)
        if marker is None:
            if not client.connected:
                return None
            continue
        if tuple(marker) == SUNS:
            return await _walk(client, connection, base)
    return None


async def _walk(client: ModbusBaseClient, connection: ModbusConnection, base: int) -> DiscoveredDevice:
    unit = connection.unit_id
    identity: dict[str, str] = {"sunspec_base": str(base)}
    chain: list[tuple[int, int, int]] = []  # (model id, address of its id register, length)
    address = base + 2
    for _ in range(_MAX_MODELS):
        header = await _read(client, unit, address, 2)
        if header is None or header[0] == _END:
            break
        model, length = header
        chain.append((model, address, length))
        if model == 1:
            body = await _read(client, unit, address + 2, min(length, 65))
            if body is not None:
                for key, (offset, size) in _COMMON.items():
                    text = _string(body[offset : offset + size])
                    if text:
                        identity[key] = text
        address += 2 + length
        if address > 0xFFFF:
            break
    identity["models"] = ",".join(str(model) for model, _, _ in chain)
    where = f"{describe(connection)}/unit {unit}"
    entry = _connection_entry(connection)
    if tuple((model, at) for model, at, _ in chain) == SHIPPED_CHAIN:
        return DiscoveredDevice(where, identity, entry, profile_name="sunspec-inverter")
    points, notes = await _map_models(client, unit, chain)
    if notes:
        identity["note"] = "; ".join(notes)
    ids = [model for model, _, _ in chain]
    name = profile_name(identity.get("manufacturer", ""), identity.get("model", ""), ids) if points else ""
    return DiscoveredDevice(where, identity, entry, points=points, profile_name=name)


def _connection_entry(connection: ModbusConnection) -> dict[str, Any]:
    """The device's connection table: what reaches it, without the defaults (a TCP device keeps the three
    keys it always had)."""
    keep = {"host", "port", "unit_id"} if connection.transport == "tcp" else {"transport", "unit_id", "port"}
    if not connection.is_serial:
        keep.add("host")
    return connection.model_dump(exclude_defaults=True) | {key: getattr(connection, key) for key in keep}


async def _map_models(
    client: ModbusBaseClient, unit: int, chain: list[tuple[int, int, int]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The point map of every model of the chain, read whole (repeating groups are sized by what they hold)."""
    points: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: dict[int, int] = {}
    for model, address, length in chain:
        seen[model] = seen.get(model, 0) + 1
        if length + 2 > _MAX_MODEL_REGISTERS:
            notes.append(f"model {model} at {address}: {length} registers, not mapped")
            continue
        registers = await _read_long(client, unit, address, length + 2)
        if registers is None:
            notes.append(f"model {model} at {address}: its registers could not be read, not mapped")
            continue
        try:
            found, left_out = model_points(model, address, length, registers, seen[model])
        except SunSpecModelError as exc:
            notes.append(str(exc))
            continue
        points.extend(found)
        notes.extend(left_out)
    return points, notes


async def _read_long(client: ModbusBaseClient, unit: int, address: int, count: int) -> list[int] | None:
    out: list[int] = []
    for start in range(address, address + count, _READ_CHUNK):
        block = await _read(client, unit, start, min(_READ_CHUNK, address + count - start))
        if block is None:
            return None
        out.extend(block)
    return out


def _string(registers: list[int]) -> str:
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
