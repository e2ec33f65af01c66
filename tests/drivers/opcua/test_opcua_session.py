"""The OPC UA driver's session against the lift simulator on 127.0.0.1: reads, subscriptions, writes, security,
discovery.

One simulator serves the whole module (an asyncua server takes about a second to build). It offers None,
Basic256Sha256 and Aes256_Sha256_RsaPss (Sign and SignAndEncrypt) with its own server certificate, made by its
own code; the gateway's certificate comes from `edge.sdk.certs` and is the only client certificate it trusts.
Lifts move fast here (9 m/s, short door times) and only when commanded.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from typer.testing import CliRunner

from drivers.opcua import OpcuaConnection, OpcuaDriver, OpcuaPoint, OpcuaSession
from edge.cli.certs_cmd import app as certs_app
from edge.config.loader import parse_profile
from edge.devices.normalize import DeviceNormalizer
from edge.devices.polling import DevicePoller
from edge.sdk.certs import CertificateFiles, write_application_certificate
from edge.sdk.drivers import DeviceSpec, RawValue
from edge.sdk.errors import ConfigIssue, DeviceUnreachable, WriteRejected
from edge.sdk.points import PointFault, Qualified, Quality
from edge.sdk.tenancy import TenantContext
from simulators.opcua_lift import FAULT_STUCK, NAMESPACE_URI, LiftSimulator
from tests.helpers import free_port, until

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROFILE = Path(__file__).resolve().parents[3] / "drivers" / "opcua" / "profiles" / "lift.toml"
GATEWAY_URI = "urn:edge-gw:test:gateway"


@dataclass
class Lab:
    sim: LiftSimulator
    gateway: CertificateFiles
    stranger: CertificateFiles  # a client certificate the server does not trust
    other_server: CertificateFiles  # a server certificate the gateway does not trust
    tmp: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    tmp = tmp_path_factory.mktemp("opcua")
    gateway = write_application_certificate(
        tmp / "gateway", application_uri=GATEWAY_URI, common_name="gw-test"
    )
    stranger = write_application_certificate(
        tmp / "stranger", application_uri=GATEWAY_URI, common_name="gw-x"
    )
    other = write_application_certificate(tmp / "other", application_uri="urn:other", common_name="other")
    trusted_clients = tmp / "trusted-clients"
    trusted_clients.mkdir()
    shutil.copy(gateway.certificate, trusted_clients / "gateway.der")
    sim = LiftSimulator(
        free_port(),
        2,
        security=("None", "Basic256Sha256", "Aes256_Sha256_RsaPss"),
        trusted_clients=trusted_clients,
        speed=9.0,
        door_time=0.1,
        dwell_time=0.2,
        auto=False,
    )
    await sim.start()
    yield Lab(sim, gateway, stranger, other, tmp)
    await sim.stop()


class Feed:
    """A PushReceiver that records what the session delivers."""

    def __init__(self, size: int) -> None:
        self.current: list[RawValue] = [None] * size
        self.batches: list[tuple[dict[int, RawValue], float | None]] = []
        self.lost_reasons: list[str] = []

    def values(self, changes: Mapping[int, RawValue], sample_time: float | None = None) -> None:
        self.batches.append((dict(changes), sample_time))
        for i, v in changes.items():
            self.current[i] = v

    def lost(self, reason: str) -> None:
        self.lost_reasons.append(reason)


def lift_points(driver: OpcuaDriver) -> tuple[OpcuaPoint, ...]:
    issues: list[ConfigIssue] = []
    points = parse_profile(tomllib.loads(PROFILE.read_text()), str(PROFILE), driver, "opcua", issues)
    assert points is not None, issues
    return tuple(p for p in points if isinstance(p, OpcuaPoint))


def none_conn(lab: Lab, lift: int = 1, **extra: Any) -> OpcuaConnection:
    return OpcuaConnection(url=lab.sim.url, security="None", node_variables={"lift": f"Lift{lift}"}, **extra)


def secure_conn(lab: Lab, **extra: Any) -> OpcuaConnection:
    settings: dict[str, Any] = {
        "url": lab.sim.url,
        "certificate": lab.gateway.certificate,
        "private_key": lab.gateway.private_key,
        "trusted_server_certificates": [lab.sim.certificate],
        "node_variables": {"lift": "Lift1"},
        **extra,
    }
    return OpcuaConnection.model_validate(settings)


def session_for(
    conn: OpcuaConnection, points: tuple[OpcuaPoint, ...] | None = None
) -> tuple[OpcuaDriver, DeviceSpec, OpcuaSession]:
    driver = OpcuaDriver()
    spec = DeviceSpec("lift", "acme", "tower", "opcua", conn, points or lift_points(driver), 1.0, 2.0, "lift")
    return driver, spec, driver.session(spec)


def index(spec: DeviceSpec, name: str) -> int:
    return next(i for i, p in enumerate(spec.points) if p.name == name)


# ---- reads -----------------------------------------------------------------------------------------------


async def test_one_batched_read_returns_every_point_in_plan_order(lab: Lab) -> None:
    driver = OpcuaDriver()
    points = (
        *lift_points(driver),
        OpcuaPoint(name="unknown", node="ns=2;s=Lift1.NoSuchThing"),
        OpcuaPoint(
            name="by_path",
            browse_path=f"/{lab.sim.namespace_index}:Lifts/{lab.sim.namespace_index}:Lift2/{lab.sim.namespace_index}:CarLoad",
        ),
        OpcuaPoint(name="bad_path", browse_path="/2:Lifts/2:Lift9"),
        OpcuaPoint(name="foreign", node="nsu=urn:not-here;s=X"),
    )
    driver, spec, session = session_for(none_conn(lab), points)
    await session.connect()
    try:
        values = await session.read(driver.compile(spec))
    finally:
        await session.close()
    state = lab.sim.state(1)
    by_name = {p.name: v for p, v in zip(spec.points, values, strict=True)}
    assert by_name["current_floor"] == state.current_floor and by_name["direction"] == "idle"
    assert by_name["fault_code"] == 0 and by_name["in_service"] is True
    assert isinstance(by_name["car_load"], float) and isinstance(by_name["trip_counter"], int)
    assert by_name["unknown"] == PointFault("BadNodeIdUnknown")
    assert by_name["by_path"] == lab.sim.state(2).car_load
    assert by_name["bad_path"] == PointFault("browse path: BadNoMatch")
    assert by_name["foreign"] == PointFault("namespace urn:not-here is not on the server")


async def test_device_test_reads_every_point_once_through_the_kernel(lab: Lab) -> None:
    """What `edge device test lift-1` does: connect, one batched read, normalize, close."""

    class NoSink:
        async def append(self, event: object) -> None:
            return None

    driver, spec, _ = session_for(none_conn(lab))
    poller = DevicePoller(spec, driver, TenantContext("acme"), NoSink(), gateway_id="gw")
    samples = await poller.read_once()
    assert len(samples) == 12 and all(s["quality"] == "good" for s in samples.values())
    assert samples["car_load"]["unit"] == "kg" and samples["direction"]["value"] in ("up", "down", "idle")


async def test_a_dead_server_is_unreachable_with_the_reason() -> None:
    conn = OpcuaConnection(url=f"opc.tcp://127.0.0.1:{free_port()}", security="None")
    _, _, session = session_for(conn, (OpcuaPoint(name="x", node="i=2258"),))
    with pytest.raises(DeviceUnreachable, match="refused"):
        await session.connect()


# ---- subscriptions and typed writes ---------------------------------------------------------------------


async def test_subscription_delivers_initial_values_then_changes_and_writes_are_typed(lab: Lab) -> None:
    driver, spec, session = session_for(none_conn(lab))
    plan = driver.compile(spec)
    feed = Feed(len(plan.points))
    await session.connect()
    try:
        await session.subscribe(plan, feed)
        await until(lambda: len(feed.batches) >= 1, within=5.0)
        assert set(feed.batches[0][0]) == set(range(len(plan.points)))  # every point's current value first
        start = lab.sim.state(1)
        target = 4 if start.current_floor != 4 else 1
        target_point = spec.points[index(spec, "target_floor")]
        await session.write(target_point, target)  # an Int16 node: sent as Int16, not Int64
        floor = index(spec, "current_floor")
        trips, door = index(spec, "trip_counter"), index(spec, "door_open")
        await until(
            lambda: feed.current[trips] == start.trip_counter + 1 and feed.current[door] is False, within=5.0
        )
        assert feed.current[floor] == target == lab.sim.state(1).current_floor
        assert any(b.get(door) is True for b, _ in feed.batches)  # the doors opened at the stop
        seen_floors = [b[floor] for b, _ in feed.batches if floor in b]
        assert len(seen_floors) >= 3  # it passed the floors in between, as they changed
        assert all(t is None or t > 1.7e9 for _, t in feed.batches)  # source timestamps as epoch seconds
        assert session.notifications >= len(feed.batches)

        with pytest.raises(WriteRejected, match="BadUserAccessDenied"):
            await session.write(spec.points[index(spec, "car_load")], 10.0)  # read-only on the server
        with pytest.raises(WriteRejected, match="BadOutOfRange"):
            await session.write(target_point, 99)  # the controller refuses a floor it does not have
        with pytest.raises(WriteRejected, match="outside the Int16 range"):
            await session.write(target_point, 70000)  # refused before anything is sent
        with pytest.raises(WriteRejected, match="no release"):
            await session.write(target_point, None)
        assert not feed.lost_reasons
    finally:
        await session.close()


async def test_faults_and_sensor_quality_arrive_through_the_subscription(lab: Lab) -> None:
    driver, spec, session = session_for(none_conn(lab, lift=2))
    plan = driver.compile(spec)
    feed = Feed(len(plan.points))
    normalizer = DeviceNormalizer("lift-2", plan.points)
    await session.connect()
    try:
        await session.subscribe(plan, feed)
        await until(lambda: len(feed.batches) >= 1, within=5.0)
        normalizer.normalize(feed.current)
        lab.sim.stick(2)
        await until(lambda: feed.current[index(spec, "fault_code")] == FAULT_STUCK, within=5.0)
        await until(lambda: feed.current[index(spec, "in_service")] is False, within=5.0)
        assert lab.sim.state(2).position % 3.0 != 0.0  # between two floors
        await session.write(spec.points[index(spec, "fault_code")], 0)  # technician reset
        await until(
            lambda: feed.current[index(spec, "fault_code")] == 0 and feed.current[index(spec, "in_service")],
            within=5.0,
        )

        # (on points without a deadband: asyncua's server drops status-only changes of deadband items)
        lab.sim.set_quality(2, "Speed", "UncertainLastUsableValue")
        lab.sim.set_quality(2, "TripCounter", "BadSensorFailure")
        speed, trips = index(spec, "speed"), index(spec, "trip_counter")
        await until(
            lambda: (
                isinstance(feed.current[speed], Qualified) and isinstance(feed.current[trips], PointFault)
            ),
            within=5.0,
        )
        assert feed.current[speed] == Qualified(0.0, Quality.UNCERTAIN, "UncertainLastUsableValue")
        samples = normalizer.normalize_changes({speed: feed.current[speed], trips: feed.current[trips]})
        assert samples["speed"] == {
            "value": 0.0,
            "unit": "m/s",
            "quality": "uncertain",
            "reason": "UncertainLastUsableValue",
        }
        assert samples["trip_counter"] == {
            "value": None,
            "unit": None,
            "quality": "bad",
            "reason": "BadSensorFailure",
        }
        lab.sim.set_quality(2, "Speed", None)
        lab.sim.set_quality(2, "TripCounter", None)
        await until(lambda: feed.current[speed] == 0.0 and isinstance(feed.current[trips], int), within=5.0)
    finally:
        await session.close()


async def test_a_restarted_server_is_reported_lost(lab: Lab) -> None:
    """The kernel's part (close, reconnect, subscribe again, status events) is tested in test_opcua_gateway."""
    driver, spec, session = session_for(none_conn(lab))
    plan = driver.compile(spec)
    feed = Feed(len(plan.points))
    await session.connect()
    try:
        await session.subscribe(plan, feed)
        await until(lambda: len(feed.batches) >= 1, within=5.0)
        await lab.sim.restart()
        await until(lambda: bool(feed.lost_reasons), within=5.0)
        assert "connection lost" in feed.lost_reasons[0] and len(feed.lost_reasons) == 1
        await session.close()
        await session.connect()  # what the kernel does next
        again = Feed(len(plan.points))
        await session.subscribe(plan, again)
        await until(lambda: len(again.batches) >= 1, within=5.0)
        assert set(again.batches[0][0]) == set(range(len(plan.points)))
        assert not feed.lost_reasons[1:]  # the old feed hears nothing more
    finally:
        await session.close()


