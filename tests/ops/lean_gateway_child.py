"""A default gateway process for tests/ops/test_lean_imports.py: what `edge run` imports, then the gateway
started from CONFIG until one poll of each device is stored; prints the loaded top-level packages (JSON).

    python -m tests.ops.lean_gateway_child CONFIG"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson

import edge.cli  # noqa: F401  (`edge run` builds the whole command tree first)
from edge.cli.common import load_or_exit
from edge.gateway import Gateway


async def main(config: Path) -> None:
    loaded, registry = load_or_exit(config)
    gateway = Gateway(loaded, registry)
    await gateway.start()
    try:
        deadline = time.monotonic() + 30
        while (await gateway.status()).events_stored < len(loaded.devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        status = await gateway.status()
        loaded_packages = sorted({name.partition(".")[0] for name in sys.modules})
        print(orjson.dumps({"events_stored": status.events_stored, "packages": loaded_packages}).decode())
    finally:
        await gateway.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
