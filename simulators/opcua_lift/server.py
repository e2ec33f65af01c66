"""The simulated lift controller: an asyncua server over the lifts' model, with fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.server.address_space import NodeData
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from simulators.opcua_lift.model import FAULT_NONE, Lift, LiftState, Timing
from simulators.opcua_lift.nodes import (
    APPLICATION_URI,
    CEFACT_URI,
    NAMESPACE_URI,
    PRODUCT_URI,
    RANGES,
    TYPES,
    UNITS,
    VARIABLES,
    describe,
    unit_id,
)
from simulators.opcua_lift.security import POLICIES, Users, client_validator, make_certificate


def _node_id(identifier: str, namespace: int) -> ua.NodeId:
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]  # asyncua annotates with NewTypes


class LiftSimulator:
    """N lifts served on `url`; `start()`, `stop()`, `restart()`, and the fault injection below."""

    def __init__(
        self,
        port: int = 4840,
        lifts: int = 2,
        *,
        floors: int = 10,
        host: str = "127.0.0.1",
        security: Sequence[str] = ("None",),
        certificate: Path | None = None,
        private_key: Path | None = None,
        pki_dir: Path | None = None,
        trusted_clients: Path | None = None,
        users: dict[str, str] | None = None,
        update_interval: float = 0.1,
        speed: float = 1.6,
        door_time: float = 1.5,
        dwell_time: float = 3.0,
        idle_time: tuple[float, float] = (2.0, 8.0),
        auto: bool = True,
        churn: bool = False,
        max_subscriptions: int | None = None,
        seed: int = 1,
    ) -> None:
        unknown = [s for s in security if s not in POLICIES]
        if unknown or not security:
            raise ValueError(f"security must be some of {', '.join(POLICIES)}; got {list(security)}")
        if lifts < 1 or floors < 2:
            raise ValueError("a simulator needs at least one lift and two floors")
        self.port, self.host = port, host
        self.security = tuple(security)
        self.trusted_clients, self.users = trusted_clients, users
        self.update_interval = update_interval
        self.churn = churn
        self.max_subscriptions = max_subscriptions  # 0: CreateSubscription answers BadTooManySubscriptions
        timing = Timing(speed, door_time, dwell_time, idle_time, auto)
        self.lifts = [Lift(n, floors, random.Random(seed * 1000 + n), timing) for n in range(1, lifts + 1)]
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.certificate, self.private_key = certificate, private_key
        if any(s != "None" for s in self.security) and certificate is None:
            if pki_dir is not None:  # a certificate that survives restarts, so clients can keep trusting it
                kept = (pki_dir / "server_cert.der", pki_dir / "server_key.pem")
                exists = kept[0].exists() and kept[1].exists()
                self.certificate, self.private_key = kept if exists else make_certificate(pki_dir, host)
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="lift-sim-")
                self.certificate, self.private_key = make_certificate(Path(self._tmp.name), host)
        self._server: Server | None = None
        self._ns = 0
        self._nodes: dict[tuple[int, str], ua.NodeId] = {}
        self._published: dict[tuple[int, str], Any] = {}
        self._quality: dict[tuple[int, str], int] = {}  # injected status codes (sensor faults)
        self._internal = False  # our own writes pass the write hook without being taken as commands
        self._task: asyncio.Task[None] | None = None
        self._tick = 0

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/lift"

    @property
    def namespace_index(self) -> int:
        return self._ns

    @property
    def running(self) -> bool:
        return self._server is not None

    def node_id(self, lift: int, name: str) -> str:
        """'ns=2;s=Lift1.CurrentFloor'."""
        return f"ns={self._ns};s=Lift{lift}.{name}"

    def state(self, lift: int) -> LiftState:
        car = self.lifts[lift - 1]
        v = car.values()
        return LiftState(
            lift=lift,
            current_floor=v["CurrentFloor"],
            direction=v["Direction"],
            door_open=v["DoorOpen"],
            car_load=v["CarLoad"],
            trip_counter=v["TripCounter"],
            run_hours=v["RunHours"],
            position=v["Position"],
            speed=v["Speed"],
            motor_temperature=v["MotorTemperature"],
            fault_code=v["FaultCode"],
            in_service=v["InService"],
            target_floor=v["TargetFloor"],
            phase=car.phase,
        )

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve, and move the lifts every `update_interval` until `stop()`."""
        if self._server is None:
            await self._start(*await self._build())
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="lift-sim")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def restart(self, downtime: float = 0.0) -> None:
        """Server restart: every connection, session and subscription is lost; the lifts keep their state.

        The new server instance is built before the old one stops (building takes about a second), so the
        port is closed for `downtime` seconds plus a few milliseconds."""
        fresh = await self._build()
        await self._shutdown()
        await asyncio.sleep(downtime)
        await self._start(*fresh)

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _build(self) -> tuple[Server, int, dict[tuple[int, str], ua.NodeId]]:
        """A new server instance with the lifts' current values, not yet listening."""
        server = Server(user_manager=Users(self.users) if self.users else None)  # type: ignore[arg-type]
        await server.init()
        if self.max_subscriptions is not None:
            server.iserver.max_subscriptions = self.max_subscriptions
        server.disable_clock()  # no 1 s CurrentTime loop: stop() takes milliseconds instead of a second
        server.set_endpoint(self.url)
        server.set_server_name("Edge gateway lift simulator")
        server.product_uri = PRODUCT_URI
        await server.set_application_uri(APPLICATION_URI)
        policies: list[ua.SecurityPolicyType] = []
        for name in self.security:
            pair = POLICIES[name]
            policies += [ua.SecurityPolicyType.NoSecurity] if pair is None else list(pair)
        server.set_security_policy(policies)
        tokens: list[type] = [ua.UserNameIdentityToken] if self.users else [ua.AnonymousIdentityToken]
        if any(s != "None" for s in self.security):
            assert self.certificate is not None and self.private_key is not None
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
            tokens.append(ua.X509IdentityToken)
            if self.trusted_clients is not None:
                server.set_certificate_validator(await client_validator(self.trusted_clients))
        server.set_identity_tokens(tokens)
        await server.set_build_info(
            product_uri=PRODUCT_URI,
            manufacturer_name="Edge gateway project",
            product_name="Lift controller simulator",
            software_version="1.0.0",
            build_number="1",
            build_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        )
        ns = await server.register_namespace(NAMESPACE_URI)
        return server, ns, await self._build_model(server, ns)

    async def _start(self, server: Server, ns: int, nodes: dict[tuple[int, str], ua.NodeId]) -> None:
        await server.start()
        self._ns, self._nodes, self._server = ns, nodes, server
        self._published = {}  # the next update writes every value (the lifts moved while this one was built)

    async def _build_model(self, server: Server, ns: int) -> dict[tuple[int, str], ua.NodeId]:
        nodes: dict[tuple[int, str], ua.NodeId] = {}
        folder = await server.nodes.objects.add_folder(_node_id("Lifts", ns), ua.QualifiedName("Lifts", ns))
        for car in self.lifts:
            lift = await folder.add_object(
                _node_id(f"Lift{car.number}", ns), ua.QualifiedName(f"Lift{car.number}", ns)
            )
            values = car.values()
            for name, vt, writable in VARIABLES:
                node_id = _node_id(f"Lift{car.number}.{name}", ns)
                var = await lift.add_variable(
                    node_id, ua.QualifiedName(name, ns), values[name], varianttype=vt
                )
                await var.write_attribute(
                    AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(describe(name))))
                )
                if name in UNITS:
                    code, symbol = UNITS[name]
                    eu = ua.EUInformation(
                        NamespaceUri=CEFACT_URI,
                        UnitId=unit_id(code),
                        DisplayName=ua.LocalizedText(symbol),
                        Description=ua.LocalizedText(code),
                    )
                    await var.add_property(
                        _node_id(f"Lift{car.number}.{name}.EngineeringUnits", ns),
                        ua.QualifiedName("EngineeringUnits", 0),
                        eu,
                    )
                if name in RANGES:
                    low, high = RANGES[name]
                    await var.add_property(
                        _node_id(f"Lift{car.number}.{name}.EURange", ns),
                        ua.QualifiedName("EURange", 0),
                        ua.Range(Low=low, High=high),
                    )
                if writable:
                    await var.set_writable()
                    server.set_attribute_value_setter(node_id, self._write_hook(car, name))
                nodes[(car.number, name)] = node_id
        return nodes

    def _write_hook(self, car: Lift, name: str) -> Callable[[NodeData, AttributeIds, ua.DataValue], None]:
        """Validate a client's write to a writable variable and apply it as a command to the lift."""

        def hook(node: NodeData, attr: AttributeIds, value: ua.DataValue) -> None:
            if not self._internal:
                raw = value.Value.Value if value.Value is not None else None
                if name == "TargetFloor":
                    if not isinstance(raw, int) or not 0 <= raw < car.floors:
                        raise ServiceError(StatusCodes.BadOutOfRange)
                    if car.fault != FAULT_NONE or not car.in_service:
                        raise ServiceError(StatusCodes.BadInvalidState)
                    car.command(raw)
                elif name == "FaultCode":
                    if raw != FAULT_NONE:
                        raise ServiceError(StatusCodes.BadOutOfRange)  # only a reset can be written
                    car.clear()
                elif name == "InService":
                    car.in_service = bool(raw) and car.fault == FAULT_NONE
                self._published[(car.number, name)] = raw
            node.attributes[attr].value = value

        return hook

    # ---- the lifts' clock ------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.update_interval
        due = loop.time()
        while True:
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > interval:  # fell behind (e.g. during a restart): skip, do not burst
                due = loop.time()
            for car in self.lifts:
                car.step(interval)
            self._tick += 1
            if self._server is not None:
                await self._publish()

    async def _publish(self) -> None:
        """Write the variables that changed, all with this update's source timestamp."""
        server = self._server
        assert server is not None
        now = datetime.datetime.now(datetime.UTC)
        self._internal = True
        try:
            for car in self.lifts:
                values = self._churned(car) if self.churn else car.values()
                for name, value in values.items():
                    key = (car.number, name)
                    if self._published.get(key) == value:
                        continue
                    self._published[key] = value
                    dv = ua.DataValue(
                        ua.Variant(value, TYPES[name]),
                        StatusCode=ua.StatusCode(self._quality.get(key, 0)),  # type: ignore[arg-type]
                        SourceTimestamp=now,  # type: ignore[arg-type]
                        ServerTimestamp=now,  # type: ignore[arg-type]
                    )
                    await server.write_attribute_value(self._nodes[key], dv)
        finally:
            self._internal = False

    def _churned(self, car: Lift) -> dict[str, Any]:
        """Benchmark load: ten variables take a new value on every update."""
        k = self._tick + car.number
        values = car.values()
        values.update(
            CurrentFloor=k % car.floors,
            Direction=("up", "down", "idle")[k % 3],
            DoorOpen=bool(k % 2),
            CarLoad=float(k % 800),
            TripCounter=self._tick,
            RunHours=self._tick / 36000.0,
            Position=float(k % 300) / 10.0,
            Speed=float(k % 25) / 10.0,
            MotorTemperature=20.0 + (k % 400) / 10.0,
            TargetFloor=(k + 1) % car.floors,
        )
        return values

    def advance(self, seconds: float) -> None:
        """Move the lifts on by `seconds` of simulated time at once (no server needed: for tests)."""
        for _ in range(max(1, round(seconds / self.update_interval))):
            for car in self.lifts:
                car.step(self.update_interval)

    # ---- fault injection and commands ------------------------------------------------------------------

    def stick(self, lift: int) -> None:
        """The car stops between two floors: FaultCode 31, out of service."""
        self.lifts[lift - 1].stick()

    def door_fault(self, lift: int) -> None:
        """The doors stay open: FaultCode 42, out of service."""
        self.lifts[lift - 1].jam_door()

    def fault(self, lift: int, code: int) -> None:
        """Any other fault code (e.g. 17, a drive fault): the car stops level, out of service."""
        if not 0 < code < 65536:
            raise ValueError("a fault code is 1..65535 (FaultCode is a UInt16; 0 means none)")
        self.lifts[lift - 1].fail(code)

    def clear(self, lift: int) -> None:
        """What writing FaultCode = 0 does: re-level, close the doors, back in service."""
        self.lifts[lift - 1].clear()

    def set_quality(self, lift: int, name: str, status: str | None) -> None:
        """Sensor fault: publish variable `name` with this status code (e.g. "UncertainLastUsableValue",
        "BadSensorFailure"; a Bad status empties the value, as servers do); None makes it Good again."""
        key = (lift, name)
        if status is None:
            self._quality.pop(key, None)
        else:
            self._quality[key] = getattr(StatusCodes, status)
        self._published.pop(key, None)  # rewritten at the next update

    def command(self, lift: int, floor: int) -> None:
        """What writing TargetFloor does."""
        self.lifts[lift - 1].command(floor)
