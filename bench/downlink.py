"""Downlink benchmark: latency from a command issued on the platform to its result received there.

    python -m bench.downlink --commands 200 --runs 3
    python -m bench.downlink --commands 200 --linger 0.5     # cloud_sync's default batching delay

The platform is the cloud simulator (in this process, so both timestamps come from one clock); the gateway
(`edge run`, its own process, embedded Mosquitto) talks to it over loopback both ways, and writes a Modbus
simulator's inverter (its own process). For each command: the platform signs and queues a point write, the
gateway's long-poll receives it, verifies it, writes the device through the command path, stores the result
event, and cloud_sync uploads it; the latency is from queueing to the result's arrival at the platform.
Commands go one at a time (the next once the previous result arrived). One JSON object is printed: per run
the median and p99, and the medians of those over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.procs import Children, free_port, wait_port
from simulators.cloud import CloudSimulator, Credentials
from simulators.cloud_platform import public_pem

GATEWAY = "gw-bench"


def _config(workdir: Path, cloud: CloudSimulator, modbus: int, linger: float) -> Path:
    (workdir / "acme.pem").write_bytes(public_pem(cloud.platform.tenants["acme"].key))
    creds = cloud.clients["acme"]
    text = f"""
[gateway]
id = "{GATEWAY}"
data_dir = "data"
[bus]
port = {free_port()}
[[tenants]]
id = "acme"
[tenants.cloud]
url = "{cloud.url}"
token_url = "{cloud.token_url}"
client_id = "{creds.client_id}"
client_secret = "env:EDGE_BENCH_SECRET"
verify_key = "acme.pem"
entitlements = false
[[sites]]
id = "roof"
[[devices]]
name = "inv-01"
driver = "modbus"
tenant = "acme"
site = "roof"
profile = "sunspec-inverter"
poll_interval = 1.0
connection = {{ host = "127.0.0.1", port = {modbus}, unit_id = 1 }}
[[modules]]
name = "cloud_sync"
[modules.config]
endpoint = "{cloud.events_url}"
token_url = "{cloud.token_url}"
linger = {linger}
[modules.config.tenants.acme]
client_id = "{creds.client_id}"
client_secret = "env:EDGE_BENCH_SECRET"
hmac_key = "env:EDGE_BENCH_HMAC"
"""
    os.environ["EDGE_BENCH_SECRET"] = creds.client_secret
    os.environ["EDGE_BENCH_HMAC"] = creds.hmac_key.decode()
    path = workdir / "edge.toml"
    path.write_text(text)
    return path


async def _latencies(cloud: CloudSimulator, commands: int, within: float) -> list[float]:
    platform = cloud.platform
    record = platform.tenants["acme"]
    out = []
    for i in range(commands):
        body = {"site": "roof", "device": "inv-01", "point": "power_limit", "value": 50 + i % 50}
        jti = platform.send("acme", GATEWAY, "point.write", body)
        deadline = time.monotonic() + within
        while jti not in record.result_arrived:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no result for command {i} within {within} s")
            await asyncio.sleep(0.001)
        result = platform.result("acme", jti)
        if result is None or result["status"] != "done":
            raise RuntimeError(f"command {i} did not succeed: {result}")
        out.append(record.result_arrived[jti] - record.issued[jti])
    return out


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def _run(commands: int, linger: float, workdir: Path) -> dict[str, Any]:
    async with CloudSimulator([Credentials.demo("acme")]) as cloud:
        modbus = free_port()
        with Children() as children:
            py = sys.executable
            children.spawn(
                [py, "-m", "simulators.modbus_inverter", "--port", str(modbus), "--devices", "1"],
                log=workdir / "modbus.log",
            )
            wait_port(modbus)
            config = _config(workdir, cloud, modbus, linger)
            children.spawn([py, "-m", "edge.cli", "run", "-c", str(config)], log=workdir / "gateway.log")
            deadline = time.monotonic() + 60
            while cloud.platform.tenants["acme"].polls == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway never polled; see {workdir / 'gateway.log'}")
                await asyncio.sleep(0.05)
            await _latencies(cloud, 5, 30.0)  # warm up: connections, tokens, the device's session
            latencies = await _latencies(cloud, commands, 30.0)
    ms = [x * 1000 for x in latencies]
    return {"commands": commands, "median_ms": round(statistics.median(ms), 1), "p99_ms": round(_p99(ms), 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--linger", type=float, default=0.05, help="cloud_sync linger (s) for the results")
    args = parser.parse_args(argv)
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-downlink-") as tmp:
            runs.append(asyncio.run(_run(args.commands, args.linger, Path(tmp))))
    summary = {
        "linger_s": args.linger,
        "runs": runs,
        "median_ms": statistics.median(r["median_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "load_average": os.getloadavg(),
    }
    print(orjson.dumps(summary).decode())


if __name__ == "__main__":
    main()
