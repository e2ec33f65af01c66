"""One gateway instance's membership of the cluster: heartbeat, device leases, tenant leadership, fencing.

Every `renew_interval` the instance, in one transaction, heartbeats and renews every lease it holds (recording
each device's sequence), then reads the members and moves towards the assignment all instances compute alike
(edge/cluster/assign.py): it stops and releases what belongs elsewhere, claims what is free and belongs here.

Never two owners: a lease is renewed only by its holder and taken only once expired or released, by the
database's clock. The holder fences itself on its own monotonic clock: `renew_deadline` after the start of its
last successful renewal (so at least `lease_ttl - renew_deadline` before the lease can expire) it stops every
poller and consumer, and from that moment `owns()` is false, which the pollers' sink checks before each append.
A device taken after an expiry continues its sequence past what the dead owner can have used; one released
cleanly (drain, rebalance, stop) continues exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import psycopg

from edge.cluster.assign import preferred_owners
from edge.cluster.leases import Claim, Connection, InstanceTaken, Kind, LeaseStore
from edge.config.models import ClusterConfig

__all__ = ["ClusterMember", "Holder", "connect"]

log = logging.getLogger(__name__)

WATCH_STEP = 0.1  # seconds between two looks at the fencing deadline


class Holder(Protocol):
    """What the member starts and stops (the gateway's pollers and tenant-wide consumers)."""

    async def start_device(self, name: str, sequence_floor: int, unpolled: str | None) -> None:
        """Poll `name` from `sequence_floor` on; `unpolled`: why nobody polled it for a while (its owner was
        lost), reported as the device being down before its first poll here."""
        ...

    async def stop_device(self, name: str) -> int | None:
        """Stop polling `name` (its last event committed); returns its last sequence."""
        ...

    def device_sequences(self) -> dict[str, int]: ...

    async def start_leading(self, tenant: str) -> None: ...

    async def stop_leading(self, tenant: str) -> None: ...


async def connect(conninfo: str, password: str | None, wait: float) -> Connection:
    """An autocommit connection; connecting gives up after `wait` seconds, and so does every statement."""
    async with asyncio.timeout(wait):
        connection: Connection = await psycopg.AsyncConnection.connect(
            conninfo,
            autocommit=True,
            connect_timeout=max(2, math.ceil(wait)),  # libpq's floor is 2 s
            options=f"-c statement_timeout={int(wait * 1000)}",
            password=password or None,
        )
    return connection


_LOST = (OSError, psycopg.Error, TimeoutError)  # what losing PostgreSQL looks like


class ClusterMember:
    def __init__(
        self,
        config: ClusterConfig,
        cluster: str,
        instance: str,
        holder: Holder,
        *,
        database: tuple[str, str | None],
        tenants: list[str],
        event_spacing: Mapping[str, float],
        connector: Callable[[], Awaitable[Connection]] | None = None,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.instance = instance
        self.token = secrets.token_hex(8)
        self._holder = holder
        self._tenants = list(tenants)
        self._spacing = dict(event_spacing)  # device -> least seconds between two of its events
        conninfo, password = database  # GatewayConfig.cluster_database()
        self._connector = connector or (lambda: connect(conninfo, password, config.renew_interval))
        self._db: Connection | None = None
        self._store: LeaseStore | None = None
        self.devices: dict[str, int] = {}  # held device leases: name -> epoch
        self.leading: dict[str, int] = {}  # tenants led: tenant -> epoch
        self._valid_until = 0.0  # monotonic: polling allowed until then
        self._draining = False
        self._in_contact: bool | None = None
        self._lock = asyncio.Lock()  # one tick or stop at a time
        self.fenced = 0  # times this instance stopped everything for lack of renewal
        self.last_tick = 0.0
        self._stopped = False
        self.joined = False  # a heartbeat of this incarnation succeeded once
        self._changed = asyncio.Event()  # set whenever something held is given up (drain waits on it)

    # ---- what the gateway asks ---------------------------------------------------------------------------

    def owns(self, device: str) -> bool:
        """May this instance append an event of `device` now (lease held and renewed recently enough)?"""
        return device in self.devices and time.monotonic() < self._valid_until

    def set_devices(self, event_spacing: Mapping[str, float]) -> None:
        """The configuration's devices changed (a deployment): the next tick claims or drops accordingly."""
        self._spacing = dict(event_spacing)

    async def run(self) -> None:
        """Tick every `renew_interval` and watch the fencing deadline, until cancelled."""
        watcher = asyncio.create_task(self._watch(), name="cluster-fence")
        try:
            while True:
                started = time.monotonic()
                async with self._lock:
                    await self._tick()
                await asyncio.sleep(max(0.0, self.config.renew_interval - (time.monotonic() - started)))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def join(self) -> None:
        """The first renewal, at start: raises InstanceTaken when the name is in use; an unreachable database
        is only logged (the instance polls nothing until it can join)."""
        async with self._lock:
            await self._tick()

    async def drain(self, within: float) -> bool:
        """Hand every device and leadership to the other members; True when all moved within `within` s.
        False at once when no other member could take them."""
        self._draining = True
        store = await self._contact()
        if store is None or not self.joined:
            return False
        try:
            async with asyncio.timeout(self.config.renew_interval):
                await store.set_draining(self.instance, token=self.token)
                members = await store.members()
        except _LOST as exc:
            self._lost_contact(exc)
            return False
        if not any(m.alive and not m.draining and m.instance != self.instance for m in members):
            return False
        log.info(
            "cluster: %s draining: %d devices, %d tenants to hand over",
            self.instance,
            len(self.devices),
            len(self.leading),
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.devices or self.leading:
                    self._changed.clear()
                    await self._changed.wait()
        return not (self.devices or self.leading)

    async def stop(self) -> None:
        """Stop everything held, release the leases (exact sequences) and leave the cluster."""
        async with self._lock:
            self._stopped = True  # a tick after this would join again
            for device in list(self.devices):
                await self._give_back("device", device)
            for tenant in list(self.leading):
                await self._give_back("leader", tenant)
            store = await self._contact() if self.joined else None
            if store is not None:
                with contextlib.suppress(*_LOST):
                    async with asyncio.timeout(self.config.renew_interval):
                        await store.leave(self.instance, self.token)
            await self._drop_connection()

    # ---- one renewal ---------------------------------------------------------------------------------------

    async def _tick(self) -> None:
        if self._stopped:
            return
        started = time.monotonic()
        config = self.config
        try:
            store = await self._contact()
            if store is None:
                return
            db = self._require_db()
            async with asyncio.timeout(config.renew_interval):
                async with db.transaction():
                    await store.heartbeat(
                        self.instance, self.token, socket.gethostname(), os.getpid(), config.lease_ttl
                    )
                    self.joined = True
                    held = await store.renew(self.token, config.lease_ttl, self._sequences())
                members = await store.members()
        except InstanceTaken:
            raise
        except _LOST as exc:
            self._lost_contact(exc)
            return
        # before the deadline moves on: a lost device must not look owned while the stops below are awaited
        lost = self._forget_lost(held)
        if time.monotonic() - started < config.renew_deadline:
            self._valid_until = started + config.renew_deadline
        if self._in_contact is False:
            log.info("cluster: contact with PostgreSQL restored")
        self._in_contact = True
        self.last_tick = time.monotonic()
        await self._stop_lost(*lost)
        live = [m.instance for m in members if m.alive and not m.draining]
        if self._draining:
            live = [m for m in live if m != self.instance]
        try:
            async with asyncio.timeout(config.renew_interval * 2):
                await self._expire_strays(held)
                await self._converge("device", list(self._spacing), live)
                await self._converge("leader", self._tenants, live)
        except _LOST as exc:
            self._lost_contact(exc)

    async def _converge(self, kind: Kind, names: list[str], live: list[str]) -> None:
        assert self._store is not None
        wanted = preferred_owners(names, live)
        held = self.devices if kind == "device" else self.leading
        for name in list(held):
            owner = wanted.get(name)
            if name not in self._spacing and kind == "device":
                await self._give_back(kind, name)  # no longer configured
            elif owner is not None and owner != self.instance:
                await self._give_back(kind, name)
        mine = [n for n, owner in wanted.items() if owner == self.instance and n not in held]
        if not mine or time.monotonic() >= self._valid_until:
            return
        claims = await self._store.claim(kind, mine, self.instance, self.token, self.config.lease_ttl)
        for claim in claims:
            await self._take(claim)

    async def _take(self, claim: Claim) -> None:
        if claim.kind == "leader":
            self.leading[claim.name] = claim.epoch
            log.info("cluster: %s leads tenant %s (epoch %d)", self.instance, claim.name, claim.epoch)
            await self._holder.start_leading(claim.name)
            return
        floor = claim.sequence
        if claim.handover == "expired":  # its owner may have used sequences after its last renewal
            floor += self._headroom(claim.name)
        self.devices[claim.name] = claim.epoch
        log.info(
            "cluster: %s owns device %s (epoch %d, %s, sequence from %d)",
            self.instance,
            claim.name,
            claim.epoch,
            claim.handover,
            floor,
        )
        unpolled = None
        if claim.handover == "expired":
            unpolled = f"not polled since instance {claim.previous} stopped renewing its lease"
        await self._holder.start_device(claim.name, floor, unpolled)

    def _headroom(self, device: str) -> int:
        """Sequences an owner can use between its last renewal and its fencing deadline."""
        spacing = max(self._spacing.get(device, 1.0), 0.001)
        return math.ceil(self.config.renew_deadline / spacing) + 2

    async def _give_back(self, kind: Kind, name: str) -> None:
        """Stop, then release: the next owner starts only after this one's last event is committed."""
        sequence: int | None = None
        if kind == "device":
            sequence = await self._holder.stop_device(name)
            self.devices.pop(name, None)
        else:
            await self._holder.stop_leading(name)
            self.leading.pop(name, None)
        self._changed.set()
        log.info("cluster: %s released %s %s", self.instance, kind, name)
        if self._store is None or time.monotonic() >= self._valid_until:
            return  # not ours any more in PostgreSQL either, or it expires by itself
        with contextlib.suppress(*_LOST):
            async with asyncio.timeout(self.config.renew_interval):
                await self._store.release(kind, name, self.token, sequence)

    def _forget_lost(self, held: Mapping[tuple[Kind, str], int]) -> tuple[list[str], list[str]]:
        """Whatever PostgreSQL no longer lists as ours (expired and taken while we were away), no longer owned
        from this instant, all at once: `owns` must not answer yes for one while another's stop is awaited."""
        devices = [d for d in self.devices if ("device", d) not in held]
        tenants = [t for t in self.leading if ("leader", t) not in held]
        for device in devices:
            self.devices.pop(device)
        for tenant in tenants:
            self.leading.pop(tenant)
        return devices, tenants

    async def _stop_lost(self, devices: list[str], tenants: list[str]) -> None:
        for device in devices:
            log.warning("cluster: lease of device %s was lost; stopped polling it", device)
            await self._holder.stop_device(device)
        for tenant in tenants:
            log.warning("cluster: leadership of tenant %s was lost", tenant)
            await self._holder.stop_leading(tenant)

    async def _expire_strays(self, held: Mapping[tuple[Kind, str], int]) -> None:
        """Leases PostgreSQL lists as ours that nothing here runs (held across a fencing, or a claim whose
        answer was lost with the connection): ended now rather than renewed unused. Their events may have
        gone past the recorded sequence, so they are ended as a lost owner's, not released as exact."""
        assert self._store is not None
        for kind, name in held:
            if name not in (self.devices if kind == "device" else self.leading):
                log.warning("cluster: %s lease %s was held but not in use here; ended", kind, name)
                await self._store.expire(kind, name, self.token)

    def _sequences(self) -> dict[str, int]:
        current = self._holder.device_sequences()
        return {d: current[d] for d in self.devices if d in current}

    # ---- the connection and the fence ------------------------------------------------------------------

    async def _contact(self) -> LeaseStore | None:
        if self._db is not None and not self._db.closed:
            return self._store
        try:
            async with asyncio.timeout(self.config.renew_interval):
                self._db = await self._connector()
                self._store = LeaseStore(self._db, self.cluster)
                await self._store.create_schema()
        except _LOST as exc:
            self._lost_contact(exc)
            return None
        return self._store

    def _require_db(self) -> Connection:
        assert self._db is not None
        return self._db

    async def _drop_connection(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        try:
            async with asyncio.timeout(1.0):
                await db.close()
        except _LOST:
            db.pgconn.finish()  # at once, without the goodbye a hung server would never answer

    def _lost_contact(self, exc: BaseException) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.pgconn.finish()  # a hung connection would hang the next tick too
        if self._in_contact is not False:
            log.error(
                "cluster: no contact with PostgreSQL (%s); polling continues until the renew deadline",
                str(exc) or type(exc).__name__,
            )
        self._in_contact = False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_STEP)
            if (self.devices or self.leading) and time.monotonic() >= self._valid_until:
                await self._fence()

    async def _fence(self) -> None:
        """The renew deadline passed: stop everything now; the leases expire by themselves."""
        self.fenced += 1
        log.error(
            "cluster: no lease renewal for %.1f s: stopped polling %d devices and leading %d tenants",
            self.config.renew_deadline,
            len(self.devices),
            len(self.leading),
        )
        devices, tenants = list(self.devices), list(self.leading)
        self.devices.clear()
        self.leading.clear()
        for device in devices:
            await self._holder.stop_device(device)
        for tenant in tenants:
            await self._holder.stop_leading(tenant)
        self._changed.set()
