"""SunSpec device simulator: any chain of SunSpec models on Modbus TCP, laid out from the official definitions.

An independent device: it imports nothing from `edge` or `drivers`. It reads the SunSpec Alliance's model
definitions as data (the JSON files pysunspec2 ships, located without importing its code), lays each model out
itself (point sizes by type from the SunSpec specification, repeating groups by their count) and encodes every
value itself: engineering value / 10**scale factor, two's complement, big-endian words, NUL-padded strings.

Each unit id serves the "SunS" marker at `base` (40000), its models in order and the end marker. The common
model has the standard length, 66 registers with its Pad (`common_length=65` drops the Pad, as older devices
do). Values: realistic ones for the inverter points (models 103, 701), the given `values`, and otherwise a
fixed value per point (scale factors 0, enumerations their first state, bitfields 0). Points named in
`unimplemented` hold SunSpec's "not implemented" marker. Points with access RW are writable (a write elsewhere
answers exception 2, illegal data address); `value()` reads what the registers hold now, writes included.

```python
async with SunSpecSimulator(port, {1: (1, 103, 120, 123), 2: (1, 701)}) as sim:
    sim.value(1, "103.W")  # 7421, engineering units
    sim.value(1, "123.WMaxLimPct")  # after a client wrote it
```
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from simulators.serving import serve_until_signal

__all__ = ["SunSpecSimulator", "main", "models_dir"]

SUNS = [0x5375, 0x6E53]
END = [0xFFFF, 0]
# Registers per type (SunSpec Information Model Specification); strings give their own size.
_SIZES = {
    "int16": 1, "uint16": 1, "count": 1, "acc16": 1, "enum16": 1, "bitfield16": 1, "pad": 1, "sunssf": 1,
    "int32": 2, "uint32": 2, "acc32": 2, "enum32": 2, "bitfield32": 2, "ipaddr": 2, "float32": 2,
    "int64": 4, "uint64": 4, "acc64": 4, "float64": 4, "eui48": 4, "ipv6addr": 8,
}  # fmt: skip
_SIGNED = frozenset({"int16", "sunssf", "int32", "int64"})
# "Not implemented" values (an all-zero string means the same for strings)
_MARKERS = {
    "int16": 0x8000, "sunssf": 0x8000, "pad": 0x8000, "uint16": 0xFFFF, "count": 0xFFFF, "enum16": 0xFFFF,
    "bitfield16": 0xFFFF, "acc16": 0, "int32": 0x80000000, "uint32": 0xFFFFFFFF, "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF, "ipaddr": 0, "acc32": 0, "int64": 1 << 63, "uint64": (1 << 64) - 1, "acc64": 0,
    "eui48": (1 << 64) - 1, "ipv6addr": 0,
}  # fmt: skip
_WRITE_FCS = frozenset({6, 16, 22, 23})
_REPEAT = 2  # instances of a repeating group whose count is a point (curves, modules): this device has two

# Engineering values of a producing three-phase inverter, with scale factors that fit them; enumerations by
# their symbol names (the definitions have renumbered some between releases).
REALISTIC: dict[str, Any] = {
    "103.A": 32.1, "103.AphA": 10.7, "103.AphB": 10.71, "103.AphC": 10.69, "103.A_SF": -2,
    "103.PPVphAB": 398.4, "103.PPVphBC": 398.1, "103.PPVphCA": 398.9, "103.PhVphA": 230.1,
    "103.PhVphB": 229.8, "103.PhVphC": 230.4, "103.V_SF": -1, "103.W": 7421, "103.W_SF": 0, "103.Hz": 50.01,
    "103.Hz_SF": -2, "103.VA": 7480, "103.VA_SF": 1, "103.VAr": -940, "103.VAr_SF": 1, "103.PF": 99.2,
    "103.PF_SF": -1, "103.WH": 1234567, "103.WH_SF": 0, "103.DCA": 12.8, "103.DCA_SF": -2, "103.DCV": 601.3,
    "103.DCV_SF": -1, "103.DCW": 7650, "103.DCW_SF": 0, "103.TmpCab": 35.2, "103.TmpSnk": 41.0,
    "103.TmpTrns": 38.5, "103.TmpOt": 20.0, "103.Tmp_SF": -1, "103.St": "MPPT",
    "120.DERTyp": "PV", "120.WRtg": 10000, "120.WRtg_SF": 0, "120.VARtg": 10000, "120.VARtg_SF": 0,
    "123.WMaxLimPct": 100, "123.WMaxLimPct_SF": 0, "123.Conn": "CONNECT",
    "701.ACType": "THREE_PHASE", "701.St": "ON", "701.InvSt": "RUNNING", "701.ConnSt": "CONNECTED", "701.W": 7421, "701.W_SF": 0,
    "701.VA": 7480, "701.VA_SF": 0, "701.Hz": 50.01, "701.Hz_SF": -2, "701.A": 32.1, "701.A_SF": -2,
    "701.LLV": 398.4, "701.LNV": 230.1, "701.V_SF": -1, "701.TotWhInj": 1234567, "701.TotWh_SF": 0,
    "701.TmpCab": 35.2, "701.Tmp_SF": -1,
}  # fmt: skip


def models_dir() -> Path:
    """Where pysunspec2 keeps the model definitions (found without importing its code)."""
    spec = importlib.util.find_spec("sunspec2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pysunspec2 is not installed: it ships the SunSpec model definitions")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "json"


@functools.cache
def _definition(model_id: int) -> dict[str, Any]:
    path = models_dir() / f"model_{model_id}.json"
    if not path.is_file():
        raise ValueError(f"no SunSpec definition for model {model_id} in {path.parent}")
    definition: dict[str, Any] = json.loads(path.read_text())
    return definition


@dataclass(frozen=True, slots=True)
class _Slot:
    key: str  # "103.W", "705.Crv[1].Pt[2].V"
    offset: int  # registers from the model's ID register
    size: int
    type: str
    sf: str | int | None  # a scale factor point's key, a constant, or none
    writable: bool
    symbols: dict[str, int]  # enumeration symbols by name


def _layout(model_id: int, prefix: str, common_length: int) -> tuple[list[_Slot], dict[str, int]]:
    """Every point of one model in register order, and the values its count points must hold."""
    slots: list[_Slot] = []
    counts: dict[str, int] = {}
    _place(_definition(model_id)["group"], prefix, model_id, (slots, counts), 0, common_length, {})
    return slots, counts


def _place(
    group: dict[str, Any],
    path: str,
    model_id: int,
    out: tuple[list[_Slot], dict[str, int]],
    offset: int,
    common_length: int,
    scope: dict[str, str],
) -> int:
    """Place a group's points from `offset` on, then its groups; returns the offset after them."""
    slots, counts = out
    names = {p["name"]: f"{path}.{p['name']}" for p in group.get("points", [])}
    scope = {**scope, **names}  # a name (scale factor, count) is looked up in the group, then in its parents
    for point in group.get("points", []):
        if model_id == 1 and point["name"] == "Pad" and common_length == 65:
            continue
        kind = point["type"]
        size = int(point["size"]) if kind == "string" else _SIZES[kind]
        sf = point.get("sf")
        sf_ref = scope.get(sf, sf) if isinstance(sf, str) else sf
        symbols = {str(s["name"]): int(s["value"]) for s in point.get("symbols", [])}
        writable = point.get("access") == "RW"
        slots.append(_Slot(names[point["name"]], offset, size, kind, sf_ref, writable, symbols))
        offset += size
    for child in group.get("groups", []):
        count = child.get("count")
        if count is None:
            offset = _place(child, f"{path}.{child['name']}", model_id, out, offset, common_length, scope)
            continue
        repeat = _REPEAT if isinstance(count, str) else int(count)
        if isinstance(count, str):
            counts[scope.get(count, count)] = repeat
        for index in range(1, repeat + 1):
            where = f"{path}.{child['name']}[{index}]"
            offset = _place(child, where, model_id, out, offset, common_length, scope)
    return offset


