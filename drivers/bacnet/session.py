"""One BACnet/IP device's session: batched reads, writes with priority, COV subscriptions.

Reads: one ReadPropertyMultiple per request of the plan; a device that answers it with reject
"unrecognized-service" (or an error of class services) is remembered, for the driver's lifetime, as one
to read with ReadProperty (detected once, on the first read). A request whose answer would not fit the
device's APDU, or refused as a whole because of one unknown object or property, is read property by
property instead. An unanswered request marks its points
`PointFault("no answer ...")`; when the first request of a read gets no answer, or a second one does not,
the device is unreachable (`DeviceUnreachable`), so a silent device costs at most two request timeouts.

COV: after connecting, `subscribe` reads everything once (the initial values), then subscribes each object
whose present value or status flags a point reads. Objects that refuse (an error) are polled by the session
at the device's poll interval; a device that rejects SubscribeCOV altogether, or where no object accepts it,
raises `SubscriptionUnsupported` and the kernel polls it. Subscriptions are renewed at half their lifetime;
while every point is on COV, a liveness read runs every `check_interval`. A failed renewal or an unanswered
liveness read ends the feed with `receiver.lost(reason)`; the kernel then reconnects and subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from bacpypes3.apdu import ErrorPDU, SubscribeCOVPropertyRequest, SubscribeCOVRequest
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier, PropertyIdentifier, Real
from bacpypes3.vendor import get_vendor_info

from drivers.bacnet.config import BacnetConnection, BacnetPoint
from drivers.bacnet.plan import (
    RELIABILITY,
    STATUS_FLAGS,
    BacnetPlan,
    Key,
    ObjectKey,
    ReadRequest,
    Target,
    key_of,
)
from drivers.bacnet.stack import BacnetFailure, Stack, StackPool
from drivers.bacnet.values import decode, decode_notification, encode_write, qualify, scalar, status_flags
from edge.sdk import (
    DeviceSpec,
    DeviceUnreachable,
    PointConfig,
    PointFault,
    PushReceiver,
    RawValue,
    Scalar,
    SubscriptionUnsupported,
    WriteRejected,
)

log = logging.getLogger(__name__)

_ASHRAE = get_vendor_info(0)
_MISSING = PointFault("not in the device's answer")
_OBJECT_NAME = PropertyIdentifier("object-name")


class BacnetSession:
    """One BACnet/IP device, reached through the driver's shared local stack."""

    def __init__(self, pool: StackPool, device: DeviceSpec) -> None:
        connection: Any = device.connection
        if not isinstance(connection, BacnetConnection):
            raise TypeError(f"device {device.name!r}: connection is not a BacnetConnection")
        self._device = device.name
        self._conn = connection
        self._address = Address(connection.target)  # an IPv4 literal or network:mac, validated: no lookup
        self._timeout = device.timeout
        self._poll_interval = device.poll_interval
        self._pool = pool
        self._stack: Stack | None = None
        self._instance = connection.device_instance
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: dict[int, tuple[ObjectIdentifier, float | None]] = {}
        self._notifications: asyncio.Queue[Any] = asyncio.Queue()
        self._silent = False

    # ---- connection ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Bind the local stack (shared) and check that the device answers; raises `DeviceUnreachable`."""
        await self.close()
        conn = self._conn
        try:
            self._stack = self._pool.acquire(
                conn.local_address, conn.local_device_instance, self._timeout, conn.bbmd, conn.bbmd_ttl
            )
        except OSError as exc:
            raise DeviceUnreachable(
                self._device, f"cannot use local address {conn.local_address}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise DeviceUnreachable(self._device, str(exc)) from None
        try:
            if conn.network is not None:
                await self._stack.learn_route(conn.network, conn.router, self._timeout * (conn.retries + 1))
            if self._instance is None:
                self._instance = await self._who_is()
            else:
                await self._check_instance(self._instance)
        except BacnetFailure as failure:
            await self.close()
            raise DeviceUnreachable(self._device, f"{self._where}: {failure.reason}") from None

    @property
    def _where(self) -> str:
        """The device's address for messages: 'ip:port', or 'network 2, MAC 0x0a (router 10.0.0.9:47808)'."""
        conn = self._conn
        if conn.network is None:
            return conn.target
        router = conn.router or (self._stack.routes.get(conn.network) if self._stack else None)
        return f"network {conn.network}, MAC {conn.mac}" + (f" (router {router})" if router else "")

    async def _check_instance(self, instance: int) -> None:
        """Read the configured device object's name. A device that answers but has no such object is another
        device than configured: ask it who it is (a unicast Who-Is) and say so, with the instance to set."""
        device_id = ObjectIdentifier(("device", instance))
        try:
            await self._call(lambda app: app.read_property(self._address, device_id, _OBJECT_NAME))
        except BacnetFailure as failure:
            if failure.timeout or not failure.about_an_object:
                raise
            mismatch = f"device instance {instance} is not at this address ({failure.reason})"
            try:
                actual = await self._who_is()
            except BacnetFailure:
                raise BacnetFailure(f"{mismatch}; the device there did not say which it is") from None
            raise BacnetFailure(
                f"{mismatch}: the device there is instance {actual}; "
                f"set connection.device_instance = {actual} or correct the address"
            ) from None

    async def _who_is(self) -> int:
        stack = self._require()
        found = await stack.call(
            lambda: stack.app.who_is(address=self._address, timeout=self._timeout), self._timeout + 0.5, 0
        )
        if not found:
            raise BacnetFailure(f"no I-Am within {self._timeout:g} s", timeout=True)
        return int(found[0].iAmDeviceIdentifier[1])

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a failed task was reported by _task_ended
        stack, self._stack = self._stack, None
        if stack is None:
            return
        subscriptions, self._subscriptions = self._subscriptions, {}
        if subscriptions and not self._silent:  # politely cancel them; a silent device would only time out
            await asyncio.gather(
                *(self._unsubscribe(stack, pid, oid) for pid, (oid, _) in subscriptions.items()),
                return_exceptions=True,
            )
        for pid in subscriptions:
            stack.app.cov_handlers.pop(pid, None)
        self._silent = False
        self._notifications = asyncio.Queue()
        self._pool.release(stack)

    # ---- reads --------------------------------------------------------------------------------------

    async def read(self, plan: BacnetPlan) -> list[RawValue]:
        """Values aligned with `plan.points`; raises `DeviceUnreachable` if the device did not answer."""
        return await self._read(plan.targets, plan.requests)

    async def _read(self, targets: Sequence[Target], requests: Sequence[ReadRequest]) -> list[RawValue]:
        results, faults = await self._fetch(requests)
        reliability = await self._reliability(targets, results)
        out: list[RawValue] = [None] * (max((t.index for t in targets), default=-1) + 1)
        for target in targets:
            fault = faults.get(target.index)
            if fault is not None:
                out[target.index] = fault
                continue
            raw = decode(results.get(target.key, _MISSING), target)
            if target.with_status:
                flags = status_flags(results.get(target.status_key))
                raw = qualify(raw, flags, reliability.get(target.object_key))
            out[target.index] = raw
        return out

    async def _fetch(self, requests: Sequence[ReadRequest]) -> tuple[dict[Key, Any], dict[int, PointFault]]:
        results: dict[Key, Any] = {}
        faults: dict[int, PointFault] = {}
        answered, unanswered = False, 0
        for request in requests:
            try:
                results.update(await self._fetch_one(request))
                answered = True
            except BacnetFailure as failure:
                if failure.timeout:
                    unanswered += 1
                    if not answered or unanswered > 1:
                        self._silent = True
                        raise DeviceUnreachable(self._device, failure.reason) from None
                else:
                    answered = True
                fault = PointFault(failure.reason)
                for index in request.targets:
                    faults[index] = fault
        return results, faults

    async def _fetch_one(self, request: ReadRequest) -> dict[Key, Any]:
        if not self._use_rpm():
            return await self._fetch_by_rp(request)
        try:
            return await self._rpm(request)
        except BacnetFailure as failure:
            if failure.service_unsupported and self._conn.read_method == "auto":
                log.info(
                    "device %s refuses ReadPropertyMultiple (%s): reading it property by property",
                    self._device,
                    failure.reason,
                )
                self._pool.without_rpm.add(self._conn.target)
                return await self._fetch_by_rp(request)
            if failure.too_long or failure.about_an_object:
                # the answer does not fit the device's APDU, or the device refuses the whole request for one
                # bad object: ask property by property so that the good points still read
                return await self._fetch_by_rp(request)
            raise

    def _use_rpm(self) -> bool:
        method = self._conn.read_method
        return method == "rpm" or (method == "auto" and self._conn.target not in self._pool.without_rpm)

    async def _rpm(self, request: ReadRequest) -> dict[Key, Any]:
        arguments = request.rpm_arguments()
        response = await self._call(
            lambda app: app.read_property_multiple(self._address, list(arguments), vendor_info=_ASHRAE)
        )
        if not isinstance(response, list):
            raise BacnetFailure("invalid ReadPropertyMultiple answer")
        return {key_of(oid, prop, index): value for oid, prop, index, value in response}

    async def _fetch_by_rp(self, request: ReadRequest) -> dict[Key, Any]:
        """ReadProperty for each property of the request; per-property errors become that value's fault."""
        out: dict[Key, Any] = {}
        for obj in request.objects:
            for prop, index in obj.properties:
                out[key_of(obj.object_id, prop, index)] = await self._rp(obj.object_id, prop, index)
        return out

    async def _rp(self, object_id: ObjectIdentifier, prop: PropertyIdentifier, index: int | None) -> Any:
        try:
            return await self._call(lambda app: app.read_property(self._address, object_id, prop, index))
        except BacnetFailure as failure:
            if failure.timeout:
                raise
            return PointFault(failure.reason)

    async def _reliability(self, targets: Sequence[Target], results: dict[Key, Any]) -> dict[ObjectKey, str]:
        """Reliability of the objects whose FAULT flag is set (read only then: it is optional and rare)."""
        faulted: dict[ObjectKey, ObjectIdentifier] = {}
        for target in targets:
            flags = status_flags(results.get(target.status_key)) if target.with_status else None
            if flags is not None and flags[1]:
                faulted[target.object_key] = target.object_id
        out: dict[ObjectKey, str] = {}
        for key, object_id in faulted.items():
            try:
                value = scalar(
                    await self._call(
                        lambda app, o=object_id: app.read_property(self._address, o, RELIABILITY), 0
                    )
                )
            except BacnetFailure:
                continue
            if isinstance(value, str):
                out[key] = value
        return out

    # ---- writes -------------------------------------------------------------------------------------

    async def write(self, point: PointConfig, raw_value: Scalar | None) -> str | None:
        """WriteProperty at the point's priority; `None` relinquishes (writes Null at that priority). Returns
        the note for the user when the device answered an error but holds the value written."""
        if not isinstance(point, BacnetPoint):
            raise WriteRejected(self._device, "not a BACnet point", point=point.name)
        try:
            value, priority = encode_write(point, raw_value)
        except ValueError as exc:
            raise WriteRejected(self._device, str(exc), point=point.name) from None
        object_id = ObjectIdentifier((point.object_type, point.instance))
        prop = PropertyIdentifier(int(point.property) if point.property.isdigit() else point.property)
        try:
            await self._call(
                lambda app: app.write_property(
                    self._address, object_id, prop, value, array_index=point.index, priority=priority
                )
            )
        except BacnetFailure as failure:
            if failure.timeout:
                reason = f"no answer to the write (it may have applied): {failure.reason}"
                raise DeviceUnreachable(self._device, reason, point=point.name) from None
            if not _may_have_applied(failure):
                raise WriteRejected(self._device, failure.reason, point=point.name) from None
            error = failure.reason
        else:
            return None
        # Some devices apply a write and still answer an error: what they hold now is the truth to report.
        held, applied = await self._read_back(object_id, prop, point.index, priority, value)
        if applied:
            note = f"the device answered {error} but holds the value written ({held})"
            log.warning("device %s point %s: %s", self._device, point.name, note)
            return note
        raise WriteRejected(self._device, f"{error}; read back: {held}", point=point.name)

    async def _read_back(
        self,
        object_id: ObjectIdentifier,
        prop: PropertyIdentifier,
        index: int | None,
        priority: int | None,
        value: Any,
    ) -> tuple[str, bool]:
        """After an error answer: (what the device holds, for people; whether it is what was written).

        A commandable present value is judged by its priority slot (a higher priority may rule the present
        value), anything else by the property itself."""
        wanted = scalar(value)
        if priority is None:
            held = await self._read_quietly(object_id, prop, index)
            return f"{prop} is {_shown(held)}", _same(held, wanted)
        slot = await self._read_quietly(object_id, PropertyIdentifier("priority-array"), priority)
        present = await self._read_quietly(object_id, PropertyIdentifier("present-value"), None)
        if slot is None:
            shown = "is empty"
        else:
            shown = _shown(slot) if isinstance(slot, PointFault) else f"holds {_shown(slot)}"
        return f"priority {priority} {shown}, present value {_shown(present)}", _same(slot, wanted)

    async def _read_quietly(
        self, object_id: ObjectIdentifier, prop: PropertyIdentifier, index: int | None
    ) -> Scalar | PointFault | None:
        try:
            return scalar(
                await self._call(lambda app: app.read_property(self._address, object_id, prop, index))
            )
        except BacnetFailure as failure:
            return PointFault(failure.reason)

    # ---- COV ----------------------------------------------------------------------------------------

    async def subscribe(self, plan: BacnetPlan, receiver: PushReceiver) -> None:
        """Initial values, then changes as the device reports them (see the module docstring)."""
        if not self._conn.cov:
            raise SubscriptionUnsupported(self._device, "COV is off for this device (cov = false)")
        if not plan.cov_feeds:
            raise SubscriptionUnsupported(self._device, "no point reads a present value COV reports")
        current = await self.read(plan)
        stack = self._require()
        increments = _cov_increments(plan)
        refused: list[str] = []
        for object_id in plan.cov_objects:
            pid = stack.next_process_id()
            stack.app.cov_handlers[pid] = self._notifications.put_nowait
            try:
                increment = await self._subscribe_one(pid, object_id, increments.get(_object_key(object_id)))
            except BacnetFailure as failure:
                stack.app.cov_handlers.pop(pid, None)
                if failure.timeout:
                    self._silent = True
                    raise DeviceUnreachable(self._device, f"SubscribeCOV: {failure.reason}") from None
                if failure.rejected_service:  # the device has no SubscribeCOV at all
                    await self._drop_subscriptions()
                    raise SubscriptionUnsupported(self._device, f"SubscribeCOV: {failure.reason}") from None
                refused.append(f"{object_id[0]},{object_id[1]} ({failure.reason})")
                continue
            self._subscriptions[pid] = (object_id, increment)
        if not self._subscriptions:
            raise SubscriptionUnsupported(self._device, "no object accepts COV: " + "; ".join(refused))
        if refused:
            log.info("device %s: polling the objects without COV: %s", self._device, "; ".join(refused))
        subscribed = {_object_key(o) for o, _ in self._subscriptions.values()}
        polled = [t.index for t in plan.targets if not (t.cov_fed and t.object_key in subscribed)]
        last = dict(enumerate(current))
        receiver.values(last)
        self._tasks = [
            asyncio.create_task(self._pump(plan, receiver, last), name=f"bacnet-cov-{self._device}"),
            asyncio.create_task(self._renew(receiver), name=f"bacnet-renew-{self._device}"),
            asyncio.create_task(
                self._watch(plan, polled, receiver, last), name=f"bacnet-poll-{self._device}"
            ),
        ]
        for task in self._tasks:
            task.add_done_callback(lambda done: self._task_ended(done, receiver))

    def _task_ended(self, task: asyncio.Task[None], receiver: PushReceiver) -> None:
        """A feed task that fails unexpectedly ends the feed (the kernel resubscribes) instead of dying unseen."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("device %s: %s failed", self._device, task.get_name(), exc_info=task.exception())
        receiver.lost(f"internal error in {task.get_name()}: {task.exception()!r}")

    async def _drop_subscriptions(self) -> None:
        stack = self._require()
        subscriptions, self._subscriptions = self._subscriptions, {}
        await asyncio.gather(*(self._unsubscribe(stack, pid, oid) for pid, (oid, _) in subscriptions.items()))
        for pid in subscriptions:
            stack.app.cov_handlers.pop(pid, None)

    async def _subscribe_one(
        self, pid: int, object_id: ObjectIdentifier, increment: float | None
    ) -> float | None:
        """SubscribeCOVProperty when an increment is asked for (falls back to SubscribeCOV); returns it or None."""
        stack = self._require()
        lifetime, confirmed = self._conn.cov_lifetime, self._conn.cov_confirmed
        if increment is not None:
            request = SubscribeCOVPropertyRequest(
                subscriberProcessIdentifier=pid,
                monitoredObjectIdentifier=object_id,
                issueConfirmedNotifications=confirmed,
                lifetime=lifetime,
                monitoredPropertyIdentifier="present-value",  # bacpypes3 casts only str, int or tuple here
                covIncrement=Real(increment),
                destination=self._address,
            )
            try:
                await stack.call(lambda: stack.app.request(request), self._timeout, self._conn.retries)
                return increment
            except BacnetFailure as failure:
                if failure.timeout or not failure.service_unsupported:
                    raise
                log.info("device %s has no SubscribeCOVProperty: using SubscribeCOV", self._device)
        plain = SubscribeCOVRequest(
            subscriberProcessIdentifier=pid,
            monitoredObjectIdentifier=object_id,
            issueConfirmedNotifications=confirmed,
            lifetime=lifetime,
            destination=self._address,
        )
        await stack.call(lambda: stack.app.request(plain), self._timeout, self._conn.retries)
        return None

    async def _unsubscribe(self, stack: Stack, pid: int, object_id: ObjectIdentifier) -> None:
        cancel = SubscribeCOVRequest(
            subscriberProcessIdentifier=pid, monitoredObjectIdentifier=object_id, destination=self._address
        )
        with contextlib.suppress(BacnetFailure):
            await stack.call(lambda: stack.app.request(cancel), self._timeout, 0)

    async def _pump(self, plan: BacnetPlan, receiver: PushReceiver, last: dict[int, RawValue]) -> None:
        """Turn queued COV notifications into changed point values: the notifications that arrived together
        (several objects of the device changing at once) are handed over as one change."""
        by_index = {t.index: t for t in plan.targets}
        queue = self._notifications
        while True:
            changes: dict[int, RawValue] = {}
            await self._apply_notification(await queue.get(), plan, by_index, last, changes)
            while not queue.empty():
                await self._apply_notification(queue.get_nowait(), plan, by_index, last, changes)
            if changes:
                receiver.values(changes)

    async def _apply_notification(
        self,
        apdu: Any,
        plan: BacnetPlan,
        by_index: dict[int, Target],
        last: dict[int, RawValue],
        changes: dict[int, RawValue],
    ) -> None:
        """Put the points of one COV notification that changed into `changes` (and `last`)."""
        object_id = apdu.monitoredObjectIdentifier
        try:
            values = dict(decode_notification(object_id[0], pv) for pv in apdu.listOfValues)
        except (ValueError, TypeError) as exc:
            log.warning("device %s: undecodable COV notification for %s: %s", self._device, object_id, exc)
            return
        flags = status_flags(values.get(int(STATUS_FLAGS)))
        reliability = None
        if flags is not None and flags[1]:
            reliability = await self._reliability_of(object_id)
        for index in plan.cov_feeds.get(_object_key(object_id), ()):
            target = by_index[index]
            if int(target.property_id) not in values:
                continue
            raw = decode(values[int(target.property_id)], target)
            if target.with_status:
                raw = qualify(raw, flags, reliability)
            if last.get(index) != raw or type(last.get(index)) is not type(raw):
                changes[index] = last[index] = raw

    async def _reliability_of(self, object_id: ObjectIdentifier) -> str | None:
        try:
            value = scalar(
                await self._call(lambda app: app.read_property(self._address, object_id, RELIABILITY), 0)
            )
        except BacnetFailure:
            return None
        return value if isinstance(value, str) else None

    async def _renew(self, receiver: PushReceiver) -> None:
        """Renew every subscription at half its lifetime; a failed renewal ends the feed."""
        while True:
            await asyncio.sleep(self._conn.cov_lifetime / 2)
            for pid, (object_id, increment) in list(self._subscriptions.items()):
                try:
                    await self._subscribe_one(pid, object_id, increment)
                except BacnetFailure as failure:
                    self._silent = failure.timeout
                    receiver.lost(f"COV renewal for {object_id[0]},{object_id[1]} failed: {failure.reason}")
                    return

    async def _watch(
        self, plan: BacnetPlan, polled: list[int], receiver: PushReceiver, last: dict[int, RawValue]
    ) -> None:
        """Poll the points COV does not feed (at the poll interval), else check that the device still answers."""
        requests = plan.subset(polled) if polled else ()
        wanted = set(polled)
        targets = [t for t in plan.targets if t.index in wanted]
        interval = self._poll_interval if requests else self._conn.check_interval
        device_id = ObjectIdentifier(("device", self._instance if self._instance is not None else 4194303))
        while True:
            await asyncio.sleep(interval)
            try:
                if requests:
                    values = await self._read(targets, requests)
                    changes = {
                        t.index: values[t.index] for t in targets if values[t.index] != last.get(t.index)
                    }
                    last.update(changes)
                    if changes:
                        receiver.values(changes)
                else:
                    await self._call(lambda app: app.read_property(self._address, device_id, _OBJECT_NAME))
            except DeviceUnreachable as exc:
                receiver.lost(exc.reason)
                return
            except BacnetFailure as failure:
                if failure.timeout:
                    self._silent = True
                    receiver.lost(f"device not answering: {failure.reason}")
                    return

    # ---- helpers ------------------------------------------------------------------------------------

    def _require(self) -> Stack:
        if self._stack is None:
            raise DeviceUnreachable(self._device, "not connected")
        return self._stack

    async def _call(self, request: Any, retries: int | None = None) -> Any:
        stack = self._require()
        app = stack.app
        return await stack.call(
            lambda: request(app), self._timeout, self._conn.retries if retries is None else retries
        )


def _may_have_applied(failure: BacnetFailure) -> bool:
    """An error answer about something that exists: a device may have applied the write before answering it.

    Not a reject or abort (the request was not carried out), not a value that could not even be encoded, not
    an unknown object or property (there was nothing to write to)."""
    response = failure.response
    if not isinstance(response, ErrorPDU):
        return False
    return str(response.errorCode) not in ("unknown-object", "unknown-property")


def _same(held: Scalar | PointFault | None, wanted: Scalar | PointFault | None) -> bool:
    return not isinstance(held, PointFault) and held == wanted and type(held) is type(wanted)


def _shown(value: Scalar | PointFault | None) -> str:
    if isinstance(value, PointFault):
        return f"unreadable ({value.reason})"
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _object_key(object_id: Any) -> ObjectKey:
    return (int(object_id[0]), int(object_id[1]))


def _cov_increments(plan: BacnetPlan) -> dict[ObjectKey, float]:
    out: dict[ObjectKey, float] = {}
    for target, point in zip(plan.targets, plan.points, strict=True):
        if point.cov_increment is not None:
            out[target.object_key] = point.cov_increment
    return out
