"""`edge demo`: the gateway's main job on embedded defaults, with nothing to set up.

Simulators in their own processes (SunSpec inverters on Modbus TCP, an air-handling unit and VAV boxes on
BACnet/IP, lifts on OPC UA, a cloud ingestion endpoint and an OIDC issuer), the gateway with its embedded
Mosquitto and its REST API, and cloud sync uploading each tenant's events to the cloud simulator.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import typer

from edge.cli.common import load_or_exit, setup_logging
from edge.cli.run_cmd import StatusPrinter, run_gateway

TENANTS = ("acme", "globex")


@dataclass(frozen=True)
class DemoPorts:
    mqtt: int
    modbus: int
    bacnet: int  # the AHU; VAV k listens on bacnet + k
    bacnet_gateway: int
    opcua: int
    cloud: int
    oidc: int = 9400  # the test identity provider the API trusts
    api: int = 8080


DEMO_ACCOUNT = "demo"  # the console's sign-in printed by `edge demo`

# The inverters' clock starts at 10:00 and runs in real time, so a demo at night still produces energy.
_DAYLIGHT = ("--sim-time", "10:00", "--time-scale", "1")


def demo(
    devices: int = typer.Option(10, min=1, max=247, help="Simulated inverters."),
    vavs: int = typer.Option(2, min=0, max=20, help="Simulated VAV boxes beside the air-handling unit."),
    lifts: int = typer.Option(2, min=0, max=20, help="Simulated lifts."),
    data_dir: Path = typer.Option(Path("var/demo"), help="Where the demo's config, outbox and broker live."),
    mqtt_port: int = typer.Option(0, help="Port of the gateway's embedded broker (0: 1883, or a free one)."),
    modbus_port: int = typer.Option(0, help="Port of the Modbus simulator (0: 5020, or a free one)."),
    cloud_port: int = typer.Option(0, help="Port of the cloud endpoint simulator (0: 8443, or a free one)."),
    api_port: int = typer.Option(0, help="Port of the gateway's REST API (0: 8080, or a free one)."),
    cluster: bool = typer.Option(
        False,
        "--cluster",
        help="Instead: three gateway instances on one configuration, a private PostgreSQL (shared outbox and "
        "leases), Mosquitto and the Modbus simulator (bench/cluster.py, docs/scale.md).",
    ),
) -> None:
    """Run simulators, a cloud endpoint and the gateway on a demo configuration, with a live status line."""
    if cluster:
        from bench.cluster import main as cluster_demo  # a development tool: imported only when used

        cluster_demo(["demo", "--devices", str(devices), "--out", str(data_dir / "cluster")])
        return
    setup_logging("INFO")
    ports = DemoPorts(
        mqtt=mqtt_port or _port_or_free(1883),
        modbus=modbus_port or _port_or_free(5020),
        bacnet=(bacnet := _free_udp_run(vavs + 1)),
        bacnet_gateway=_free_udp_run(1, start=bacnet + vavs + 1),
        opcua=_port_or_free(4840),
        cloud=cloud_port or _port_or_free(8443),
        oidc=_port_or_free(9400),
        api=api_port or _port_or_free(8080),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "edge.toml"
    config_path.write_text(demo_config(devices, vavs, lifts, ports))
    for tenant in TENANTS:  # the cloud simulator's demo credentials, passed as secret references
        os.environ[f"EDGE_DEMO_{tenant.upper()}_SECRET"] = f"{tenant}-client-secret"
        os.environ[f"EDGE_DEMO_{tenant.upper()}_HMAC"] = f"{tenant}-hmac-key"
    py = sys.executable
    simulators = [
        ("Modbus inverters", [py, "-m", "simulators.modbus_inverter", "--port", str(ports.modbus), "--devices", str(devices + 1), *_DAYLIGHT], ("tcp", ports.modbus)),
        ("cloud endpoint", [py, "-m", "simulators.cloud", "--port", str(ports.cloud), "--tenants", ",".join(TENANTS), "--scenario", _scenario(devices, ports)], ("tcp", ports.cloud)),
        ("OIDC issuer", [py, "-m", "simulators.oidc", "--port", str(ports.oidc), "--tenants", ",".join(TENANTS)], ("tcp", ports.oidc)),
        ("BACnet HVAC", [py, "-m", "simulators.bacnet_hvac", "--vav", str(vavs), "--address", "127.0.0.1", "--port", str(ports.bacnet), "--layout", "ports", *(["--drift", f"vav-{min(2, vavs)}=4.0"] if vavs else [])], None),
    ]  # fmt: skip
    if lifts:
        simulators.append(("OPC UA lifts", [py, "-m", "simulators.opcua_lift", "--port", str(ports.opcua), "--lifts", str(lifts)], ("tcp", ports.opcua)))  # fmt: skip
    processes = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _, cmd, _ in simulators]
    try:
        for (name, _, endpoint), process in zip(simulators, processes, strict=True):
            if endpoint is not None:
                _wait_port(name, process, endpoint[1], 30.0)
        # the platform's public key for acme (the downlink verifies what the cloud simulator signs)
        key = httpx.get(f"http://127.0.0.1:{ports.cloud}/_sim/platform/acme/key", timeout=10.0)
        (data_dir / "acme-platform.pem").write_bytes(key.raise_for_status().content)
        loaded, registry = load_or_exit(config_path)
        console_password = _demo_account(loaded.data_dir)
        typer.echo(
            _banner(devices, vavs, lifts, ports, config_path, loaded.data_dir / loaded.config.storage.path)
            + f"  console: http://127.0.0.1:{ports.api}/console/  sign in as {DEMO_ACCOUNT!r}, password "
            f"{console_password}  (an admin: pick the tenant at the top)\n"
            f"  metrics: curl -s http://127.0.0.1:{ports.api}/metrics\n",
            err=True,
        )
        run_gateway(loaded, registry, StatusPrinter())
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()


def _demo_account(data_dir: Path) -> str:
    """The console's demo admin account, with a fresh password each run (printed in the banner)."""
    from edge.api.accounts import AccountStore, accounts_path  # the API's modules load only for the demo

    store = AccountStore(accounts_path(data_dir))
    password = secrets.token_urlsafe(12)
    if store.get(DEMO_ACCOUNT) is None:
        store.add(DEMO_ACCOUNT, password, "admin", None)
    else:
        store.set_password(DEMO_ACCOUNT, password)
    return password