class _Unit:
    """One unit id: its register image and where each point lives in it."""

    def __init__(
        self,
        unit: int,
        chain: Sequence[int],
        base: int,
        common_length: int,
        values: Mapping[str, Any],
        unimplemented: frozenset[str],
    ) -> None:
        self.base = base
        self.slots: dict[str, tuple[int, _Slot]] = {}  # key -> (address, slot)
        self.registers = list(SUNS)
        counts: dict[str, int] = {}
        seen: dict[int, int] = {}
        for model_id in chain:
            seen[model_id] = seen.get(model_id, 0) + 1
            prefix = f"{model_id}" if seen[model_id] == 1 else f"{model_id}#{seen[model_id]}"
            address = base + len(self.registers)
            layout, model_counts = _layout(model_id, prefix, common_length)
            counts.update(model_counts)
            length = sum(s.size for s in layout) - 2
            self.registers += [0] * (length + 2)
            for slot in layout:
                self.slots[slot.key] = (address + slot.offset, slot)
            self._set_raw(f"{prefix}.ID", model_id)
            self._set_raw(f"{prefix}.L", length)
        self.registers += END
        self.writable = {
            address + i for address, slot in self.slots.values() if slot.writable for i in range(slot.size)
        }
        defaults = _defaults(unit, chain)
        chosen = {**defaults, **REALISTIC, **values, **counts}
        ordered = sorted(
            self.slots.items(), key=lambda item: item[1][1].type != "sunssf"
        )  # scale factors first
        for key, (_, slot) in ordered:
            if key.endswith((".ID", ".L")) and slot.offset < 2:
                continue
            if key in unimplemented:
                self._set_marker(slot, key)
            elif slot.type != "pad":
                self.set(key, chosen.get(key, _generic(key, slot)))

    def set(self, key: str, value: Any) -> None:
        address, slot = self.slots[key]
        if slot.type == "string":
            data = str(value).encode("utf-8")[: slot.size * 2].ljust(slot.size * 2, b"\0")
            words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        elif slot.type in ("float32", "float64"):
            fmt = ">f" if slot.type == "float32" else ">d"
            words = list(struct.unpack(f">{slot.size}H", struct.pack(fmt, float(value))))
        else:
            if isinstance(value, str) and slot.type.startswith("enum"):
                value = slot.symbols[value]
            raw = round(float(value) / 10.0 ** self._sf(slot))
            words = _words(raw, slot)
        self.registers[address - self.base : address - self.base + slot.size] = words

    def value(self, key: str) -> Any:
        """The engineering value the registers hold now (None for a "not implemented" marker)."""
        address, slot = self.slots[key]
        words = self.registers[address - self.base : address - self.base + slot.size]
        if slot.type == "string":
            data = b"".join(w.to_bytes(2, "big") for w in words)
            return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        if slot.type in ("float32", "float64"):
            fmt = ">f" if slot.type == "float32" else ">d"
            number = struct.unpack(fmt, struct.pack(f">{slot.size}H", *words))[0]
            return None if math.isnan(number) else number
        raw = 0
        for word in words:
            raw = (raw << 16) | word
        if raw == _MARKERS.get(slot.type) and slot.type not in ("acc16", "acc32", "acc64", "ipaddr"):
            return None
        if slot.type in _SIGNED and raw >= 1 << (16 * slot.size - 1):
            raw -= 1 << (16 * slot.size)
        sf = self._sf(slot)
        return raw if sf == 0 else round(raw * 10.0**sf, max(0, -sf))

    def _sf(self, slot: _Slot) -> int:
        if slot.sf is None:
            return 0
        if isinstance(slot.sf, int):
            return slot.sf
        held = self.value(slot.sf)
        return int(held) if held is not None else 0

    def _set_raw(self, key: str, raw: int) -> None:
        address, slot = self.slots[key]
        self.registers[address - self.base : address - self.base + slot.size] = _words(raw, slot)

    def _set_marker(self, slot: _Slot, key: str) -> None:
        if slot.type in ("float32", "float64"):
            self.set(key, math.nan)
        elif slot.type == "string":
            self.set(key, "")
        else:
            address, _ = self.slots[key]
            at = address - self.base
            self.registers[at : at + slot.size] = _pattern(_MARKERS[slot.type], slot.size)


