"""Membership, device leases, leadership and fencing against a real PostgreSQL (in-process instances).

Each instance's "pollers" are a recorder that writes one numbered event per device every 50 ms while its
member says it owns the device: the events then show who wrote which sequence, as the real gateway's would
(tests/cluster/test_cluster_processes.py runs real `edge run` processes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import psycopg
import pytest

from bench.postgres import PostgresServer
from edge.cluster import ClusterMember, InstanceTaken, LeaseStore, connect, preferred_owners
from edge.config.models import ClusterConfig
from tests.cluster.conftest import FreezableProxy
from tests.helpers import until

DEVICES = [f"dev-{i:02d}" for i in range(12)]
TENANTS = ["acme", "globex"]
SPACING = 0.05  # seconds between two events of a device
CONFIG = ClusterConfig(enabled=True, lease_ttl=3.0, renew_interval=0.3, renew_deadline=1.8)


@dataclass
class Written:
    when: float
    instance: str
    device: str
    sequence: int


@dataclass
class Recorder:
    """The Holder of one instance: 'polls' every device it was told to start while its member owns it."""

    instance: str
    events: list[Written]
    member: ClusterMember | None = None
    sequences: dict[str, int] = field(default_factory=dict)
    leading: set[str] = field(default_factory=set)
    stops: list[tuple[float, str]] = field(default_factory=list)

    async def start_device(self, name: str, sequence_floor: int, unpolled: str | None) -> None:
        self.sequences[name] = sequence_floor

    async def stop_device(self, name: str) -> int | None:
        self.stops.append((time.monotonic(), name))
        return self.sequences.pop(name, None)

    def device_sequences(self) -> dict[str, int]:
        return dict(self.sequences)

    async def start_leading(self, tenant: str) -> None:
        self.leading.add(tenant)

    async def stop_leading(self, tenant: str) -> None:
        self.leading.discard(tenant)

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(SPACING)
            for name in list(self.sequences):
                assert self.member is not None
                if self.member.owns(name):  # the gateway's fenced sink asks the same before each append
                    self.sequences[name] += 1
                    self.events.append(Written(time.monotonic(), self.instance, name, self.sequences[name]))


@dataclass
class Instance:
    member: ClusterMember
    recorder: Recorder
    tasks: list[asyncio.Task[None]]

    def kill(self) -> None:
        """As kill -9 would: nothing released, the connection just gone."""
        for task in self.tasks:
            task.cancel()
        if self.member._db is not None:
            self.member._db.pgconn.finish()


@pytest.fixture
async def cluster(postgres: PostgresServer) -> AsyncIterator[Callable[..., Instance]]:
    name = f"c-{uuid.uuid4().hex[:8]}"
    events: list[Written] = []
    started: list[Instance] = []

    def start(instance: str, dsn: str | None = None, devices: list[str] = DEVICES) -> Instance:
        recorder = Recorder(instance, events)
        member = ClusterMember(
            CONFIG,
            name,
            instance,
            recorder,
            database=(dsn or postgres.dsn(), postgres.password),
            tenants=TENANTS,
            event_spacing=dict.fromkeys(devices, SPACING),
        )
        recorder.member = member
        tasks = [asyncio.create_task(member.run()), asyncio.create_task(recorder.poll())]
        started.append(Instance(member, recorder, tasks))
        return started[-1]

    start.events = events  # type: ignore[attr-defined]
    start.name = name  # type: ignore[attr-defined]
    yield start
    for inst in started:
        for task in inst.tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(*inst.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await inst.member.stop()


def owners(instances: list[Instance]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {d: [] for d in DEVICES}
    for inst in instances:
        for device in inst.member.devices:
            out[device].append(inst.member.instance)
    return out


def all_owned_once(instances: list[Instance]) -> bool:
    return all(len(o) == 1 for o in owners(instances).values())


def settled(instances: list[Instance]) -> bool:
    """Every device held by the instance all members agree should hold it."""
    wanted = preferred_owners(DEVICES, [i.member.instance for i in instances])
    return owners(instances) == {d: [o] for d, o in wanted.items()}


def assert_single_writer(events: list[Written]) -> None:
    """No sequence number of a device written twice, and each device's sequences increase with time."""
    by_device: dict[str, list[Written]] = {}
    for e in events:
        by_device.setdefault(e.device, []).append(e)
    for device, written in by_device.items():
        sequences = [e.sequence for e in sorted(written, key=lambda e: e.when)]
        assert len(set(sequences)) == len(sequences), f"{device}: a sequence written twice"
        assert sequences == sorted(sequences), f"{device}: sequences went back: {sequences}"


