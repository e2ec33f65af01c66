"""What a benchmark runs: device groups per protocol, loads, and the named scenarios of `edge bench`.

A `Load` is one gateway configuration measured once: groups of simulated devices, each with a protocol, a
simulator, a count, points per device and a poll interval. A `Scenario` is a list of loads plus what to do
around them (an outage after the window, a ramp that stops at saturation, a peer comparison).

Protocols are pluggable: `PROTOCOLS` says which ones the bench can drive (a simulator it can start and a
gateway driver it can configure): Modbus TCP (SunSpec inverters, register banks), BACnet/IP (air handlers
and VAV boxes of `simulators.bacnet_hvac`: COV where the object offers it, polled where it refuses) and OPC UA
(lifts of `simulators.opcua_lift`, one subscription per lift). A group whose driver is not installed is kept
in the scenario and reported as pending, with the reason, instead of being hidden.

Polled groups offer `count x points / poll_interval` points/s; change-driven groups (`on_change`: COV,
OPC UA subscriptions) offer what their devices change, so they are reported as measured, not as offered.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "PROTOCOLS",
    "DeviceGroup",
    "Load",
    "ProtocolBench",
    "Scenario",
    "building",
    "building_parts",
    "coalescing",
    "compare",
    "dialects",
    "pending_reason",
    "scale",
    "scenario",
    "smoke",
    "storage",
    "stress",
]

# hvac-ahu: one `simulators.bacnet_hvac` process per air handler, serving the VAV boxes of the hvac-vav group
Simulator = Literal["sunspec", "bank", "hvac-ahu", "hvac-vav", "lift", "none"]


@dataclass(frozen=True)
class ProtocolBench:
    """What the bench needs to drive one protocol: the gateway driver's entry point and its simulators."""

    driver: str
    simulators: tuple[Simulator, ...]


PROTOCOLS: dict[str, ProtocolBench] = {
    "modbus": ProtocolBench(driver="modbus", simulators=("sunspec", "bank")),
    "bacnet": ProtocolBench(driver="bacnet", simulators=("hvac-ahu", "hvac-vav")),
    "opcua": ProtocolBench(driver="opcua", simulators=("lift",)),
}


@dataclass(frozen=True)
class DeviceGroup:
    """`count` simulated devices of one kind, `points` published points each, polled every `poll_interval`."""

    name: str  # e.g. "inverters"
    protocol: str  # "modbus", "bacnet", "opcua"
    simulator: Simulator
    count: int
    points: int
    poll_interval: float
    prefix: str  # device names are f"{prefix}-{i:03d}"
    per_process: int = 20  # devices per simulator process (pymodbus: ~8k requests/s per process)
    on_change: bool = False  # values pushed on change (COV, subscriptions): nothing fixed is offered

    @property
    def offered_points_per_s(self) -> float:
        return 0.0 if self.on_change else self.count * self.points / self.poll_interval


def _installed_drivers() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="edge.drivers")}


def pending_reason(group: DeviceGroup) -> str | None:
    """None if the bench can run this group now, else why not (shown in the report)."""
    bench = PROTOCOLS.get(group.protocol)
    if bench is None:
        if group.protocol in _installed_drivers():
            return (
                f"pending: the {group.protocol} driver exists, the bench cannot start its simulators yet "
                "(no ProtocolBench entry)"
            )
        return f"pending: no {group.protocol} driver yet"
    if group.simulator not in bench.simulators:
        return f"pending: no {group.simulator!r} simulator for {group.protocol}"
    if bench.driver not in _installed_drivers():
        return f"pending: the {bench.driver!r} driver is not installed"
    return None


