"""Modbus solar-inverter simulator: N SunSpec inverters (unit ids 1..N) on one TCP port, or on one RTU
serial line (`rtu="/path/to/tty"`, e.g. one end of a socat pty pair); `framing` serves ASCII on the line, or
RTU/ASCII frames raw over TCP as a serial device server does.

An independent device: it imports nothing from `edge`, `drivers` or the gateway's decoders and
encodes every register itself (SunSpec common model 1 + three-phase inverter model 103, base 40000,
plus a vendor block at 40200 for decoder tests). See `simulators/README.md` for the register map.

Built on the pymodbus 3.16 `SimDevice`/`SimData` API. Two pymodbus internals are relied on, both
checked at start so a pymodbus upgrade fails loudly rather than silently:
- live registers are written in place in `SimRuntime.block["h"]` (the cheapest update: no per-register
  flag checks, and the `action` hook is skipped, so "garbage" mode never blocks our own updates);
- a `trace_pdu` hook that returns None for an incoming request makes the server drop it unanswered,
  which is how offline (and unknown) unit ids stay silent like a real RTU device behind a gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import functools
import math
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from simulators.serving import serve_until_signal

_FRAMERS = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU, "ascii": FramerType.ASCII}

__all__ = ["InverterSimulator", "InverterState", "OperatingState", "main"]

BASE = 40000
# Model 1 without its optional Pad register: 65, so that 40004 + 65 = 40069 is where model 103
# starts and a client walking the (id, length) chain lands on it. (66 would need a Pad at 40069.)
COMMON_LEN = 65
INVERTER_MODEL = 40069  # model 103 id register
DYN_START, DYN_END = 40071, 40121  # model 103 body, rewritten on every update
EXT_START = 40200  # vendor block: float32/uint32/int32 word orders + test pattern
EXT_PATTERN = 0xABCD
W_MAX_LIM_PCT = 40300  # the only writable holding register; also the last valid address
LAST = W_MAX_LIM_PCT

# Scale factors (value on the wire = engineering value / 10**sf). Negative, zero and positive
# ones are all present so decoders get exercised on each kind.
A_SF, V_SF, W_SF, HZ_SF = -2, -1, 0, -2
VA_SF, VAR_SF, PF_SF, WH_SF = 1, 1, -1, 0
DCA_SF, DCV_SF, DCW_SF, TMP_SF = -2, -1, 0, -1

AMBIENT_C = 20.0
TEMP_TAU_S = 600.0  # cabinet thermal time constant (sim seconds)
_HR_WRITE_FCS = frozenset({6, 16, 22, 23})


class OperatingState(enum.IntEnum):
    """SunSpec model 103 `St` enumeration."""

    OFF = 1
    SLEEPING = 2
    STARTING = 3
    MPPT = 4
    THROTTLED = 5
    SHUTTING_DOWN = 6
    FAULT = 7
    STANDBY = 8


@dataclass(frozen=True, slots=True)
class InverterState:
    """Engineering values the simulator last wrote, already rounded to each register's scale factor,
    so a correct decoder reproduces them exactly (up to float representation)."""

    unit: int
    rated_w: float
    w_max_lim_pct: int
    sim_hour: float
    ac_power_w: float
    ac_current_a: float
    phase_currents_a: tuple[float, float, float]
    line_voltages_v: tuple[float, float, float]  # AB, BC, CA
    phase_voltages_v: tuple[float, float, float]  # AN, BN, CN
    frequency_hz: float
    apparent_power_va: float
    reactive_power_var: float
    power_factor_pct: float  # SunSpec PF is in percent
    energy_wh: int
    dc_current_a: float
    dc_voltage_v: float
    dc_power_w: float
    cabinet_temp_c: float
    heatsink_temp_c: float
    transformer_temp_c: float
    other_temp_c: float
    state: OperatingState
    grid_export_w: int


# --- encoding (written from the SunSpec spec, deliberately not shared with the gateway) ---


def _q(value: float, sf: int) -> float:
    """Round to what a register with scale factor `sf` can carry."""
    return round(round(value / 10.0**sf) * 10.0**sf, max(0, -sf))


def _reg(value: float, sf: int, signed: bool) -> int:
    raw = round(value / 10.0**sf)
    lo, hi = (-0x8000, 0x7FFF) if signed else (0, 0xFFFF)
    return min(max(raw, lo), hi) & 0xFFFF  # clamp, then two's complement


def _words32(raw: int) -> list[int]:
    raw &= 0xFFFFFFFF
    return [raw >> 16, raw & 0xFFFF]


def _float32_words(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def _string_regs(text: str, regs: int) -> list[int]:
    data = text.encode("ascii").ljust(regs * 2, b"\0")[: regs * 2]
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _static_image(unit: int) -> list[int]:
    """Registers 40000..40300 with the fixed parts filled in (header, common model, end marker)."""
    regs = [0] * (LAST - BASE + 1)
    common = [0x5375, 0x6E53, 1, COMMON_LEN]
    common += _string_regs("EdgeSim", 16) + _string_regs("PV-10K", 16) + _string_regs("", 8)
    common += _string_regs("1.0.0", 8) + _string_regs(f"SIM{unit:05d}", 16) + [unit]  # DA
    regs[0 : len(common)] = common
    regs[INVERTER_MODEL - BASE : INVERTER_MODEL - BASE + 2] = [103, 50]
    regs[DYN_END - BASE : DYN_END - BASE + 2] = [0xFFFF, 0]
    regs[W_MAX_LIM_PCT - BASE] = 100
    return regs


def _sf(value: int) -> int:
    """A scale factor is an int16 register."""
    return value & 0xFFFF


def _dynamic_regs(s: InverterState) -> list[int]:
    """Model 103 body, 40071..40120 (50 registers)."""
    ia, ib, ic = s.phase_currents_a
    vab, vbc, vca = s.line_voltages_v
    van, vbn, vcn = s.phase_voltages_v
    regs = [_reg(s.ac_current_a, A_SF, False), _reg(ia, A_SF, False), _reg(ib, A_SF, False)]
    regs += [_reg(ic, A_SF, False), _sf(A_SF)]
    regs += [_reg(v, V_SF, False) for v in (vab, vbc, vca, van, vbn, vcn)] + [_sf(V_SF)]
    regs += [_reg(s.ac_power_w, W_SF, True), _sf(W_SF), _reg(s.frequency_hz, HZ_SF, False), _sf(HZ_SF)]
    regs += [_reg(s.apparent_power_va, VA_SF, True), _sf(VA_SF)]
    regs += [_reg(s.reactive_power_var, VAR_SF, True), _sf(VAR_SF)]
    regs += [_reg(s.power_factor_pct, PF_SF, True), _sf(PF_SF)]
    regs += [*_words32(s.energy_wh), _sf(WH_SF)]
    regs += [_reg(s.dc_current_a, DCA_SF, False), _sf(DCA_SF), _reg(s.dc_voltage_v, DCV_SF, False)]
    regs += [_sf(DCV_SF), _reg(s.dc_power_w, DCW_SF, True), _sf(DCW_SF)]
    temps = (s.cabinet_temp_c, s.heatsink_temp_c, s.transformer_temp_c, s.other_temp_c)
    regs += [_reg(t, TMP_SF, True) for t in temps] + [_sf(TMP_SF)]
    regs += [int(s.state), 0] + [0] * 12  # StVnd, Evt1, Evt2, EvtVnd1..4: no events
    return regs


def _extension_regs(s: InverterState) -> list[int]:
    """Vendor block 40200..40208: one value in several word orders, for decoder tests."""
    power = _float32_words(s.ac_power_w)
    energy = _words32(s.energy_wh)
    return power + power[::-1] + energy[::-1] + _words32(s.grid_export_w) + [EXT_PATTERN]


# --- physics -----------------------------------------------------------------------------------


def _parse_hhmm(text: str) -> float:
    parts = [int(p) for p in text.split(":")]
    if not 2 <= len(parts) <= 3 or not (0 <= parts[0] < 24 and all(0 <= p < 60 for p in parts[1:])):
        raise ValueError(f"sim_time must be HH:MM or HH:MM:SS, got {text!r}")
    return parts[0] + parts[1] / 60 + (parts[2] / 3600 if len(parts) == 3 else 0.0)


class _SimClock:
    """Time of day in the simulated world: fixed, real or accelerated."""

    def __init__(self, sim_time: str | None, time_scale: float | None) -> None:
        self.set(sim_time, time_scale)

    def set(self, sim_time: str | None, time_scale: float | None = None) -> None:
        if sim_time is None:
            now = time.localtime()
            self._start = now.tm_hour + now.tm_min / 60 + now.tm_sec / 3600
        else:
            self._start = _parse_hhmm(sim_time)
        # a given sim_time is frozen unless a scale is given; no sim_time means the wall clock
        self.scale = time_scale if time_scale is not None else (0.0 if sim_time else 1.0)
        self._t0 = time.monotonic()

    def hour(self) -> float:
        return (self._start + (time.monotonic() - self._t0) * self.scale / 3600) % 24


def _daylight(hour: float) -> float:
    """0 at night, a sine arch from 06:00 to 20:00 peaking at 13:00."""
    return math.sin(math.pi * (hour - 6) / 14) if 6 < hour < 20 else 0.0


class _Inverter:
    """One inverter's physical model; `step` advances it and returns what to publish."""

    def __init__(self, unit: int, seed: int) -> None:
        self.unit = unit
        self.rng = random.Random(seed * 1000 + unit)  # per unit, so N does not change unit 1's values
        self.rated_w = 8000.0 + ((unit * 37) % 5) * 1000.0  # 8..12 kW
        self.energy = 1_000_000.0 + unit * 12345
        self.temp_c = AMBIENT_C

    def step(self, hour: float, dt_s: float, limit_pct: int, first: bool) -> InverterState:
        g = self.rng.gauss
        sun = _daylight(hour)
        cap = self.rated_w * min(limit_pct, 100) / 100
        uncapped = min(max(self.rated_w * sun * (1 + g(0, 0.03)), 0.0), self.rated_w)
        power = _q(min(uncapped, cap), W_SF)
        frac = power / self.rated_w
        self.energy += power * dt_s / 3600
        self._heat(AMBIENT_C + frac * 25, dt_s, first)
        if power <= 0:
            state = OperatingState.SLEEPING
        else:
            state = OperatingState.THROTTLED if uncapped > cap else OperatingState.MPPT
        phase_v = _three(lambda _: _q(230 * (1 + g(0, 0.003)), V_SF))
        pf_pct = _q(97 + 2.5 * frac, PF_SF) if power > 0 else 100.0
        va = _q(power * 100 / pf_pct, VA_SF)
        phase_a = _three(lambda i: _q(va / 3 / phase_v[i], A_SF))
        dcw = _q(power / 0.97, DCW_SF) if power > 0 else 0.0  # 97 % conversion efficiency
        dcv = _q((580 + 40 * sun) * (1 + g(0, 0.005)), DCV_SF) if power > 0 else 0.0  # no sun, no PV volts
        cab = _q(self.temp_c, TMP_SF)
        return InverterState(
            unit=self.unit,
            rated_w=self.rated_w,
            w_max_lim_pct=limit_pct,
            sim_hour=hour,
            ac_power_w=power,
            ac_current_a=_q(sum(phase_a), A_SF),
            phase_currents_a=phase_a,
            line_voltages_v=_line_voltages(phase_v),
            phase_voltages_v=phase_v,
            frequency_hz=_q(50 + g(0, 0.01), HZ_SF),
            apparent_power_va=va,
            reactive_power_var=-_q(math.sqrt(max(va * va - power * power, 0.0)), VAR_SF),  # absorbing
            power_factor_pct=pf_pct,
            energy_wh=int(self.energy),
            dc_current_a=_q(dcw / dcv, DCA_SF) if dcv else 0.0,
            dc_voltage_v=dcv,
            dc_power_w=dcw,
            cabinet_temp_c=cab,
            heatsink_temp_c=_q(cab + 8 * frac, TMP_SF),
            transformer_temp_c=_q(cab + 4 * frac, TMP_SF),
            other_temp_c=AMBIENT_C,
            state=state,
            grid_export_w=round(power - 150 - 50 * self.rng.random()),  # minus the site's standby load
        )

    def _heat(self, target_c: float, dt_s: float, first: bool) -> None:
        """First-order lag towards the target; the first sample starts settled."""
        lag = 1.0 if first else 1 - math.exp(-dt_s / TEMP_TAU_S)
        self.temp_c += (target_c - self.temp_c) * lag


