"""`edge bench noisy-neighbour`: does one heavy tenant slow another down?

A victim tenant runs a building's load (SunSpec inverters over Modbus TCP, its events uploaded to its cloud,
its operators reading the REST API). An attacker tenant on the same gateway ramps, step by step, its devices
and poll rates, module commands over MQTT, REST calls and webhook fan-out, until every one of its limits acts
(`[[tenants]] limits`, edge/ops/quotas.py): that is saturation. Each run is the real gateway process
(`edge run`) with the real simulators, broker, cloud simulator, OIDC issuer and webhook receiver.

Measured for the victim, against the victim alone: one run per attacker step (heavier ones past saturation
included), then `--repeat` pairs of runs, the victim alone and with the attacker at the first step where every
limit the attack pushes on acts, alternating; medians of each:
  sample -> MQTT p99     the bench subscriber (its own process) on the victim's events topic
  sample -> cloud p99    the cloud simulator's stored time minus each event's sample time
  API p99                a client reading the victim's devices 5 times a second
and what the victim lost: gaps in its devices' sequences at MQTT and at the cloud, and any of its own
limits acting (it stays within them; the attacker's limits must never act on it). The gateway runs with
`--loop-probe` (edge/ops/loopprobe.py, summed up by bench/loopstalls.py): each run also reports its event
loop's stalls and what ran in them, the loop's CPU by task, and how long the loop waited for a core (the shared
machine's share of the latency).

    python -m bench.noisy --duration 20 --repeat 3 --out bench-results/noisy
    python -m bench.noisy --duration 20 --repeat 3 --saturation 1   # no ramp: step 1 as saturation
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.fleet import Device, Fleet
from bench.loopstalls import loop_stalls, run_delay
from bench.procs import BenchBroker, Children, free_port, wait_port
from bench.report import machine_info, write_json
from bench.runners import GatewayProcess, SubscriberProcess
from bench.scenarios import DeviceGroup, Load

__all__ = ["ATTACKER_LIMITS", "STEPS", "Step", "main", "run"]

VICTIM = "victim"
ATTACKER = "attacker"
# The victim: 25 SunSpec inverters x 40 points every 0.5 s (50 events/s, 2,000 points/s)
VICTIM_GROUP = DeviceGroup("victim inverters", "modbus", "sunspec", 25, 40, 0.5, "vic", per_process=25)
# What the attacker tenant is allowed (its contract); the victim has the defaults
ATTACKER_LIMITS = (  # twice the victim's events; MQTT covers its events and retained point updates
    "{ ingest_rate = 100, ingest_burst = 100, mqtt_rate = 300, webhook_rate = 20, api_rate = 10,"
    " api_burst = 10, command_rate = 2, module_time = 0.1, ws_clients = 5 }"
)
API_PROBE_EVERY = 0.2  # s between two victim API reads
WARMUP = 10.0  # s: the attacker's start (first tokens, module and webhook catch-up) is not measured
SATURATED = {"ingest", "mqtt", "api", "commands", "webhooks"}  # the attacker's limits its load pushes on


@dataclass(frozen=True)
class Step:
    """One attacker load: devices x 20 registers at `poll_interval`, plus the rates of its other traffic."""

    devices: int
    poll_interval: float
    api_per_s: float
    commands_per_s: float
    webhooks: int  # subscriptions, each receiving every event of the attacker

    @property
    def offered_events_per_s(self) -> float:
        return self.devices / self.poll_interval

    def label(self) -> str:
        return (
            f"{self.devices} devices @ {self.poll_interval:g} s ({self.offered_events_per_s:,.0f} ev/s), "
            f"{self.api_per_s:g} API/s, {self.commands_per_s:g} commands/s, {self.webhooks} webhooks"
        )


STEPS = (
    Step(20, 0.2, 10, 2, 1),
    Step(50, 0.1, 50, 10, 3),
    Step(100, 0.05, 200, 50, 6),
    Step(200, 0.02, 500, 200, 10),
)


@dataclass
class Env:
    out: Path
    children: Children
    broker: BenchBroker
    cloud_port: int
    issuer: str
    receiver: str
    say: Any
    loop_probe: bool = True


def run(
    out: Path,
    *,
    duration: float,
    repeat: int,
    steps: tuple[Step, ...] = STEPS,
    saturation: int | None = None,
    loop_probe: bool = True,
    say: Any = print,
) -> dict[str, Any]:
    """The ramp (one run per step), then the victim alone and with the attacker at saturation, alternating
    (`repeat` pairs: the shared machine's load drifts, so a pair sees the same neighbours); medians compared.
    `saturation` names the step to take instead of ramping. Written to `out/results.json`."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine_info(), "duration": duration, "repeat": repeat}
    with Children() as children, _services(out, children) as env:
        env.say, env.loop_probe = say, loop_probe
        ramp: list[dict[str, Any]] = []
        for n, step in enumerate(steps if saturation is None else ()):  # past saturation nothing may change
            r = _measure(env, step, duration, f"step-{n}")
            ramp.append(r)
            say(f"attacker {step.label()}: {_line(r)}; attacker limits acting: {r['attacker_limits_acting']}")
        results["ramp"] = ramp
        # saturation: the first step at which every limit the attack pushes on acts
        first = next((n for n, r in enumerate(ramp) if set(r["attacker_limits_acting"]) >= SATURATED), None)
        if saturation is not None:
            first = saturation
        saturated = steps[first if first is not None else len(steps) - 1]
        solo, loaded = [], []
        for n in range(repeat):
            solo.append(_measure(env, None, duration, f"solo-{n}"))
            say(f"victim alone ({n + 1}/{repeat}): {_line(solo[-1])}")
            loaded.append(_measure(env, saturated, duration, f"saturated-{n}"))
            say(f"attacker saturated ({n + 1}/{repeat}): {_line(loaded[-1])}")
        results["solo"] = {"runs": solo, "median": _medians(solo)}
        results["saturated"] = {"step": saturated.label(), "runs": loaded, "median": _medians(loaded)}
        say(f"victim alone, medians: {_line(results['solo']['median'])}")
        say(f"attacker saturated ({saturated.label()}), medians: {_line(results['saturated']['median'])}")
    results["verdict"] = _verdict(results["solo"]["median"], results["saturated"])
    write_json(out / "results.json", results)
    say(results["verdict"]["text"])
    return results


# ---- the services every run shares -----------------------------------------------------------------------


@contextlib.contextmanager
def _services(out: Path, children: Children) -> Iterator[Env]:
    broker = BenchBroker(out / "broker", children)
    broker.start()
    cloud_port, issuer_port, receiver_port = free_port(), free_port(), free_port()
    tenants = f"{VICTIM},{ATTACKER}"
    py = sys.executable
    for argv, port, log in (
        (
            [py, "-m", "simulators.cloud", "--port", str(cloud_port), "--tenants", tenants],
            cloud_port,
            "cloud",
        ),
        (
            [py, "-m", "simulators.oidc", "--port", str(issuer_port), "--tenants", tenants],
            issuer_port,
            "oidc",
        ),
        ([py, "-m", "simulators.webhook_receiver", "--port", str(receiver_port)], receiver_port, "receiver"),
    ):
        wait_port(port, 30.0, children.spawn(argv, log=out / f"{log}.log"))
    yield Env(
        out,
        children,
        broker,
        cloud_port,
        f"http://127.0.0.1:{issuer_port}",
        f"http://127.0.0.1:{receiver_port}/hook",
        print,
    )


def _token(env: Env, tenant: str) -> str:
    answer = httpx.post(f"{env.issuer}/_sim/token", json={"tenant": tenant, "role": "operator", "ttl": 3600})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


# ---- one run ------------------------------------------------------------------------------------------------


def _measure(env: Env, step: Step | None, duration: float, name: str) -> dict[str, Any]:
    work = env.out / name
    work.mkdir(parents=True, exist_ok=True)
    env.broker.reset()
    victim = Fleet(Load("victim", (VICTIM_GROUP,)), work / "victim-sims", env.children).start()
    attacker: Fleet | None = None
    if step is not None:
        group = DeviceGroup("attacker banks", "modbus", "bank", step.devices, 20, step.poll_interval, "atk")
        attacker = Fleet(Load("attacker", (group,)), work / "attacker-sims", env.children).start()
    api_port = free_port()
    config = _write_config(work / "edge.toml", env, victim, attacker, api_port, f"noisy-{name}")
    cloud_before = _cloud_victim(env)
    if step is not None:
        for n in range(step.webhooks):
            _cli("webhook", "add", f"{env.receiver}?n={n}", "-t", ATTACKER, "-c", str(config))
    probe_file = work / "loop-probe.json"
    gateway = GatewayProcess(config, env.children, loop_probe=probe_file if env.loop_probe else None)
    subscriber = SubscriberProcess(work, env.broker.port, env.children, tenant=VICTIM)
    try:
        gateway.start()
        gateway.wait_ready(len(victim.devices) + (len(attacker.devices) if attacker else 0), timeout=120.0)
        subscriber.start()
        stop = threading.Event()
        probe = _ApiProbe(f"http://127.0.0.1:{api_port}", _token(env, VICTIM), stop)
        load = _Attack(env, step, api_port, stop) if step is not None else None
        if load is not None:
            load.start()
        probe.start()
        time.sleep(WARMUP)
        t0, cpu0, queued0 = time.time(), gateway.cpu_seconds(), run_delay(gateway.pid)
        probe.mark(t0)
        time.sleep(duration)
        t1, cpu1, queued1 = time.time(), gateway.cpu_seconds(), run_delay(gateway.pid)
        stop.set()
        status = gateway.status() or {}
        probe.join(5)
        if load is not None:
            load.join()
        time.sleep(2.0)  # the last events of the window reach MQTT and the cloud
        cloud = httpx.get(
            f"http://127.0.0.1:{env.cloud_port}/_sim/latency", params={"tenant": VICTIM, "since": t0}
        )
        gateway.stop()
        received = subscriber.stop()
        cloud_after = _cloud_victim(env)
    finally:
        for fleet in (victim, attacker):
            if fleet is not None:
                fleet.stop()
    figures = _result(step, received, cloud.json(), probe, status, (t0, t1), (cpu1 - cpu0) / (t1 - t0), load)
    if queued0 is not None and queued1 is not None:  # the machine's share: the loop ready, no core free
        figures["loop_no_core_ms_per_s"] = round((queued1 - queued0) * 1000 / (t1 - t0), 1)
    if env.loop_probe:
        figures["loop"] = loop_stalls(probe_file, (t0, t1))
    figures["victim_cloud_gaps"] = cloud_after["gaps"] - cloud_before["gaps"]
    figures["victim_cloud_order_violations"] = (
        cloud_after["order_violations"] - cloud_before["order_violations"]
    )
    return figures


def _cloud_victim(env: Env) -> dict[str, int]:
    """The victim's counters at the cloud simulator (cumulative over the runs)."""
    stats = httpx.get(f"http://127.0.0.1:{env.cloud_port}/_sim/stats").json()
    victim = stats["tenants"][VICTIM]
    return {"gaps": int(victim["gaps"]), "order_violations": int(victim["order_violations"])}


def _write_config(
    path: Path, env: Env, victim: Fleet, attacker: Fleet | None, api_port: int, gateway_id: str
) -> Path:
    lines = [
        "# written by edge bench noisy-neighbour",
        "[gateway]",
        f'id = "{gateway_id}"',  # a source of its own per run: the cloud checks each run's sequences
        'data_dir = "data"',
        "[bus]",
        'mode = "external"',
        f"port = {env.broker.port}",
        "[webhooks]",
        'allow_networks = ["127.0.0.1/32"]',
        "[api]",
        "enabled = true",
        f"port = {api_port}",
        "max_auth_failures = 100000",
        "[api.oidc]",
        f'issuer = "{env.issuer}"',
        'audience = "edge-gateway"',
        "allow_http = true",
        "[[tenants]]",
        f'id = "{VICTIM}"',
        'entitlements = ["alarms"]',
        "[[tenants]]",
        f'id = "{ATTACKER}"',
        'entitlements = ["alarms"]',
        f"limits = {ATTACKER_LIMITS}",
        "[[sites]]",
        'id = "site"',
        "[[modules]]",
        'name = "alarms"',
        "[[modules.config.rules]]",
        'id = "hot"',
        'point = "cabinet_temperature"',
        'devices = "*"',
        "high = 80.0",
        "[[modules]]",
        'name = "cloud_sync"',
        "[modules.config]",
        f'endpoint = "http://127.0.0.1:{env.cloud_port}/v1/events"',
        f'token_url = "http://127.0.0.1:{env.cloud_port}/oauth2/token"',
    ]
    for tenant in (VICTIM, ATTACKER):
        lines += [
            f"[modules.config.tenants.{tenant}]",
            f'client_id = "{tenant}"',
            f'client_secret = "env:NOISY_{tenant.upper()}_SECRET"',
            f'hmac_key = "env:NOISY_{tenant.upper()}_HMAC"',
            'hmac_key_id = "k1"',
        ]
    devices: list[tuple[str, Device]] = [(VICTIM, d) for d in victim.devices]
    devices += [(ATTACKER, d) for d in (attacker.devices if attacker else [])]
    for tenant, device in devices:
        lines += [
            "[[devices]]",
            f'name = "{device.name}"',
            'driver = "modbus"',
            f'tenant = "{tenant}"',
            'site = "site"',
            f'profile = "{device.profile}"',
            f"poll_interval = {device.group.poll_interval}",
            "timeout = 1.0",
            f'connection = {{ host = "127.0.0.1", port = {device.port}, unit_id = {device.unit} }}',
        ]
    for fleet in (victim, attacker):
        for name, text in fleet.profiles.items() if fleet else ():
            (path.parent / name).write_text(text)
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "edge.cli", *args], check=True, capture_output=True)


