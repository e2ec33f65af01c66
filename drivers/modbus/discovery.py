"""SunSpec discovery on a Modbus TCP host: scan unit ids, find "SunS", walk the model chain.

Target keys: `host` (required), `port` (502), `units` ("1-247", "1,2,5" or "1-3,9"), `timeout` (seconds per
request, 0.5). Units are probed one at a time on one connection (a gateway in front of RS-485 devices can only
serve one at a time anyway). A unit with the SunSpec marker at 40000, 0 or 50000 yields a `DiscoveredDevice`
with the common model's manufacturer, model, version and serial number; the shipped `sunspec-inverter`
profile is proposed when inverter model 101, 102 or 103 sits where that profile expects it (40069).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.sdk import DeviceUnreachable, DiscoveredDevice

SUNS = (0x5375, 0x6E53)  # "SunS"
BASES = (40000, 0, 50000)
INVERTER_MODELS = frozenset({101, 102, 103})
PROFILE_MODEL_ADDRESS = 40069  # where profiles/sunspec-inverter.toml expects model 103
_MAX_MODELS = 64  # bound on the model chain walk
_END = 0xFFFF
_PROGRESS_EVERY = 10
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


async def discover(target: dict[str, Any], progress: Callable[[str], None]) -> list[DiscoveredDevice]:
    host = target.get("host")
    if not host:
        raise ValueError("modbus discovery needs -t host=ADDRESS (and optionally port, units, timeout)")
    port = int(target.get("port", 502))
    units = parse_units(str(target.get("units", "1-247")))
    timeout = float(target.get("timeout", 0.5))
    client = AsyncModbusTcpClient(str(host), port=port, timeout=timeout, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise DeviceUnreachable(f"{host}:{port}", "cannot connect")
    found: list[DiscoveredDevice] = []
    try:
        for count, unit in enumerate(units, 1):
            device = await _probe(client, str(host), port, unit)
            if device is not None:
                found.append(device)
                progress(
                    f"unit {unit}: {device.identity.get('manufacturer', '')} {device.identity.get('model', '')}"
                )
            if count % _PROGRESS_EVERY == 0 or count == len(units):
                progress(f"scanned {count}/{len(units)} unit ids, {len(found)} SunSpec device(s)")
            if not client.connected and not await client.connect():
                raise DeviceUnreachable(f"{host}:{port}", "connection lost during the scan")
    finally:
        client.close()
    return found


async def _read(client: AsyncModbusTcpClient, unit: int, address: int, count: int) -> list[int] | None:
    try:
        response = await client.read_holding_registers(address, count=count, device_id=unit)
    except ModbusException:
        return None
    if response.isError() or len(response.registers) < count:
        return None
    return list(response.registers)


async def _probe(client: AsyncModbusTcpClient, host: str, port: int, unit: int) -> DiscoveredDevice | None:
    for base in BASES:
        marker = await _read(client, unit, base, 2)
        if marker is None:
            if not client.connected:
                return None
            continue
        if tuple(marker) == SUNS:
            return await _walk(client, host, port, unit, base)
    return None


async def _walk(client: AsyncModbusTcpClient, host: str, port: int, unit: int, base: int) -> DiscoveredDevice:
    identity: dict[str, str] = {"sunspec_base": str(base)}
    models: list[str] = []
    inverter_at: int | None = None
    address = base + 2
    for _ in range(_MAX_MODELS):
        header = await _read(client, unit, address, 2)
        if header is None or header[0] == _END:
            break
        model, length = header
        models.append(str(model))
        if model == 1:
            body = await _read(client, unit, address + 2, min(length, 65))
            if body is not None:
                for key, (offset, size) in _COMMON.items():
                    text = _string(body[offset : offset + size])
                    if text:
                        identity[key] = text
        if model in INVERTER_MODELS and inverter_at is None:
            inverter_at = address
        address += 2 + length
        if address > 0xFFFF:
            break
    identity["models"] = ",".join(models)
    profile = "sunspec-inverter" if inverter_at == PROFILE_MODEL_ADDRESS else ""
    if inverter_at is not None and not profile:
        identity["note"] = (
            f"inverter model at {inverter_at}: copy sunspec-inverter.toml with shifted addresses"
        )
    return DiscoveredDevice(
        address=f"{host}:{port}/unit {unit}",
        identity=identity,
        connection={"host": host, "port": port, "unit_id": unit},
        profile_name=profile,
    )


def _string(registers: list[int]) -> str:
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
