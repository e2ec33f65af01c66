"""Discovery and commissioning: Who-Is, the I-Am answers, and a proposed point map for one device.

`target` keys (all optional; `edge device discover bacnet --target key=value ...`):

| key              | default            | meaning                                                          |
|------------------|--------------------|------------------------------------------------------------------|
| `network`        | `255.255.255.255`  | where the Who-Is goes: a (directed) broadcast address            |
| `port`           | `47808`            | the devices' UDP port                                            |
| `address`        |                    | ask one device by unicast instead of broadcasting (`ip[:port]`)  |
| `device`         |                    | instance of the device to describe: its objects -> proposed points |
| `low`, `high`    |                    | device instance range of the Who-Is                              |
| `timeout`        | `3`                | seconds to wait for I-Am answers                                 |
| `request_timeout`| `2`                | seconds per request while reading identities and objects        |
| `local`          | `0.0.0.0:47808`    | the gateway side's `ip[/mask]:port` (see README, loopback)       |
| `local_instance` | `4194301`          | the gateway side's device instance while discovering             |
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bacpypes3.apdu import WhoIsRequest
from bacpypes3.basetypes import ServicesSupported
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier, PropertyIdentifier
from bacpypes3.vendor import get_vendor_info

from drivers.bacnet.config import (
    ANALOG_TYPES,
    BINARY_TYPES,
    INPUT_TYPES,
    MAX_INSTANCE,
    MULTISTATE_TYPES,
    OUTPUT_TYPES,
    parse_address,
)
from drivers.bacnet.names import sanitize_name, unique_name
from drivers.bacnet.plan import key_of
from drivers.bacnet.semantics import tags_for
from drivers.bacnet.stack import BacnetFailure, Stack, StackPool, bound_elsewhere
from drivers.bacnet.units import unit_with_note
from drivers.bacnet.values import scalar
from edge.sdk import DeviceUnreachable, DiscoveredDevice

_ASHRAE = get_vendor_info(0)
NUMBER_TYPES = frozenset({"integer-value", "positive-integer-value", "accumulator", "pulse-converter"})
PROPOSED_TYPES = ANALOG_TYPES | BINARY_TYPES | MULTISTATE_TYPES | NUMBER_TYPES | {"characterstring-value"}
_IDENTITY = ("object-name", "vendor-name", "model-name", "firmware-revision", "protocol-services-supported")
_OBJECTS_PER_REQUEST = 16

Progress = Callable[[str], None]


@dataclass(frozen=True)
class _Options:
    network: str = "255.255.255.255"
    port: int = 47808
    address: str | None = None
    device: int | None = None
    low: int | None = None
    high: int | None = None
    timeout: float = 3.0
    request_timeout: float = 2.0
    local: str = "0.0.0.0:47808"
    local_instance: int = MAX_INSTANCE - 1
    points: bool = False  # propose a point map for every device found (site commissioning), not only `device`
    router: str | None = None  # ask this router which networks are behind it (else a broadcast)
    networks: str = ""  # "all", or "2,5": search these networks behind routers (Who-Is-Router-To-Network)
    bbmd: str | None = None  # register as a foreign device with this BBMD first
    ttl: int = 300

    @property
    def wanted_networks(self) -> set[int] | None:
        """The remote networks to search: None for all that routers announce; empty for none."""
        if self.networks.strip().lower() == "all" or (self.router and not self.networks):
            return None
        return {int(n) for n in self.networks.replace(" ", "").split(",") if n}

    @classmethod
    def parse(cls, target: dict[str, Any]) -> _Options:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(target) - known)
        if unknown:
            raise ValueError(f"unknown discovery target key(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in target.items():
            kind = cls.__dataclass_fields__[key].type
            try:
                values[key] = (
                    _flag(value)
                    if "bool" in str(kind)
                    else float(value)
                    if "float" in str(kind)
                    else (int(value) if "int" in str(kind) else str(value))
                )
            except (TypeError, ValueError):
                raise ValueError(f"discovery target {key}={value!r}: expected {kind}") from None
        options = cls(**values)
        parse_address(options.network, allow_mask=False)
        parse_address(options.local, allow_mask=True)
        for given in (options.address, options.router, options.bbmd):
            if given is not None:
                parse_address(given, allow_mask=False)
        try:
            options.wanted_networks  # noqa: B018  (parsing it is the check)
        except ValueError:
            raise ValueError(
                f"networks={options.networks!r}: 'all' or network numbers such as '2,5'"
            ) from None
        if (options.low is None) != (options.high is None):
            raise ValueError("give both low and high, or neither")
        return options


async def discover(pool: StackPool, target: dict[str, Any], progress: Progress) -> list[DiscoveredDevice]:
    """Who-Is (on the local network, or on the networks behind routers), identify the devices that answer,
    and propose a point map for `target["device"]` (or every device, with `points`)."""
    options = _Options.parse(target)
    ip, _, port = parse_address(options.local, allow_mask=True)
    if not pool.holds(options.local) and bound_elsewhere(ip, port):
        progress(
            f"warning: another socket is bound to {ip}:{port} (a running gateway?): answers may reach it "
            "instead of this discovery; stop it or discover from another local port"
        )
    try:
        stack = pool.acquire(
            options.local, options.local_instance, options.request_timeout, options.bbmd, options.ttl
        )
    except OSError as exc:
        raise DeviceUnreachable(
            "discovery", f"cannot use local address {options.local}: {exc.strerror}"
        ) from None
    except ValueError as exc:
        raise DeviceUnreachable("discovery", str(exc)) from None
    try:
        if options.bbmd is not None:
            await _registered(stack, options, progress)
        if options.router is not None or options.networks:
            answers = await _who_is_on_networks(stack, options, progress)
        else:
            answers = await _who_is(stack, options, progress)
        if not answers:
            progress("no device answered")
            return []
        progress(f"{len(answers)} device(s) answered; reading their identity")
        semaphore = asyncio.Semaphore(8)

        async def identify(instance: int, source: Address) -> DiscoveredDevice:
            async with semaphore:
                return await _identify(stack, instance, source, answers[instance], options)

        found = list(await asyncio.gather(*(identify(i, a.pduSource) for i, a in sorted(answers.items()))))
        if options.points:
            return [await _with_points(stack, device, options, progress) for device in found]
        if options.device is not None:
            chosen = next((d for d in found if d.connection["device_instance"] == options.device), None)
            if chosen is None:
                progress(f"device {options.device} did not answer")
                return found
            found[found.index(chosen)] = await _with_points(stack, chosen, options, progress)
            return found
        progress(
            "object lists not read, so no point maps proposed: add -t device=INSTANCE for one device's, "
            "-t points=true for every device's"
        )
        return found
    except BacnetFailure as failure:
        raise DeviceUnreachable("discovery", failure.reason) from None
    finally:
        pool.release(stack)


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "yes", "1"):
        return True
    if str(value).lower() in ("false", "no", "0"):
        return False
    raise ValueError(value)


async def _with_points(
    stack: Stack, device: DiscoveredDevice, options: _Options, progress: Progress
) -> DiscoveredDevice:
    points = await _propose_points(stack, device, options, progress)
    return DiscoveredDevice(
        address=device.address,
        identity=device.identity,
        connection=device.connection,
        points=points,
        profile_name=device.profile_name,
    )


async def _registered(stack: Stack, options: _Options, progress: Progress) -> None:
    """Wait (up to `timeout`) for the foreign device registration, so broadcasts go through the BBMD.

    bacpypes3 signals the registration only in its link layer's status: look at it every 50 ms."""
    for _ in range(max(1, int(options.timeout / 0.05))):
        if stack.registration == f"registered with BBMD {options.bbmd}":
            break
        await asyncio.sleep(0.05)
    progress(f"{stack.registration} (ttl {options.ttl} s)")