# ---- security -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
        ("Basic256Sha256", "Sign"),
    ],
)
async def test_secure_connection_with_generated_certificates(lab: Lab, policy: str, mode: str) -> None:
    driver, spec, session = session_for(secure_conn(lab, security=policy, mode=mode))
    await session.connect()
    try:
        values = await session.read(driver.compile(spec))
    finally:
        await session.close()
    assert values[index(spec, "current_floor")] == lab.sim.state(1).current_floor


async def test_an_untrusted_server_is_refused_before_any_data_flows(lab: Lab) -> None:
    _, _, session = session_for(secure_conn(lab, trusted_server_certificates=[lab.other_server.certificate]))
    with pytest.raises(
        DeviceUnreachable, match="server certificate not trusted: CN=Lift controller simulator"
    ):
        await session.connect()
    empty = lab.tmp / "empty-trust"
    empty.mkdir(exist_ok=True)
    _, _, session = session_for(secure_conn(lab, trusted_server_certificates=[empty]))
    with pytest.raises(DeviceUnreachable, match=r"not on the trust list \(0 certificate"):
        await session.connect()


async def test_a_server_that_does_not_trust_the_gateway_says_so(lab: Lab) -> None:
    conn = secure_conn(lab, certificate=lab.stranger.certificate, private_key=lab.stranger.private_key)
    _, _, session = session_for(conn)
    with pytest.raises(DeviceUnreachable, match=r"BadCertificateUntrusted|BadSecurityChecksFailed"):
        await session.connect()


