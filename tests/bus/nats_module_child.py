"""A gateway process on the NATS bus with a probe module, for the kill -9 test (tests/bus/test_nats_modules.py).

    python -m tests.bus.nats_module_child CONFIG RECORD [--produce]

The probe module subscribes to telemetry through the kernel (JetStream with this bus) and appends each event
id it handles to RECORD before returning, i.e. before the kernel acknowledges it. With --produce, the process
also appends telemetry of tenant acme to the outbox, one event every 2 ms, until it is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from edge.gateway import Gateway
from edge.plugins import Manifest
from edge.sdk.events import TELEMETRY, StoredEvent, make_event
from edge.sdk.modules import Health, ModuleContext
from edge.sdk.tenancy import tenant_scope
from tests.e2e import load

PROBE = Manifest(
    name="nats_probe", kind="module", version="1.0.0", kernel_api=">=1,<2", entitlement="nats_probe"
)


class Probe:
    def __init__(self) -> None:
        self._fd = os.open(os.environ["EDGE_PROBE_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def on_init(self, context: ModuleContext) -> None:
        context.subscribe([TELEMETRY], self._seen)

    async def _seen(self, event: StoredEvent) -> None:
        os.write(self._fd, f"{event.id}\n".encode())  # in the kernel's page cache: survives a kill -9

    async def on_enable(self) -> None:
        return None

    async def on_disable(self) -> None:
        os.close(self._fd)

    async def on_health_check(self) -> Health:
        return Health(True)


async def _produce(gateway: Gateway) -> None:
    sequence = (await gateway.outbox.last_sequences()).get(("acme", "inv-01"), 0)
    while True:
        sequence += 1
        event = make_event(
            type=TELEMETRY,
            source="/gw-nats/child",
            subject="roof/inv-01",
            tenant="acme",
            time=time.time(),
            data={"device": "inv-01", "site": "roof", "points": {}},
            device="inv-01",
            sequence=sequence,
        )
        with tenant_scope(gateway.tenants["acme"]):
            await gateway.outbox.append_durable(event)
        await asyncio.sleep(0.002)


async def main(config: Path, produce: bool) -> None:
    loaded, registry = load(config)
    registry.add_module(PROBE, Probe)
    gateway = Gateway(loaded, registry)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await gateway.start()
    producer = asyncio.create_task(_produce(gateway)) if produce else None
    print("started", flush=True)
    await stop.wait()
    if producer is not None:
        producer.cancel()
    await gateway.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), "--produce" in sys.argv[2:]))
