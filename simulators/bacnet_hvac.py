"""BACnet/IP HVAC simulator: one air-handling unit and N VAV boxes, each its own BACnet device on loopback.

An independent device: it imports nothing from `edge` or `drivers`; it is built directly on bacpypes3's
server side (`Application` with local objects).

Objects (instance numbers per type; every object has a name, description, units or state texts):
- AHU (model "sim-ahu"): analog-input 1..16 (supply/return/mixed/outside air temperature, three humidities,
  duct static pressure, supply airflow, filter dp, return CO2, fan power/energy/frequency/current/speed
  feedback); analog-output 1..3 (supply-fan-speed, cooling-valve, heating-valve: commandable, the AHU's own
  loops write priority 16); analog-value 1..3 commandable (supply-air-temp-setpoint, duct-static-pressure-
  setpoint, outside-air-damper) and 4 plain (filter-alarm-limit); binary-input 1..4 (supply-fan-status,
  filter-alarm with IN_ALARM while active, freeze-stat, smoke-detector); binary-value 1..2 commandable
  (supply-fan-enable, economizer-enable); multi-state-value 1 commandable (operating-mode: off, occupied,
  unoccupied, night-purge), which refuses COV as some controllers do.
- VAV k (model "sim-vav"): analog-input 1..3 (zone-temp, discharge-air-temp, airflow); analog-value 1
  commandable (zone-temp-setpoint, default 21 + 0.5 x (k mod 3)) and 2 (airflow-setpoint); analog-output 1..2
  (damper-position, reheat-valve, written by the box's loop at 16); binary-input 1 (occupancy).
Physics each update: the fan speed follows the static pressure setpoint, supply air approaches its setpoint
(tau 30 s), zone temperatures approach their setpoints while the fan runs (tau 120 s) and drift to 26 C when
it stops, dampers and reheat follow the zone error, the filter loads slowly and raises its alarm past the
limit. COV increments: 0.1 K for temperatures, 1 % for positions, etc.

Layout (the loopback rules of the project's protocol notes, §3):
- `layout="ips"` (default): device k on its own loopback IP `address + k` (127.0.0.2, .3, ...), all on the
  same UDP `port`, mask /8. A Who-Is sent to the directed broadcast `127.255.255.255:<port>` reaches every
  device, and each answers with a unicast I-Am to the sender. The gateway must use another port
  (e.g. `127.0.0.1/8:47809`): bacpypes3 loops any `127.*` destination on its own port back into itself.
- `layout="ports"`: every device on `address`, ports `port, port + 1, ...` (for hosts with only 127.0.0.1);
  a broadcast Who-Is then reaches only the device on `port`: discover the others by unicast (`address=`).

Fault injection (per device): `silent` (drops every datagram in and out, as a powered-off device),
`error` (answers every confirmed request with Error device/operational-problem), `delay` (answers slowly),
`rpm=False` (rejects ReadPropertyMultiple as unrecognized-service, as small devices do), `cov=False` (rejects
SubscribeCOV the same way), `write_error` (applies each WriteProperty, then answers Error
device/operational-problem instead of the acknowledgement, as some controllers do). Per object:
`set_status` sets Status_Flags, Reliability and Out_Of_Service. Per zone: `set_drift(vav, kelvin)` makes the
zone settle `kelvin` away from its setpoint while the fan runs (a stuck damper, a failed reheat valve), and
`--drift vav-2=3` does the same from the command line.

bacpypes3 internals relied on, checked at start so an upgrade fails loudly: each link layer's
`IPv4DatagramServer` is reached as `app.link_layers[...].server`, and its `confirmation` (datagrams in) and
`indication` (datagrams out) are wrapped to make a device silent.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bacpypes3.apdu import (
    ConfirmedRequestPDU,
    Error,
    ReadPropertyMultipleRequest,
    RejectPDU,
    SimpleAckPDU,
    SubscribeCOVRequest,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import ServicesSupported, StatusFlags
from bacpypes3.local.analog import (
    AnalogInputObject,
    AnalogOutputObject,
    AnalogValueObject,
    AnalogValueObjectCmd,
)
from bacpypes3.local.binary import BinaryInputObject, BinaryValueObject
from bacpypes3.local.cmd import Commandable
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateValueObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.primitivedata import Enumerated, ObjectIdentifier

from simulators.serving import serve_until_signal

__all__ = ["Faults", "HvacSimulator", "SimDevice", "main"]

VENDOR_ID = 999
MODES = ("off", "occupied", "unoccupied", "night-purge")
_OK = (0, 0, 0, 0)


class _Flagged:
    """Status_Flags with a settable OVERRIDDEN bit.

    bacpypes3's local objects compute Status_Flags from Event_State (in alarm), Reliability (fault) and
    Out_Of_Service, and always report OVERRIDDEN as 0; this keeps the bit that was last assigned.
    """

    _overridden = 0

    @property
    def statusFlags(self) -> StatusFlags:
        flags = list(super().statusFlags)  # type: ignore[misc]
        flags[2] = self._overridden
        return StatusFlags(flags)

    @statusFlags.setter
    def statusFlags(self, value: Any) -> None:
        if value is not None:
            self._overridden = int(value[2])


class _AnalogInput(_Flagged, AnalogInputObject):  # type: ignore[misc]  # bacpypes3 has no type information
    pass


class _AnalogOutput(_Flagged, AnalogOutputObject):  # type: ignore[misc]  # bacpypes3 has no type information
    pass


class _AnalogValue(_Flagged, AnalogValueObject):  # type: ignore[misc]  # bacpypes3 has no type information
    pass


class _AnalogValueCmd(_Flagged, AnalogValueObjectCmd):  # type: ignore[misc]  # bacpypes3 has no type information
    pass


class _BinaryInput(_Flagged, BinaryInputObject):  # type: ignore[misc]  # bacpypes3 has no type information
    pass


class _BinaryValueCmd(_Flagged, Commandable, BinaryValueObject):  # type: ignore[misc]  # bacpypes3 has no type information
    """Commandable binary value with COV (bacpypes3's BinaryValueObjectCmd has no COV criteria)."""


class _ModeValue(_Flagged, Commandable, MultiStateValueObject):  # type: ignore[misc]  # bacpypes3 has no type information
    """Commandable multi-state value. Like some controllers, it refuses SubscribeCOV (services error)."""

    _cov_criteria = None


@dataclass
class Faults:
    silent: bool = False
    error: bool = False
    delay: float = 0.0
    rpm: bool = True
    cov: bool = True
    write_error: bool = False  # apply each WriteProperty, then answer an error


class _DeviceApp(Application):  # type: ignore[misc]  # bacpypes3 has no type information
    """A simulated device's application: counts requests and applies the injected faults."""

    faults: Faults
    requests: collections.Counter[str]
    _acks_to_replace: set[tuple[str, int]]

    async def do_WritePropertyRequest(self, apdu: Any) -> None:
        if not self.faults.write_error:
            await super().do_WritePropertyRequest(apdu)
            return
        key = (str(apdu.pduSource), apdu.apduInvokeID)
        self._acks_to_replace.add(key)
        try:
            await super().do_WritePropertyRequest(apdu)  # applies the write; its acknowledgement is dropped
        finally:
            self._acks_to_replace.discard(key)
        await self.response(
            Error(
                service_choice=apdu.apduService,
                errorClass="device",
                errorCode="operationalProblem",
                context=apdu,
            )
        )

    async def response(self, apdu: Any) -> None:
        replaced = isinstance(apdu, SimpleAckPDU) and self._acks_to_replace
        if replaced and (str(apdu.pduDestination), apdu.apduInvokeID) in self._acks_to_replace:
            return
        await super().response(apdu)

    async def indication(self, apdu: Any) -> None:
        self.requests[type(apdu).__name__] += 1
        faults = self.faults
        if faults.delay:
            await asyncio.sleep(faults.delay)
        if faults.silent:
            return
        confirmed = isinstance(apdu, ConfirmedRequestPDU)
        if faults.error and confirmed:
            error = Error(
                service_choice=apdu.apduService,
                errorClass="device",
                errorCode="operationalProblem",
                context=apdu,
            )
            await self.response(error)
            return
        unsupported = (not faults.rpm and isinstance(apdu, ReadPropertyMultipleRequest)) or (
            not faults.cov and isinstance(apdu, SubscribeCOVRequest)
        )
        if unsupported:
            await self.response(RejectPDU(reason="unrecognizedService", context=apdu))
            return
        await super().indication(apdu)

    def get_services_supported(self) -> ServicesSupported:
        services = super().get_services_supported()
        if not self.faults.rpm:
            services[ServicesSupported.readPropertyMultiple] = 0
        if not self.faults.cov:
            services[ServicesSupported.subscribeCOV] = 0
        return services


@dataclass
class SimDevice:
    """One simulated BACnet device."""

    name: str
    kind: str  # "ahu" or "vav"
    instance: int
    ip: str
    port: int
    app: _DeviceApp
    objects: dict[str, Any] = field(default_factory=dict)  # by object name

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def faults(self) -> Faults:
        return self.app.faults

    @property
    def requests(self) -> collections.Counter[str]:
        """Requests received, by bacpypes3 APDU class name ("ReadPropertyMultipleRequest", ...)."""
        return self.app.requests

    def obj(self, ref: str) -> Any:
        """An object by name ("zone-temp") or identifier ("analog-input,1")."""
        if ref in self.objects:
            return self.objects[ref]
        found = self.app.get_object_id(ObjectIdentifier(ref))
        if found is None:
            raise KeyError(f"{self.name}: no object {ref!r}")
        return found

    def value(self, ref: str) -> Any:
        """The present value as plain Python: float, 'active'/'inactive', or a state number."""
        return _plain(self.obj(ref).presentValue)

    def priority_array(self, ref: str) -> list[Any]:
        """The 16 priority slots as plain Python (None for an empty slot)."""
        out: list[Any] = []
        for slot in self.obj(ref).priorityArray:
            choice = slot._choice
            out.append(None if choice == "null" or choice is None else _plain(getattr(slot, choice)))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Enumerated):  # BinaryPV and the like
        return str(value)
    return int(value) if isinstance(value, int) else value


