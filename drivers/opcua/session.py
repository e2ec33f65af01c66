"""One OPC UA server connection for one device: batched reads, one subscription, typed writes.

- `connect()` opens the client (security, trust check, identity; see `connect.py`), then resolves the plan
  once: namespace URIs to indexes, browse paths to node ids (one TranslateBrowsePaths call), each node's
  DataType (one Read call) for typed writes, and the server's operation limits.
- `read(plan)` is one Read service call for every node (split only where the server's MaxNodesPerRead asks).
- `subscribe(plan, receiver)` creates one subscription per device with a monitored item per point (sampling
  interval, deadband and queue size per point); a server that cannot give one (BadServiceUnsupported,
  BadTooManySubscriptions...) raises `SubscriptionUnsupported` and the kernel polls with batched reads. The server's first notification carries every point's
  current value; after that only changes arrive, delivered as `receiver.values({index: raw}, sample_time)`
  with the source timestamp (or the server's), never earlier than the moment of subscribing. A lost
  connection, a status-change notification (BadShutdown, BadTimeout…), or a subscription that stops
  publishing even keep-alives calls `receiver.lost(reason)`; the kernel then closes, reconnects with backoff
  and subscribes again, and its down/up status events (with their times) mark the gap.
- `write(point, raw)` sends a Variant of the node's DataType; the server's Bad status raises `WriteRejected`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.ua_utils import data_type_to_variant_type
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.opcua.config import OpcuaConnection, OpcuaPoint
from drivers.opcua.connect import close_client, open_client, quiet_asyncua_logging
from drivers.opcua.plan import OpcuaPlan, make_node_id
from drivers.opcua.values import epoch, fault, is_good, status_name, to_raw, to_variant, variant_type
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

_DEADBANDS = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}
_CONNECTION_ERRORS = (ConnectionError, OSError, TimeoutError, UaError)
# A server answering these to CreateSubscription cannot push: the kernel polls it with batched reads instead.
_NO_SUBSCRIPTIONS = frozenset(
    {"BadServiceUnsupported", "BadNotSupported", "BadNotImplemented", "BadTooManySubscriptions"}
)


@dataclass(frozen=True, slots=True)
class _Resolved:
    """The plan against one live server: per point a node id or the fault that stands in for it."""

    nodes: tuple[ua.NodeId | PointFault, ...]
    types: tuple[ua.VariantType | None, ...]
    by_name: dict[str, int]
    max_read: int  # nodes per Read call; 0: no limit
    max_items: int  # monitored items per call; 0: no limit


class OpcuaSession:
    def __init__(self, device: DeviceSpec, plan: OpcuaPlan, connection: OpcuaConnection) -> None:
        self._device = device.name
        self._conn = connection
        self._timeout = device.timeout
        self._plan = plan
        self._client: Client | None = None
        self._resolved: _Resolved | None = None
        self._receiver: PushReceiver | None = None
        self._generation = 0  # bumped on connect/close: callbacks of an older client are ignored
        self._subscribed_at = 0.0
        self._last_publish = 0.0
        self._watchdog: asyncio.Task[None] | None = None
        self.notifications = 0  # data changes received (for benchmarks and status)
        quiet_asyncua_logging()

    @property
    def connected(self) -> bool:
        return self._client is not None

    # ---- connection ------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """(Re)open the connection and resolve the plan; raises `DeviceUnreachable`."""
        await self.close()
        generation = self._generation

        async def on_lost(exc: Exception) -> None:
            detail = str(exc) or type(exc).__name__
            self._lost(generation, f"connection lost ({detail})")

        client = await open_client(
            self._conn, device=self._device, request_timeout=self._timeout, on_lost=on_lost
        )
        try:
            self._resolved = await self._resolve(client)
        except _CONNECTION_ERRORS as exc:
            await close_client(client)
            raise DeviceUnreachable(self._device, f"resolving the points failed: {_describe(exc)}") from exc
        self._client = client

    async def close(self) -> None:
        self._generation += 1
        self._receiver = None
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        client, self._client = self._client, None
        self._resolved = None
        if client is not None:
            await close_client(client)  # CloseSession deletes the subscription on the server

    # ---- reading ---------------------------------------------------------------------------------------

    async def read(self, plan: OpcuaPlan) -> list[RawValue]:
        """Every point's value in plan order, from one Read call; raises `DeviceUnreachable`."""
        client, resolved = self._ready(plan)
        out: list[RawValue] = [None] * len(resolved.nodes)
        wanted = [(i, n) for i, n in enumerate(resolved.nodes) if isinstance(n, ua.NodeId)]
        for i, n in enumerate(resolved.nodes):
            if isinstance(n, PointFault):
                out[i] = n
        try:
            values = await _read(client, [(n, AttributeIds.Value) for _, n in wanted], resolved.max_read)
        except _CONNECTION_ERRORS as exc:
            raise DeviceUnreachable(self._device, _describe(exc)) from exc
        for (i, _), dv in zip(wanted, values, strict=True):
            out[i] = to_raw(dv)
        return out

    # ---- pushed changes --------------------------------------------------------------------------------

    async def subscribe(self, plan: OpcuaPlan, receiver: PushReceiver) -> None:
        """One subscription with a monitored item per point; see the module docstring."""
        client, resolved = self._ready(plan)
        conn = self._conn
        generation = self._generation
        self._receiver = receiver
        self._subscribed_at = time.time()
        self._last_publish = time.monotonic()
        faults: dict[int, RawValue] = {
            i: n for i, n in enumerate(resolved.nodes) if isinstance(n, PointFault)
        }
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=conn.publishing_interval_ms,
            RequestedLifetimeCount=conn.lifetime_count,
            RequestedMaxKeepAliveCount=conn.keepalive_count,
            MaxNotificationsPerPublish=conn.max_notifications_per_publish,
            PublishingEnabled=True,
            Priority=0,
        )
        items = [
            (i, _monitored_item(i, node, point, conn))
            for i, (node, point) in enumerate(zip(resolved.nodes, self._plan.points, strict=True))
            if isinstance(node, ua.NodeId)
        ]
        try:
            try:
                created = await client.uaclient.create_subscription(
                    params, lambda result: self._on_publish(generation, result)
                )
            except UaStatusCodeError as exc:
                if status_name(exc.code) in _NO_SUBSCRIPTIONS:
                    self._receiver = None
                    raise SubscriptionUnsupported(self._device, status_name(exc.code)) from None
                raise
            step = resolved.max_items or len(items) or 1
            for start in range(0, len(items), step):
                chunk = items[start : start + step]
                results = await client.uaclient.create_monitored_items(
                    ua.CreateMonitoredItemsParameters(
                        SubscriptionId=created.SubscriptionId,
                        TimestampsToReturn=ua.TimestampsToReturn.Both,
                        ItemsToCreate=[item for _, item in chunk],
                    )
                )
                for (i, _), result in zip(chunk, results, strict=True):
                    if not is_good(result.StatusCode.value):
                        faults[i] = fault(result.StatusCode.value)
        except _CONNECTION_ERRORS as exc:
            raise DeviceUnreachable(self._device, f"subscribing failed: {_describe(exc)}") from exc
        if faults:
            receiver.values(faults)
        # A subscription that stops publishing (not even keep-alives) is as lost as a closed connection.
        silence = created.RevisedPublishingInterval / 1000 * (created.RevisedMaxKeepAliveCount + 1)
        self._watchdog = asyncio.create_task(
            self._keepalive_watchdog(generation, 2 * silence + self._timeout),
            name=f"opcua-keepalive-{self._device}",
        )

    def _on_publish(self, generation: int, result: ua.PublishResult) -> None:
        """Runs in asyncua's publish loop: turn one notification message into receiver calls. Must not block."""
        if generation != self._generation:
            return
        self._last_publish = time.monotonic()
        receiver = self._receiver
        data = result.NotificationMessage.NotificationData
        if receiver is None or not data:
            return  # a keep-alive
        floor = self._subscribed_at
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                changes: dict[int, RawValue] = {}
                latest = 0.0
                for item in notification.MonitoredItems:
                    index = item.ClientHandle
                    if index in changes:  # a queued older sample of the same point: deliver in order
                        receiver.values(changes, max(latest, floor))
                        changes, latest = {}, 0.0
                    dv = item.Value
                    changes[index] = to_raw(dv)
                    stamp = epoch(dv.SourceTimestamp or dv.ServerTimestamp)
                    if stamp is not None and stamp > latest:
                        latest = stamp
                self.notifications += len(notification.MonitoredItems)
                if changes:
                    receiver.values(changes, max(latest, floor) if latest else None)
            elif isinstance(notification, ua.StatusChangeNotification):
                code = notification.Status.value
                if not is_good(code):
                    self._lost(generation, f"subscription ended: {status_name(code)}")

    async def _keepalive_watchdog(self, generation: int, limit: float) -> None:
        # wake when the limit would be reached since the last publish, not on a short fixed period: while
        # publishes arrive it wakes once per `limit` (each wake-up costs CPU), and it still notices a silence
        # the moment it exceeds the limit
        while generation == self._generation:
            silent = time.monotonic() - self._last_publish
            if silent > limit:
                self._lost(generation, f"no publish response or keep-alive for {silent:.1f} s")
                return
            await asyncio.sleep(limit - silent + 0.01)

    def _lost(self, generation: int, reason: str) -> None:
        """Tell the kernel once per connection that the feed is gone."""
        receiver = self._receiver
        if generation != self._generation or receiver is None:
            return
        self._receiver = None
        log.debug("device %s: %s", self._device, reason)
        receiver.lost(reason)

    # ---- writing ---------------------------------------------------------------------------------------

    async def write(self, point: PointConfig, raw_value: Scalar | None) -> None:
        """Write `raw_value` typed as the node's DataType (or the point's `data_type`)."""
        if raw_value is None:
            raise WriteRejected(self._device, "OPC UA has no release: write a value", point=point.name)
        client, resolved = self._ready(self._plan)
        index = resolved.by_name.get(point.name)
        if index is None:
            raise WriteRejected(self._device, "no such point", point=point.name)
        node = resolved.nodes[index]
        if isinstance(node, PointFault):
            raise WriteRejected(self._device, node.reason, point=point.name)
        configured = self._plan.points[index].data_type
        vt = variant_type(configured) if configured else resolved.types[index]
        if vt is None:
            raise WriteRejected(
                self._device, "the node's data type is unknown: set data_type on the point", point=point.name
            )
        try:
            variant = to_variant(raw_value, vt)
        except ValueError as exc:
            raise WriteRejected(self._device, str(exc), point=point.name) from None
        try:
            results = await client.uaclient.write_attributes(
                [node], [ua.DataValue(variant)], AttributeIds.Value
            )
        except UaStatusCodeError as exc:  # a service fault for the whole request
            raise WriteRejected(self._device, status_name(exc.code), point=point.name) from None
        except _CONNECTION_ERRORS as exc:
            raise DeviceUnreachable(self._device, _describe(exc), point=point.name) from exc
        code = results[0].value
        if not is_good(code):
            raise WriteRejected(self._device, status_name(code), point=point.name)

    # ---- helpers ---------------------------------------------------------------------------------------

    def _ready(self, plan: OpcuaPlan) -> tuple[Client, _Resolved]:
        client, resolved = self._client, self._resolved
        if client is None or resolved is None:
            raise DeviceUnreachable(self._device, "not connected")
        if len(plan.points) != len(resolved.nodes):
            raise ValueError("the plan is not the one this session was created for")
        return client, resolved

    async def _resolve(self, client: Client) -> _Resolved:
        """Node ids for every point, their data types and the server's operation limits: three calls at most."""
        plan = self._plan
        nodes: list[ua.NodeId | PointFault] = []
        namespaces: list[str] = []
        if any(r.namespace_uri for r in plan.refs):
            namespaces = await client.get_namespace_array()
        paths = [(i, r.browse_path) for i, r in enumerate(plan.refs) if r.browse_path is not None]
        translated: dict[int, ua.NodeId | PointFault] = {}
        if paths:
            objects = make_node_id(ObjectIds.ObjectsFolder, 0)
            results = await client.translate_browsepaths(objects, [p for _, p in paths])
            for (i, _), result in zip(paths, results, strict=True):
                if not is_good(result.StatusCode.value):
                    translated[i] = PointFault(f"browse path: {status_name(result.StatusCode.value)}")
                elif not result.Targets:
                    translated[i] = PointFault("browse path: BadNoMatch")
                else:
                    target = result.Targets[0].TargetId
                    translated[i] = make_node_id(target.Identifier, target.NamespaceIndex, target.NodeIdType)
        for i, ref in enumerate(plan.refs):
            if ref.browse_path is not None:
                nodes.append(translated[i])
            elif ref.namespace_uri is not None:
                if ref.namespace_uri not in namespaces:
                    nodes.append(PointFault(f"namespace {ref.namespace_uri} is not on the server"))
                    continue
                assert ref.node_id is not None
                ns = namespaces.index(ref.namespace_uri)
                nodes.append(make_node_id(ref.node_id.Identifier, ns, ref.node_id.NodeIdType))
            else:
                assert ref.node_id is not None
                nodes.append(ref.node_id)
        limits = [
            make_node_id(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead, 0),
            make_node_id(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall, 0),
        ]
        reads: list[tuple[ua.NodeId, AttributeIds]] = [(n, AttributeIds.Value) for n in limits]
        reads += [(n, AttributeIds.DataType) for n in nodes if isinstance(n, ua.NodeId)]
        values = await _read(client, reads, 0)
        max_read, max_items = (_limit(dv) for dv in values[:2])
        if self._conn.max_nodes_per_read:
            max_read = self._conn.max_nodes_per_read
        types: list[ua.VariantType | None] = []
        type_cache: dict[Any, ua.VariantType | None] = {}
        datatypes = iter(values[2:])
        for n in nodes:
            if isinstance(n, PointFault):
                types.append(None)
                continue
            dv = next(datatypes)
            types.append(await _variant_type(client, dv, type_cache))
        names = {p.name: i for i, p in enumerate(plan.points)}
        return _Resolved(tuple(nodes), tuple(types), names, max_read, max_items)