Three = tuple[float, float, float]


def _three(value: Callable[[int], float]) -> Three:
    return value(0), value(1), value(2)


def _line_voltages(phase_v: Three) -> Three:
    """Line-to-line (AB, BC, CA) from line-to-neutral, phases 120 degrees apart."""
    pairs = ((0, 1), (1, 2), (2, 0))
    ll = (math.sqrt(phase_v[i] ** 2 + phase_v[j] ** 2 + phase_v[i] * phase_v[j]) for i, j in pairs)
    a, b, c = (_q(v, V_SF) for v in ll)
    return a, b, c


# --- the server --------------------------------------------------------------------------------


def _sim_device(unit: int, image: list[int], action: SimAction) -> SimDevice:
    """Separate (non-shared) blocks, so coils/discrete inputs are addressed per bit."""
    coils = [True, False, True, False] + [False] * 12  # coil 0 = "enabled"
    inputs = [False, True, False, False] + [False] * 12
    hr = [
        # read-only, so a write to a SunSpec register gets exception 2 as on many real devices
        SimData(BASE, values=image[:-1], datatype=DataType.REGISTERS, readonly=True),
        SimData(W_MAX_LIM_PCT, values=image[-1], datatype=DataType.REGISTERS),
    ]
    ir = [SimData(0, values=[0] * 100, datatype=DataType.REGISTERS)]
    bits = DataType.BITS
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=coils, datatype=bits)],
            [SimData(0, values=inputs, datatype=bits)],
            hr,
            ir,
        ),
        action=action,
    )