def _flags(bits: tuple[int, int, int, int] = _OK) -> StatusFlags:
    return StatusFlags(list(bits))


def _analog(
    cls: Any, kind: str, instance: int, name: str, units: str, value: float, cov: float, text: str, **kw: Any
) -> Any:
    extra: dict[str, Any] = {}
    if cls is not _AnalogInput:
        extra["relinquishDefault"] = value
    return cls(
        objectIdentifier=(kind, instance),
        objectName=name,
        description=text,
        presentValue=value,
        units=units,
        covIncrement=cov,
        statusFlags=_flags(),
        eventState="normal",
        reliability="noFaultDetected",
        outOfService=False,
        **extra,
        **kw,
    )


def _binary(
    cls: Any, kind: str, instance: int, name: str, value: str, text: str, texts: tuple[str, str]
) -> Any:
    extra = {"relinquishDefault": value} if cls is _BinaryValueCmd else {}
    return cls(
        objectIdentifier=(kind, instance),
        objectName=name,
        description=text,
        presentValue=value,
        inactiveText=texts[0],
        activeText=texts[1],
        statusFlags=_flags(),
        eventState="normal",
        reliability="noFaultDetected",
        outOfService=False,
        **extra,
    )


def _ahu_objects() -> list[Any]:
    ai, ao, av = "analog-input", "analog-output", "analog-value"
    c, pct, rh = "degreesCelsius", "percent", "percentRelativeHumidity"
    return [
        _analog(_AnalogInput, ai, 1, "supply-air-temp", c, 16.0, 0.1, "Supply air temperature"),
        _analog(_AnalogInput, ai, 2, "return-air-temp", c, 22.0, 0.1, "Return air temperature"),
        _analog(_AnalogInput, ai, 3, "mixed-air-temp", c, 19.0, 0.1, "Mixed air temperature"),
        _analog(_AnalogInput, ai, 4, "outside-air-temp", c, 12.0, 0.1, "Outside air temperature"),
        _analog(_AnalogInput, ai, 5, "supply-air-humidity", rh, 48.0, 1.0, "Supply air relative humidity"),
        _analog(_AnalogInput, ai, 6, "return-air-humidity", rh, 45.0, 1.0, "Return air relative humidity"),
        _analog(_AnalogInput, ai, 7, "outside-air-humidity", rh, 70.0, 1.0, "Outside air relative humidity"),
        _analog(
            _AnalogInput,
            ai,
            8,
            "duct-static-pressure",
            "pascals",
            250.0,
            2.0,
            "Supply duct static pressure",
        ),
        _analog(_AnalogInput, ai, 9, "supply-airflow", "cubicMetersPerHour", 5300.0, 20.0, "Supply airflow"),
        _analog(_AnalogInput, ai, 10, "filter-dp", "pascals", 120.0, 1.0, "Filter differential pressure"),
        _analog(_AnalogInput, ai, 11, "return-air-co2", "partsPerMillion", 600.0, 10.0, "Return air CO2"),
        _analog(
            _AnalogInput,
            ai,
            12,
            "supply-fan-power",
            "kilowatts",
            1.8,
            0.05,
            "Supply fan electrical power",
        ),
        _analog(
            _AnalogInput, ai, 13, "supply-fan-energy", "kilowattHours", 12500.0, 0.1, "Supply fan energy"
        ),
        _analog(
            _AnalogInput,
            ai,
            14,
            "supply-fan-frequency",
            "hertz",
            31.0,
            0.5,
            "Supply fan VFD output frequency",
        ),
        _analog(_AnalogInput, ai, 15, "supply-fan-current", "amperes", 5.9, 0.1, "Supply fan motor current"),
        _analog(
            _AnalogInput,
            ai,
            16,
            "supply-fan-speed-feedback",
            pct,
            62.0,
            1.0,
            "Supply fan speed feedback",
        ),
        _analog(_AnalogOutput, ao, 1, "supply-fan-speed", pct, 62.0, 1.0, "Supply fan speed command"),
        _analog(_AnalogOutput, ao, 2, "cooling-valve", pct, 0.0, 1.0, "Chilled water valve command"),
        _analog(_AnalogOutput, ao, 3, "heating-valve", pct, 0.0, 1.0, "Hot water valve command"),
        _analog(
            _AnalogValueCmd,
            av,
            1,
            "supply-air-temp-setpoint",
            c,
            16.0,
            0.1,
            "Supply air temperature setpoint",
        ),
        _analog(
            _AnalogValueCmd,
            av,
            2,
            "duct-static-pressure-setpoint",
            "pascals",
            250.0,
            1.0,
            "Duct static pressure setpoint",
        ),
        _analog(_AnalogValueCmd, av, 3, "outside-air-damper", pct, 20.0, 1.0, "Outside air damper position"),
        _analog(_AnalogValue, av, 4, "filter-alarm-limit", "pascals", 250.0, 1.0, "Filter alarm threshold"),
        _binary(
            _BinaryInput,
            "binary-input",
            1,
            "supply-fan-status",
            "active",
            "Supply fan proof of flow",
            ("off", "on"),
        ),
        _binary(
            _BinaryInput,
            "binary-input",
            2,
            "filter-alarm",
            "inactive",
            "Filter dirty alarm",
            ("normal", "alarm"),
        ),
        _binary(
            _BinaryInput,
            "binary-input",
            3,
            "freeze-stat",
            "inactive",
            "Low temperature protection",
            ("normal", "tripped"),
        ),
        _binary(
            _BinaryInput,
            "binary-input",
            4,
            "smoke-detector",
            "inactive",
            "Return duct smoke detector",
            ("normal", "smoke"),
        ),
        _binary(
            _BinaryValueCmd,
            "binary-value",
            1,
            "supply-fan-enable",
            "active",
            "Supply fan start/stop",
            ("stop", "start"),
        ),
        _binary(
            _BinaryValueCmd,
            "binary-value",
            2,
            "economizer-enable",
            "active",
            "Economizer enable",
            ("disabled", "enabled"),
        ),
        _ModeValue(
            objectIdentifier=("multi-state-value", 1),
            objectName="operating-mode",
            description="AHU operating mode",
            presentValue=2,
            relinquishDefault=2,
            numberOfStates=len(MODES),
            stateText=list(MODES),
            statusFlags=_flags(),
            eventState="normal",
            reliability="noFaultDetected",
            outOfService=False,
        ),
    ]