def _words(raw: int, slot: _Slot) -> list[int]:
    bits = 16 * slot.size
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if slot.type in _SIGNED else (0, (1 << bits) - 1)
    if not low <= raw <= high:
        raise ValueError(f"{slot.key}: {raw} does not fit a {slot.type}")
    return _pattern(raw & ((1 << bits) - 1), slot.size)


def _pattern(bits: int, size: int) -> list[int]:
    """An unsigned bit pattern as `size` big-endian words (the high word first)."""
    return [(bits >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]


def _defaults(unit: int, chain: Sequence[int]) -> dict[str, Any]:
    if 1 not in chain:
        return {}
    return {
        "1.Mn": "EdgeSim",
        "1.Md": "SunSpecSim",
        "1.Opt": "",
        "1.Vr": "2.0.0",
        "1.SN": f"SS{unit:05d}",
        "1.DA": unit,
    }


def _generic(key: str, slot: _Slot) -> Any:
    """A fixed, plausible value for a point nobody chose: distinct per point, within its type."""
    if slot.type == "string":
        return key.rsplit(".", 1)[-1]
    if slot.type == "sunssf":
        return 0
    if slot.symbols and slot.type.startswith("enum"):
        return next(iter(slot.symbols.values()))
    if slot.type.startswith("bitfield"):
        return 0
    if slot.type == "count":
        return 1
    return zlib.crc32(key.encode()) % 200 + 1


class SunSpecSimulator:
    """Units (id -> model chain) on one Modbus TCP port, each a SunSpec device built from the definitions."""

    def __init__(
        self,
        port: int,
        units: Mapping[int, Sequence[int]],
        host: str = "127.0.0.1",
        *,
        base: int = 40000,
        common_length: int = 66,
        values: Mapping[str, Any] | None = None,
        unimplemented: Iterable[str] = (),
    ) -> None:
        if common_length not in (65, 66):
            raise ValueError("the common model is 66 registers (65 without its Pad)")
        self.port, self.host = port, host
        self._units = {
            unit: _Unit(unit, chain, base, common_length, values or {}, frozenset(unimplemented))
            for unit, chain in units.items()
        }
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        devices = [self._sim_device(unit, image) for unit, image in self._units.items()]
        self._server = ModbusTcpServer(
            devices,
            address=(self.host, self.port),
            trace_pdu=self._trace_pdu,  # type: ignore[arg-type]  # None is how a request is dropped
        )
        for unit, image in self._units.items():
            image.registers = _live_registers(self._server, unit, image)
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> SunSpecSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def value(self, unit: int, key: str) -> Any:
        """A point's engineering value as the device holds it now ("103.W", "1.SN")."""
        return self._units[unit].value(key)

    def set_value(self, unit: int, key: str, value: Any) -> None:
        """Change a point as the device itself would (scaled by the scale factor it holds)."""
        self._units[unit].set(key, value)

    def address(self, unit: int, key: str) -> int:
        return self._units[unit].slots[key][0]

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        # an unknown unit id stays silent, as a real device behind a gateway (stock pymodbus answers exception 4
        # and logs a traceback); returning None for a received request makes pymodbus drop it unanswered
        if not sending and pdu.dev_id not in self._units:
            return None
        return pdu

    def _sim_device(self, unit: int, image: _Unit) -> SimDevice:
        bits = DataType.BITS
        return SimDevice(
            id=unit,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=bits)],
                [SimData(0, values=[False] * 16, datatype=bits)],
                [SimData(image.base, values=list(image.registers), datatype=DataType.REGISTERS)],
                [SimData(0, values=[0] * 16, datatype=DataType.REGISTERS)],
            ),
            action=functools.partial(self._action, image),
        )

    @staticmethod
    async def _action(
        image: _Unit,
        function_code: int,
        _start: int,
        address: int,
        count: int,
        _registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        writes = function_code in _WRITE_FCS and values is not None
        if writes and any(a not in image.writable for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS  # a read-only SunSpec point, as most devices answer
        return None


def _live_registers(server: ModbusTcpServer, unit: int, image: _Unit) -> list[int]:
    """The holding-register list pymodbus 3.16 serves from (SimRuntime.block["h"]): writes land in it."""
    context = server.context
    if not isinstance(context, SimCore):
        raise RuntimeError("expected a SimDevice-backed pymodbus server")
    start, count, regs, _flags = context.devices[unit].block["h"]
    if start != image.base or count < len(image.registers) or not isinstance(regs, list):
        raise RuntimeError("pymodbus SimRuntime layout changed; update simulators/sunspec_device.py")
    return regs


def _chain(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+"))


async def main(
    port: int, chains: Sequence[tuple[int, ...]], host: str = "127.0.0.1", common_length: int = 66
) -> None:
    """Serve until cancelled: unit k has the k-th chain."""
    units = {k: chain for k, chain in enumerate(chains, 1)}
    sim = SunSpecSimulator(port, units, host, common_length=common_length)
    await sim.start()
    listing = ", ".join(f"unit {u}: models {'+'.join(map(str, c))}" for u, c in units.items())
    print(f"SunSpec simulator on {host}:{port} ({listing})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


async def _serve_until_signal(args: argparse.Namespace) -> None:
    await serve_until_signal(
        main(args.port, args.chain or [(1, 103, 120, 123)], args.host, args.common_length)
    )


def _cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m simulators.sunspec_device",
        description="Modbus TCP SunSpec devices built from the official model definitions",
    )
    p.add_argument("--port", type=int, default=5021)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--chain",
        type=_chain,
        action="append",
        help="models of the next unit, e.g. 1+103+120+123 (repeatable)",
    )
    p.add_argument("--common-length", type=int, choices=[65, 66], default=66)
    asyncio.run(_serve_until_signal(p.parse_args(argv)))


if __name__ == "__main__":
    _cli()