def _scenario(devices: int, ports: DemoPorts) -> str:
    """The cloud simulator, a few seconds after start, writes acme's first inverter's power limit and deploys
    one more inverter (the Modbus simulator serves one unit beyond the configured ones) to the running
    gateway; it prints both results when the uplink brings them back."""
    unit = devices + 1
    return json.dumps(
        {
            "gateway": "demo",
            "tenant": "acme",
            "after": 8.0,
            "write": {"site": "acme-hq", "device": "inv-01", "point": "power_limit", "value": 80},
            "device": {
                "name": f"inv-{unit:02d}",
                "driver": "modbus",
                "tenant": "acme",
                "site": "acme-hq",
                "profile": "sunspec-inverter",
                "poll_interval": 1.0,
                "connection": {"host": "127.0.0.1", "port": ports.modbus, "unit_id": unit},
            },
        }
    )


def _banner(devices: int, vavs: int, lifts: int, ports: DemoPorts, config: Path, outbox: Path) -> str:
    return (
        f"\nDemo: {devices} inverters (Modbus TCP :{ports.modbus}), 1 AHU + {vavs} VAV (BACnet/IP :{ports.bacnet}),"
        f" {lifts} lifts (OPC UA :{ports.opcua}) -> gateway -> MQTT 127.0.0.1:{ports.mqtt} and the cloud (:{ports.cloud})\n"
        f"  config:  {config}\n"
        f"  outbox:  {outbox}\n"
        f"  watch:   mosquitto_sub -v -h 127.0.0.1 -p {ports.mqtt} -t 'edge/#'\n"
        f"  one point: mosquitto_sub -v -h 127.0.0.1 -p {ports.mqtt} -t 'edge/acme/points/acme-hq/inv-01/ac_power'\n"
        f"  the cloud: curl -s http://127.0.0.1:{ports.cloud}/_sim/stats\n"
        f'  the API:   curl -s -H "Authorization: Bearer $(edge simulate oidc token --issuer http://127.0.0.1:{ports.oidc}'
        f' --tenant acme --role viewer)" http://127.0.0.1:{ports.api}/v1/points\n'
        f"  live:      ws://127.0.0.1:{ports.api}/v1/events/stream?access_token=<token> (docs/api.md)\n"
        f"  Sparkplug: mosquitto_sub -v -h 127.0.0.1 -p {ports.mqtt} -t 'spBv1.0/acme/#'   (binary protobuf; a"
        " Sparkplug host such as Ignition decodes it, docs/mqtt-access.md)\n"
        f"  Home Assistant: mosquitto_sub -v -h 127.0.0.1 -p {ports.mqtt} -t 'homeassistant/#'   (discovery configs)\n"
        + _module_hints(vavs, ports, config)
        + "  Ctrl-C stops everything.\n"
    )


