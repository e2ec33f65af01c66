"""`edge run -c CONFIG` in this process, for tests/ops/test_lean_imports.py: once the gateway stored an event of
each device (its status file says so), the loaded top-level packages are printed (JSON) and the process stops
itself with SIGTERM, as systemd would.

    python -m tests.ops.lean_gateway_child CONFIG"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import orjson

from edge.cli import main
from edge.ops.status import status_file


def _report_then_stop(status: Path, devices: int) -> None:
    deadline = time.monotonic() + 30
    stored = 0
    while stored < devices and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            stored = int(orjson.loads(status.read_bytes()).get("events_stored", 0))
        except (OSError, orjson.JSONDecodeError):
            continue
    packages = sorted({name.partition(".")[0] for name in list(sys.modules)})
    print(orjson.dumps({"events_stored": stored, "packages": packages}).decode(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    config = Path(sys.argv[1])
    status = status_file(config.parent / "data")
    threading.Thread(target=_report_then_stop, args=(status, int(sys.argv[2])), daemon=True).start()
    sys.argv = ["edge", "run", "-c", str(config), "--log-level", "WARNING"]
    main()