def _monitored_item(
    index: int, node: ua.NodeId, point: OpcuaPoint, conn: OpcuaConnection
) -> ua.MonitoredItemCreateRequest:
    sampling = (
        conn.publishing_interval_ms if point.sampling_interval_ms is None else point.sampling_interval_ms
    )
    parameters = ua.MonitoringParameters(
        ClientHandle=index,  # the plan index: notifications map straight back to points
        SamplingInterval=sampling,
        QueueSize=point.queue_size,
        DiscardOldest=True,
    )
    if point.deadband > 0:
        parameters.Filter = ua.DataChangeFilter(
            Trigger=ua.DataChangeTrigger.StatusValue,
            DeadbandType=_DEADBANDS[point.deadband_type],
            DeadbandValue=point.deadband,
        )
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=parameters,
    )


async def _read(
    client: Client, reads: Sequence[tuple[ua.NodeId, AttributeIds]], max_per_call: int
) -> list[ua.DataValue]:
    """Read service calls for (node, attribute) pairs: one call, or chunks of the server's limit."""
    step = max_per_call or len(reads) or 1
    out: list[ua.DataValue] = []
    for start in range(0, len(reads), step):
        params = ua.ReadParameters(
            MaxAge=0,
            TimestampsToReturn=ua.TimestampsToReturn.Neither,
            NodesToRead=[ua.ReadValueId(NodeId=n, AttributeId=a) for n, a in reads[start : start + step]],
        )
        out += await client.uaclient.read(params)
    return out


def _limit(dv: ua.DataValue) -> int:
    value = dv.Value.Value if dv.Value is not None else None
    return int(value) if isinstance(value, int) and value > 0 and _good(dv) else 0


async def _variant_type(
    client: Client, dv: ua.DataValue, cache: dict[Any, ua.VariantType | None]
) -> ua.VariantType | None:
    """The built-in type to write a node with, from its DataType attribute (sub-types looked up once)."""
    if not _good(dv) or dv.Value is None or not isinstance(dv.Value.Value, ua.NodeId):
        return None
    datatype: ua.NodeId = dv.Value.Value
    if (
        datatype.NamespaceIndex == 0
        and isinstance(datatype.Identifier, int)
        and 1 <= datatype.Identifier <= 25
    ):
        return ua.VariantType(datatype.Identifier)
    key = (datatype.NamespaceIndex, datatype.Identifier)
    if key not in cache:
        try:
            vt = await data_type_to_variant_type(client.get_node(datatype))
            cache[key] = None if vt is ua.VariantType.Variant else vt
        except (UaError, ValueError):
            cache[key] = None
    return cache[key]


def _good(dv: ua.DataValue) -> bool:
    return dv.StatusCode is None or is_good(dv.StatusCode.value)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        return status_name(exc.code)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