async def test_devices_and_leaders_spread_once_each(cluster: Callable[..., Instance]) -> None:
    instances = [cluster(n) for n in ("a", "b", "c")]
    await until(lambda: settled(instances), within=10)
    leaders = [t for inst in instances for t in inst.recorder.leading]
    await until(lambda: sorted(t for i in instances for t in i.recorder.leading) == TENANTS, within=10)
    assert len(leaders) <= len(TENANTS)
    assert_single_writer(cluster.events)  # type: ignore[attr-defined]


async def test_a_clean_stop_hands_devices_over_with_exact_sequences(
    cluster: Callable[..., Instance],
) -> None:
    a, b = cluster("a"), cluster("b")
    await until(lambda: settled([a, b]), within=10)
    await asyncio.sleep(0.5)
    moved = list(a.member.devices)
    last = dict(a.recorder.sequences)
    a.tasks[1].cancel()  # its pollers stop first, as the gateway's do
    stopped = time.monotonic()
    await a.member.stop()
    await until(lambda: all(d in b.member.devices for d in moved), within=3)
    await until(lambda: all(b.recorder.sequences[d] > last[d] for d in moved), within=3)
    events = cluster.events  # type: ignore[attr-defined]
    for device in moved:
        first_by_b = min(
            e.sequence for e in events if e.device == device and e.instance == "b" and e.when > stopped
        )
        assert first_by_b == last[device] + 1, f"{device}: the sequence continues exactly after a release"
    assert_single_writer(events)


async def test_a_killed_instance_is_replaced_within_the_bound(cluster: Callable[..., Instance]) -> None:
    a, b, c = cluster("a"), cluster("b"), cluster("c")
    await until(lambda: settled([a, b, c]), within=10)
    await asyncio.sleep(0.5)
    orphans = list(a.member.devices)
    assert orphans
    a.kill()
    killed = time.monotonic()
    await until(lambda: all_owned_once([b, c]), within=CONFIG.lease_ttl + 3 * CONFIG.renew_interval + 2)
    events = cluster.events  # type: ignore[attr-defined]
    await until(
        lambda: all(any(e.device == d and e.when > killed for e in events) for d in orphans), within=2
    )
    bound = CONFIG.lease_ttl + 2 * CONFIG.renew_interval + 1.0
    for device in orphans:
        resumed = min(e.when for e in events if e.device == device and e.when > killed)
        assert resumed - killed < bound, f"{device} polled again {resumed - killed:.1f}s after the kill"
    assert_single_writer(events)


async def test_a_partitioned_instance_stops_before_its_leases_expire(
    cluster: Callable[..., Instance], postgres: PostgresServer, proxy: FreezableProxy
) -> None:
    a = cluster("a", dsn=proxy.dsn(postgres))
    b = cluster("b")
    await until(lambda: settled([a, b]), within=10)
    await asyncio.sleep(0.5)
    held = list(a.member.devices)
    proxy.freeze()
    frozen = time.monotonic()
    await until(lambda: all(d in b.member.devices for d in held), within=CONFIG.lease_ttl + 4)
    taken = time.monotonic()
    fenced_at = max(t for t, d in a.recorder.stops if d in held)
    assert a.member.fenced == 1
    assert fenced_at < taken, "the partitioned instance stopped only after another took its devices"
    assert fenced_at - frozen <= CONFIG.renew_deadline + 0.5
    events = cluster.events  # type: ignore[attr-defined]
    await until(
        lambda: any(e.instance == "b" and e.device in held and e.when > frozen for e in events), within=2
    )
    last_by_a = max(e.when for e in events if e.instance == "a")
    first_by_b = min(e.when for e in events if e.instance == "b" and e.device in held and e.when > frozen)
    assert last_by_a < first_by_b, "two owners wrote at once"
    assert_single_writer(events)
    proxy.thaw()  # healed: a rejoins and takes its share back from b, handed over cleanly
    await until(lambda: settled([a, b]), within=10)
    await asyncio.sleep(0.5)
    assert_single_writer(events)


