"""The gateway's own BACnet/IP application (one per local address), shared by the sessions that use it.

A BACnet client is itself a device on the network with one UDP socket, so every session configured with the
same `local_address` shares one bacpypes3 `Application` (created on first use, closed with its last user).
With a `bbmd` it is a foreign device: bacpypes3 registers it with the BBMD and renews the registration before
its time to live runs out, and broadcasts (Who-Is, Who-Is-Router-To-Network) go through the BBMD. It accepts
segmented answers (a large object list), and learns the routers to remote networks (`learn_route`) with
Who-Is-Router-To-Network, sent to a given router or broadcast.
Each request runs under the calling device's own timeout and retry count (`Stack.call`): bacpypes3's own
retries are switched off (`numberOfApduRetries = 0`), so a silent device costs exactly its own
`timeout x (retries + 1)` and never delays requests to other devices, which run concurrently.

This module also turns bacpypes3's raised `ErrorRejectAbortNack` (a `BaseException`, so `except Exception`
misses it) into `BacnetFailure`, dispatches COV notifications by subscriber process identifier, and hands
I-Am messages to discovery listeners.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bacpypes3.apdu import (
    AbortPDU,
    AbortReason,
    ErrorPDU,
    ErrorRejectAbortNack,
    RejectPDU,
    RejectReason,
    SimpleAckPDU,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import HostNPort
from bacpypes3.errors import ExecutionError, ServicesError, UnknownRoute
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address

from drivers.bacnet.config import parse_address
from drivers.bacnet.values import error_reason

log = logging.getLogger(__name__)

T = TypeVar("T")
VENDOR_ID = 999  # bacpypes3's identifier for samples and tests; the gateway has no ASHRAE vendor id
NotificationHandler = Callable[[Any], None]
IAmListener = Callable[[Any], None]


class BacnetFailure(Exception):
    """A request failed: an error, reject or abort response, or no answer at all (`timeout`)."""

    def __init__(self, reason: str, *, timeout: bool = False, response: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout
        self.response = response

    @classmethod
    def from_response(cls, response: ErrorRejectAbortNack) -> BacnetFailure:
        return cls(error_reason(response), response=response)

    @property
    def service_unsupported(self) -> bool:
        """The device does not implement the service (reject unrecognized-service, or an error of class services)."""
        response = self.response
        if isinstance(response, ErrorPDU):
            return str(response.errorClass) == "services"
        return self.rejected_service

    @property
    def rejected_service(self) -> bool:
        """Reject unrecognized-service: the device does not implement the service at all."""
        response = self.response
        return isinstance(response, RejectPDU) and (
            int(response.apduAbortRejectReason) == RejectReason.unrecognizedService
        )

    @property
    def about_an_object(self) -> bool:
        """An error of class object or property: one of the request's objects or properties is the problem."""
        response = self.response
        return isinstance(response, ErrorPDU) and str(response.errorClass) in ("object", "property")

    @property
    def too_long(self) -> bool:
        """The answer does not fit the device's APDU (abort segmentation-not-supported or buffer-overflow)."""
        response = self.response
        return isinstance(response, AbortPDU) and int(response.apduAbortRejectReason) in (
            AbortReason.segmentationNotSupported,
            AbortReason.bufferOverflow,
            AbortReason.apduTooLong,
        )


class _GatewayApp(Application):  # type: ignore[misc]  # bacpypes3 ships no type information
    """bacpypes3's Application, with COV notifications and I-Ams routed to the driver's callbacks."""

    cov_handlers: dict[int, NotificationHandler]
    iam_listeners: list[IAmListener]

    async def do_IAmRequest(self, apdu: Any) -> None:
        for listener in list(self.iam_listeners):
            listener(apdu)
        await super().do_IAmRequest(apdu)

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        handler = self.cov_handlers.get(int(apdu.subscriberProcessIdentifier))
        if handler is not None:
            handler(apdu)

    async def do_ConfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        handler = self.cov_handlers.get(int(apdu.subscriberProcessIdentifier))
        if handler is None:
            raise ServicesError(errorCode="unknownSubscription")
        handler(apdu)
        await self.response(SimpleAckPDU(context=apdu))