def _live_registers(server: ModbusTcpServer | ModbusSerialServer, unit: int) -> list[int]:
    """The holding-register list pymodbus 3.16 serves from (SimRuntime.block["h"]), updated in place."""
    context = server.context
    if not isinstance(context, SimCore):
        raise RuntimeError("expected a SimDevice-backed pymodbus server")
    start, count, regs, _flags = context.devices[unit].block["h"]
    if start != BASE or count < LAST - BASE + 1 or not isinstance(regs, list):
        raise RuntimeError("pymodbus SimRuntime layout changed; update simulators/modbus_inverter.py")
    return regs


class InverterSimulator:
    """N SunSpec three-phase inverters on one Modbus TCP port, values moving with a daylight curve.

    `sim_time="12:00"` freezes the simulated time of day (energy still accumulates in real time);
    add `time_scale=60` to run that clock 60x faster. With no `sim_time`, the local wall clock is used.
    With `rtu` (a serial device path), it serves Modbus RTU on that line at `baudrate` and `parity` ("N" by
    default: a pty refuses parity settings) instead of TCP. `framing` changes the frames: on a serial line
    "ascii" serves Modbus ASCII; on TCP "rtu" or "ascii" serves RTU or ASCII frames raw over TCP, as a serial
    device server passes them through (the default: MBAP on TCP, RTU on a serial line).

    Fault injection: `set_offline`, `set_garbage`, `set_latency` (seconds added before a unit answers),
    `set_exception_rate` (a share of requests answered with exception 6, server busy, from a seeded random
    generator), and `drop_connections()` (TCP: closes every client connection, as a device reboot would).
    """

    def __init__(
        self,
        devices: int,
        port: int,
        host: str = "127.0.0.1",
        *,
        update_interval: float = 1.0,
        sim_time: str | None = None,
        seed: int = 0,
        time_scale: float | None = None,
        rtu: str | None = None,
        baudrate: int = 19200,
        parity: str = "N",
        framing: str | None = None,
    ) -> None:
        if not 1 <= devices <= 247:
            raise ValueError("devices must be 1..247 (Modbus unit ids)")
        if framing not in (None, "socket", "rtu", "ascii"):
            raise ValueError("framing must be socket, rtu or ascii")
        self.framing = framing or ("rtu" if rtu is not None else "socket")
        self.host, self.port, self.devices = host, port, devices
        self.rtu, self.baudrate, self.parity = rtu, baudrate, parity
        self._latency: dict[int, float] = {}
        self._exception_rate: dict[int, float] = {}
        self._rng = random.Random(seed)
        self.update_interval = update_interval
        self.clock = _SimClock(sim_time, time_scale)
        self._inverters = {u: _Inverter(u, seed) for u in range(1, devices + 1)}
        self._states: dict[int, InverterState] = {}
        self._regs: dict[int, list[int]] = {}
        self._offline: set[int] = set()
        self._garbage: set[int] = set()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_tick = 0.0

    async def start(self) -> None:
        """Build the register images, listen, and start the update task. Returns once listening."""
        images = {}
        for unit in self._inverters:
            images[unit] = _static_image(unit)
            self._write(images[unit], self._step(unit, 0.0, 100, first=True))
        devices = [_sim_device(u, images[u], functools.partial(self._action, u)) for u in images]
        if self.rtu is not None:
            self._server = ModbusSerialServer(
                devices,
                framer=_FRAMERS[self.framing],
                port=self.rtu,
                baudrate=self.baudrate,
                parity=self.parity,
                trace_pdu=self._trace_pdu,  # type: ignore[arg-type]  # None is how a request is dropped
            )
        else:
            self._server = ModbusTcpServer(
                devices,
                address=(self.host, self.port),
                framer=_FRAMERS[self.framing],
                trace_pdu=self._trace_pdu,  # type: ignore[arg-type]
            )
        self._regs = {u: _live_registers(self._server, u) for u in images}
        await self._server.serve_forever(background=True)
        self._last_tick = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="modbus-inverter-sim")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> InverterSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def state(self, unit: int) -> InverterState:
        return self._states[unit]

    def set_offline(self, unit: int, offline: bool) -> None:
        """Offline units get no reply at all (the client times out)."""
        (self._offline.add if offline else self._offline.discard)(self._check(unit))

    def set_garbage(self, unit: int, enabled: bool) -> None:
        """A garbage unit answers every request with exception 4 (SERVER DEVICE FAILURE)."""
        (self._garbage.add if enabled else self._garbage.discard)(self._check(unit))

    def set_latency(self, unit: int, seconds: float) -> None:
        """Delay every answer of `unit` by `seconds` (0 removes it). The server answers one request at a time."""
        self._latency[self._check(unit)] = max(0.0, seconds)

    def set_exception_rate(self, unit: int, rate: float) -> None:
        """Answer this share (0..1) of the unit's requests with exception 6 (SERVER DEVICE BUSY)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be 0..1")
        self._exception_rate[self._check(unit)] = rate

    def set_power_limit(self, unit: int, percent: int) -> None:
        """Derate a unit as its own controller would (WMaxLimPct, 0..100): it then produces far below its peers."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0..100")
        self._regs[self._check(unit)][W_MAX_LIM_PCT - BASE] = percent

    def drop_connections(self) -> int:
        """Close every client TCP connection (clients see the connection lost); returns how many."""
        if self._server is None or self.rtu is not None:
            return 0
        connections = list(self._server.active_connections.values())
        for connection in connections:
            connection.close()
        return len(connections)

    def set_sim_time(self, sim_time: str, time_scale: float | None = None) -> None:
        """Jump the simulated clock (e.g. from noon to night) without restarting; applies next update."""
        self.clock.set(sim_time, time_scale)

    def update_now(self) -> None:
        """Run one update immediately (tests use it to avoid waiting for the timer)."""
        now = time.monotonic()
        dt, self._last_tick = now - self._last_tick, now
        for unit, regs in self._regs.items():
            self._write(regs, self._step(unit, dt, regs[W_MAX_LIM_PCT - BASE]))

    # --- internals ---

    def _check(self, unit: int) -> int:
        if unit not in self._inverters:
            raise KeyError(f"no inverter with unit id {unit}")
        return unit

    def _step(self, unit: int, dt_real: float, limit_pct: int, first: bool = False) -> InverterState:
        # a frozen or slow clock still integrates energy in real time; a fast one in sim time
        dt = dt_real * max(self.clock.scale, 1.0)
        state = self._inverters[unit].step(self.clock.hour(), dt, limit_pct, first)
        self._states[unit] = state
        return state

    @staticmethod
    def _write(regs: list[int], state: InverterState) -> None:
        regs[DYN_START - BASE : DYN_END - BASE] = _dynamic_regs(state)
        regs[EXT_START - BASE : EXT_START - BASE + 9] = _extension_regs(state)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval)
            self.update_now()

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        # returning None for a received request makes pymodbus drop it unanswered
        if not sending and (pdu.dev_id in self._offline or pdu.dev_id not in self._inverters):
            return None
        return pdu

    async def _action(
        self,
        unit: int,
        function_code: int,
        _start: int,
        address: int,
        count: int,
        _registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if unit in self._garbage:
            return ExcCodes.DEVICE_FAILURE
        latency = self._latency.get(unit, 0.0)
        if latency:
            await asyncio.sleep(latency)
        rate = self._exception_rate.get(unit, 0.0)
        if rate and self._rng.random() < rate:
            return ExcCodes.DEVICE_BUSY
        writes_limit = (
            values and function_code in _HR_WRITE_FCS and address <= W_MAX_LIM_PCT < address + count
        )
        if writes_limit and not 0 <= int(values[W_MAX_LIM_PCT - address]) <= 100:  # type: ignore[index]
            return ExcCodes.ILLEGAL_VALUE
        return None


async def main(
    port: int,
    devices: int,
    host: str = "127.0.0.1",
    update_interval: float = 1.0,
    *,
    sim_time: str | None = None,
    time_scale: float | None = None,
    rtu: str | None = None,
    baudrate: int = 19200,
    parity: str = "N",
    framing: str | None = None,
) -> None:
    """Serve until cancelled (used by `edge simulate modbus`)."""
    sim = InverterSimulator(
        devices,
        port,
        host,
        update_interval=update_interval,
        sim_time=sim_time,
        time_scale=time_scale,
        rtu=rtu,
        baudrate=baudrate,
        parity=parity,
        framing=framing,
    )
    await sim.start()
    frames = sim.framing.upper()
    where = f"{frames} {rtu} at {baudrate} baud 8{parity}1" if rtu else f"{host}:{port}"
    if not rtu and sim.framing != "socket":
        where += f" ({frames} frames over TCP)"
    print(f"Modbus simulator: {devices} inverters on {where} (unit ids 1..{devices})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


async def _serve_until_signal(args: argparse.Namespace) -> None:
    await serve_until_signal(
        main(
            args.port,
            args.devices,
            args.host,
            args.update_interval,
            sim_time=args.sim_time,
            time_scale=args.time_scale,
            rtu=args.rtu,
            baudrate=args.baudrate,
            parity=args.parity,
            framing=args.framing,
        )
    )


def _cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m simulators.modbus_inverter",
        description="Modbus TCP/RTU SunSpec solar-inverter simulator",
    )
    p.add_argument("--port", type=int, default=5020)
    p.add_argument("--devices", type=int, default=1, help="number of inverters, unit ids 1..N")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--update-interval", type=float, default=1.0, help="seconds between value updates")
    p.add_argument("--sim-time", default=None, help="fixed time of day HH:MM (default: local clock)")
    p.add_argument("--time-scale", type=float, default=None, help="sim clock speed, e.g. 60")
    p.add_argument(
        "--rtu", default=None, metavar="PATH", help="serve Modbus RTU on this serial device instead"
    )
    p.add_argument("--baudrate", type=int, default=19200, help="RTU line speed")
    p.add_argument("--parity", choices=["N", "E", "O"], default="N", help="RTU parity (8 data bits, 1 stop)")
    p.add_argument(
        "--framing",
        choices=["socket", "rtu", "ascii"],
        default=None,
        help="frames: socket (Modbus TCP), rtu or ascii; on TCP, rtu/ascii act as a serial device server",
    )
    asyncio.run(_serve_until_signal(p.parse_args(argv)))


if __name__ == "__main__":
    _cli()