def _vav_objects(setpoint: float) -> list[Any]:
    ai, ao, av, c = "analog-input", "analog-output", "analog-value", "degreesCelsius"
    return [
        _analog(_AnalogInput, ai, 1, "zone-temp", c, setpoint + 1.0, 0.1, "Zone temperature"),
        _analog(_AnalogInput, ai, 2, "discharge-air-temp", c, 16.0, 0.1, "Discharge air temperature"),
        _analog(_AnalogInput, ai, 3, "airflow", "cubicMetersPerHour", 300.0, 5.0, "Box airflow"),
        _analog(_AnalogValueCmd, av, 1, "zone-temp-setpoint", c, setpoint, 0.1, "Zone temperature setpoint"),
        _analog(
            _AnalogValue, av, 2, "airflow-setpoint", "cubicMetersPerHour", 300.0, 5.0, "Airflow setpoint"
        ),
        _analog(_AnalogOutput, ao, 1, "damper-position", "percent", 40.0, 1.0, "Damper position command"),
        _analog(_AnalogOutput, ao, 2, "reheat-valve", "percent", 0.0, 1.0, "Reheat valve command"),
        _binary(
            _BinaryInput,
            "binary-input",
            1,
            "occupancy",
            "active",
            "Occupancy sensor",
            ("unoccupied", "occupied"),
        ),
    ]