class Stack:
    """One local BACnet/IP application, bound to `local_address` (a foreign device of `bbmd` if given)."""

    def __init__(
        self, local_address: str, device_instance: int, bbmd: str | None = None, bbmd_ttl: int = 300
    ) -> None:
        self.local_address = local_address
        self.device_instance = device_instance
        self.bbmd, self.bbmd_ttl = bbmd, bbmd_ttl
        self.users = 0
        self._next_process_id = 0
        self._apdu_timeout_ms = 1000
        self.routes: dict[int, str] = {}  # network number -> the router that answered for it
        self.app = self._open()

    def _open(self) -> _GatewayApp:
        ip, _, port = parse_address(self.local_address, allow_mask=True)
        _check_bind(ip, port)  # bacpypes3 retries a failed bind forever, silently; fail loudly instead
        device = DeviceObject(
            objectIdentifier=("device", self.device_instance),
            objectName=f"edge-gateway-{self.device_instance}",
            vendorIdentifier=VENDOR_ID,
            vendorName="edge-gateway",
            modelName="edge-gateway",
            apduTimeout=self._apdu_timeout_ms,
            numberOfApduRetries=0,  # Stack.call retries, under each device's own timeout
            segmentationSupported="segmented-both",  # large object lists and RPM answers come segmented
            maxSegmentsAccepted=64,
        )
        foreign: dict[str, Any] = {}
        if self.bbmd is not None:
            foreign = {
                "bacnetIPMode": "foreign",
                "fdBBMDAddress": HostNPort(self.bbmd),
                "fdSubscriptionLifetime": self.bbmd_ttl,
            }
        port_object = NetworkPortObject(
            self.local_address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1", **foreign
        )
        app: _GatewayApp = _GatewayApp.from_object_list([device, port_object])
        app.cov_handlers = {}
        app.iam_listeners = []
        return app

    @property
    def registration(self) -> str | None:
        """The foreign device registration's state, for messages: None when not a foreign device."""
        if self.bbmd is None:
            return None
        link = next(iter(self.app.link_layers.values()), None)
        status = getattr(link, "bbmdRegistrationStatus", None)
        return f"registered with BBMD {self.bbmd}" if status == 0 else f"not registered with BBMD {self.bbmd}"

    async def learn_route(self, network: int, router: str | None, seconds: float) -> str:
        """The router to `network` (asked at `router`, else by broadcast), learned once; raises BacnetFailure."""
        known = self.routes.get(network)
        if known is not None:
            return known
        destination = Address(router) if router is not None else None
        try:
            async with asyncio.timeout(seconds):
                answers = await self.app.nse.who_is_router_to_network(
                    destination=destination, network=network
                )
        except TimeoutError:
            answers = []
        if not answers:
            where = f"router {router}" if router else "a broadcast"
            extra = f"; {self.registration}" if self.bbmd is not None else ""
            raise BacnetFailure(
                f"no router to network {network} answered Who-Is-Router-To-Network ({where}){extra}",
                timeout=True,
            )
        self.routes[network] = str(answers[0][1].pduSource)
        return self.routes[network]

    async def routers(self, router: str | None, seconds: float) -> dict[int, str]:
        """Every network a router announces (asked at `router`, else by broadcast): network -> router."""
        destination = Address(router) if router is not None else None
        future = self.app.nse.who_is_router_to_network(destination=destination)
        try:
            async with asyncio.timeout(seconds):
                answers = await future
        except TimeoutError:
            answers = []
        for _, answer in answers:
            for network in answer.iartnNetworkList:
                self.routes.setdefault(int(network), str(answer.pduSource))
        return dict(self.routes)

    def fit_timeout(self, seconds: float) -> None:
        """Keep bacpypes3's own transaction timer above the longest per-device timeout using this stack."""
        wanted = int(seconds * 1000) + 500
        if wanted > self._apdu_timeout_ms and self.app.device_object is not None:
            self._apdu_timeout_ms = wanted
            self.app.device_object.apduTimeout = wanted

    def close(self) -> None:
        self.app.close()

    def next_process_id(self) -> int:
        self._next_process_id = self._next_process_id % 4_194_303 + 1
        return self._next_process_id

    async def call(self, make: Callable[[], Awaitable[T]], per_try: float, retries: int) -> T:
        """Run one confirmed request; resend it up to `retries` times when no answer comes within `per_try` s.

        Raises `BacnetFailure` (with `timeout=True` when nothing answered)."""
        for _ in range(retries + 1):
            try:
                async with asyncio.timeout(per_try):
                    return await make()
            except TimeoutError:
                continue
            except ErrorRejectAbortNack as response:  # a BaseException: must be named
                if (
                    isinstance(response, AbortPDU)
                    and int(response.apduAbortRejectReason) == AbortReason.noResponse
                ):
                    continue
                raise BacnetFailure.from_response(response) from None
            except UnknownRoute:
                raise BacnetFailure("no router to the device's network answered", timeout=True) from None
            except (ValueError, TypeError, ExecutionError) as exc:  # bacpypes3 encoding/decoding/casting
                raise BacnetFailure(f"cannot encode or decode: {exc}") from None
        tries = f" ({retries + 1} tries)" if retries else ""
        raise BacnetFailure(f"no answer within {per_try:g} s{tries}", timeout=True)