class _ApiProbe(threading.Thread):
    """The victim's operator: GET /v1/devices every 0.2 s; latencies of the requests after `mark`."""

    def __init__(self, base: str, token: str, stop: threading.Event) -> None:
        super().__init__(name="victim-api", daemon=True)
        self.base, self.token, self.stop = base, token, stop
        self.since = float("inf")
        self.latencies: list[float] = []
        self.failures: list[int] = []

    def mark(self, since: float) -> None:
        self.since = since

    def run(self) -> None:
        with httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        ) as c:
            while not self.stop.is_set():
                started = time.time()
                status = c.get("/v1/devices").status_code
                if started >= self.since:
                    self.latencies.append((time.time() - started) * 1000)
                    if status != 200:
                        self.failures.append(status)
                self.stop.wait(API_PROBE_EVERY)


class _Attack:
    """The attacker's other traffic, REST calls and module commands over MQTT (its devices poll on their own),
    from a process of its own: in this one its threads would hold the GIL the victim's API probe needs, and
    the probe would measure the bench instead of the gateway."""

    def __init__(self, env: Env, step: Step, api_port: int, stop: threading.Event) -> None:
        self.step = step
        self.api = f"http://127.0.0.1:{api_port}"
        self.token = _token(env, ATTACKER)
        self.broker_port = env.broker.port
        self.answers: dict[int, int] = {}
        self.commands = 0
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results: multiprocessing.Queue[tuple[dict[int, int], int]] = context.Queue()
        self._process = context.Process(
            target=_attack,
            args=(self.api, self.token, self.broker_port, step, self._stop, self._results),
            name="noisy-attacker",
            daemon=True,
        )

    def start(self) -> None:
        self._process.start()

    def join(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            self.answers, self.commands = self._results.get(timeout=30)
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def _attack(api: str, token: str, broker_port: int, step: Step, stop: Any, results: Any) -> None:
    """The attacker process: REST and command loops at the step's rates until `stop`; counts to `results`."""
    answers: dict[int, int] = {}
    sent = [0]

    def rest() -> None:
        every = 1.0 / step.api_per_s
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
            due = time.monotonic()
            while not stop.is_set():
                status = c.get("/v1/devices").status_code
                answers[status] = answers.get(status, 0) + 1
                due += every
                stop.wait(max(0.0, due - time.monotonic()))

    def commands() -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"noisy-attacker-{time.time_ns()}")
        client.connect("127.0.0.1", broker_port)
        client.loop_start()
        every = 1.0 / step.commands_per_s
        topic = f"edge/{ATTACKER}/cmd/module/alarms/list"
        due = time.monotonic()
        try:
            while not stop.is_set():
                client.publish(topic, orjson.dumps({"args": {}, "id": f"c{sent[0]}"}), qos=1)
                sent[0] += 1
                due += every
                stop.wait(max(0.0, due - time.monotonic()))
        finally:
            client.loop_stop()
            client.disconnect()

    threads = [threading.Thread(target=rest, daemon=True), threading.Thread(target=commands, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((answers, sent[0]))


# ---- figures ------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _result(
    step: Step | None,
    received: dict[str, Any],
    cloud: dict[str, Any],
    probe: _ApiProbe,
    status: dict[str, Any],
    window: tuple[float, float],
    cpu_share: float,
    attack: _Attack | None,
) -> dict[str, Any]:
    t0, t1 = window
    mqtt_lat = [lat for at, lat in zip(received["recv"], received["lat_ms"], strict=True) if t0 <= at <= t1]
    mqtt_gaps = sum(d["gaps"] for d in received["devices"].values())
    limits = status.get("limits", {})

    def acting(tenant: str) -> list[str]:
        return sorted(n for n, c in limits.get(tenant, {}).items() if c.get("acted"))

    return {
        "attacker": step.label() if step else None,
        "victim_events_in_window": len(mqtt_lat),
        "victim_events_per_s": round(len(mqtt_lat) / (t1 - t0), 1),
        "sample_to_mqtt_p50_ms": _pct(mqtt_lat, 0.5),
        "sample_to_mqtt_p99_ms": _pct(mqtt_lat, 0.99),
        "sample_to_cloud_p50_ms": cloud.get("p50_ms"),
        "sample_to_cloud_p99_ms": cloud.get("p99_ms"),
        "api_p50_ms": _pct(probe.latencies, 0.5),
        "api_p99_ms": _pct(probe.latencies, 0.99),
        "victim_api_failures": len(probe.failures),
        "victim_mqtt_gaps": mqtt_gaps,
        "victim_limits_acting": acting(VICTIM),
        "attacker_limits_acting": acting(ATTACKER),
        "attacker_limits": {n: c for n, c in limits.get(ATTACKER, {}).items() if c.get("acted")},
        "attacker_api_answers": attack.answers if attack else {},
        "attacker_commands_sent": attack.commands if attack else 0,
        "gateway_cpu_share": round(cpu_share, 2),
        "machine_load_1m": round(os.getloadavg()[0], 1),  # the shared machine's run queue (2 cores)
        "events_stored": status.get("events_stored"),
    }


_FIGURES = (
    "sample_to_mqtt_p99_ms",
    "sample_to_cloud_p99_ms",
    "api_p99_ms",
    "sample_to_mqtt_p50_ms",
    "api_p50_ms",
)


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in (
        *_FIGURES,
        "sample_to_cloud_p50_ms",
        "victim_events_per_s",
        "gateway_cpu_share",
        "machine_load_1m",
        "loop_no_core_ms_per_s",
    ):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 1) if values else None
    probed = [r["loop"] for r in runs if "stalls" in r.get("loop", {})]
    if probed:
        out["loop_stalls"] = statistics.median(p["stalls"] for p in probed)
        out["loop_over_20ms"] = statistics.median(p["over_20ms"] for p in probed)
        out["loop_worst_ms"] = statistics.median(p["worst_ms"][0] if p["worst_ms"] else 0.0 for p in probed)
    out["victim_mqtt_gaps"] = sum(r["victim_mqtt_gaps"] for r in runs)
    out["victim_cloud_gaps"] = sum(r["victim_cloud_gaps"] + r["victim_cloud_order_violations"] for r in runs)
    out["victim_api_failures"] = sum(r["victim_api_failures"] for r in runs)
    out["victim_limits_acting"] = sorted({n for r in runs for n in r["victim_limits_acting"]})
    return out