async def _who_is_on_networks(stack: Stack, options: _Options, progress: Progress) -> dict[int, Any]:
    """Who-Is-Router-To-Network, then a Who-Is to each network found behind the routers (remote broadcast)."""
    routes = await stack.routers(options.router, options.timeout)
    where = f"router {options.router}" if options.router else "a broadcast"
    listed = ", ".join(f"{net} (router {router})" for net, router in sorted(routes.items())) or "none"
    progress(f"networks behind routers, from {where}: {listed}")
    wanted = options.wanted_networks
    answers: dict[int, Any] = {}
    for network in sorted(routes):
        if wanted is None or network in wanted:
            answers |= await _who_is(stack, options, progress, Address(f"{network}:*"))
    for network in sorted((wanted or set()) - set(routes)):
        progress(f"network {network}: no router announced it")
    return answers


async def _who_is(
    stack: Stack, options: _Options, progress: Progress, destination: Address | None = None
) -> dict[int, Any]:
    low, high = options.low, options.high
    if options.device is not None:
        low = high = options.device
    answers: dict[int, Any] = {}

    # I-Ams reach every listener of the stack: keep those from where this Who-Is went (its network, or none)
    network = destination.addrNet if destination is not None else None

    def on_i_am(apdu: Any) -> None:
        instance = int(apdu.iAmDeviceIdentifier[1])
        if (
            getattr(apdu.pduSource, "addrNet", None) == network
            and (low is None or low <= instance)
            and (high is None or instance <= high)
            and instance not in answers
        ):
            answers[instance] = apdu
            progress(f"I-Am: device {instance} at {_address_text(apdu.pduSource)} (vendor {apdu.vendorID})")

    if destination is None:
        ip, _, port = parse_address(options.address or f"{options.network}:{options.port}", allow_mask=False)
        destination = Address(f"{ip}:{port}")
    request = WhoIsRequest(destination=destination)
    if low is not None and high is not None:
        request.deviceInstanceRangeLowLimit = low
        request.deviceInstanceRangeHighLimit = high
    stack.app.iam_listeners.append(on_i_am)
    try:
        stack.app.request(request)
        progress(f"Who-Is sent to {destination}; waiting up to {options.timeout:g} s for I-Am answers")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.timeout
        while loop.time() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
            if options.device is not None and options.device in answers:
                break
    finally:
        stack.app.iam_listeners.remove(on_i_am)
    return answers