async def test_a_policy_the_server_does_not_offer_is_named(lab: Lab) -> None:
    _, _, session = session_for(secure_conn(lab, security="Aes128_Sha256_RsaOaep"))
    with pytest.raises(
        DeviceUnreachable,
        match=r"no Aes128_Sha256_RsaOaep/SignAndEncrypt endpoint \(offered: .*Basic256Sha256/SignAndEncrypt",
    ):
        await session.connect()


async def test_certs_create_output_is_usable_by_the_driver(lab: Lab) -> None:
    out = lab.tmp / "cli-pki"
    result = CliRunner().invoke(
        certs_app, ["create", "--out", str(out), "--uri", "urn:edge-gw:test:cli", "--name", "cli-gw"]
    )
    assert result.exit_code == 0, result.output
    shutil.copy(out / "certificate.der", lab.sim.trusted_clients / "cli.der")  # type: ignore[operator]
    await lab.sim.restart()  # the simulator reads its trust directory when it starts
    conn = secure_conn(lab, certificate=out / "certificate.der", private_key=out / "private_key.pem")
    driver, spec, session = session_for(conn)
    await session.connect()
    try:
        values = await session.read(driver.compile(spec))
    finally:
        await session.close()
    assert values[index(spec, "in_service")] in (True, False)


