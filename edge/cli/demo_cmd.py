from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import typer

from edge.cli.common import load_or_exit, setup_logging
from edge.cli.run_cmd import StatusPrinter, run_gateway


def demo(
    devices: int = typer.Option(10, min=1, max=247, help="Simulated inverters."),
    data_dir: Path = typer.Option(Path("var/demo"), help="Where the demo's config, outbox and broker live."),
    mqtt_port: int = typer.Option(0, help="Port of the gateway's embedded broker (0: 1883, or a free one)."),
    modbus_port: int = typer.Option(0, help="Port of the Modbus simulator (0: 5020, or a free one)."),
) -> None:
    """Start a Modbus inverter simulator and the gateway on a demo configuration, with a live status line."""
    setup_logging("INFO")
    mqtt_port = mqtt_port or _port_or_free(1883)
    modbus_port = modbus_port or _port_or_free(5020)
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "edge.toml"
    config_path.write_text(demo_config(devices, mqtt_port, modbus_port))
    loaded, registry = load_or_exit(config_path)
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.modbus_inverter",
            "--port",
            str(modbus_port),
            "--devices",
            str(devices),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(modbus_port, 15.0)
        typer.echo(
            f"\nDemo: {devices} simulated inverters (Modbus TCP 127.0.0.1:{modbus_port}) -> gateway -> MQTT 127.0.0.1:{mqtt_port}\n"
            f"  config:  {config_path}\n"
            f"  outbox:  {loaded.data_dir / loaded.config.storage.path}\n"
            f"  watch:   mosquitto_sub -v -h 127.0.0.1 -p {mqtt_port} -t 'edge/#'\n"
            f"  one point: mosquitto_sub -v -h 127.0.0.1 -p {mqtt_port} -t 'edge/acme/points/acme-hq/inv-01/ac_power'\n"
            "  Ctrl-C stops everything.\n",
            err=True,
        )
        run_gateway(loaded, registry, StatusPrinter())
    finally:
        simulator.terminate()
        try:
            simulator.wait(5)
        except subprocess.TimeoutExpired:
            simulator.kill()


def demo_config(devices: int, mqtt_port: int, modbus_port: int) -> str:
    """Two tenants sharing one gateway: the first half of the inverters is ACME's, the rest Globex's."""
    lines = [
        "# Demo configuration written by `edge demo`.",
        "[gateway]",
        'id = "demo"',
        'name = "Demo gateway"',
        'data_dir = "."',
        "",
        "[bus]",
        'mode = "embedded"',
        f"port = {mqtt_port}",
        "",
        "[[tenants]]",
        'id = "acme"',
        'name = "ACME Property"',
        'locale = "en-GB"',
        'entitlements = ["solar", "billing"]',
        "",
        "[[tenants]]",
        'id = "globex"',
        'name = "Globex Manufacturing"',
        'locale = "de-DE"',
        'entitlements = ["solar"]',
        "",
        "[[sites]]",
        'id = "acme-hq"',
        'timezone = "Europe/London"',
        "",
        "[[sites]]",
        'id = "globex-plant"',
        'timezone = "Europe/Berlin"',
    ]
    half = (devices + 1) // 2
    for unit in range(1, devices + 1):
        tenant, site = ("acme", "acme-hq") if unit <= half else ("globex", "globex-plant")
        lines += [
            "",
            "[[devices]]",
            f'name = "inv-{unit:02d}"',
            'driver = "modbus"',
            f'tenant = "{tenant}"',
            f'site = "{site}"',
            'profile = "sunspec-inverter"',
            "poll_interval = 1.0",
            f'connection = {{ host = "127.0.0.1", port = {modbus_port}, unit_id = {unit} }}',
        ]
    return "\n".join(lines) + "\n"


def _port_or_free(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return int(s.getsockname()[1])
            except OSError:
                continue
    raise RuntimeError("no free port")


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    typer.echo(f"the Modbus simulator did not start listening on port {port} within {timeout:g} s", err=True)
    raise typer.Exit(1)