async def test_a_partition_healed_before_expiry_ends_the_unused_leases(
    cluster: Callable[..., Instance], postgres: PostgresServer, proxy: FreezableProxy
) -> None:
    a = cluster("a", dsn=proxy.dsn(postgres))
    b = cluster("b")
    await until(lambda: settled([a, b]), within=10)
    await asyncio.sleep(0.5)
    proxy.freeze()
    await until(lambda: a.member.fenced == 1, within=CONFIG.renew_deadline + 1)
    proxy.thaw()  # back before (or about when) the leases expire: a finds leases it no longer uses
    healed = time.monotonic()
    await until(lambda: settled([a, b]), within=CONFIG.lease_ttl + 5)
    events = cluster.events  # type: ignore[attr-defined]
    await until(lambda: {e.device for e in events if e.when > healed} == set(DEVICES), within=5)
    assert_single_writer(events)


async def test_postgres_restart_keeps_owners(
    cluster: Callable[..., Instance], postgres: PostgresServer
) -> None:
    a, b = cluster("a"), cluster("b")
    await until(lambda: settled([a, b]), within=10)
    await asyncio.to_thread(postgres.restart)  # members reconnect; a restart slower than the deadline fences
    events = cluster.events  # type: ignore[attr-defined]
    restarted = time.monotonic()
    await until(lambda: settled([a, b]), within=CONFIG.lease_ttl + 10)
    await until(lambda: {e.device for e in events if e.when > restarted} == set(DEVICES), within=5)
    assert_single_writer(events)


async def test_drain_moves_everything_off(cluster: Callable[..., Instance]) -> None:
    a, b = cluster("a"), cluster("b")
    await until(lambda: settled([a, b]), within=10)
    assert await a.member.drain(5.0)
    await until(lambda: set(b.member.devices) == set(DEVICES), within=2)
    await until(lambda: b.recorder.leading == set(TENANTS), within=3)
    assert_single_writer(cluster.events)  # type: ignore[attr-defined]


async def test_one_live_process_per_instance_name(
    cluster: Callable[..., Instance], postgres: PostgresServer
) -> None:
    cluster("a")
    await until(lambda: True, within=1)
    db = await connect(postgres.dsn(), postgres.password, 5)
    store = LeaseStore(db, cluster.name)  # type: ignore[attr-defined]
    await until(lambda: _members(store), within=5)
    with pytest.raises(InstanceTaken, match="already runs on"):
        await store.heartbeat("a", "another-token", "elsewhere", 1, 3.0)
    await db.close()


async def _members(store: LeaseStore) -> bool:
    try:
        return bool(await store.members())
    except psycopg.errors.UndefinedTable:
        return False


async def test_leases_lost_together_stop_being_owned_together(
    cluster: Callable[..., Instance], postgres: PostgresServer
) -> None:
    """Several leases found lost at one renewal: none of those devices is written again, even while the
    poller stops are awaited one after another (the deadline moving on first made the others look owned)."""
    a = cluster("a")
    await until(lambda: set(a.member.devices) == set(DEVICES), within=10)
    stop_device = a.recorder.stop_device

    async def slow_stop(name: str) -> int | None:  # a poller finishing its last read
        await asyncio.sleep(0.3)
        return await stop_device(name)

    a.recorder.stop_device = slow_stop  # type: ignore[method-assign]
    taken = DEVICES[:4]
    db = await connect(postgres.dsn(), postgres.password, 5)
    async with db.transaction():  # another instance's now, as after an expiry and a claim elsewhere
        await db.execute(
            "UPDATE edge_cluster.leases SET token = 'elsewhere', owner = 'z', expires_at = now() + interval '1 hour'"
            " WHERE cluster = %s AND kind = 'device' AND name = ANY(%s)",
            (cluster.name, taken),  # type: ignore[attr-defined]
        )
    lost_at = time.monotonic()
    await db.close()
    await until(lambda: not set(taken) & set(a.member.devices), within=CONFIG.renew_interval * 4)
    await asyncio.sleep(0.3 * len(taken))  # every slow stop done
    late = [e for e in cluster.events if e.device in taken and e.when > lost_at + CONFIG.renew_interval * 2]  # type: ignore[attr-defined]
    assert late == [], f"written after their leases were lost: {late}"
