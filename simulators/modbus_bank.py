"""Generic Modbus TCP register bank: N devices (unit ids 1..N), each with M holding registers from address 0.

The load generator of `edge bench`: every register of every device changes on every update (a per-device
counter plus a fixed per-register offset, so no two neighbouring registers hold the same value and a
"publish on change" consumer sees every register change). Cheap on purpose: an update rewrites each
device's live register list in place, so the simulator spends its CPU answering requests, not updating.

An independent device like `modbus_inverter`: it imports nothing from `edge` or `drivers`. It uses the
pymodbus 3.16 `SimDevice`/`SimData` API with one shared block per device (function codes 3 and 4 read the same
registers), and relies on one pymodbus internal, checked at start: the live registers are the list in
`SimCore.devices[unit].block["x"]`.

pymodbus' server answers roughly 8,000 requests/s per process on this project's reference machine (one
request per TCP read), so a benchmark spreads its devices over several processes, one port each.

    python -m simulators.modbus_bank --port 5020 --devices 20 --registers 50 --update-interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from simulators.serving import serve_until_signal

__all__ = ["MAX_REGISTERS", "BankSimulator", "main", "register_value"]

MAX_REGISTERS = 2000  # per device; a read still asks for at most 125 at a time


def register_value(unit: int, address: int, counter: int) -> int:
    """What register `address` of `unit` holds after `counter` updates (documented so tests can check)."""
    return (_offset(unit, address) + counter) & 0xFFFF


def _offset(unit: int, address: int) -> int:
    return (unit * 4099 + address * 257) & 0xFFFF


class BankSimulator:
    """N devices x M holding registers on one Modbus TCP port; values move every `update_interval` s."""

    def __init__(
        self,
        devices: int,
        registers: int,
        port: int,
        host: str = "127.0.0.1",
        *,
        update_interval: float = 1.0,
    ) -> None:
        if not 1 <= devices <= 247:
            raise ValueError("devices must be 1..247 (Modbus unit ids)")
        if not 1 <= registers <= MAX_REGISTERS:
            raise ValueError(f"registers must be 1..{MAX_REGISTERS}")
        self.devices, self.registers, self.port, self.host = devices, registers, port, host
        self.update_interval = update_interval
        self.counter = 0
        self.updates = 0
        self._offsets = {u: [_offset(u, a) for a in range(registers)] for u in range(1, devices + 1)}
        self._regs: dict[int, list[int]] = {}
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen and start updating; returns once the port accepts connections."""
        devices = [
            SimDevice(
                id=unit,
                simdata=[SimData(0, values=list(offsets), datatype=DataType.REGISTERS)],
            )
            for unit, offsets in self._offsets.items()
        ]
        self._server = ModbusTcpServer(devices, address=(self.host, self.port))
        self._regs = {unit: self._live_registers(unit) for unit in self._offsets}
        await self._server.serve_forever(background=True)
        if self.update_interval > 0:
            self._task = asyncio.create_task(self._run(), name="modbus-bank-sim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> BankSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def update_now(self) -> None:
        """Advance every register of every device by one step."""
        self.counter = counter = (self.counter + 1) & 0xFFFF
        count = self.registers
        for unit, regs in self._regs.items():
            regs[0:count] = [(o + counter) & 0xFFFF for o in self._offsets[unit]]
        self.updates += 1

    def _live_registers(self, unit: int) -> list[int]:
        context = self._server.context if self._server is not None else None
        if not isinstance(context, SimCore):
            raise RuntimeError("expected a SimDevice-backed pymodbus server")
        start, count, regs, _flags = context.devices[unit].block["x"]
        if start != 0 or count < self.registers or not isinstance(regs, list):
            raise RuntimeError("pymodbus SimRuntime layout changed; update simulators/modbus_bank.py")
        return regs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.update_interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.update_now()
            if loop.time() > due + self.update_interval:  # fell behind: do not try to catch up
                due = loop.time()


async def main(
    port: int, devices: int, registers: int, host: str = "127.0.0.1", update_interval: float = 1.0
) -> None:
    """Serve until cancelled."""
    sim = BankSimulator(devices, registers, port, host, update_interval=update_interval)
    await sim.start()
    print(
        f"Modbus bank: {devices} devices x {registers} holding registers on {host}:{port}"
        f" (unit ids 1..{devices}), update every {update_interval:g} s",
        flush=True,
    )
    started = time.monotonic()
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
        print(f"Modbus bank stopped after {time.monotonic() - started:.1f} s", flush=True)


async def _serve_until_signal(args: argparse.Namespace) -> None:
    await serve_until_signal(main(args.port, args.devices, args.registers, args.host, args.update_interval))


def _cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m simulators.modbus_bank",
        description="Modbus TCP register bank: N devices x M changing holding registers",
    )
    p.add_argument("--port", type=int, default=5020)
    p.add_argument("--devices", type=int, default=1, help="number of devices, unit ids 1..N")
    p.add_argument("--registers", type=int, default=50, help="holding registers per device, from address 0")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--update-interval", type=float, default=1.0, help="seconds between value updates (0: never)"
    )
    asyncio.run(_serve_until_signal(p.parse_args(argv)))


if __name__ == "__main__":
    _cli()