def _line(m: dict[str, Any]) -> str:
    text = (
        f"victim p99 sample->MQTT {m['sample_to_mqtt_p99_ms']} ms, sample->cloud {m['sample_to_cloud_p99_ms']} ms,"
        f" API {m['api_p99_ms']} ms; {m['victim_events_per_s']} ev/s, gaps {m['victim_mqtt_gaps']},"
        f" gateway CPU {m['gateway_cpu_share']} cores, machine load {m.get('machine_load_1m')},"
        f" loop waited for a core {m.get('loop_no_core_ms_per_s')} ms/s"
    )
    loop = m.get("loop")
    if loop and "stalls" in loop:
        blame = ", ".join(f"{what} {ms:g}" for what, ms in list(loop["blame_ms"].items())[:4])
        text += (
            f"; loop stalls >=10 ms {loop['stalls']} (>=20: {loop['over_20ms']}), worst {loop['worst_ms'][:3]} ms,"
            f" {loop['stalled_ms']} ms in all ({loop['stall_cpu_ms']} CPU, {loop['stall_no_core_ms']} no core),"
            f" blame ms: {blame}"
        )
        longest = ", ".join(f"{what} {ms[0]:g}" for what, ms in list(loop["longest_run_cpu_ms"].items())[:3])
        text += f"; loop CPU {loop['busy_cpu_ms_per_s']} ms/s, longest single runs (CPU ms): {longest}"
    elif "loop_stalls" in m:
        text += f"; loop stalls >=10 ms {m['loop_stalls']}, >=20 ms {m['loop_over_20ms']}"
    return text