# ---- discovery -----------------------------------------------------------------------------------------


async def test_discovery_browses_variables_with_types_units_and_access(lab: Lab) -> None:
    driver = OpcuaDriver()
    lines: list[str] = []
    found = await driver.discover({"url": lab.sim.url, "security": "None"}, lines.append)
    assert len(found) == 1
    server = found[0]
    assert server.address == lab.sim.url and server.identity["product_name"] == "Lift controller simulator"
    assert server.connection == {"url": lab.sim.url, "security": "None"}
    points = {p["name"]: p for p in server.points}
    assert len(points) == 2 * 12  # two lifts, no properties (EngineeringUnits, EURange) proposed as points
    floor = points["Lifts.Lift1.CurrentFloor"]
    assert floor["node"] == f"nsu={NAMESPACE_URI};s=Lift1.CurrentFloor"
    assert "writable" not in floor and "Int16, read-only" in floor["description"]
    assert points["Lifts.Lift1.CarLoad"]["unit"] == "kg"
    assert points["Lifts.Lift2.RunHours"]["unit"] == "h"
    assert points["Lifts.Lift1.MotorTemperature"]["unit"] == "Cel"
    target = points["Lifts.Lift1.TargetFloor"]
    assert (
        target["writable"] is True
        and target["data_type"] == "Int16"
        and "read-write" in target["description"]
    )
    assert any("24 variables" in line for line in lines)

    # Commissioning round trip: the proposal, starting at one lift, is a valid point map that reads.
    one = await driver.discover(
        {"url": lab.sim.url, "security": "None", "node": f"nsu={NAMESPACE_URI};s=Lift2", "depth": 1},
        lines.append,
    )
    proposed = tuple(OpcuaPoint.model_validate(p) for p in one[0].points)
    assert [p.name for p in proposed][:3] == ["CurrentFloor", "Direction", "DoorOpen"]
    _, spec, session = session_for(OpcuaConnection.model_validate(one[0].connection), proposed)
    await session.connect()
    try:
        values = await session.read(driver.compile(spec))
    finally:
        await session.close()
    assert not [v for v in values if isinstance(v, PointFault | Qualified)]


