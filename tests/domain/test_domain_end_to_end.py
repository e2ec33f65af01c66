"""The domain modules end to end: real simulators (Modbus inverters, OPC UA lifts, BACnet HVAC) -> drivers ->
gateway -> outbox -> solar, billing, lifts, hvac, alarms, with faults injected into the simulators.

One gateway and one set of simulators for the whole file (in this event loop), two tenants: acme is
entitled to every module, globex to none (it has an inverter and a lift of its own and must get nothing from
the modules). Module intervals and delays are shortened to seconds; the logic is the production logic.

Every test runs twice, with the same expectations: the five modules in-process, then isolated (each in its
own process through the SDK runner, over the kernel's gRPC socket): a module behaves the same either way.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from typer.testing import CliRunner, Result

from edge.cli import app as cli
from edge.config import load_config
from edge.gateway import Gateway
from edge.module_host.commands import ModuleCommandRejected
from edge.module_host.state import ModuleStateStore
from edge.module_host.supervisor import RunState
from edge.plugins import PluginRegistry
from edge.sdk.modules import Health
from edge.sdk.tenancy import tenant_scope
from simulators.bacnet_hvac import HvacSimulator
from simulators.modbus_inverter import InverterSimulator
from simulators.opcua_lift import LiftSimulator
from tests.helpers import MosquittoProcess, MqttRecorder, free_port, free_udp_port, until

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENERGY, ASSET, ALARM, USAGE = (
    "org.edgegw.energy.produced",
    "org.edgegw.asset.failed",
    "org.edgegw.alarm",
    "org.edgegw.lift.usage",
)
HVAC_IP = "127.0.7.10"
MODULES = ("solar", "billing", "lifts", "hvac", "alarms")


def _config(
    broker: MosquittoProcess, modbus: int, lifts: LiftSimulator, hvac: HvacSimulator, run_mode: str
) -> str:
    prefix = f"domain-{free_port()}"
    lines = [
        f'[gateway]\nid = "gw-domain"\ndata_dir = "data"\n[bus]\nmode = "external"\nport = {broker.port}',
        f'topic_prefix = "{prefix}"\npoint_min_interval = 0.0\n[storage]\ncommit_interval_ms = 5',
        '[[tenants]]\nid = "acme"\nentitlements = ["solar", "billing", "lifts", "hvac", "alarms"]',
        '[[tenants]]\nid = "globex"\nentitlements = []',
        '[[sites]]\nid = "roof"\n[[sites]]\nid = "plant"',
    ]
    for unit in range(1, 6):
        tenant, site = ("acme", "roof") if unit <= 4 else ("globex", "plant")
        lines.append(
            f'[[devices]]\nname = "inv-{unit:02d}"\ndriver = "modbus"\ntenant = "{tenant}"\nsite = "{site}"\n'
            f'profile = "sunspec-inverter"\npoll_interval = 0.2\ntimeout = 0.3\n'
            f'connection = {{ host = "127.0.0.1", port = {modbus}, unit_id = {unit} }}'
        )
    for lift in (1, 2, 3):
        tenant, site = ("acme", "roof") if lift <= 2 else ("globex", "plant")
        lines.append(
            f'[[devices]]\nname = "lift-{lift}"\ndriver = "opcua"\ntenant = "{tenant}"\nsite = "{site}"\n'
            f'profile = "lift"\npoll_interval = 30.0\ntimeout = 2.0\nconnection = {{ url = "{lifts.url}", '
            f'security = "None", node_variables = {{ lift = "Lift{lift}" }} }}'
        )
    local = f"127.0.0.1/8:{free_udp_port()}"
    for device, profile in ((hvac.ahu, "ahu"), (hvac.vavs[0], "vav")):
        lines.append(
            f'[[devices]]\nname = "{device.name}"\ndriver = "bacnet"\ntenant = "acme"\nsite = "roof"\n'
            f'profile = "{profile}"\npoll_interval = 0.5\ntimeout = 0.5\nconnection = {{ address = '
            f'"{device.address}", device_instance = {device.instance}, local_address = "{local}" }}'
        )
    lines.append("""
[[modules]]
name = "solar"
config = { interval = 1.0, max_gap = 1.0, offline_after = 0.5, underperformance = { after = 0.5, min_peers = 2 } }

[[modules]]
name = "billing"
config = { price_per_kwh = 0.25, currency = "EUR", tenants = { acme = { site_prices = { roof = 0.20 } } } }

