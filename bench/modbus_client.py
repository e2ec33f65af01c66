"""CPU of one Modbus TCP read in the client: pymodbus' `AsyncModbusTcpClient` against the driver's lean MBAP
client (`drivers/modbus/mbap.py`), with plain asyncio streams as the floor.

`simulators.modbus_bank` runs in its own process (1 device x `--registers` holding registers); this process
sends `--reads` sequential reads of all of them with each client in turn, after 200 reads of warm-up, and
counts its own CPU time (`time.process_time`: the client's work only, the simulator's is elsewhere). Clients
alternate run by run so the machine's drift hits all of them; medians of `--repeat`, load average beside.

    python -m bench.modbus_client --reads 2000 --registers 50 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from bench.procs import Children, free_port, wait_port
from drivers.modbus.errors import quiet_pymodbus_logging
from drivers.modbus.mbap import MbapClient

__all__ = ["main", "run_once"]

_WARMUP = 200
UNIT = 1

Read = Callable[[], Awaitable[int]]  # one read; the number of registers it got


async def _pymodbus(port: int, registers: int) -> tuple[Read, Callable[[], None]]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise RuntimeError(f"pymodbus cannot connect to 127.0.0.1:{port}")

    async def read() -> int:
        return len((await client.read_holding_registers(0, count=registers, device_id=UNIT)).registers)

    return read, client.close


async def _mbap(port: int, registers: int) -> tuple[Read, Callable[[], None]]:
    client = MbapClient("127.0.0.1", port, 2.0)
    if not await client.connect():
        raise RuntimeError(f"MbapClient cannot connect to 127.0.0.1:{port}")

    async def read() -> int:
        return len((await client.read_holding_registers(0, count=registers, device_id=UNIT)).registers)

    return read, client.close


async def _streams(port: int, registers: int) -> tuple[Read, Callable[[], None]]:
    """The floor: the same request and answer over asyncio streams, no checks beyond the length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tid = 0
    values = struct.Struct(f">{registers}H")

    async def read() -> int:
        nonlocal tid
        tid = tid % 0xFFFF + 1
        writer.write(struct.pack(">HHHBBHH", tid, 0, 6, UNIT, 3, 0, registers))
        _, _, length, _ = struct.unpack(">HHHB", await reader.readexactly(7))
        pdu = await reader.readexactly(length - 1)
        return len(values.unpack_from(pdu, 2))

    return read, writer.close


CLIENTS = {"pymodbus": _pymodbus, "mbap": _mbap, "streams": _streams}


async def run_once(kind: str, port: int, registers: int, reads: int) -> float:
    """CPU seconds of this process for `reads` reads with client `kind`."""
    read, close = await CLIENTS[kind](port, registers)
    try:
        for _ in range(_WARMUP):
            await read()
        cpu = time.process_time()
        for _ in range(reads):
            if await read() != registers:
                raise RuntimeError(f"{kind}: short answer")
        return time.process_time() - cpu
    finally:
        close()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.modbus_client", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--registers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated: " + ", ".join(CLIENTS))
    args = parser.parse_args(argv)
    kinds = args.clients.split(",")
    quiet_pymodbus_logging()  # as the driver does: no log records built for the hex dumps
    port = free_port()
    runs: dict[str, list[float]] = {kind: [] for kind in kinds}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Children() as children:
        argv = [sys.executable, "-m", "simulators.modbus_bank", "--port", str(port), "--devices", "1"]
        sim = children.spawn([*argv, "--registers", str(args.registers)], log=Path(tmp) / "sim.log")
        wait_port(port, proc=sim)
        for _ in range(args.repeat):
            for kind in kinds:
                cpu = asyncio.run(run_once(kind, port, args.registers, args.reads))
                runs[kind].append(cpu / args.reads * 1e6)
            loads.append(os.getloadavg()[0])
    result = {kind: statistics.median(values) for kind, values in runs.items()}
    for kind in kinds:
        each = ", ".join(f"{v:.1f}" for v in runs[kind])
        print(f"{kind:>8}: {result[kind]:6.1f} µs CPU per {args.registers}-register read (runs: {each})")
    print(
        f"{args.reads} reads per run, medians of {args.repeat}; load average (1 min) {min(loads):.2f}-{max(loads):.2f}"
    )
    return result


if __name__ == "__main__":
    main()