async def test_discovery_is_as_secure_as_the_device(lab: Lab) -> None:
    target = {
        "url": lab.sim.url,
        "security": "Aes256_Sha256_RsaPss",
        "certificate": lab.gateway.certificate,
        "private_key": lab.gateway.private_key,
        "trusted_server_certificates": [lab.sim.certificate],
        "node": f"nsu={NAMESPACE_URI};s=Lift1",
    }
    found = await OpcuaDriver().discover(target, lambda _: None)
    assert found[0].connection["security"] == "Aes256_Sha256_RsaPss"
    assert found[0].connection["trusted_server_certificates"] == [str(lab.sim.certificate)]
    assert len(found[0].points) == 12
    with pytest.raises(DeviceUnreachable, match="not trusted"):
        await OpcuaDriver().discover(
            {**target, "trusted_server_certificates": [lab.other_server.certificate]}, print
        )


async def test_user_name_password_and_user_certificate_identities(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = LiftSimulator(free_port(), 1, security=("Basic256Sha256",), users={"tech": "lift-pw"}, auto=False)
    await sim.start()
    try:
        monkeypatch.setenv("LIFT_SIM_PASSWORD", "lift-pw")
        base = {
            "url": sim.url,
            "certificate": lab.gateway.certificate,
            "private_key": lab.gateway.private_key,
            "trusted_server_certificates": [sim.certificate],
            "node_variables": {"lift": "Lift1"},
        }
        ok = OpcuaConnection.model_validate({**base, "username": "tech", "password": "env:LIFT_SIM_PASSWORD"})
        by_cert = OpcuaConnection.model_validate(
            {
                **base,
                "user_certificate": lab.stranger.certificate,
                "user_private_key": lab.stranger.private_key,
            }
        )
        for conn in (ok, by_cert):
            driver, spec, session = session_for(conn)
            await session.connect()
            try:
                assert (await session.read(driver.compile(spec)))[index(spec, "in_service")] is True
            finally:
                await session.close()
        wrong = OpcuaConnection.model_validate({**base, "username": "tech", "password": "guess"})
        _, _, session = session_for(wrong)
        with pytest.raises(DeviceUnreachable, match="refused the user identity") as refused:
            await session.connect()
        assert "guess" not in str(refused.value)
        anonymous = OpcuaConnection.model_validate(base)
        _, _, session = session_for(anonymous)
        with pytest.raises(DeviceUnreachable, match=r"BadIdentityTokenRejected|BadUserAccessDenied"):
            await session.connect()
    finally:
        await sim.stop()