class HvacSimulator:
    """An AHU (device `instance`) and `vav` VAV boxes (devices `instance + 1 ...`) on loopback.

    Values move every `update_interval` seconds; `time_scale` speeds the physics up (60: one simulated
    minute per second). Zone temperatures approach their setpoints while the AHU fan runs.
    """

    def __init__(
        self,
        vav: int = 2,
        address: str = "127.0.0.2",
        port: int = 47808,
        *,
        layout: str = "ips",
        instance: int = 1000,
        update_interval: float = 1.0,
        time_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        if not 0 <= vav <= 200:
            raise ValueError("vav must be 0..200")
        if layout not in ("ips", "ports"):
            raise ValueError("layout must be 'ips' or 'ports'")
        self.vav_count, self.port, self.layout = vav, port, layout
        self.base_ip = ipaddress.IPv4Address(address)
        self.instance = instance
        self.update_interval, self.time_scale = update_interval, time_scale
        self.devices: list[SimDevice] = []
        self.paused = False
        self.drift: dict[str, float] = {}  # VAV name -> kelvin its zone settles away from the setpoint
        self._rng = random.Random(seed)
        self._t = 0.0
        self._energy = 12500.0
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the devices (each listening at once) and start the update task."""
        for k in range(self.vav_count + 1):
            ip = str(self.base_ip + k) if self.layout == "ips" else str(self.base_ip)
            port = self.port if self.layout == "ips" else self.port + k
            kind = "ahu" if k == 0 else "vav"
            name = "ahu-1" if k == 0 else f"vav-{k}"
            objects = _ahu_objects() if k == 0 else _vav_objects(21.0 + (k % 3) * 0.5)
            self.devices.append(self._device(name, kind, self.instance + k, ip, port, objects))
        self._task = asyncio.create_task(self._run(), name="bacnet-hvac-sim")

    def _device(
        self, name: str, kind: str, instance: int, ip: str, port: int, objects: list[Any]
    ) -> SimDevice:
        device = DeviceObject(
            objectIdentifier=("device", instance),
            objectName=name,
            vendorIdentifier=VENDOR_ID,
            vendorName="EdgeSim",
            modelName=f"sim-{kind}",
            firmwareRevision="1.0",
            description="Simulated air-handling unit" if kind == "ahu" else "Simulated VAV box",
        )
        network_port = NetworkPortObject(
            f"{ip}/8:{port}", objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
        )
        app = _DeviceApp.from_object_list([device, network_port, *objects])
        app.faults = Faults()
        app.requests = collections.Counter()
        app._acks_to_replace = set()
        app.asap.applicationTimeout = 60_000  # let `delay` be longer than bacpypes3's 3 s server timer
        _gate(app)
        return SimDevice(name, kind, instance, ip, port, app, {str(o.objectName): o for o in objects})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for device in self.devices:
            device.app.close()
        self.devices = []

    async def __aenter__(self) -> HvacSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- test API -----------------------------------------------------------------------------------

    @property
    def ahu(self) -> SimDevice:
        return self.devices[0]

    @property
    def vavs(self) -> list[SimDevice]:
        return self.devices[1:]

    def device(self, which: int | str) -> SimDevice:
        """By name ("vav-2") or device instance."""
        for device in self.devices:
            if which in (device.name, device.instance):
                return device
        raise KeyError(f"no simulated device {which!r}")

    def set_value(self, device: int | str, ref: str, value: Any) -> None:
        """Set a present value as the device itself would (COV subscribers get notified).

        On a commandable object this writes priority 16, the device's own control slot."""
        self.device(device).obj(ref).presentValue = value

    def set_fault(
        self,
        device: int | str,
        *,
        silent: bool | None = None,
        error: bool | None = None,
        delay: float | None = None,
        rpm: bool | None = None,
        cov: bool | None = None,
        write_error: bool | None = None,
    ) -> None:
        faults = self.device(device).faults
        if silent is not None:
            faults.silent = silent
        if error is not None:
            faults.error = error
        if delay is not None:
            faults.delay = delay
        if rpm is not None:
            faults.rpm = rpm
        if cov is not None:
            faults.cov = cov
        if write_error is not None:
            faults.write_error = write_error

    def set_drift(self, device: int | str, kelvin: float) -> None:
        """The zone of this VAV box settles `kelvin` off its setpoint while the fan runs (0 ends it)."""
        name = self.device(device).name
        if kelvin:
            self.drift[name] = kelvin
        else:
            self.drift.pop(name, None)

    def clear_faults(self) -> None:
        """Every device answers normally again."""
        for device in self.devices:
            device.app.faults = Faults()

    def set_status(
        self,
        device: int | str,
        ref: str,
        *,
        in_alarm: bool = False,
        fault: bool = False,
        overridden: bool = False,
        out_of_service: bool = False,
        reliability: str = "noFaultDetected",
    ) -> None:
        """Status_Flags, Reliability, Event_State and Out_Of_Service of one object (out of service: updates stop).

        `fault` without a reliability sets Reliability to unreliable-other (the flag follows Reliability)."""
        obj = self.device(device).obj(ref)
        if fault and reliability == "noFaultDetected":
            reliability = "unreliableOther"
        faulty = int(reliability != "noFaultDetected")
        # assigned first: COV subscribers are told these flags; reads compute them from the properties below
        obj.statusFlags = _flags((int(in_alarm), faulty, int(overridden), int(out_of_service)))
        obj.eventState = "offnormal" if in_alarm else "normal"
        obj.reliability = reliability
        obj.outOfService = out_of_service

    def update_now(self, dt: float | None = None) -> None:
        """Advance the physics by `dt` real seconds (default: one update interval)."""
        self._step((self.update_interval if dt is None else dt) * self.time_scale)

    # ---- physics ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval)
            if not self.paused:
                self.update_now()

    def _step(self, dt: float) -> None:
        self._t += dt
        ahu = self.ahu
        get = ahu.value
        noise = self._rng.gauss
        running = get("supply-fan-enable") == "active" and get("operating-mode") != 1
        oat = 12.0 + 4.0 * math.sin(self._t / 900.0) + noise(0, 0.05)
        zones = [v.value("zone-temp") for v in self.vavs] or [22.0]
        rat = sum(zones) / len(zones) + 0.8
        damper = get("outside-air-damper") / 100.0 if get("economizer-enable") == "active" else 0.2
        mat = damper * oat + (1 - damper) * rat
        sat_sp = get("supply-air-temp-setpoint")
        # the AHU's own control loops write their outputs at priority 16 (a gateway override wins over them)
        static_sp = get("duct-static-pressure-setpoint")
        target_speed = min(100.0, max(0.0, static_sp / 4.0)) if running else 0.0
        own_speed = ahu.obj("supply-fan-speed").priorityArray[15]
        previous = (
            float(getattr(own_speed, own_speed._choice)) if own_speed._choice == "real" else target_speed
        )
        self._set(ahu, "supply-fan-speed", _approach(previous, target_speed, dt, 10.0))
        speed = get("supply-fan-speed") if running else 0.0
        # coil capacity: 100 % cooling takes 15 K off the mixed air, 100 % heating adds 20 K
        cooling = min(100.0, max(0.0, (mat - sat_sp) / 0.15)) if running else 0.0
        heating = min(100.0, max(0.0, (sat_sp - mat) / 0.2)) if running else 0.0
        self._set(ahu, "cooling-valve", round(cooling, 1))
        self._set(ahu, "heating-valve", round(heating, 1))
        sat_target = (mat - get("cooling-valve") * 0.15 + get("heating-valve") * 0.2) if running else rat
        sat = _approach(get("supply-air-temp"), sat_target, dt, 30.0)
        fraction = speed / 100.0
        power = 7.5 * fraction**3
        self._energy += power * dt / 3600.0
        dp = (120.0 + 0.002 * self._t) * fraction**2
        occupied = get("operating-mode") == 2
        values = {
            "supply-air-temp": sat + noise(0, 0.02),
            "return-air-temp": rat,
            "mixed-air-temp": mat,
            "outside-air-temp": oat,
            "supply-air-humidity": 48.0 + 2.0 * math.sin(self._t / 1200.0),
            "return-air-humidity": 45.0 + 2.0 * math.sin(self._t / 1300.0),
            "outside-air-humidity": 70.0 + 10.0 * math.sin(self._t / 1500.0),
            "duct-static-pressure": 4.0 * speed + noise(0, 0.5),
            "supply-airflow": 85.0 * speed,
            "filter-dp": dp,
            "return-air-co2": _approach(get("return-air-co2"), 800.0 if occupied else 450.0, dt, 600.0),
            "supply-fan-power": power,
            "supply-fan-energy": self._energy,
            "supply-fan-frequency": 50.0 * fraction,
            "supply-fan-current": 14.0 * fraction**2 + (0.5 if running else 0.0),
            "supply-fan-speed-feedback": speed,
        }
        for name, value in values.items():
            self._set(ahu, name, round(value, 2))
        self._set(ahu, "supply-fan-status", "active" if running and speed > 5 else "inactive")
        alarm = dp > get("filter-alarm-limit")
        self._set(ahu, "filter-alarm", "active" if alarm else "inactive")
        filter_obj = ahu.obj("filter-alarm")
        if not filter_obj.outOfService and bool(filter_obj.statusFlags[0]) != alarm:
            self.set_status(ahu.name, "filter-alarm", in_alarm=alarm)
        self._set(ahu, "freeze-stat", "active" if mat < 3.0 else "inactive")
        for vav in self.vavs:
            self._step_vav(vav, dt, running, fraction, sat, occupied)

    def _step_vav(
        self, vav: SimDevice, dt: float, running: bool, fan: float, sat: float, occupied: bool
    ) -> None:
        get = vav.value
        zone, setpoint = get("zone-temp"), get("zone-temp-setpoint")
        damper = min(100.0, max(10.0, 20.0 + 40.0 * (zone - setpoint))) if running else 0.0
        reheat = min(100.0, max(0.0, 60.0 * (setpoint - 0.5 - zone))) if running else 0.0
        self._set(vav, "damper-position", round(damper, 1))
        self._set(vav, "reheat-valve", round(reheat, 1))
        target = setpoint + self.drift.get(vav.name, 0.0) if running else 26.0
        zone = _approach(zone, target, dt, 120.0 if running else 900.0) + self._rng.gauss(0, 0.01)
        airflow = get("damper-position") * 8.0 * fan
        self._set(vav, "zone-temp", round(zone, 2))
        self._set(vav, "airflow", round(airflow, 1))
        self._set(vav, "airflow-setpoint", round(get("damper-position") * 8.0, 1))
        self._set(vav, "discharge-air-temp", round(sat + get("reheat-valve") * 0.15, 2))
        self._set(vav, "occupancy", "active" if occupied else "inactive")

    @staticmethod
    def _set(device: SimDevice, name: str, value: Any) -> None:
        obj = device.objects[name]
        if obj.outOfService:  # out of service: the value is decoupled from the process
            return
        if _plain(obj.presentValue) != value or isinstance(obj, Commandable):
            obj.presentValue = value


def _approach(current: float, target: float, dt: float, tau: float) -> float:
    """First-order lag towards `target` with time constant `tau` (seconds)."""
    return target + (current - target) * math.exp(-dt / tau)


def _gate(app: _DeviceApp) -> None:
    """Wrap each link layer's datagram server so a `silent` device neither hears nor says anything."""
    servers: list[Any] = [getattr(link, "server", None) for link in app.link_layers.values()]
    if not servers or any(not (hasattr(s, "confirmation") and hasattr(s, "indication")) for s in servers):
        raise RuntimeError("bacpypes3 link layer layout changed; update simulators/bacnet_hvac.py (_gate)")
    for server in servers:
        incoming: Callable[[Any], Awaitable[None]] = server.confirmation
        outgoing: Callable[[Any], Awaitable[None]] = server.indication

        async def confirmation(pdu: Any, _in: Callable[[Any], Awaitable[None]] = incoming) -> None:
            if not app.faults.silent:
                await _in(pdu)

        async def indication(pdu: Any, _out: Callable[[Any], Awaitable[None]] = outgoing) -> None:
            if not app.faults.silent:
                await _out(pdu)

        server.confirmation = confirmation
        server.indication = indication


def describe(sim: HvacSimulator) -> str:
    """One line saying where the devices are."""
    ahu, vavs = sim.ahu, sim.vavs
    line = f"BACnet simulator: AHU device {ahu.instance} at {ahu.address}"
    if vavs:
        line += (
            f", VAV devices {vavs[0].instance}..{vavs[-1].instance} at {vavs[0].address}..{vavs[-1].address}"
        )
    if sim.layout == "ips":
        line += f"; Who-Is to 127.255.255.255:{sim.port}"
    return line


async def main(
    vav: int = 2,
    address: str = "127.0.0.2",
    port: int = 47808,
    *,
    layout: str = "ips",
    instance: int = 1000,
    update_interval: float = 1.0,
    time_scale: float = 1.0,
    drift: dict[str, float] | None = None,
) -> None:
    """Serve until cancelled (used by `edge simulate bacnet`)."""
    sim = HvacSimulator(
        vav,
        address,
        port,
        layout=layout,
        instance=instance,
        update_interval=update_interval,
        time_scale=time_scale,
    )
    await sim.start()
    for name, kelvin in (drift or {}).items():
        sim.set_drift(name, kelvin)
    print(describe(sim), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


async def _serve_until_signal(args: argparse.Namespace) -> None:
    await serve_until_signal(
        main(
            args.vav,
            args.address,
            args.port,
            layout=args.layout,
            instance=args.instance,
            update_interval=args.update_interval,
            time_scale=args.time_scale,
            drift=dict(args.drift),
        )
    )


def _drift(text: str) -> tuple[str, float]:
    name, sep, kelvin = text.partition("=")
    try:
        return name, float(kelvin) if sep else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=KELVIN (e.g. vav-2=3.0), got {text!r}") from None


def _cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m simulators.bacnet_hvac", description="BACnet/IP AHU + VAV simulator"
    )
    p.add_argument("--vav", type=int, default=2, help="number of VAV boxes")
    p.add_argument(
        "--address", default="127.0.0.2", help="IP of the AHU; VAV k gets address + k (layout ips)"
    )
    p.add_argument("--port", type=int, default=47808)
    p.add_argument(
        "--layout", choices=("ips", "ports"), default="ips", help="one IP per device, or one port per device"
    )
    p.add_argument("--instance", type=int, default=1000, help="AHU device instance; VAV k is instance + k")
    p.add_argument("--update-interval", type=float, default=1.0, help="seconds between value updates")
    p.add_argument("--time-scale", type=float, default=1.0, help="physics speed-up, e.g. 60")
    p.add_argument(
        "--drift", type=_drift, action="append", default=[], help="zone fault: NAME=KELVIN, e.g. vav-2=3.0"
    )
    asyncio.run(_serve_until_signal(p.parse_args(argv)))


if __name__ == "__main__":
    _cli()
