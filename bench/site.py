"""Time the documented site commissioning sequence (docs/commissioning.md) end to end, as separate processes.

    python -m bench.site --hosts 5 --per-host 20 --repeat 3

Starts `--hosts` inverter simulators (loopback addresses 127.0.31.1.., `--per-host` SunSpec inverters behind
each) and a Mosquitto, then for each run, in a fresh directory: `edge init`, `edge site plan` (one Modbus scan
per host), `edge site apply`, `edge run` (external bus), and waits until a paho subscriber has seen telemetry
from every device. Prints each step's wall time and the total; with `--repeat`, medians.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import tomlkit

from bench.procs import BenchBroker, Children, free_port

__all__ = ["main", "one_run"]

_EDGE = [sys.executable, "-m", "edge.cli"]
_STEPS = ("init", "plan", "apply", "publishing")


class _Seen:
    """Device names that published telemetry, from a plain paho subscriber."""

    def __init__(self, port: int, prefix: str) -> None:
        self.devices: set[str] = set()
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/+/events/#", qos=0)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if b"telemetry" in msg.payload:
            with self._lock:
                self.devices.add(msg.topic.rsplit("/", 1)[-1])

    def count(self) -> int:
        with self._lock:
            return len(self.devices)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _edge(*args: str, cwd: Path) -> None:
    done = subprocess.run([*_EDGE, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"edge {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")


def one_run(
    workdir: Path, hosts: list[str], port: int, broker: int, devices: int, children: Children
) -> dict[str, float]:
    """One commissioning from nothing; returns seconds per step."""
    prefix = f"site{free_port()}"
    scans = [
        f"--scan=modbus host={host} port={port} units=1-{devices // len(hosts)} timeout=0.2" for host in hosts
    ]
    times: dict[str, float] = {}
    times["init"] = _timed(
        lambda: _edge("init", "--tenant", "acme", "--site", "plant-1", "--id", "gw-bench", cwd=workdir)
    )
    config = workdir / "edge.toml"  # the site's broker instead of the embedded one
    document = tomlkit.parse(config.read_text())
    document["bus"].update({"mode": "external", "port": broker, "topic_prefix": prefix})  # type: ignore[union-attr]
    config.write_text(tomlkit.dumps(document))
    times["plan"] = _timed(
        lambda: _edge(
            "site", "plan", *scans, "--tenant", "acme", "--site", "plant-1", "-o", "plan.toml", cwd=workdir
        )
    )
    times["apply"] = _timed(lambda: _edge("site", "apply", "plan.toml", cwd=workdir))
    seen = _Seen(broker, prefix)
    start = time.perf_counter()
    gateway = children.spawn([*_EDGE, "run"], log=workdir / "gateway.log", cwd=workdir)
    try:
        deadline = start + 120
        while seen.count() < devices:
            if time.perf_counter() > deadline or gateway.poll() is not None:
                raise RuntimeError(
                    f"{seen.count()}/{devices} devices published; see {workdir / 'gateway.log'}"
                )
            time.sleep(0.05)
        times["publishing"] = time.perf_counter() - start
    finally:
        children.stop(gateway)
        seen.close()
    times["total"] = sum(times.values())
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.site", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--per-host", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    hosts = [f"127.0.31.{k}" for k in range(1, args.hosts + 1)]
    devices = args.hosts * args.per_host
    port = free_port()
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="edge-site-bench-") as tmp, Children() as children:
        base = Path(tmp)
        broker = BenchBroker(base / "broker", children)
        broker.start()
        for host in hosts:
            children.spawn(
                [sys.executable, "-m", "simulators.modbus_inverter", "--host", host, "--port", str(port),
                 "--devices", str(args.per_host), "--sim-time", "12:00", "--update-interval", "5"],
                log=base / f"sim-{host}.log",
            )  # fmt: skip
        for host in hosts:
            wait_port_on(host, port)
        for run in range(args.repeat):
            workdir = base / f"run-{run}"
            workdir.mkdir()
            times = one_run(workdir, hosts, port, broker.port, devices, children)
            runs.append(times)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()), flush=True)
    medians = {k: statistics.median(r[k] for r in runs) for k in (*_STEPS, "total")}
    print(
        f"{devices} devices, {args.hosts} hosts, median of {len(runs)}: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items())
    )


def wait_port_on(host: str, port: int, timeout: float = 20.0) -> None:
    """Until `host:port` accepts a connection (the simulators listen on addresses other than 127.0.0.1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


if __name__ == "__main__":
    main()