@dataclass(frozen=True)
class Load:
    """One gateway configuration, measured once (or `--repeat` times)."""

    label: str
    groups: tuple[DeviceGroup, ...]
    point_topics: bool = True  # like production: each point's latest value on its own retained topic
    coalesce: bool = True  # Modbus reads merged into blocks; False: one request per point
    sparkplug: bool = False  # every tenant also speaks Sparkplug B (an edge node each, DDATA on change)
    homeassistant: bool = False  # every tenant also announces its points by Home Assistant discovery
    tenants: tuple[str, ...] = ("acme", "globex")
    modules: bool = False  # the domain modules (solar, billing, lifts, hvac, alarms) for every tenant
    cloud: bool = False  # cloud sync of every tenant to the cloud simulator
    storage: Literal["sqlite", "postgresql"] = "sqlite"  # the outbox backend ([storage] backend)
    bus: Literal["mosquitto", "nats"] = "mosquitto"  # the bench broker (external mode) or a bench nats-server

    @property
    def runnable(self) -> tuple[DeviceGroup, ...]:
        return tuple(g for g in self.groups if pending_reason(g) is None)

    @property
    def pending(self) -> dict[str, str]:
        return {g.name: r for g in self.groups if (r := pending_reason(g)) is not None}

    @property
    def offered_points_per_s(self) -> float:
        """What the runnable groups ask of the gateway: devices x points / poll interval."""
        return sum(g.offered_points_per_s for g in self.runnable)

    @property
    def devices(self) -> int:
        return sum(g.count for g in self.runnable)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    loads: tuple[Load, ...]
    warmup: float = 5.0
    duration: float = 20.0
    outage: float = 0.0  # seconds the broker is down after the window (0: no outage test)
    ramp: bool = False  # stop at the first load the gateway does not keep up with
    peers: tuple[str, ...] = ()  # peers (bench.peer_common.PEERS) run on each load (modbus bank groups only)
    peer: bool = True  # False (--no-peer): measure only ours, the results keep the comparison's shape
    notes: tuple[str, ...] = field(default=())
    # loads on the same devices run alternately, one run of each per repeat, so the machine's other jobs
    # weigh on every backend alike (the medians compare like with like)
    interleave: bool = False

    def with_options(self, *, duration: float | None = None, peer: bool | None = None) -> Scenario:
        changed = self
        if duration is not None:
            changed = replace(changed, duration=duration)
        if peer is not None:
            changed = replace(changed, peer=peer)
        return changed


BUILDING_AHUS = 5
BUILDING_VAVS = 40  # 8 per air handler, served by its simulator process


def building() -> Scenario:
    """A realistic building: inverters (Modbus), air handlers and VAVs (BACnet), lifts (OPC UA), cloud sync."""
    groups = (
        DeviceGroup("inverters", "modbus", "sunspec", 50, 40, 1.0, "inv", per_process=25),
        DeviceGroup("air handlers", "bacnet", "hvac-ahu", BUILDING_AHUS, 30, 1.0, "ahu", on_change=True),
        DeviceGroup("VAV boxes", "bacnet", "hvac-vav", BUILDING_VAVS, 8, 1.0, "vav", on_change=True),
        DeviceGroup("lifts", "opcua", "lift", 10, 12, 1.0, "lift", per_process=10, on_change=True),
    )
    return Scenario(
        name="building",
        description=f"50 SunSpec inverters x 40 points (Modbus TCP, 1 s polls), {BUILDING_AHUS} air handlers x 30 "
        f"and {BUILDING_VAVS} VAV boxes x 8 (BACnet/IP: COV, polled at 1 s where an object refuses COV), "
        "10 lifts x 12 (OPC UA subscriptions), retained point topics, the domain modules and cloud sync "
        "for two tenants; then a broker outage and the backlog drain",
        loads=(Load("building", groups, modules=True, cloud=True),),
        outage=10.0,
    )


def building_parts() -> Scenario:
    """The building's cost split by what it runs: inverters alone, + BACnet and OPC UA, + modules, + cloud sync."""
    full = building().loads[0]
    loads = (
        replace(full, label="inverters", groups=full.groups[:1], modules=False, cloud=False),
        replace(full, label="+bacnet+opcua", modules=False, cloud=False),
        replace(full, label="+modules", modules=True, cloud=False),
        replace(full, label="+cloud", modules=True, cloud=True),
    )
    return Scenario(
        name="building-parts",
        description="the building step by step: 50 inverters (Modbus) alone, + 45 BACnet and 10 OPC UA devices, "
        "+ the five domain modules, + cloud sync of both tenants (no outage)",
        loads=loads,
    )


STRESS_STEPS: tuple[int, ...] = (5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000)
STRESS_DEVICES = 100
STRESS_REGISTERS = 50