[[modules]]
name = "lifts"
config = { stuck_after = 0.5, door_open_max = 1.0, check_interval = 0.2, report_interval = 1.0 }

[[modules]]
name = "hvac"
[modules.config]
tolerance_k = 1.5
off_setpoint_after = 0.5
check_interval = 0.2
max_starts = 2
cycling_window = 60
schedules = [
  { tenant = "acme", site = "roof", device = "vav-1", entries = [{ at = "00:00", value = 22.0 }] },
  { tenant = "globex", site = "roof", device = "vav-1", entries = [{ at = "00:00", value = 30.0 }] },
  { tenant = "acme", site = "roof", device = "vav-9", entries = [{ at = "00:00", value = 21.0 }] },
  { tenant = "acme", site = "roof", device = "vav-1", point = "zone-temp", entries = [{ at = "00:00", value = 20.0 }] },
]

[[modules]]
name = "alarms"
[modules.config]
check_interval = 0.2
rules = [
  { id = "inverter-offline", point = "ac_power", devices = "inv-*", bad_quality_after = 0.5, severity = "major" },
  { id = "zone-warm", point = "zone-temp", devices = "vav-*", high = 24.0, hysteresis = 0.5, delay = 0.3 },
]
""")
    text = "\n".join(lines) + "\n"
    return text.replace('[[modules]]\nname = "', f'[[modules]]\nrun_mode = "{run_mode}"\nname = "')


class Rig:
    def __init__(
        self,
        gateway: Gateway,
        config: Path,
        inverters: InverterSimulator,
        lifts: LiftSimulator,
        hvac: HvacSimulator,
        run_mode: str,
    ) -> None:
        self.gateway, self.config, self.run_mode = gateway, config, run_mode
        self.inverters, self.lifts, self.hvac = inverters, lifts, hvac

    async def events(self, tenant: str, event_type: str) -> list[dict[str, Any]]:
        with tenant_scope(self.gateway.tenants[tenant]):
            rows = await self.gateway.outbox.read_after(0, 100_000, [event_type])
        return [orjson.loads(row.body)["data"] for row in rows]

    async def until(
        self, tenant: str, event_type: str, predicate: Callable[[dict[str, Any]], bool], within: float = 10.0
    ) -> dict[str, Any]:
        async def latest() -> dict[str, Any] | None:
            found = [e for e in await self.events(tenant, event_type) if predicate(e)]
            return found[-1] if found else None

        event: dict[str, Any] = await until(latest, within, f"a matching {event_type} for {tenant}", step=0.1)
        return event

    async def cli(self, *args: str) -> tuple[int, str]:
        """Exit code and everything printed, stdout and stderr."""
        result = await self._invoke(*args)
        return result.exit_code, result.output

    async def cli_json(self, *args: str) -> tuple[int, Any]:
        """Exit code and the JSON document on stdout (a warning on stderr is not part of it)."""
        result = await self._invoke(*args)
        return result.exit_code, orjson.loads(result.stdout) if result.exit_code == 0 else None

    async def _invoke(self, *args: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, cli, [*args, "-c", str(self.config)])


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["in_process", "isolated"])
async def rig(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess
) -> AsyncIterator[Rig]:
    run_mode = str(request.param)
    inverters = InverterSimulator(5, free_port(), update_interval=0.1, sim_time="12:00")
    lifts = LiftSimulator(free_port(), 3, speed=9.0, door_time=0.1, dwell_time=0.2, auto=False)
    hvac = HvacSimulator(1, HVAC_IP, free_udp_port(HVAC_IP), update_interval=0.2, time_scale=120.0)
    await asyncio.gather(inverters.start(), lifts.start(), hvac.start())
    path = tmp_path_factory.mktemp(f"domain-{run_mode}") / "edge.toml"
    path.write_text(_config(mosquitto, inverters.port, lifts, hvac, run_mode))
    registry = PluginRegistry.from_entry_points()
    gateway = Gateway(load_config(path, registry), registry)
    await gateway.start()
    try:
        yield Rig(gateway, path, inverters, lifts, hvac, run_mode)
    finally:
        await gateway.stop()
        await hvac.stop()
        await lifts.stop()
        await inverters.stop()


async def test_the_modules_run_in_the_configured_mode(rig: Rig) -> None:
    control = rig.gateway.module_control
    snapshots: dict[str, Any] = {}
    for _ in range(50):  # written every second by the running gateway
        snapshots = await asyncio.to_thread(ModuleStateStore(rig.gateway.loaded.data_dir).snapshots)
        if all(snapshots.get(m) and snapshots[m].state in ("enabled", "running") for m in MODULES):
            break
        await asyncio.sleep(0.1)
    for name in MODULES:
        supervisor = control.supervisor(name)
        assert snapshots[name].run_mode == rig.run_mode
        if rig.run_mode == "in_process":
            assert supervisor is None and snapshots[name].pid == os.getpid()
        else:  # its own process, launched once (no crash so far), which registered
            assert supervisor is not None and supervisor.state is RunState.RUNNING, name
            assert supervisor.pid not in (None, os.getpid()) and supervisor.launches == 1
            assert snapshots[name].state == "running" and snapshots[name].pid == supervisor.pid


async def test_solar_energy_is_booked_in_the_ledger_and_the_report_prints_it(rig: Rig) -> None:
    for unit in (1, 2, 3, 4):
        interval = await rig.until(
            "acme", ENERGY, lambda e, u=unit: e["device"] == f"inv-{u:02d}" and e["coverage"] > 0.9
        )
        rated = 8000 + (unit * 37 % 5) * 1000  # the simulator's noon power, +-3 %
        # power integrated over the part of the interval the samples cover (a loaded machine polls late)
        expected = rated * interval["interval_s"] * interval["coverage"] / 3600
        assert interval["energy_wh"] == pytest.approx(expected, rel=0.1)
        # integrated from AC power; a poll later than max_gap (a loaded machine) is bridged by the counter
        assert "power" in interval["methods"]
    period = time.strftime("%Y-%m", time.gmtime())
    for _ in range(50):
        code, rows = await rig.cli_json("billing", "report", "--tenant", "acme", "--period", period, "--json")
        rows = rows or []
        if rows and len(rows[0]["devices"]) == 4:
            break
        await asyncio.sleep(0.1)
    (row,) = rows
    assert row["site"] == "roof" and row["currency"] == "EUR" and row["price_per_kwh"] == 0.20
    assert row["amount"] == pytest.approx(row["energy_wh"] / 1000 * 0.20, abs=1e-4) and row["energy_wh"] > 0
    code, table = await rig.cli("billing", "report", "--tenant", "acme", "--period", period)
    assert code == 0 and "roof" in table and "EUR" in table
    code, out = await rig.cli("billing", "report", "--tenant", "globex", "--period", period)
    assert code == 0 and "no energy booked" in out


async def test_an_offline_inverter_is_flagged_alarmed_bridged_by_its_counter_and_acknowledged(
    rig: Rig,
) -> None:
    rig.inverters.set_offline(2, True)
    offline = await rig.until("acme", ASSET, lambda e: e["asset"] == "inv-02" and e["kind"] == "offline")
    assert offline["state"] == "raised" and offline["severity"] == "major" and "ac_power" in offline["cause"]
    alarm_id = "inverter-offline:roof/inv-02:bad_quality"
    await rig.until("acme", ALARM, lambda e: e["alarm_id"] == alarm_id and e["state"] == "raised")
    await asyncio.sleep(1.2)  # longer than max_gap: only the energy counter can say what was produced
    rig.inverters.set_offline(2, False)
    await rig.until("acme", ASSET, lambda e: e["asset"] == "inv-02" and e["state"] == "cleared")
    await rig.until("acme", ALARM, lambda e: e["alarm_id"] == alarm_id and e["state"] == "cleared")
    # what it produced while unreachable comes from its counter, into intervals already reported
    bridged = await rig.until("acme", ENERGY, lambda e: e["device"] == "inv-02" and e["recovered_wh"] > 0)
    assert "counter" in bridged["methods"] and bridged["energy_wh"] >= bridged["recovered_wh"]

    listed = await asyncio.to_thread(
        CliRunner().invoke, cli, ["alarm", "list", "--tenant", "acme", "--json", "-c", str(rig.config)]
    )
    alarms = {a["alarm_id"]: a for a in orjson.loads(listed.stdout)}  # stdout is one JSON document
    assert alarms[alarm_id]["state"] == "cleared" and alarms[alarm_id]["acknowledged"] is False
    code, table = await rig.cli("alarm", "list", "--tenant", "acme")  # the same fields, for people
    for alarm in alarms.values():
        line = f"{alarm['alarm_id']}  {alarm['severity']:<8} {alarm['state']:<8}"
        assert code == 0 and line in table and f"since {alarm['since']}" in table
    code, out = await rig.cli("alarm", "ack", alarm_id, "--tenant", "acme", "--by", "operator")
    assert code == 0 and f"{alarm_id}: acknowledged" in out, out
    acked = await rig.until(
        "acme", ALARM, lambda e: e["alarm_id"] == alarm_id and e["state"] == "acknowledged"
    )
    assert acked["acknowledged_by"] == "operator"
    code, out = await rig.cli("alarm", "ack", "no-such:roof/x:high", "--tenant", "acme")
    assert code == 1 and "no unresolved alarm" in out


async def test_an_inverter_far_below_its_peers_is_flagged_until_it_recovers(rig: Rig) -> None:
    rig.inverters.set_power_limit(3, 10)
    raised = await rig.until(
        "acme", ASSET, lambda e: e["asset"] == "inv-03" and e["kind"] == "underperforming"
    )
    assert raised["state"] == "raised" and "peers" in raised["cause"]
    rig.inverters.set_power_limit(3, 100)
    await rig.until(
        "acme",
        ASSET,
        lambda e: e["asset"] == "inv-03" and e["kind"] == "underperforming" and e["state"] == "cleared",
    )


async def test_lift_trips_a_stuck_car_and_a_door_that_stays_open(rig: Rig) -> None:
    rig.lifts.command(1, 4)
    rig.lifts.door_fault(2)
    door = await rig.until("acme", ASSET, lambda e: e["asset"] == "lift-2" and e["kind"] == "door")
    assert door["state"] == "raised" and "failed to close" in door["cause"]
    usage = await rig.until("acme", USAGE, lambda e: e["device"] == "lift-1" and e["total_trips"] >= 1)
    assert usage["total_door_cycles"] >= 1
    rig.lifts.stick(1)
    stuck = await rig.until("acme", ASSET, lambda e: e["asset"] == "lift-1" and e["kind"] == "stuck")
    assert (
        stuck["state"] == "raised" and stuck["severity"] == "critical" and "between floors" in stuck["cause"]
    )
    code = await rig.until("acme", ASSET, lambda e: e["asset"] == "lift-1" and e["kind"] == "fault_code")
    assert "fault code 31 (stuck between floors)" in code["cause"]
    rig.lifts.clear(1)
    rig.lifts.clear(2)
    for lift, kind in (
        ("lift-1", "stuck"),
        ("lift-1", "fault_code"),
        ("lift-2", "door"),
        ("lift-2", "fault_code"),
    ):
        await rig.until(
            "acme", ASSET, lambda e, a=lift, k=kind: (e["asset"], e["kind"], e["state"]) == (a, k, "cleared")
        )
    rig.lifts.fault(1, 17)  # a drive fault: the car stands level with its doors closed, only the code tells
    drive = await rig.until("acme", ASSET, lambda e: e["asset"] == "lift-1" and "fault code 17" in e["cause"])
    assert drive["state"] == "raised" and drive["kind"] == "fault_code" and "unknown fault" in drive["cause"]
    rig.lifts.clear(1)
    await rig.until(
        "acme",
        ASSET,
        lambda e: (
            (e["asset"], e["kind"], e["state"]) == ("lift-1", "fault_code", "cleared")
            and e["since"] > drive["since"]
        ),
    )


async def test_hvac_schedule_a_drifting_zone_and_a_filter_alarm(rig: Rig) -> None:
    vav = rig.hvac.vavs[0]
    await until(lambda: vav.value("zone-temp-setpoint") == 22.0, 10, "acme's schedule on vav-1", step=0.1)
    assert vav.value("zone-temp-setpoint") == 22.0  # acme's schedule; globex's (not entitled) never ran
    written = await rig.until(
        "acme",
        "org.edgegw.command.result",
        lambda e: e["request_id"] == "module:hvac" and e["point"] == "zone-temp-setpoint",
    )
    assert written["ok"] and written["value"] == 22.0 and written["device"] == "vav-1"

    # refused writes come back to the module with the reason, as in-process: its health says which and why
    async def both_refused() -> Health | None:
        health = (await rig.gateway.modules.health())["hvac"]
        return health if "schedule 2" in health.detail and "schedule 3" in health.detail else None

    health = await until(both_refused, 10, "hvac's health to name both refused schedules", step=0.2)
    detail = health.detail
    assert not health.ok
    assert "schedule 2: unknown device roof/vav-9 for tenant 'acme'" in detail, detail
    assert "schedule 3: device 'vav-1' point 'zone-temp': point is not writable" in detail, detail
    rig.hvac.set_drift("vav-1", 3.5)
    off = await rig.until(
        "acme",
        ASSET,
        lambda e: e["asset"] == "vav-1" and e["kind"] == "off_setpoint" and e["state"] == "raised",
    )
    assert "setpoint 22.0" in off["cause"]
    await rig.until(
        "acme", ALARM, lambda e: e["alarm_id"] == "zone-warm:roof/vav-1:high" and e["state"] == "raised"
    )
    rig.hvac.set_drift("vav-1", 0.0)
    await rig.until(
        "acme",
        ASSET,
        lambda e: e["asset"] == "vav-1" and e["kind"] == "off_setpoint" and e["state"] == "cleared",
    )
    rig.hvac.set_value("ahu-1", "filter-alarm-limit", 1.0)  # a loaded filter: the AHU raises its filter alarm
    await rig.until("acme", ASSET, lambda e: e["kind"] == "filter" and e["asset"] == "ahu-1.filter-alarm")


async def test_a_tenant_without_the_entitlements_gets_nothing_from_the_modules(rig: Rig) -> None:
    assert await rig.events("globex", "org.edgegw.telemetry")  # it has devices, and their data flows
    for event_type in (ENERGY, ASSET, ALARM, USAGE):
        assert await rig.events("globex", event_type) == []
    with pytest.raises(ModuleCommandRejected, match="not entitled"):
        await rig.gateway.submit_module_command("globex", "alarms", "list")
    request = await rig.gateway.submit_module_command("acme", "alarms", "list")
    answer = await rig.until("acme", "org.edgegw.module.command.result", lambda e: e["request_id"] == request)
    assert answer["ok"] and isinstance(answer["result"]["alarms"], list)


async def test_malformed_or_misaddressed_module_commands_are_refused_with_a_reason(
    rig: Rig, mosquitto: MosquittoProcess
) -> None:
    prefix = rig.gateway.topics.prefix
    recorder = MqttRecorder(mosquitto.port, f"{prefix}/+/cmd/module/#")
    try:
        for topic, payload in (
            (f"{prefix}/acme/cmd/module/alarms/ack", b"{not json"),
            (f"{prefix}/acme/cmd/module/alarms/ack", b'{"args": [1], "id": "r-args"}'),
            (f"{prefix}/acme/cmd/module/nosuch/run", b'{"id": "r-module"}'),
            (
                f"{prefix}/acme/cmd/module/alarms/ack",
                b'{"id": "r-big", "args": {"x": "' + b"y" * 20_000 + b'"}}',
            ),
        ):
            await asyncio.to_thread(recorder.publish, topic, payload)
        got = await asyncio.to_thread(
            recorder.wait_for, lambda m: len([t for t, _, _ in m if t.endswith("/result")]) >= 4, 10.0
        )
    finally:
        recorder.close()
    reasons = {
        orjson.loads(p)["request_id"]: orjson.loads(p)["reason"] for t, p, _ in got if t.endswith("/result")
    }
    assert "payload is not JSON" in reasons[""]
    assert reasons["r-args"] == "'args' must be a JSON object"
    assert reasons["r-module"] == "module 'nosuch' is not running on this gateway"
    assert "exceeds 16384" in reasons["r-big"]
    for request in ("", "r-args", "r-module", "r-big"):  # each refusal is recorded as a result event too
        refusal = await rig.until(
            "acme", "org.edgegw.module.command.result", lambda e, r=request: e["request_id"] == r
        )
        assert refusal["ok"] is False and refusal["reason"] == reasons[request]


@pytest.mark.slow
async def test_a_fan_that_keeps_starting_is_short_cycling(rig: Rig) -> None:
    """Slow (about 10 s): the AHU fan is switched off and on through its enable point, as a faulty control
    loop would; more than two starts within a minute (the test's limit) raise the alert. Clearing needs the
    starts to age out of the window, which the unit tests cover."""
    ahu = rig.hvac.ahu
    for _ in range(3):
        for state in ("inactive", "active"):
            rig.hvac.set_value("ahu-1", "supply-fan-enable", state)
            deadline = time.monotonic() + 10
            while ahu.value("supply-fan-status") != state and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.8)  # long enough for the change to reach the gateway (COV) and the module
    alert = await rig.until("acme", ASSET, lambda e: e["kind"] == "short_cycling")
    assert alert["asset"] == "ahu-1.supply-fan-status" and "starts within 60 s" in alert["cause"]