def _verdict(solo: dict[str, Any], saturated: dict[str, Any]) -> dict[str, Any]:
    loaded = saturated["median"]
    ratios = {
        key: round(loaded[key] / solo[key], 2) if solo.get(key) and loaded.get(key) is not None else None
        for key in ("sample_to_mqtt_p99_ms", "sample_to_cloud_p99_ms", "api_p99_ms")
    }
    within = all(r is not None and r <= 1.5 for r in ratios.values())
    lossless = not (
        loaded["victim_mqtt_gaps"] or loaded["victim_cloud_gaps"] or loaded["victim_api_failures"]
    )
    untouched = not loaded["victim_limits_acting"]
    ok = within and lossless and untouched
    text = (
        f"{'PASS' if ok else 'FAIL'}: victim p99 with the attacker saturated / alone: "
        + ", ".join(f"{k.removesuffix('_ms')} {v}x" for k, v in ratios.items())
        + f" (limit 1.5x); victim gaps at MQTT {loaded['victim_mqtt_gaps']}, at the cloud"
        f" {loaded['victim_cloud_gaps']}, API failures {loaded['victim_api_failures']},"
        f" victim limits acting {loaded['victim_limits_acting'] or 'none'}"
    )
    return {"ratios": ratios, "pass": ok, "text": text}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noisy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the victim alone and of saturation")
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results") / time.strftime("noisy-%Y%m%d-%H%M%S")
    )
    parser.add_argument(
        "--saturation",
        type=int,
        choices=range(len(STEPS)),
        help="skip the ramp and take this step (0-based) as saturation (the ramp finds step 1)",
    )
    parser.add_argument(
        "--no-loop-probe",
        dest="loop_probe",
        action="store_false",
        help="run the gateway without `--loop-probe` (its stalls are then not reported)",
    )
    args = parser.parse_args(argv)

    for tenant in (VICTIM, ATTACKER):  # the cloud simulator's demo credentials (never for anything real)
        os.environ[f"NOISY_{tenant.upper()}_SECRET"] = f"{tenant}-client-secret"
        os.environ[f"NOISY_{tenant.upper()}_HMAC"] = f"{tenant}-hmac-key"
    signal.signal(signal.SIGTERM, _interrupt)  # every child process is stopped, as with Ctrl-C
    results = run(
        args.out.absolute(),
        duration=args.duration,
        repeat=args.repeat,
        saturation=args.saturation,
        loop_probe=args.loop_probe,
    )
    return 0 if results["verdict"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