def stress(steps: tuple[int, ...] = STRESS_STEPS, point_topics: bool = True) -> Scenario:
    """100 bank devices x 50 registers; the poll interval shrinks until the gateway stops keeping up.

    With `point_topics=False` (scenario `stress-no-point-topics`) the gateway publishes events only, no
    retained per-point topics: the cost of the event pipeline alone.
    """
    loads = []
    for target in steps:
        interval = round(STRESS_DEVICES * STRESS_REGISTERS / target, 4)
        group = DeviceGroup(
            "bank", "modbus", "bank", STRESS_DEVICES, STRESS_REGISTERS, interval, "dev", per_process=20
        )
        loads.append(Load(f"{target // 1000}k", (group,), point_topics=point_topics))
    return Scenario(
        name="stress" if point_topics else "stress-no-point-topics",
        description=("" if point_topics else "[bus] point_topics = false: ")
        + f"{STRESS_DEVICES} Modbus devices x {STRESS_REGISTERS} registers, poll interval "
        "shrinking step by step until the gateway no longer keeps up (delivered < 95 % of offered, "
        "p99 >= 1 s, or loss)",
        loads=tuple(loads),
        warmup=3.0,
        duration=10.0,
        ramp=True,
    )


COMPARE_DEVICES = 20
COMPARE_REGISTERS = 50
COMPARE_INTERVALS: tuple[float, ...] = (1.0, 0.1, 0.05)


def compare(intervals: tuple[float, ...] = COMPARE_INTERVALS) -> Scenario:
    """The same 20 devices x 50 registers through this gateway, ThingsBoard IoT Gateway and Node-RED."""
    loads = tuple(
        Load(
            f"{COMPARE_DEVICES}x{COMPARE_REGISTERS}@{interval:g}s",
            (
                DeviceGroup(
                    "bank",
                    "modbus",
                    "bank",
                    COMPARE_DEVICES,
                    COMPARE_REGISTERS,
                    interval,
                    "dev",
                    per_process=10,
                ),
            ),
        )
        for interval in intervals
    )
    return Scenario(
        name="compare",
        description=f"{COMPARE_DEVICES} Modbus devices x {COMPARE_REGISTERS} registers at poll intervals "
        f"{', '.join(f'{i:g} s' for i in intervals)}: this gateway vs ThingsBoard IoT Gateway and Node-RED",
        loads=loads,
        warmup=5.0,
        duration=20.0,
        # ThingsBoard with both of its storages, and Node-RED with node-red-contrib-modbus
        peers=("thingsboard-memory", "thingsboard-sqlite", "node-red"),
    )


def smoke() -> Scenario:
    """A few seconds end to end: 4 bank devices x 20 registers at 0.2 s, plus a short outage."""
    group = DeviceGroup("bank", "modbus", "bank", 4, 20, 0.2, "dev", per_process=2)
    return Scenario(
        name="smoke",
        description="4 Modbus devices x 20 registers at 0.2 s, a 2 s broker outage",
        loads=(Load("smoke", (group,)),),
        warmup=1.0,
        duration=3.0,
        outage=2.0,
    )


def _stress_no_point_topics() -> Scenario:
    return stress(point_topics=False)


COALESCING_INVERTERS = 100
COALESCING_STEPS: tuple[int, ...] = (2_000, 4_000, 8_000, 16_000, 32_000, 48_000, 64_000)


def coalescing(coalesce: bool, steps: tuple[int, ...] = COALESCING_STEPS) -> Scenario:
    """100 SunSpec inverters x 40 points, ramped, with the Modbus planner's coalescing on or off."""
    mode = "on" if coalesce else "off"
    loads = []
    for target in steps:
        interval = round(COALESCING_INVERTERS * 40 / target, 4)
        group = DeviceGroup(
            "inverters", "modbus", "sunspec", COALESCING_INVERTERS, 40, interval, "inv", per_process=25
        )
        loads.append(Load(f"{target // 1000}k", (group,), coalesce=coalesce))
    return Scenario(
        name=f"coalescing-{mode}",
        description=f"{COALESCING_INVERTERS} SunSpec inverters x 40 points, Modbus read coalescing {mode} "
        + ("(blocks of up to 125 registers, gaps of 8 bridged)" if coalesce else "(one request per point)")
        + ", poll interval shrinking until the gateway no longer keeps up",
        loads=tuple(loads),
        warmup=3.0,
        duration=10.0,
        ramp=True,
    )


DIALECT_DEVICES = 20
DIALECT_REGISTERS = 50