def _module_hints(vavs: int, ports: DemoPorts, config: Path) -> str:
    drifting = f"   (the drifting zone vav-{min(2, vavs)} raises one within a minute or two)" if vavs else ""
    period = time.strftime("%Y-%m", time.gmtime())  # billing periods are UTC months in the demo
    return (
        f"  alerts:  mosquitto_sub -v -h 127.0.0.1 -p {ports.mqtt} -t 'edge/+/events/#' | grep -E 'asset.failed|org.edgegw.alarm'\n"
        f"           edge alarm list --tenant acme -c {config}{drifting}\n"
        f"  ledger:  edge billing report --tenant acme --period {period} -c {config}   (fills every minute)\n"
    )


def demo_config(devices: int, vavs: int, lifts: int, ports: DemoPorts) -> str:
    """Two tenants share the gateway: ACME owns half the inverters and the HVAC, Globex the rest and the lifts."""
    lines = [
        "# Demo configuration written by `edge demo`.",
        "[gateway]",
        'id = "demo"',
        'name = "Demo gateway"',
        'data_dir = "."',
        "",
        "[bus]",
        'mode = "embedded"',
        f"port = {ports.mqtt}",
        "",
        "[webhooks]",
        'allow_networks = ["127.0.0.1/32"]  # try `python -m simulators.webhook_receiver` on this machine',
        "",
        "[[tenants]]",
        'id = "acme"',
        'name = "ACME Property"',
        'locale = "en-GB"',
        'entitlements = ["solar", "billing", "hvac", "alarms"]',
        "",
        "[tenants.sparkplug]  # Sparkplug B for a SCADA host (Ignition): group acme, edge node demo",
        'group_id = "acme"',
        "",
        "[tenants.homeassistant]  # Home Assistant finds ACME's devices under homeassistant/",
        'discovery_prefix = "homeassistant"',
        "",
        "[tenants.cloud]  # acme's platform (the cloud simulator) sends commands and deployments",
        f'url = "http://127.0.0.1:{ports.cloud}"',
        f'token_url = "http://127.0.0.1:{ports.cloud}/oauth2/token"',
        'client_id = "acme"',
        'client_secret = "env:EDGE_DEMO_ACME_SECRET"',
        'verify_key = "acme-platform.pem"',
        "entitlements = false  # acme's entitlements stay those above",
        "",
        "[[tenants]]",
        'id = "globex"',
        'name = "Globex Manufacturing"',
        'locale = "de-DE"',
        'entitlements = ["solar", "lifts", "alarms"]',
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
        lines += _device(f"inv-{unit:02d}", "modbus", tenant, site, "sunspec-inverter", 1.0,
                         f'{{ host = "127.0.0.1", port = {ports.modbus}, unit_id = {unit} }}')  # fmt: skip
    bacnet_local = f'local_address = "127.0.0.1/8:{ports.bacnet_gateway}"'
    for k in range(vavs + 1):
        name, profile = ("ahu-1", "ahu") if k == 0 else (f"vav-{k}", "vav")
        lines += _device(name, "bacnet", "acme", "acme-hq", profile, 5.0,
                         f'{{ address = "127.0.0.1:{ports.bacnet + k}", device_instance = {1000 + k}, {bacnet_local} }}')  # fmt: skip
    for k in range(1, lifts + 1):
        lines += _device(f"lift-{k}", "opcua", "globex", "globex-plant", "lift", 5.0,
                         f'{{ url = "opc.tcp://127.0.0.1:{ports.opcua}/lift", security = "None", node_variables = {{ lift = "Lift{k}" }} }}')  # fmt: skip
    lines += _domain_modules()
    lines += [
        "",
        "[api]",
        "enabled = true",
        f"port = {ports.api}",
        "",
        "[api.oidc]",
        f'issuer = "http://127.0.0.1:{ports.oidc}"',
        'audience = "edge-gateway"',
        "allow_http = true  # the demo's issuer is on loopback",
    ]
    lines += ["", "[[modules]]", 'name = "cloud_sync"', "", "[modules.config]"]
    lines += [
        f'endpoint = "http://127.0.0.1:{ports.cloud}/v1/events"',
        f'token_url = "http://127.0.0.1:{ports.cloud}/oauth2/token"',
    ]
    for tenant in TENANTS:
        lines += [
            "",
            f"[modules.config.tenants.{tenant}]",
            f'client_id = "{tenant}"',
            f'client_secret = "env:EDGE_DEMO_{tenant.upper()}_SECRET"',
            f'hmac_key = "env:EDGE_DEMO_{tenant.upper()}_HMAC"',
            'hmac_key_id = "k1"',
        ]
    return "\n".join(lines) + "\n"


def _domain_modules() -> list[str]:
    """The domain modules on demo settings: one-minute energy intervals (the ledger fills while you watch) and
    alert delays of seconds (the simulated zone vav-2 drifts off its setpoint: an alert within about a minute)."""
    return [
        "",
        "[[modules]]",
        'name = "solar"',
        "config = { interval = 60, max_gap = 10, offline_after = 10, underperformance = { after = 60 } }",
        "",
        "[[modules]]",
        'name = "billing"',
        'config = { price_per_kwh = 0.25, currency = "EUR", tenants = { globex = { price_per_kwh = 0.21 } } }',
        "",
        "[[modules]]",
        'name = "lifts"',
        "config = { stuck_after = 10, door_open_max = 30, report_interval = 300 }",
        "",
        "[[modules]]",
        'name = "hvac"',
        "config = { tolerance_k = 1.5, off_setpoint_after = 20, check_interval = 2 }",
        "",
        "[[modules]]",
        'name = "alarms"',
        "[modules.config]",
        "rules = [",
        '  { id = "zone-warm", point = "zone-temp", devices = "vav-*", high = 23.5, hysteresis = 0.3, delay = 10 },',
        '  { id = "inverter-offline", point = "ac_power", devices = "inv-*", bad_quality_after = 15, severity = "critical" },',
        '  { id = "lift-motor-hot", point = "motor_temperature", devices = "lift-*", high = 50.0, hysteresis = 2.0, delay = 30 },',
        "]",
    ]


def _device(
    name: str, driver: str, tenant: str, site: str, profile: str, poll: float, connection: str
) -> list[str]:
    return [
        "",
        "[[devices]]",
        f'name = "{name}"',
        f'driver = "{driver}"',
        f'tenant = "{tenant}"',
        f'site = "{site}"',
        f'profile = "{profile}"',
        f"poll_interval = {poll}",
        f"connection = {connection}",
    ]


def _port_or_free(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return int(s.getsockname()[1])
            except OSError:
                continue
    raise RuntimeError("no free port")


def _free_udp_run(count: int, start: int = 47820) -> int:
    """The first of `count` consecutive free UDP ports on 127.0.0.1 from `start` (BACnet peers, one port each)."""
    for base in range(start, start + 1000, 10):
        sockets = []
        try:
            for offset in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free UDP ports for the BACnet simulator")


def _wait_port(name: str, process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    typer.echo(f"the {name} simulator did not start listening on port {port}", err=True)
    raise typer.Exit(1)