class StackPool:
    """The driver's stacks by local address, and what it learned about devices (ReadPropertyMultiple support)."""

    def __init__(self) -> None:
        self._stacks: dict[str, Stack] = {}
        self.without_rpm: set[str] = set()  # device addresses that refused ReadPropertyMultiple

    def acquire(
        self,
        local_address: str,
        device_instance: int,
        timeout: float,
        bbmd: str | None = None,
        bbmd_ttl: int = 300,
    ) -> Stack:
        """The stack for `local_address`, created on first use. Raises OSError if it cannot be bound, and
        ValueError if it is already open as another BBMD's foreign device (or as none)."""
        stack = self._stacks.get(local_address)
        if stack is not None and (stack.bbmd, stack.bbmd_ttl) != (bbmd, bbmd_ttl):
            now = f"a foreign device of {stack.bbmd} (ttl {stack.bbmd_ttl})" if stack.bbmd else "not foreign"
            raise ValueError(
                f"the BACnet stack on {local_address} is {now}: devices sharing a local address share its "
                "bbmd and bbmd_ttl"
            )
        if stack is None:
            stack = Stack(local_address, device_instance, bbmd, bbmd_ttl)
            self._stacks[local_address] = stack
            log.info("BACnet/IP stack on %s (device %d)", local_address, device_instance)
        elif stack.device_instance != device_instance:
            log.warning(
                "BACnet stack on %s is device %d; a connection asked for %d (first one wins)",
                local_address,
                stack.device_instance,
                device_instance,
            )
        stack.users += 1
        stack.fit_timeout(timeout)
        return stack

    def holds(self, local_address: str) -> bool:
        """Whether this driver has a stack on `local_address` (then the port is bound by itself)."""
        return local_address in self._stacks

    def release(self, stack: Stack) -> None:
        stack.users -= 1
        if stack.users <= 0 and self._stacks.get(stack.local_address) is stack:
            del self._stacks[stack.local_address]
            stack.close()
            log.info("BACnet/IP stack on %s closed", stack.local_address)


def bound_elsewhere(ip: str, port: int) -> bool:
    """Whether another socket is bound to this UDP address already (a running gateway's stack): bound with
    SO_REUSEPORT as this driver binds, the two would share the unicast answers sent there at random."""
    with socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM
    ) as probe:  # without SO_REUSE*: any holder refuses it
        try:
            probe.bind((ip, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _check_bind(ip: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((ip, port))