def dialects(interval: float = 0.1) -> Scenario:
    """The cost of the site dialects: the same load with Sparkplug B and Home Assistant discovery off and on."""
    group = DeviceGroup(
        "bank", "modbus", "bank", DIALECT_DEVICES, DIALECT_REGISTERS, interval, "dev", per_process=10
    )
    loads = (
        Load("off", (group,)),
        Load("sparkplug", (group,), sparkplug=True),
        Load("homeassistant", (group,), homeassistant=True),
        Load("both", (group,), sparkplug=True, homeassistant=True),
    )
    return Scenario(
        name="dialects",
        description=f"{DIALECT_DEVICES} Modbus devices x {DIALECT_REGISTERS} registers at {interval:g} s, "
        "with Sparkplug B and Home Assistant discovery off, each on, and both on (gateway CPU per point)",
        loads=loads,
        warmup=5.0,
        duration=15.0,
    )


def storage(interval: float = 0.1) -> Scenario:
    """The outbox backends on the same loads: SQLite (the default) and PostgreSQL (a private server, same host);
    once with 50 points per event (polling-bound), once with 5 (1,000 events/s: storage-bound)."""
    wide = DeviceGroup("bank", "modbus", "bank", 20, 50, interval, "dev", per_process=10)
    narrow = DeviceGroup("bank", "modbus", "bank", 50, 5, interval / 2, "dev", per_process=10)
    return Scenario(
        name="storage",
        description=f"the outbox on SQLite, then on PostgreSQL (a private server on this machine, "
        f"synchronous_commit on): 20 Modbus devices x 50 registers at {interval:g} s (200 events/s), and 50 x 5 "
        f"at {interval / 2:g} s (1,000 events/s); points/s, gateway and database CPU per point (docs/scale.md)",
        loads=(
            Load("sqlite", (wide,)),
            Load("postgresql", (wide,), storage="postgresql"),
            Load("sqlite-1k-events", (narrow,)),
            Load("postgresql-1k-events", (narrow,), storage="postgresql"),
        ),
        warmup=5.0,
        duration=15.0,
    )


SCALE_BUILDING = DeviceGroup("inverters", "modbus", "sunspec", 50, 40, 1.0, "inv", per_process=25)
SCALE_NEAR_SATURATION = DeviceGroup("bank", "modbus", "bank", 100, 50, 0.25, "dev", per_process=20)
SCALE_BACKENDS: tuple[tuple[str, Literal["sqlite", "postgresql"], Literal["mosquitto", "nats"]], ...] = (
    ("sqlite", "sqlite", "mosquitto"),
    ("postgresql", "postgresql", "mosquitto"),
    ("postgresql-nats", "postgresql", "nats"),
)


def scale(
    groups: tuple[tuple[str, DeviceGroup], ...] = (
        ("building", SCALE_BUILDING),
        ("20k", SCALE_NEAR_SATURATION),
    ),
    warmup: float = 5.0,
    duration: float = 15.0,
) -> Scenario:
    """One instance on the three storage and bus stacks of docs/scale.md, at a building's load and near the
    saturation the stress ramp found (its highest sustained step), the stacks alternating run by run."""
    loads = tuple(
        Load(f"{label}-{stack}", (group,), storage=storage, bus=bus)
        for label, group in groups
        for stack, storage, bus in SCALE_BACKENDS
    )
    shapes = "; ".join(
        f"{label}: {g.count} x {g.points} at {g.poll_interval:g} s ({g.offered_points_per_s:,.0f} points/s)"
        for label, g in groups
    )
    return Scenario(
        name="scale",
        description="one gateway instance with its outbox on SQLite + Mosquitto, PostgreSQL + Mosquitto and "
        f"PostgreSQL + NATS JetStream (private servers on this machine), alternating run by run; {shapes}; "
        "gateway and servers' CPU per point, latency, loss (docs/scale.md)",
        loads=loads,
        warmup=warmup,
        duration=duration,
        interleave=True,
    )


def _coalescing_pair() -> list[Scenario]:
    return [coalescing(True), coalescing(False)]


_SCENARIOS = {
    "building": building,
    "building-parts": building_parts,
    "stress": stress,
    "compare": compare,
    "smoke": smoke,
    "stress-no-point-topics": _stress_no_point_topics,
    "dialects": dialects,
    "storage": storage,
    "scale": scale,
}
NAMES: tuple[str, ...] = (*_SCENARIOS, "coalescing", "all")


def scenario(name: str) -> list[Scenario]:
    """The scenarios a CLI name stands for; `all` is building + stress + compare (the issue's set)."""
    if name == "all":
        return [building(), stress(), compare()]
    if name == "coalescing":
        return _coalescing_pair()
    try:
        return [_SCENARIOS[name]()]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(NAMES)}") from None