async def _identify(
    stack: Stack, instance: int, source: Any, i_am: Any, options: _Options
) -> DiscoveredDevice:
    device_id = ObjectIdentifier(("device", instance))
    props = await _read_many(stack, source, [(device_id, list(_IDENTITY))], options)
    text = {name: props.get(key_of(device_id, PropertyIdentifier(name), None)) for name in _IDENTITY}
    services = text.pop("protocol-services-supported")
    identity = {"device_instance": str(instance), "vendor_id": str(int(i_am.vendorID))}
    for key, name in (
        ("name", "object-name"),
        ("vendor", "vendor-name"),
        ("model", "model-name"),
        ("firmware", "firmware-revision"),
    ):
        value = scalar(text[name])
        if isinstance(value, str) and value:
            identity[key] = value
    if isinstance(services, list):
        identity["rpm"] = "yes" if _bit(services, ServicesSupported.readPropertyMultiple) else "no"
        identity["cov"] = "yes" if _bit(services, ServicesSupported.subscribeCOV) else "no"
    address = _address_text(source)
    model = identity.get("model", "")
    profile = sanitize_name(model) if model and model != "N/A" else f"bacnet-device-{instance}"
    connection: dict[str, Any] = {"address": address, "device_instance": instance}
    if source.addrNet is not None:  # behind a router: its network and MAC there, and the router
        identity["network"] = str(source.addrNet)
        connection = {"network": int(source.addrNet), "mac": f"0x{bytes(source.addrAddr).hex()}"}
        router = options.router or stack.routes.get(int(source.addrNet))
        if router is not None:
            connection["router"] = router
        connection["device_instance"] = instance
    if options.bbmd is not None:
        connection |= {"bbmd": options.bbmd, "bbmd_ttl": options.ttl}
    if options.local != _Options.local:  # the gateway must speak from where it discovered the device
        connection["local_address"] = options.local
    return DiscoveredDevice(address=address, identity=identity, connection=connection, profile_name=profile)


async def _propose_points(
    stack: Stack, device: DiscoveredDevice, options: _Options, progress: Progress
) -> list[dict[str, Any]]:
    address = Address(device.address)
    instance = int(device.connection["device_instance"])
    object_ids = await _object_list(stack, address, instance, options, progress)
    wanted = [oid for oid in object_ids if str(oid[0]) in PROPOSED_TYPES]
    progress(
        f"device {instance}: {len(object_ids)} objects, {len(wanted)} with a present value; describing them"
    )
    specs = [(oid, _properties_for(str(oid[0]))) for oid in wanted]
    values: dict[Any, Any] = {}
    for start in range(0, len(specs), _OBJECTS_PER_REQUEST):
        values.update(await _read_many(stack, address, specs[start : start + _OBJECTS_PER_REQUEST], options))
        progress(f"described {min(start + _OBJECTS_PER_REQUEST, len(specs))}/{len(specs)} objects")
    names: set[str] = set()
    return [_propose(oid, props, values, names) for oid, props in specs]


async def _object_list(
    stack: Stack, address: Address, instance: int, options: _Options, progress: Progress
) -> list[ObjectIdentifier]:
    device_id = ObjectIdentifier(("device", instance))
    try:
        whole = await _call(stack, options, lambda app: app.read_property(address, device_id, "object-list"))
        return list(whole)
    except BacnetFailure as failure:
        if failure.timeout:
            raise DeviceUnreachable(f"device {instance}", failure.reason) from None
    # too long for one answer without segmentation: read it element by element
    count = int(
        await _call(stack, options, lambda app: app.read_property(address, device_id, "object-list", 0))
    )
    progress(f"device {instance}: reading its object list one by one ({count} objects)")
    out = []
    for index in range(1, count + 1):
        out.append(await _read(stack, options, address, device_id, "object-list", index))
        if index % 25 == 0:
            progress(f"object list {index}/{count}")
    return out


def _properties_for(object_type: str) -> list[str]:
    props = ["object-name", "description"]
    if object_type in ANALOG_TYPES or object_type in NUMBER_TYPES:
        props.append("units")
    if object_type in BINARY_TYPES:
        props += ["inactive-text", "active-text"]
    if object_type in MULTISTATE_TYPES:
        props.append("state-text")
    if object_type not in INPUT_TYPES and object_type not in NUMBER_TYPES | {"characterstring-value"}:
        props.append("priority-array")  # present only on commandable objects
    return props


def _propose(oid: Any, props: list[str], values: dict[Any, Any], names: set[str]) -> dict[str, Any]:
    object_type, instance = str(oid[0]), int(oid[1])
    got = {name: values.get(key_of(oid, PropertyIdentifier(name), None)) for name in props}
    name = unique_name(
        sanitize_name(str(scalar(got["object-name"]) or "")) or f"{object_type}-{instance}", names
    )
    point: dict[str, Any] = {"name": name, "object_type": object_type, "instance": instance}
    description = scalar(got.get("description"))
    description = description if isinstance(description, str) else ""
    units = scalar(got.get("units")) if "units" in got else None
    if isinstance(units, str):
        unit, description = unit_with_note(units, description)
        if unit is not None:
            point["unit"] = unit
    if description:
        point["description"] = description
    states = _states(object_type, got)
    if states:
        point["states"] = states
    if object_type in OUTPUT_TYPES or isinstance(got.get("priority-array"), list):
        point["writable"] = True
    point.update(tags_for(object_type, point.get("unit"), name, description, bool(point.get("writable"))))
    return point


def _states(object_type: str, got: dict[str, Any]) -> list[str] | None:
    if object_type in MULTISTATE_TYPES and isinstance(got.get("state-text"), list):
        texts = [str(t) for t in got["state-text"]]
    elif object_type in BINARY_TYPES:
        texts = [str(scalar(got.get("inactive-text")) or ""), str(scalar(got.get("active-text")) or "")]
    else:
        return None
    # only usable as a point's state texts when all are present and distinct
    return texts if all(texts) and len(set(texts)) == len(texts) else None


async def _read_many(
    stack: Stack, address: Any, specs: list[tuple[ObjectIdentifier, list[str]]], options: _Options
) -> dict[Any, Any]:
    """RPM for the specs, or ReadProperty one by one if the device refuses RPM; errors become ErrorType values."""
    arguments: list[Any] = []
    for oid, props in specs:
        arguments += [oid, [PropertyIdentifier(p) for p in props]]
    try:
        response = await _call(
            stack,
            options,
            lambda app: app.read_property_multiple(address, list(arguments), vendor_info=_ASHRAE),
        )
        if isinstance(response, list):
            return {key_of(o, p, i): v for o, p, i, v in response}
    except BacnetFailure as failure:
        if failure.timeout:
            raise DeviceUnreachable(_address_text(address), failure.reason) from None
    out: dict[Any, Any] = {}
    for oid, props in specs:
        for prop in props:
            key = key_of(oid, PropertyIdentifier(prop), None)
            try:
                out[key] = await _read(stack, options, address, oid, prop)
            except BacnetFailure as failure:
                if failure.timeout:
                    raise DeviceUnreachable(_address_text(address), failure.reason) from None
                out[key] = failure
    return out


async def _call(stack: Stack, options: _Options, request: Callable[[Any], Any]) -> Any:
    return await stack.call(lambda: request(stack.app), options.request_timeout, 1)


async def _read(
    stack: Stack, options: _Options, address: Any, object_id: Any, prop: str, index: int | None = None
) -> Any:
    """One ReadProperty (one resend when unanswered)."""
    return await _call(stack, options, lambda app: app.read_property(address, object_id, prop, index))


def _bit(bits: list[Any], position: int) -> bool:
    return len(bits) > position and bool(bits[position])


def _address_text(address: Any) -> str:
    """'ip:port' of a BACnet/IP station; 'network:0xmac' of a routed one."""
    if getattr(address, "addrNet", None) is not None:
        return f"{address.addrNet}:0x{bytes(address.addrAddr).hex()}"
    tuple_ = getattr(address, "addrTuple", None)
    return f"{tuple_[0]}:{tuple_[1]}" if tuple_ else str(address)
